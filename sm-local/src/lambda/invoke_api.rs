//! Lambda's Invoke API, `POST /2015-03-31/functions/{name}/invocations`, so
//! that `aws lambda invoke --endpoint-url …` reaches the same functions the
//! rotations use.
//!
//! Answered as Lambda does: the function's result with 200; a function error
//! also with 200, plus `X-Amz-Function-Error: Unhandled` and
//! `{"errorType", "errorMessage"}` (a client must not retry it as a server
//! fault); an unknown function with 404 `ResourceNotFoundException`.
//! `X-Amz-Invocation-Type: Event` is accepted with 202 and runs in the
//! background; `DryRun` answers 204. `LogType: Tail` is not supported.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::info;

use crate::app::App;
use crate::aws::{AwsError, add_request_id};

pub async fn invoke(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let latest = query.get("Qualifier").is_none_or(|q| q == "$LATEST");
    let Some(function) = app.functions.resolve(&name).filter(|_| latest) else {
        let arn = if name.starts_with("arn:") { name.clone() } else { app.config.lambda_arn(&name) };
        return AwsError::new(404, "ResourceNotFoundException", format!("Function not found: {arn}")).into_response();
    };
    let payload = if body.is_empty() { Bytes::from_static(b"{}") } else { body };
    let invocation_type =
        headers.get("x-amz-invocation-type").and_then(|v| v.to_str().ok()).unwrap_or("RequestResponse");
    match invocation_type {
        "RequestResponse" => {}
        "Event" => {
            let (name, background) = (function.name().to_owned(), app.clone());
            app.spawn(async move {
                if let Some(function) = background.functions.get(&name) {
                    let _ = function.invoke(payload).await;
                }
            });
            return answer(StatusCode::ACCEPTED, Bytes::new(), None);
        }
        "DryRun" => return answer(StatusCode::NO_CONTENT, Bytes::new(), None),
        other => {
            let message = format!("Invalid invocation type {other:?}: expected RequestResponse, Event or DryRun");
            return AwsError::new(400, "InvalidParameterValueException", message).into_response();
        }
    }

    let started = Instant::now();
    let result = function.invoke(payload).await;
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(output) => {
            info!(function = function.name(), duration_ms, "lambda invoke");
            answer(StatusCode::OK, output, None)
        }
        Err(e) => {
            info!(function = function.name(), error_type = %e.error_type, duration_ms, "lambda invoke: function error");
            let body = serde_json::to_vec(&e).unwrap_or_default();
            answer(StatusCode::OK, Bytes::from(body), Some("Unhandled"))
        }
    }
}

fn answer(status: StatusCode, body: Bytes, function_error: Option<&'static str>) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("x-amz-executed-version", HeaderValue::from_static("$LATEST"));
    if let Some(kind) = function_error {
        headers.insert("x-amz-function-error", HeaderValue::from_static(kind));
    }
    add_request_id(headers);
    response
}
