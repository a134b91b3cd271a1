//! The PostgreSQL pool: bounded, jittered connection lifetimes so the pool keeps cycling
//! onto the newest login; an `acquire` that survives a refused login and a server that
//! is briefly unreachable; and [`Db::run`], which retries work whose session the server
//! closed (admin termination, restart, failover, a proxy's idle timeout) on a fresh one.
//!
//! # What is retried, and why that is safe
//!
//! - **Getting a connection** (nothing was sent yet): a refused login (28P01/28000) waits
//!   for the credential refresh or for a session another request releases; a connection
//!   that cannot be opened (refused, reset, 57P03 "starting up") is tried again with a
//!   short backoff. All within `APP_POOL_ACQUIRE_TIMEOUT`.
//! - **Work on a session that turns out dead** (57P01/57P02/57P03, SQLSTATE class 08,
//!   reset, broken pipe, end of stream): [`Db::run`] runs the closure again on another
//!   connection, so the closure must be safe to run twice. Reads are. A single INSERT is
//!   *not* provably unexecuted when its session dies: the server may have committed it
//!   and died before answering. So every write the app makes carries an idempotency key
//!   (`notes.request_key`, unique): a second run finds the row the first one committed
//!   instead of adding another (see `routes/notes.rs`). Errors the server answers on a live
//!   session (constraint violations, permissions, 40001) are never retried here.
//! - After a lost session, connections that sat idle in the pool since before the loss
//!   are pinged before they are handed out (a server that killed one usually killed them
//!   all); a dead one is dropped there, not discovered by the next request.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor, Postgres};
use tokio::sync::Notify;

use crate::app::StartupError;
use crate::backoff::{Backoff, jitter};
use crate::config::Config;
use crate::credentials::{CredentialTarget, CredentialsError, Recover, Verify, VerifyError};
use crate::metrics::{Metrics, PoolGauges, RetryReason};
use db_secret::{Connector, DbFailure, DbSecret};

/// The metric label of a database error: its SQLSTATE, or a coarse class.
pub fn error_class(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::PoolTimedOut => "pool_timeout".to_owned(),
        sqlx::Error::PoolClosed => "pool_closed".to_owned(),
        other => DbFailure::classify(other).label().to_owned(),
    }
}

/// The per-connection lifetime: `max * (1 - jitter * u)` where `u` in `[0,1)` is a hash
/// of the connection's creation time (sqlx has no per-connection user data, but it tells
/// us the age, and `now - age` is stable per connection to the millisecond).
pub fn jittered_lifetime(max: Duration, jitter: f64, created_ms: u64) -> Duration {
    // splitmix64: cheap, well-spread.
    let mut z = created_ms.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = (z >> 11) as f64 / (1u64 << 53) as f64;
    max.mul_f64(1.0 - jitter * u)
}

