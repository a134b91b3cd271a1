//! The control API under `/_sm-local/`, for tests and operators: fault
//! rules, the call log, rotations and their outcome, the functions.
//!
//! | route | answer |
//! |---|---|
//! | `POST /_sm-local/faults` ([`FaultSpec`]) | `201 {"id": 1}` |
//! | `GET /_sm-local/faults` | `{"faults": [{"id", "operation", "secret"?, "action", "times", "remaining"}]}` |
//! | `DELETE /_sm-local/faults` | `204` |
//! | `GET /_sm-local/calls[?function=NAME\|client][&operation=OP]` | `{"calls": [CallRecord]}` |
//! | `DELETE /_sm-local/calls` | `204` |
//! | `GET /_sm-local/rotations[?secret=ID]` | `{"rotations": [RotationRecord]}`, oldest first |
//! | `GET /_sm-local/rotations/{token}[?wait=SECONDS]` | `RotationRecord`, or 404; with `wait`, once it is no longer `InProgress` (or the wait is over) |
//! | `GET /_sm-local/functions` | `{"functions": [FunctionStats]}` |
//! | `GET /_sm-local/functions/{name}` | `FunctionStats`, or 404 |
//! | `GET /_sm-local/functions/{name}/output` | what the function printed (text) |
//!
//! Errors are `{"error": "…"}` with a 4xx status.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::app::App;
use crate::faults::FaultSpec;

/// The longest `?wait=` honoured.
const MAX_WAIT: Duration = Duration::from_secs(300);

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/_sm-local/health", get(health))
        .route("/_sm-local/faults", get(list_faults).post(add_fault).delete(clear_faults))
        .route("/_sm-local/calls", get(list_calls).delete(clear_calls))
        .route("/_sm-local/rotations", get(list_rotations))
        .route("/_sm-local/rotations/{token}", get(get_rotation))
        .route("/_sm-local/functions", get(list_functions))
        .route("/_sm-local/functions/{name}", get(get_function))
        .route("/_sm-local/functions/{name}/output", get(function_output))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn add_fault(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let spec: FaultSpec = match serde_json::from_slice(&body) {
        Ok(spec) => spec,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a fault rule: {e}")),
    };
    match app.faults().add(spec) {
        Ok(id) => (StatusCode::CREATED, Json(json!({ "id": id }))).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn list_faults(State(app): State<Arc<App>>) -> Response {
    Json(json!({ "faults": app.faults().list() })).into_response()
}

async fn clear_faults(State(app): State<Arc<App>>) -> StatusCode {
    app.faults().clear();
    StatusCode::NO_CONTENT
}

async fn list_calls(State(app): State<Arc<App>>, Query(query): Query<HashMap<String, String>>) -> Response {
    let calls: Vec<_> = app
        .calls
        .list()
        .into_iter()
        .filter(|c| match query.get("function").map(String::as_str) {
            None => true,
            Some("client") => c.function.is_none(),
            Some(name) => c.function.as_deref() == Some(name),
        })
        .filter(|c| query.get("operation").is_none_or(|op| &c.operation == op))
        .collect();
    Json(json!({ "calls": calls })).into_response()
}

async fn clear_calls(State(app): State<Arc<App>>) -> StatusCode {
    app.calls.clear();
    StatusCode::NO_CONTENT
}

async fn list_rotations(State(app): State<Arc<App>>, Query(query): Query<HashMap<String, String>>) -> Response {
    Json(json!({ "rotations": app.rotations.records(query.get("secret").map(String::as_str)) })).into_response()
}

async fn get_rotation(
    State(app): State<Arc<App>>,
    Path(token): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let record = match query.get("wait") {
        None => app.rotations.record(&token),
        Some(seconds) => {
            let Some(wait) = seconds.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0) else {
                return error(StatusCode::BAD_REQUEST, "wait must be a number of seconds");
            };
            app.rotations.wait(&token, Duration::from_secs_f64(wait).min(MAX_WAIT)).await
        }
    };
    match record {
        Some(record) => Json(record).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no rotation with token {token}")),
    }
}

async fn list_functions(State(app): State<Arc<App>>) -> Response {
    Json(json!({ "functions": app.functions.stats() })).into_response()
}

async fn get_function(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    match app.functions.get(&name) {
        Some(f) => Json(f.stats()).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no function named {name}")),
    }
}

async fn function_output(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    match app.functions.get(&name) {
        Some(f) => f.output().into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no function named {name}")),
    }
}
