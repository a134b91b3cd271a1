//! Lambda's Runtime API, the side a custom runtime talks to: one server per
//! process (so a process that died cannot answer for its successor).
//!
//! The process long-polls `GET …/invocation/next`, handles the event, then
//! posts `…/{id}/response` or `…/{id}/error`. A process that fails before it
//! asks for work may post `…/init/error` and exit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::FunctionError;

pub type Outcome = Result<Bytes, FunctionError>;

/// An invocation handed to the process.
pub struct Delivery {
    pub id: String,
    pub payload: Bytes,
    pub deadline_ms: u64,
    pub function_arn: String,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery").field("id", &self.id).finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct RuntimeState {
    next: tokio::sync::Mutex<mpsc::UnboundedReceiver<Delivery>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init_error: Mutex<Option<FunctionError>>,
    spawned: Instant,
    /// From the process's start to its first request for work: Lambda's
    /// "Init Duration".
    ready_after: OnceLock<Duration>,
}

impl RuntimeState {
    pub fn new() -> (Arc<Self>, mpsc::UnboundedSender<Delivery>) {
        let (queue, next) = mpsc::unbounded_channel();
        let state = Self {
            next: tokio::sync::Mutex::new(next),
            waiting: Mutex::default(),
            init_error: Mutex::default(),
            spawned: Instant::now(),
            ready_after: OnceLock::new(),
        };
        (Arc::new(state), queue)
    }

    /// Registers an invocation; the receiver resolves when the process answers.
    pub fn expect(&self, id: &str) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner).insert(id.to_owned(), tx);
        rx
    }

    /// How long the process took to ask for its first invocation, once it has.
    pub fn init_duration(&self) -> Option<Duration> {
        self.ready_after.get().copied()
    }

    /// The error the process reported before it asked for work, if any.
    pub fn take_init_error(&self) -> Option<FunctionError> {
        self.init_error.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    fn settle(&self, id: &str, outcome: Outcome) -> StatusCode {
        match self.waiting.lock().unwrap_or_else(PoisonError::into_inner).remove(id) {
            Some(tx) => {
                let _ = tx.send(outcome);
                StatusCode::ACCEPTED
            }
            None => StatusCode::BAD_REQUEST,
        }
    }
}

pub fn router(state: Arc<RuntimeState>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(state)
}

async fn next(State(state): State<Arc<RuntimeState>>) -> (StatusCode, HeaderMap, Bytes) {
    state.ready_after.get_or_init(|| state.spawned.elapsed());
    let delivery = state.next.lock().await.recv().await;
    let Some(delivery) = delivery else {
        return (StatusCode::GONE, HeaderMap::new(), Bytes::new());
    };
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    put("lambda-runtime-aws-request-id", &delivery.id);
    put("lambda-runtime-deadline-ms", &delivery.deadline_ms.to_string());
    put("lambda-runtime-invoked-function-arn", &delivery.function_arn);
    put("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000000;Sampled=0");
    put("content-type", "application/json");
    (StatusCode::OK, headers, delivery.payload)
}

async fn response(State(state): State<Arc<RuntimeState>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    state.settle(&id, Ok(body))
}

async fn error(
    State(state): State<Arc<RuntimeState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    state.settle(&id, Err(reported_error(&headers, &body)))
}

async fn init_error(State(state): State<Arc<RuntimeState>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    *state.init_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(reported_error(&headers, &body));
    StatusCode::ACCEPTED
}

/// `{"errorType", "errorMessage"}`, or the `Lambda-Runtime-Function-Error-Type`
/// header when the body says nothing.
fn reported_error(headers: &HeaderMap, body: &[u8]) -> FunctionError {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let field = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_owned);
    let header = headers.get("lambda-runtime-function-error-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    FunctionError {
        error_type: field("errorType").or(header).unwrap_or_else(|| "Unhandled".to_owned()),
        error_message: field("errorMessage").unwrap_or_default(),
    }
}
