//! Logging in to PostgreSQL with one secret version's credentials.
//!
//! TLS is verified (`verify-full`: chain and host name) unless the secret says
//! `"ssl": false` or the operator set `DB_TLS=disable`. There is no silent
//! fallback: a server without TLS is an error that says so.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{ConnectOptions, Connection};

use crate::config::Config;
use crate::deadline::Deadline;
use crate::error::{Credential, DbFailure, RotationError};
use crate::secret::{DbSecret, Tls};

/// Opens connections; holds only configuration, never credentials.
#[derive(Debug, Clone)]
pub struct Connector {
    ca_bundle: Option<PathBuf>,
    tls_disabled: bool,
}

/// A logged-in session, remembering whose it is for error messages.
#[derive(Debug)]
pub struct Session {
    pub conn: PgConnection,
    pub credential: Credential,
    pub user: String,
    pub host: String,
    pub port: u16,
}

impl Connector {
    pub fn new(config: &Config) -> Self {
        Self { ca_bundle: config.ca_bundle.clone(), tls_disabled: config.tls_disabled }
    }

    /// Logs in as `secret`'s user. The returned error is the classified
    /// failure, so callers can tell "wrong password" from "unreachable".
    pub async fn login(
        &self,
        secret: &DbSecret,
        credential: Credential,
        deadline: &Deadline,
    ) -> Result<Session, RotationError> {
        let database_error = |failure| RotationError::Database {
            credential,
            user: secret.username.clone(),
            host: secret.host.clone(),
            port: secret.port,
            failure,
        };
        let options = self.options(secret, deadline.remaining());
        let conn = deadline
            .run_for(
                deadline.connect_budget(),
                || format!("connecting to {}:{} as {credential} user {:?}", secret.host, secret.port, secret.username),
                crate::nodelay::connect(&options, &secret.host, secret.port),
            )
            .await?
            .map_err(|e| database_error(classify(&e)))?;
        Ok(Session { conn, credential, user: secret.username.clone(), host: secret.host.clone(), port: secret.port })
    }

    fn options(&self, secret: &DbSecret, statement_budget: Duration) -> PgConnectOptions {
        let plaintext = self.tls_disabled || secret.tls == Tls::Disabled;
        let mut options = PgConnectOptions::new_without_pgpass()
            .host(&secret.host)
            .port(secret.port)
            .username(&secret.username)
            .password(secret.password().expose_secret())
            .database(&secret.dbname)
            .application_name("rotation-fn")
            .ssl_mode(if plaintext { PgSslMode::Disable } else { PgSslMode::VerifyFull })
            // Statements stop on the server, too, when the invocation runs out.
            .options([("statement_timeout", statement_budget.as_millis().max(1).to_string())])
            // sqlx logs statement text through `log`; ours carry verifiers.
            .disable_statement_logging();
        if let (false, Some(ca)) = (plaintext, &self.ca_bundle) {
            options = options.ssl_root_cert(ca);
        }
        options
    }
}

impl Session {
    pub fn error(&self, failure: DbFailure) -> RotationError {
        RotationError::Database {
            credential: self.credential,
            user: self.user.clone(),
            host: self.host.clone(),
            port: self.port,
            failure,
        }
    }

    pub async fn execute(&mut self, sql: &str, deadline: &Deadline) -> Result<(), RotationError> {
        let query = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()));
        deadline
            .run(
                || format!("a statement as {} user {:?} on {}:{}", self.credential, self.user, self.host, self.port),
                query.execute(&mut self.conn),
            )
            .await?
            .map(drop)
            .map_err(|e| self.error(classify(&e)))
    }

    pub async fn close(self) {
        // Best effort: the server drops the session anyway when the socket closes.
        let _ = self.conn.close().await;
    }
}

/// Sorts a sqlx error into what an operator acts on. Texts come from the
/// server or the TLS/IO layer; none of them contain the password, which sqlx
/// only ever feeds into the SCRAM exchange.
pub fn classify(error: &sqlx::Error) -> DbFailure {
    match error {
        sqlx::Error::Database(db) => {
            let sqlstate = db.code().map(|c| c.into_owned()).unwrap_or_else(|| "unknown".to_owned());
            if sqlstate == "28P01" || sqlstate == "28000" {
                DbFailure::Auth(sqlstate)
            } else {
                DbFailure::Server { sqlstate, message: db.message().to_owned() }
            }
        }
        sqlx::Error::Tls(e) => DbFailure::Tls(e.to_string()),
        // rustls reports a failed handshake (unknown issuer, wrong name,
        // expired) as invalid data on the stream: not retryable.
        sqlx::Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => DbFailure::Tls(e.to_string()),
        sqlx::Error::Io(e) => DbFailure::Unreachable(e.to_string()),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => DbFailure::Unreachable(error.to_string()),
        other => {
            let text = other.to_string();
            // sqlx reports a server that refuses TLS as a protocol/config error.
            if text.contains("TLS") || text.contains("SSL") || text.contains("certificate") {
                DbFailure::Tls(text)
            } else {
                DbFailure::Other(text)
            }
        }
    }
}