fn process_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis_since_epoch() -> u64 {
    u64::try_from(process_epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What the pool's hooks tell the request path, and the other way round.
#[derive(Debug, Default)]
pub struct PoolSignals {
    /// A connection went back to the pool (woken: requests waiting for one).
    released: Notify,
    /// When a session was last found dead (ms since the process epoch; 0: never).
    lost_at_ms: AtomicU64,
}

impl PoolSignals {
    pub fn session_lost_now(&self) {
        self.lost_at_ms.store(millis_since_epoch().max(1), Ordering::Release);
    }

    /// Whether a connection idle for `idle_for` has sat in the pool since before the last
    /// lost session (and so may be dead too).
    fn idle_across_a_loss(&self, idle_for: Duration) -> bool {
        let lost = self.lost_at_ms.load(Ordering::Acquire);
        let idle_ms = u64::try_from(idle_for.as_millis()).unwrap_or(u64::MAX);
        lost != 0 && millis_since_epoch().saturating_sub(idle_ms) <= lost
    }
}

/// Builds the pool for `initial`. Lazy: connections open on demand (and `min` in the
/// background), always with whatever login the credentials state machine installed last.
pub fn build_pool(
    config: &Config,
    initial: &DbSecret,
    connector: &Connector,
) -> Result<(PgPool, Arc<PoolSignals>), StartupError> {
    let max = config.conn_max_lifetime;
    let spread = config.conn_lifetime_jitter;
    let epoch = process_epoch();
    let signals = Arc::new(PoolSignals::default());
    let (on_release, on_acquire) = (signals.clone(), signals.clone());
    let pool = PgPoolOptions::new()
        .max_connections(config.pool_max_connections)
        .min_connections(config.pool_min_connections)
        .acquire_timeout(config.pool_acquire_timeout)
        // Hard cap (also applied to idle connections by the pool's reaper).
        .max_lifetime(max)
        .idle_timeout(Some(max))
        // The pool pings before handing out a connection by default: a round trip per
        // request to catch a session the server ended, which `Db::run` catches anyway by
        // retrying. Only after such a loss are idle connections pinged (below).
        .test_before_acquire(false)
        .after_release(move |_conn, meta| {
            let signals = on_release.clone();
            Box::pin(async move {
                let created = Instant::now().saturating_duration_since(epoch).saturating_sub(meta.age);
                let created_ms = u64::try_from(created.as_millis()).unwrap_or(u64::MAX);
                let keep = meta.age < jittered_lifetime(max, spread, created_ms);
                if keep {
                    signals.released.notify_one();
                }
                Ok(keep)
            })
        })
        // Cheap unless a session was lost recently: then a connection idle since before
        // that is pinged, and dropped (the pool tries the next) if it is dead too.
        .before_acquire(move |conn, meta| {
            let signals = on_acquire.clone();
            Box::pin(async move {
                if !signals.idle_across_a_loss(meta.idle_for) {
                    return Ok(true);
                }
                Ok(conn.ping().await.is_ok())
            })
        })
        .connect_lazy_with(connector.pool_options(initial).map_err(StartupError::Connect)?);
    Ok((pool, signals))
}

/// Installs logins into the pool and verifies candidates with a throwaway connection.
#[derive(Debug, Clone)]
pub struct PgTarget {
    pub pool: PgPool,
    pub connector: Connector,
}

/// Verifies logins before there is a pool (startup).
#[derive(Debug, Clone)]
pub struct PgVerifier {
    pub connector: Connector,
}

const VERIFY_TIMEOUT: Duration = Duration::from_secs(5);

async fn verify_login(secret: &DbSecret, connector: &Connector) -> Result<(), VerifyError> {
    let attempt = async {
        let mut conn = connector.connect(secret, |o| o).await?;
        conn.execute("SELECT 1").await.map_err(|e| DbFailure::classify(&e))?;
        conn.close().await.map_err(|e| DbFailure::classify(&e))
    };
    let started = tokio::time::Instant::now();
    let outcome = tokio::time::timeout(VERIFY_TIMEOUT, attempt).await;
    tracing::debug!(took_ms = started.elapsed().as_millis() as u64, "verified a login");
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(failure)) if failure.is_auth() => {
            Err(VerifyError::Rejected { sqlstate: failure.sqlstate().unwrap_or_default().to_owned() })
        }
        Ok(Err(failure)) => Err(VerifyError::Unreachable(format!("{}:{}: {failure}", secret.host, secret.port))),
        Err(_) => Err(VerifyError::Unreachable(format!(
            "{}:{}: no answer within {VERIFY_TIMEOUT:?}",
            secret.host, secret.port
        ))),
    }
}

impl Verify for PgVerifier {
    async fn verify(&self, secret: &DbSecret) -> Result<(), VerifyError> {
        verify_login(secret, &self.connector).await
    }
}

impl Verify for PgTarget {
    async fn verify(&self, secret: &DbSecret) -> Result<(), VerifyError> {
        verify_login(secret, &self.connector).await
    }
}

impl CredentialTarget for PgTarget {
    fn switch_to(&self, secret: &DbSecret) {
        match self.connector.pool_options(secret) {
            Ok(options) => self.pool.set_connect_options(options),
            // Verified just before with the same policy, so this is a local
            // failure (no socket directory); new connections keep the old login.
            Err(e) => tracing::error!(error = %e, "cannot install the new login in the pool"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {class}: {source}")]
    Sqlx {
        class: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("no working database login: {0}")]
    Credentials(#[from] CredentialsError),
    /// No connection within the acquire timeout: the database is overloaded, down, or
    /// refuses every login. Answered 503, not 500: nothing is wrong with the request.
    #[error("no database connection within {0:?}")]
    Unavailable(Duration),
}

impl DbError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DbError::Unavailable(_) | DbError::Credentials(_))
    }
}

/// A source of connections: the sqlx pool, or a fake in the unit tests.
pub trait Connections: Send + Sync + 'static {
    type Conn: Send;
    /// An idle connection or a new one, as the pool decides.
    fn acquire(&self) -> impl Future<Output = Result<Self::Conn, sqlx::Error>> + Send;
    /// An idle connection, without waiting or opening one.
    fn try_idle(&self) -> Option<Self::Conn>;
}

