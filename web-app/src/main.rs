//! `web-app` serves; `web-app healthcheck` probes a running server (container HEALTHCHECK).

use std::process::ExitCode;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("healthcheck") => return web_app::healthcheck::run(),
        Some(other) => {
            eprintln!("web-app: unknown subcommand {other:?} (expected none or `healthcheck`)");
            return ExitCode::from(2);
        }
    }
    web_app::telemetry::init();
    let result = web_app::config::Config::from_env().map_err(web_app::app::StartupError::from).and_then(|config| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(web_app::app::StartupError::Serve)?
            .block_on(web_app::app::run(config))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "startup failed");
            eprintln!("web-app: startup failed: {e}");
            ExitCode::FAILURE
        }
    }
}
