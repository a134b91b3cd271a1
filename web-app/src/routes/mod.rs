//! HTTP surface. [`router`] (public) and [`admin_router`] (metrics, whoami) build the app
//! from its state with no socket, so tests can drive them directly; `app.rs` serves them
//! on two listeners.
//!
//! Layers, outermost first: a client's `x-request-id` is kept only if it is short and
//! plain (else replaced), one is generated when missing, and it is echoed on the response;
//! `tower-http`'s trace layer opens a `request` span (request id, method, route template)
//! that every log line of the request carries, and logs one line when the response is
//! ready; then the request deadline and the metrics.

mod error;
mod health;
mod metrics;
mod notes;
mod whoami;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

pub use error::ApiError;

use crate::metrics::{Method, Metrics};
use crate::pool::Db;

/// Everything handlers need, built once at startup.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: Db,
    pub metrics: Arc<Metrics>,
    pub request_timeout: Duration,
}

/// Every route template either router serves: the only values the `route` label takes
/// besides `unmatched`.
const ROUTES: [&str; 6] = ["/health", "/ready", "/notes", "/notes/{id}", "/metrics", "/whoami"];

/// The public API.
pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/health", get(health::live))
        .route("/ready", get(health::ready))
        .route("/notes", get(notes::list).post(notes::create))
        .route("/notes/{id}", get(notes::get_one));
    with_layers(routes, state)
}

/// The admin listener: Prometheus metrics and which login is in use.
pub fn admin_router(state: AppState) -> Router {
    let routes = Router::new().route("/metrics", get(metrics::render)).route("/whoami", get(whoami::whoami));
    with_layers(routes, state)
}

fn with_layers(routes: Router<AppState>, state: AppState) -> Router {
    let x_request_id = HeaderName::from_static("x-request-id");
    routes
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(log_response)
                .on_body_chunk(())
                .on_eos(())
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(SetRequestIdLayer::new(x_request_id, RandomId))
        .layer(middleware::map_request(drop_unsafe_request_id))
        .with_state(state)
}

fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    matched.and_then(|m| ROUTES.iter().find(|r| **r == m.as_str()).copied()).unwrap_or("unmatched")
}

fn request_span<B>(req: &axum::http::Request<B>) -> Span {
    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
    tracing::info_span!(
        "request",
        request_id = id,
        method = ?Method::from_http(req.method()),
        route = route_label(req.extensions().get::<MatchedPath>()),
    )
}

/// One line per request, inside its span (so it carries the request id and route).
fn log_response<B>(res: &axum::http::Response<B>, latency: Duration, _span: &Span) {
    let status = res.status().as_u16();
    let latency_us = latency.as_micros() as u64;
    if res.status().is_server_error() {
        tracing::warn!(status, latency_us, "request");
    } else {
        tracing::info!(status, latency_us, "request");
    }
}

/// Request ids are opaque 32-hex-digit random numbers.
#[derive(Debug, Clone, Copy)]
struct RandomId;

impl MakeRequestId for RandomId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&format!("{:032x}", rand::random::<u128>())).ok().map(RequestId::new)
    }
}

/// A client's request id is kept (to correlate with its own logs) only if it is at most
/// 64 characters of `[A-Za-z0-9._-]`; anything else is replaced by our own.
async fn drop_unsafe_request_id(mut req: Request) -> Request {
    let safe = |v: &HeaderValue| {
        let b = v.as_bytes();
        !b.is_empty() && b.len() <= 64 && b.iter().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
    };
    if req.headers().get("x-request-id").is_some_and(|v| !safe(v)) {
        req.headers_mut().remove("x-request-id");
    }
    req
}

/// Request deadline, then one counter and one latency observation per request, labelled
/// with the route *template* (`/notes/{id}`), never the raw path.
async fn observe(State(state): State<AppState>, matched: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let route = route_label(matched.as_ref());
    let method = Method::from_http(req.method());
    let started = Instant::now();
    let response = match tokio::time::timeout(state.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(timeout_ms = state.request_timeout.as_millis() as u64, "request timed out");
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"error": "request timed out"})))
                .into_response()
        }
    };
    state.metrics.record_request(method, route, response.status().as_u16(), started.elapsed());
    response
}

#[cfg(test)]
mod tests;