impl Connections for PgPool {
    type Conn = PoolConnection<Postgres>;

    fn acquire(&self) -> impl Future<Output = Result<Self::Conn, sqlx::Error>> + Send {
        PgPool::acquire(self)
    }

    fn try_idle(&self) -> Option<Self::Conn> {
        self.try_acquire()
    }
}

/// While the active login is refused, how often a waiting request looks again even if
/// nothing woke it (a release notification can precede the connection's return by a ping).
const REFUSED_RECHECK: Duration = Duration::from_millis(25);

/// Hands out connections; see the module comment for what it retries.
#[derive(Debug)]
pub struct Acquirer<P> {
    pool: P,
    credentials: Arc<dyn Recover>,
    metrics: Arc<Metrics>,
    signals: Arc<PoolSignals>,
    timeout: Duration,
    /// The credentials generation whose login the database refused last (`u64::MAX`:
    /// none). While it is the current generation, a new connection would be refused too.
    refused: AtomicU64,
}

impl<P: Connections> Acquirer<P> {
    pub fn new(
        pool: P,
        credentials: Arc<dyn Recover>,
        metrics: Arc<Metrics>,
        signals: Arc<PoolSignals>,
        timeout: Duration,
    ) -> Self {
        Self { pool, credentials, metrics, signals, timeout, refused: AtomicU64::new(u64::MAX) }
    }

    /// A connection within the acquire timeout, or `Unavailable`.
    pub async fn acquire(&self) -> Result<P::Conn, DbError> {
        let started = tokio::time::Instant::now();
        let result = tokio::time::timeout(self.timeout, self.acquire_loop()).await;
        self.metrics.record_acquire(started.elapsed());
        match result {
            Ok(r) => r,
            Err(_) => {
                self.metrics.record_db_error("pool_timeout");
                Err(DbError::Unavailable(self.timeout))
            }
        }
    }

    async fn acquire_loop(&self) -> Result<P::Conn, DbError> {
        let mut connect_backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
        loop {
            let generation = self.credentials.generation();
            if self.refused.load(Ordering::Acquire) == generation {
                // The database refuses the login new connections would use: opening one
                // would only be refused again (each costs a TLS handshake and a SCRAM
                // exchange). Take a session someone releases (sessions opened before the
                // change stay valid), or wait for the refresh to move the generation.
                let released = self.signals.released.notified();
                if let Some(conn) = self.pool.try_idle() {
                    return Ok(conn);
                }
                self.credentials.kick(generation);
                tokio::select! {
                    () = released => tokio::time::sleep(Duration::from_millis(1)).await,
                    () = self.credentials.changed(generation) => {}
                    () = tokio::time::sleep(REFUSED_RECHECK) => {}
                }
                continue;
            }
            let err = match self.pool.acquire().await {
                Ok(conn) => return Ok(conn),
                Err(err) => err,
            };
            if matches!(err, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed) {
                self.metrics.record_db_error(&error_class(&err));
                return Err(DbError::Unavailable(self.timeout));
            }
            let failure = DbFailure::classify(&err);
            self.metrics.record_db_error(failure.label());
            if failure.is_auth() {
                self.metrics.record_auth_failure();
                self.metrics.record_retry(RetryReason::login_refused);
                // Opened under a login that has since been replaced: just try again.
                if self.credentials.generation() == generation {
                    self.refused.store(generation, Ordering::Release);
                    tracing::info!(
                        sqlstate = failure.label(),
                        generation,
                        "new connection refused; refreshing the login"
                    );
                    self.credentials.kick(generation);
                }
                continue;
            }
            if failure.is_transient() {
                let delay = connect_backoff.next_delay();
                self.metrics.record_retry(RetryReason::connect_failed);
                tracing::info!(error = %failure, retry_in_ms = delay.as_millis() as u64, "cannot open a database connection; retrying");
                tokio::time::sleep(delay).await;
                continue;
            }
            return Err(DbError::Sqlx { class: failure.label().to_owned(), source: err });
        }
    }
}

