//! Logging in to PostgreSQL with one secret version's credentials, through the
//! shared connection policy (`db_secret::Connector`: the operator's TLS floor,
//! verified TLS with roots loaded once, `TCP_NODELAY`).

use std::time::Duration;

use db_secret::{Connector, DbFailure, DbSecret};
use sqlx::ConnectOptions as _;
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use crate::deadline::Deadline;
use crate::error::{Credential, RotationError};

/// A logged-in session, remembering whose it is for error messages.
#[derive(Debug)]
pub struct Session {
    conn: PgConnection,
    pub credential: Credential,
    pub user: String,
    pub host: String,
    pub port: u16,
}

/// Logs in as `secret`'s user. The error is the classified failure, so
/// callers can tell "wrong password" from "unreachable".
pub(crate) async fn login(
    connector: &Connector,
    secret: &DbSecret,
    credential: Credential,
    deadline: &Deadline,
) -> Result<Session, RotationError> {
    let budget = deadline.remaining().as_millis().max(1).to_string();
    let connect = connector.connect(secret, |options| {
        // A role may configure its own sessions (`ALTER ROLE CURRENT_USER SET
        // …`), and single-user rotation logs in as the rotated role. Settings
        // sent at connection start outrank the role's and database's, so the
        // role cannot make this session read-only, act as another role, find
        // our catalog queries in a schema of its own, or wait forever.
        // Statements stop on the server, too, when the invocation runs out.
        // sqlx would log statement text through `log`, and ours carry verifiers.
        options
            .options([
                ("statement_timeout", budget.as_str()),
                ("lock_timeout", budget.as_str()),
                ("default_transaction_read_only", "off"),
                ("search_path", "pg_catalog"),
                ("role", "none"),
            ])
            .disable_statement_logging()
    });
    let what = || format!("connecting to {}:{} as {credential} user {:?}", secret.host, secret.port, secret.username);
    let conn = deadline.run_for(deadline.connect_budget(), what, connect).await?.map_err(|failure| {
        RotationError::Database {
            credential,
            user: secret.username.clone(),
            host: secret.host.clone(),
            port: secret.port,
            failure,
        }
    })?;
    crate::fault::point("login");
    Ok(Session { conn, credential, user: secret.username.clone(), host: secret.host.clone(), port: secret.port })
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

    /// Runs a statement built at run time (utility statements cannot take
    /// bind parameters; see `sql.rs` for the quoting).
    pub async fn execute(&mut self, sql: &str, deadline: &Deadline) -> Result<(), RotationError> {
        let sql = sql.to_owned();
        self.run("a statement", deadline, async |conn| {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(conn).await.map(drop)
        })
        .await
    }

    /// Runs one query on the session within the deadline, with failures
    /// classified and attributed to this session's credential.
    pub async fn run<T>(
        &mut self,
        what: &str,
        deadline: &Deadline,
        query: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, RotationError> {
        let operation = || format!("{what} as {} user {:?} on {}:{}", self.credential, self.user, self.host, self.port);
        let result = deadline.run(operation, query(&mut self.conn)).await?;
        crate::fault::point("statement");
        result.map_err(|e| self.error(DbFailure::classify(&e)))
    }

    pub async fn close(self) {
        // Best effort, and briefly: the server drops the session anyway when
        // the socket closes.
        let _ = tokio::time::timeout(Duration::from_millis(200), self.conn.close()).await;
    }
}
