//! Handing out connections: one login at a time, waiting out a refused login and a server
//! that is briefly unreachable.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;

use super::{DbError, PoolSignals, error_class};
use crate::backoff::Backoff;
use crate::credentials::Recover;
use crate::metrics::{Metrics, RetryReason};
use db_secret::DbFailure;

/// A source of connections: the sqlx pool, or a fake in the unit tests.
pub trait Connections: Send + Sync + 'static {
    type Conn: Send;
    /// An idle connection or a new one, as the pool decides.
    fn acquire(&self) -> impl Future<Output = Result<Self::Conn, sqlx::Error>> + Send;
    /// An idle connection, without waiting or opening one.
    fn try_idle(&self) -> Option<Self::Conn>;
    /// Connections open (idle or in use).
    fn size(&self) -> u32;
}

impl Connections for PgPool {
    type Conn = PoolConnection<Postgres>;

    fn acquire(&self) -> impl Future<Output = Result<Self::Conn, sqlx::Error>> + Send {
        PgPool::acquire(self)
    }

    fn try_idle(&self) -> Option<Self::Conn> {
        self.try_acquire()
    }

    fn size(&self) -> u32 {
        PgPool::size(self)
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
    /// One login at a time: whoever may open a connection (the pool's `acquire` opens one
    /// when nothing is idle and it has room) holds this, so when the database refuses a
    /// login no other attempt with it is already under way, whatever the pool size and
    /// the number of waiting requests: one refused login per rotation, not one per slot.
    gate: tokio::sync::Mutex<()>,
}

impl<P: Connections> Acquirer<P> {
    pub fn new(
        pool: P,
        credentials: Arc<dyn Recover>,
        metrics: Arc<Metrics>,
        signals: Arc<PoolSignals>,
        timeout: Duration,
    ) -> Self {
        Self { pool, credentials, metrics, signals, timeout, gate: tokio::sync::Mutex::new(()) }
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
            if self.credentials.refused(generation) {
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
            if let Some(conn) = self.pool.try_idle() {
                return Ok(conn);
            }
            let gate = tokio::select! {
                gate = self.gate.lock() => gate,
                // A refresh moved on while this request queued: look again.
                () = self.credentials.changed(generation) => continue,
            };
            let generation = self.credentials.generation();
            if self.credentials.refused(generation) {
                continue; // Refused while this request queued for the gate.
            }
            let result = self.pool.acquire().await;
            drop(gate);
            let err = match result {
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
                    tracing::info!(
                        sqlstate = failure.label(),
                        generation,
                        "new connection refused; refreshing the login"
                    );
                    self.credentials.report_refused(generation);
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

impl<P: Connections> Acquirer<P> {
    /// Opens connections until the pool holds `min`, through the same one-login-at-a-time
    /// gate as requests, and never while the login is refused. Holds what it opened until
    /// the floor is reached (so each step opens a new one), then returns them to the pool.
    pub async fn top_up(&self, min: u32) {
        let mut held = Vec::new();
        while self.pool.size() < min {
            let gate = self.gate.lock().await;
            // Judged with the gate held: a refusal may have come in while this queued.
            let generation = self.credentials.generation();
            if self.credentials.refused(generation) || self.pool.size() >= min {
                break;
            }
            let opened = tokio::time::timeout(self.timeout, self.pool.acquire()).await;
            drop(gate);
            match opened {
                Ok(Ok(conn)) => held.push(conn),
                Ok(Err(err)) => {
                    let failure = DbFailure::classify(&err);
                    if failure.is_auth() && self.credentials.generation() == generation {
                        self.metrics.record_auth_failure();
                        tracing::info!(
                            sqlstate = failure.label(),
                            generation,
                            "new connection refused; refreshing the login"
                        );
                        self.credentials.report_refused(generation);
                    }
                    break;
                }
                Err(_) => break,
            }
        }
    }
}
