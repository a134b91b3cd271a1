//! The Lambda Runtime API, emulated, driving the real `bootstrap` binary.
//!
//! Lambda runs the binary, which long-polls `GET …/invocation/next`, handles
//! the event and posts `…/{id}/response` or `…/{id}/error`. The emulator
//! plays Lambda's side of those endpoints, so a test invokes the function
//! exactly as Secrets Manager's Invoke does, and reads everything the process
//! printed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot};

/// A function error as Lambda reports it (`X-Amz-Function-Error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionError {
    pub error_type: String,
    pub error_message: String,
}

type Outcome = Result<Value, FunctionError>;

struct Invocation {
    id: String,
    body: Value,
    deadline_ms: u64,
}

#[derive(Clone)]
struct Shared {
    next: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>>,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Outcome>>>>,
    /// When the process first asked for work: the end of its cold start.
    first_poll: Arc<Mutex<Option<Instant>>>,
}

/// The real binary, running under the emulated Runtime API.
#[derive(Debug)]
pub struct Function {
    child: Child,
    queue: mpsc::UnboundedSender<Invocation>,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Outcome>>>>,
    first_poll: Arc<Mutex<Option<Instant>>>,
    spawned_at: Instant,
    output: Arc<Mutex<String>>,
    server: tokio::task::JoinHandle<()>,
    /// How long each invocation may run (Lambda's timeout).
    pub timeout: Duration,
}

impl std::fmt::Debug for Invocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invocation").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Where `cargo build` put the binary; `BOOTSTRAP_BIN` overrides.
pub fn bootstrap_path() -> PathBuf {
    binary_path("BOOTSTRAP_BIN", "bootstrap")
}

/// `target/<profile>/<name>` of this workspace, or the path in `env_override`.
pub fn binary_path(env_override: &str, name: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env_override) {
        return PathBuf::from(path);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug").join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` first", path.display());
    path
}

impl Function {
    /// Starts the emulator and the binary at `path` with `env` (plus the
    /// variables Lambda always sets).
    pub async fn spawn(path: &std::path::Path, env: &[(&str, String)]) -> Function {
        let (queue, receiver) = mpsc::unbounded_channel();
        let shared = Shared {
            next: Arc::new(tokio::sync::Mutex::new(receiver)),
            waiting: Arc::default(),
            first_poll: Arc::default(),
        };
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind runtime api");
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });

        let spawned_at = Instant::now();
        let runtime_api = address.to_string();
        let lambda = [
            ("AWS_LAMBDA_RUNTIME_API", runtime_api.as_str()),
            ("AWS_LAMBDA_FUNCTION_NAME", "rotation-fn"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ];
        let vars = lambda.into_iter().chain(env.iter().map(|(k, v)| (*k, v.as_str())));
        let (child, output) = crate::process::spawn_captured(path, vars);
        Function {
            child,
            queue,
            waiting: shared.waiting,
            first_poll: shared.first_poll,
            spawned_at,
            output,
            server,
            timeout: Duration::from_secs(30),
        }
    }

    /// Invokes the function synchronously, as Secrets Manager does.
    pub async fn invoke(&mut self, event: &Value) -> Result<Value, FunctionError> {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("waiting").insert(id.clone(), tx);
        let deadline = SystemTime::now() + self.timeout;
        let deadline_ms = deadline.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default();
        self.queue.send(Invocation { id, body: event.clone(), deadline_ms }).expect("queue");
        tokio::select! {
            outcome = rx => outcome.expect("the emulator dropped the invocation"),
            status = self.child.wait() => panic!("the function exited during an invocation: {status:?}\n{}", self.output()),
            () = tokio::time::sleep(self.timeout + Duration::from_secs(5)) => panic!("the invocation timed out\n{}", self.output()),
        }
    }

    /// Time from spawning the process to its first request for work.
    pub async fn cold_start(&self) -> Duration {
        loop {
            if let Some(at) = *self.first_poll.lock().expect("first poll") {
                return at - self.spawned_at;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        self.output.lock().expect("output").clone()
    }

    /// Stops the process and returns all it printed.
    pub async fn stop(mut self) -> String {
        let _ = self.child.kill().await;
        // Let the readers drain what the pipe still holds.
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.server.abort();
        self.output()
    }

    /// Waits for the process to exit on its own (a failed init) and returns
    /// its exit code.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.ok()?.ok()?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        status.code()
    }
}

async fn next(State(shared): State<Shared>) -> (StatusCode, HeaderMap, String) {
    shared.first_poll.lock().expect("first poll").get_or_insert_with(Instant::now);
    let invocation = shared.next.lock().await.recv().await;
    let Some(invocation) = invocation else {
        return (StatusCode::GONE, HeaderMap::new(), String::new());
    };
    let mut headers = HeaderMap::new();
    let header = |v: &str| HeaderValue::from_str(v).expect("header value");
    headers.insert("lambda-runtime-aws-request-id", header(&invocation.id));
    headers.insert("lambda-runtime-deadline-ms", header(&invocation.deadline_ms.to_string()));
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        header("arn:aws:lambda:us-east-1:123456789012:function:rotation-fn"),
    );
    headers.insert("lambda-runtime-trace-id", header("Root=1-00000000-000000000000000000000000"));
    headers.insert("content-type", header("application/json"));
    (StatusCode::OK, headers, invocation.body.to_string())
}

async fn response(State(shared): State<Shared>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    settle(&shared, &id, Ok(value))
}

async fn error(State(shared): State<Shared>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let field = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    settle(&shared, &id, Err(FunctionError { error_type: field("errorType"), error_message: field("errorMessage") }))
}

async fn init_error() -> StatusCode {
    StatusCode::ACCEPTED
}

fn settle(shared: &Shared, id: &str, outcome: Outcome) -> StatusCode {
    match shared.waiting.lock().expect("waiting").remove(id) {
        Some(tx) => {
            let _ = tx.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::NOT_FOUND,
    }
}
