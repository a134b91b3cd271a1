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
//!   short backoff. All within `APP_POOL_ACQUIRE_TIMEOUT`. One login at a time: whatever
//!   may open a connection queues for one gate (see `acquire.rs`), so a password change
//!   costs at most one refused login, whatever the pool size and the requests waiting.
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
//!
//! # Rooms
//!
//! `build.rs` makes the sqlx pool (lifetimes, the hooks, the signals between them),
//! `logins.rs` verifies and installs logins, `acquire.rs` hands out connections (one
//! login at a time), `db.rs` is the handle routes use (`Db::run`). Nothing here imports
//! from `app` or the routes: imports point down.

use std::time::Duration;

use crate::credentials::CredentialsError;
use db_secret::DbFailure;

mod acquire;
mod build;
mod db;
mod logins;

pub use acquire::{Acquirer, Connections};
pub use build::{PoolSignals, build_pool};
pub use db::{Db, Work};
pub use logins::{PgTarget, PgVerifier};

/// The metric label of a database error: its SQLSTATE, or a coarse class.
pub fn error_class(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::PoolTimedOut => "pool_timeout".to_owned(),
        sqlx::Error::PoolClosed => "pool_closed".to_owned(),
        other => DbFailure::classify(other).label().to_owned(),
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

#[cfg(test)]
mod acquire_tests;
