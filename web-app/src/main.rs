//! `web-app` serves; `web-app migrate` applies the schema with the owner's login and
//! exits; `web-app healthcheck` probes a running server (container HEALTHCHECK).

use std::process::ExitCode;

use web_app::{Config, MigrateConfig, StartupError};

fn main() -> ExitCode {
    let migrate = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("migrate") => true,
        Some("healthcheck") => return web_app::run_healthcheck(),
        Some(other) => {
            eprintln!("web-app: unknown subcommand {other:?} (expected none, `migrate` or `healthcheck`)");
            return ExitCode::from(2);
        }
    };
    let _log = web_app::init_telemetry();
    let runtime = || tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(StartupError::Serve);
    let result = if migrate {
        MigrateConfig::from_env()
            .map_err(StartupError::from)
            .and_then(|config| runtime()?.block_on(web_app::migrate(config)))
    } else {
        Config::from_env().map_err(StartupError::from).and_then(|config| runtime()?.block_on(web_app::run(config)))
    };
    let what = if migrate { "migration" } else { "startup" };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{what} failed");
            eprintln!("web-app: {what} failed: {e}");
            ExitCode::FAILURE
        }
    }
}
