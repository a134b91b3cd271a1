//! The `sm-local` binary: read the flags, start the endpoint, print its URL,
//! serve until SIGINT or SIGTERM.

use std::io::Write as _;
use std::process::ExitCode;

use sm_local::SmLocal;
use sm_local::args::{self, Command};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let config = match args::parse(std::env::args().skip(1)) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            let _ = std::io::stdout().write_all(args::HELP.as_bytes());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("sm-local: {e}");
            return ExitCode::from(2);
        }
    };
    let endpoint = match SmLocal::start(config).await {
        Ok(endpoint) => endpoint,
        Err(e) => {
            eprintln!("sm-local: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The one line a script waits for.
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{}", endpoint.endpoint());
    let _ = stdout.flush();

    wait_for_signal().await;
    tracing::info!("shutting down");
    endpoint.stop().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// Logs on stderr (stdout carries only the URL). Dependencies that could
/// print request details at debug or trace are capped whatever RUST_LOG says.
fn init_logging() {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for directive in ["hyper=info", "hyper_util=info", "axum=info", "tower=info"] {
        if let Ok(d) = directive.parse() {
            filter = filter.add_directive(d);
        }
    }
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}
