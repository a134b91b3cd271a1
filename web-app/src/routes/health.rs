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

/// Readiness: a pooled connection runs a query (through the same refused-login recovery
/// as every request).
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let result = async {
        let mut conn = state.db.acquire().await?;
        conn.execute("SELECT 1").await.map_err(|e| state.db.query_error(e))?;
        Ok::<_, crate::pool::DbError>(())
    }
    .await;
    match result {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "not ready" })))
        }
    }
}
