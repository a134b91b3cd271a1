//! HTTP surface. [`router`] builds the whole app from its state, with no socket, so tests
//! can drive it directly; `app.rs` serves it.

mod error;
mod health;
mod metrics;
mod notes;
mod whoami;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use error::ApiError;

use crate::metrics::Metrics;
use crate::pool::Db;

/// Everything handlers need, built once in `main`.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: Db,
    pub metrics: Arc<Metrics>,
    pub request_timeout: Duration,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health::live))
        .route("/ready", get(health::ready))
        .route("/whoami", get(whoami::whoami))
        .route("/metrics", get(metrics::render))
        .route("/notes", get(notes::list).post(notes::create))
        .route("/notes/{id}", get(notes::get_one))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Request timeout, then one JSON log line and one counter per request, labelled with the
/// route *template* (`/notes/{id}`), never the raw path.
async fn observe(State(state): State<AppState>, matched: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let response = match tokio::time::timeout(state.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(%route, %method, timeout_ms = state.request_timeout.as_millis() as u64, "request timed out");
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"error": "request timed out"})))
                .into_response()
        }
    };
    let status = response.status().as_u16();
    state.metrics.record_request(&method, &route, status);
    let latency_us = started.elapsed().as_micros() as u64;
    if response.status().is_server_error() {
        tracing::warn!(%route, %method, status, latency_us, "request");
    } else {
        tracing::info!(%route, %method, status, latency_us, "request");
    }
    response
}

#[cfg(test)]
mod tests;
