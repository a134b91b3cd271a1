//! Logins: verifying a candidate with one throwaway connection, and installing the one
//! the credentials chose into the pool.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPool;
use sqlx::{Connection, Executor};

use super::PoolSignals;
use crate::credentials::{CredentialTarget, Verify, VerifyError};
use db_secret::{Connector, DbFailure, DbSecret};

/// Installs logins into the pool and verifies candidates with a throwaway connection.
#[derive(Debug, Clone)]
pub struct PgTarget {
    pub pool: PgPool,
    pub connector: Connector,
    pub signals: Arc<PoolSignals>,
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
        Ok(Err(failure)) if failure.is_transient() => {
            Err(VerifyError::Unreachable(format!("{}:{}: {failure}", secret.host, secret.port)))
        }
        // Neither refused nor passing trouble (TLS, a missing database, an authentication
        // method the connector refuses): this version does not work; try the others.
        Ok(Err(failure)) => {
            tracing::warn!(host = %secret.host, port = secret.port, error = %failure, "a login failed for a reason waiting will not cure");
            Err(VerifyError::Rejected { sqlstate: failure.label().to_owned() })
        }
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
            Ok(options) => {
                self.pool.set_connect_options(options);
                self.signals.login_switched_now();
            }
            // Verified just before with the same policy, so this is a local
            // failure (no socket directory); new connections keep the old login.
            Err(e) => tracing::error!(error = %e, "cannot install the new login in the pool"),
        }
    }
}