/// The future a [`Db::run`] closure returns, borrowing the connection it was given.
pub type Work<'c, T> = Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'c>>;

/// A session-lost error is retried this many times per call (each on another
/// connection); the request deadline bounds the whole anyway.
const MAX_SESSION_RETRIES: u32 = 4;

/// The handle routes use: the pool plus the way back to a working login.
#[derive(Debug, Clone)]
pub struct Db {
    pool: PgPool,
    acquirer: Arc<Acquirer<PgPool>>,
    credentials: Arc<dyn Recover>,
    metrics: Arc<Metrics>,
    signals: Arc<PoolSignals>,
}

impl Db {
    pub fn new(
        pool: PgPool,
        signals: Arc<PoolSignals>,
        credentials: Arc<dyn Recover>,
        metrics: Arc<Metrics>,
        acquire_timeout: Duration,
    ) -> Self {
        let acquirer = Arc::new(Acquirer::new(
            pool.clone(),
            credentials.clone(),
            metrics.clone(),
            signals.clone(),
            acquire_timeout,
        ));
        Self { pool, acquirer, credentials, metrics, signals }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn credentials(&self) -> &Arc<dyn Recover> {
        &self.credentials
    }

    pub fn gauges(&self) -> PoolGauges {
        PoolGauges { size: self.pool.size(), idle: self.pool.num_idle() }
    }

    /// Records a query error in the metrics and wraps it.
    pub fn query_error(&self, err: sqlx::Error) -> DbError {
        let class = error_class(&err);
        self.metrics.record_db_error(&class);
        DbError::Sqlx { class, source: err }
    }

    /// A pooled connection (see [`Acquirer`]). Prefer [`Self::run`], which also survives
    /// a session that dies under the work.
    pub async fn acquire(&self) -> Result<PoolConnection<Postgres>, DbError> {
        self.acquirer.acquire().await
    }

    /// Runs `work` on a pooled connection; if the session turns out dead (see the module
    /// comment), runs it again on another. `work` must be safe to run more than once: a
    /// read, or a write made idempotent (an idempotency key).
    pub async fn run<T, F>(&self, mut work: F) -> Result<T, DbError>
    where
        T: Send,
        F: for<'c> FnMut(&'c mut PgConnection) -> Work<'c, T> + Send,
    {
        let mut lost = 0;
        loop {
            let mut conn = self.acquire().await?;
            let err = match work(&mut conn).await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let failure = DbFailure::classify(&err);
            if !failure.is_session_lost() || lost >= MAX_SESSION_RETRIES {
                return Err(self.query_error(err));
            }
            lost += 1;
            conn.close_on_drop();
            drop(conn);
            self.signals.session_lost_now();
            self.metrics.record_db_error(failure.label());
            self.metrics.record_retry(RetryReason::session_lost);
            tracing::info!(error = %failure, attempt = lost, "database session lost; retrying on another connection");
            if lost > 1 {
                tokio::time::sleep(jitter(Duration::from_millis(10) * 2u32.pow(lost), 0.5)).await;
            }
        }
    }
}

#[cfg(test)]
mod acquire_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_spread_over_the_jitter_band_and_are_stable_per_connection() {
        let max = Duration::from_secs(100);
        let lifetimes: Vec<Duration> = (0..1000).map(|ms| jittered_lifetime(max, 0.2, ms * 7)).collect();
        assert!(lifetimes.iter().all(|l| *l > Duration::from_secs(80) && *l <= max));
        let below_90 = lifetimes.iter().filter(|l| **l < Duration::from_secs(90)).count();
        assert!((350..650).contains(&below_90), "{below_90} of 1000 in the lower half");
        assert_eq!(jittered_lifetime(max, 0.2, 12345), jittered_lifetime(max, 0.2, 12345));
        assert_eq!(jittered_lifetime(max, 0.0, 12345), max);
    }
}
