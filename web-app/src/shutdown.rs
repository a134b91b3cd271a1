//! Waiting for the signal to stop: SIGTERM (what `docker stop` and ECS/systemd send) or
//! Ctrl-C. The server then stops accepting, finishes in-flight requests, and exits.

use tokio::signal::unix::{SignalKind, signal};

pub async fn signal_received() {
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C will stop the server");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => tracing::info!(signal = "SIGTERM", "shutting down; finishing in-flight requests"),
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "shutting down; finishing in-flight requests"),
    }
}
