//! The handle routes use: a connection, and work retried when its session dies.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool};

use super::{Acquirer, DbError, PoolSignals, error_class};
use crate::backoff::jitter;
use crate::credentials::Recover;
use crate::metrics::{Metrics, PoolGauges, RetryReason};
use db_secret::DbFailure;

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

    /// Keeps at least `min` connections open (`APP_POOL_MIN_CONNECTIONS`): checked at
    /// once, then every second. Runs until the pool closes.
    pub async fn keep_warm(self, min: u32) {
        while !self.pool.is_closed() {
            self.acquirer.top_up(min).await;
            tokio::time::sleep(jitter(Duration::from_secs(1), 0.1)).await;
        }
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
