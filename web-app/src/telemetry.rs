//! Structured JSON logs on stdout, one object per line. Filter with `RUST_LOG`
//! (default `info`). Fields are identifiers only: routes, request ids, versions, SQLSTATEs.
//!
//! - Lines are written by a dedicated thread (`tracing-appender`'s non-blocking writer):
//!   a request worker only queues its line, never waits on stdout (a slow log collector
//!   or a full pipe cannot stall requests). If the queue is full, lines are dropped, not
//!   waited for.
//! - Events inside a request carry its span (`request_id`, `method`, `route`).
//! - Libraries that log through the `log` crate (sqlx's notices and slow-statement
//!   warnings, rustls) reach the same JSON log through `tracing-log`.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Installs the subscriber. Keep the guard until the process exits: dropping it flushes.
pub fn init() -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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
