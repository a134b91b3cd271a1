//! The PostgreSQL pool: bounded, jittered connection lifetimes so the pool keeps cycling
//! onto the newest login, and an `acquire` that survives a refused login.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection, Executor, Postgres};

use crate::app::StartupError;
use crate::backoff::jitter;
use crate::config::Config;
use crate::credentials::{CredentialTarget, CredentialsError, Recover, Verify, VerifyError};
use crate::metrics::{Metrics, PoolGauges};
use db_secret::{Connector, DbFailure, DbSecret};

/// The metric label of a database error: its SQLSTATE, or a coarse class.
pub fn error_class(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::PoolTimedOut => "pool_timeout".to_owned(),
        sqlx::Error::PoolClosed => "pool_closed".to_owned(),
        other => DbFailure::classify(other).label().to_owned(),
    }
}

pub fn is_auth_failure(err: &sqlx::Error) -> bool {
    DbFailure::classify(err).is_auth()
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

/// Builds the pool for `initial`. Lazy: connections open on demand (and `min` in the
/// background), always with whatever login the credentials state machine installed last.
pub fn build_pool(config: &Config, initial: &DbSecret, connector: &Connector) -> Result<PgPool, StartupError> {
    let max = config.conn_max_lifetime;
    let spread = config.conn_lifetime_jitter;
    let epoch = process_epoch();
    Ok(PgPoolOptions::new()
        .max_connections(config.pool_max_connections)
        .min_connections(config.pool_min_connections)
        .acquire_timeout(config.pool_acquire_timeout)
        // Hard cap (also applied to idle connections by the pool's reaper).
        .max_lifetime(max)
        .idle_timeout(Some(max))
        // The pool pings before handing out a connection by default; our connections
        // are young (bounded lifetime) and the server does not kill them, so skip the
        // extra round trip per request.
        .test_before_acquire(false)
        .after_release(move |_conn, meta| {
            Box::pin(async move {
                let created = Instant::now().saturating_duration_since(epoch).saturating_sub(meta.age);
                let created_ms = u64::try_from(created.as_millis()).unwrap_or(u64::MAX);
                Ok(meta.age < jittered_lifetime(max, spread, created_ms))
            })
        })
        .connect_lazy_with(connector.pool_options(initial).map_err(StartupError::Connect)?))
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
}

/// The handle routes use: the pool plus the way back to a working login.
#[derive(Debug, Clone)]
pub struct Db {
    pool: PgPool,
    credentials: Arc<dyn Recover>,
    metrics: Arc<Metrics>,
    /// The credentials generation whose login the database refused last (`u64::MAX`:
    /// none). While it is the current generation, a new connection would be refused too.
    refused: Arc<AtomicU64>,
}

/// A request retries a refused login this many times (each after a refresh); the
/// request timeout bounds the total anyway.
const MAX_LOGIN_RETRIES: u32 = 6;

impl Db {
    pub fn new(pool: PgPool, credentials: Arc<dyn Recover>, metrics: Arc<Metrics>) -> Self {
        Self { pool, credentials, metrics, refused: Arc::new(AtomicU64::new(u64::MAX)) }
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

    /// A pooled connection. If opening a new one is refused (the password just rotated),
    /// refresh the login and try again instead of failing the request.
    ///
    /// While the current login is known to be refused, requests take an idle connection
    /// if there is one (sessions opened before the change stay valid) and otherwise wait
    /// for the refresh: another attempt would only be refused again, and each costs a
    /// TLS handshake and a SCRAM exchange. Without this, a pool of waiting requests turns
    /// one rotation into a burst of doomed logins.
    pub async fn acquire(&self) -> Result<PoolConnection<Postgres>, DbError> {
        let mut retries = 0;
        loop {
            let generation = self.credentials.generation();
            if self.refused.load(Ordering::Acquire) == generation {
                if let Some(conn) = self.pool.try_acquire() {
                    return Ok(conn);
                }
                retries += 1;
                if let Err(e) = self.wait_for_refresh(generation, retries).await
                    && retries >= MAX_LOGIN_RETRIES
                {
                    return Err(e.into());
                }
                continue;
            }
            match self.pool.acquire().await {
                Ok(conn) => return Ok(conn),
                Err(err) if is_auth_failure(&err) && retries < MAX_LOGIN_RETRIES => {
                    retries += 1;
                    self.metrics.record_auth_failure();
                    // `acquire` may have queued for a while: if the login changed since
                    // `generation` was read, we cannot tell which one was refused, and
                    // blaming the new one would stall every request on a refresh it does
                    // not need. Just try again; a refusal of the new login comes back here.
                    if self.credentials.generation() != generation {
                        tracing::info!(
                            generation,
                            retries,
                            "connection refused under a login that has since been replaced; retrying"
                        );
                        continue;
                    }
                    self.refused.store(generation, Ordering::Release);
                    tracing::info!(sqlstate = %error_class(&err), generation, retries, "new connection refused; refreshing the login");
                    let _ = self.wait_for_refresh(generation, retries).await;
                }
                Err(err) => {
                    if is_auth_failure(&err) {
                        self.metrics.record_auth_failure();
                    }
                    return Err(self.query_error(err));
                }
            }
        }
    }

    /// Joins (or starts) the one refresh for `generation`. On failure, waits a little
    /// rather than spin; the request deadline bounds the whole.
    async fn wait_for_refresh(&self, generation: u64, retries: u32) -> Result<(), CredentialsError> {
        let result = self.credentials.recover(generation).await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, "refresh did not produce a working login yet");
            tokio::time::sleep(jitter(Duration::from_millis(100) * retries, 0.5)).await;
        }
        result
    }
}

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
