//! Structured JSON logs on stdout, one object per line. Filter with `RUST_LOG`
//! (default `info`). Fields are identifiers only: routes, request ids, versions, SQLSTATEs.
//!
//! - Lines are written by a dedicated thread (`tracing-appender`'s non-blocking writer):
//!   a request worker only queues its line, never waits on stdout (a slow log collector
//!   or a full pipe cannot stall requests). If the queue is full, lines are dropped, not
//!   waited for.
//! - Events inside a request carry its span (`request_id`, `method`, `route`).
//! - Libraries that log through the `log` crate (sqlx's slow-statement warnings,
//!   rustls) reach the same JSON log through `tracing-log`. sqlx's server notices
//!   do not, whatever `RUST_LOG` says: they are the server's own text, and a server
//!   can put a secret in them (`db_secret::redact` covers the errors the app keeps).

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Installs the subscriber. Keep the guard until the process exits: dropping it flushes.
pub fn init() -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if let Ok(off) = "sqlx::postgres::notice=off".parse() {
        filter = filter.add_directive(off);
    }
    // `try_init` also installs the `log` → `tracing` bridge (feature `tracing-log`).
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .with_writer(writer)
        .with_env_filter(filter)
        .try_init();
    guard
}
