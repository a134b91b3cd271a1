use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use sqlx::Executor;

use super::AppState;

/// Liveness: the process answers. Never touches the database, so a database outage does
/// not get the container killed.
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: a pooled connection runs a query (through the same login recovery and
/// dead-session retry as every request).
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.db.run(|conn| Box::pin(async move { conn.execute("SELECT 1").await.map(drop) })).await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "not ready" })))
        }
    }
}
