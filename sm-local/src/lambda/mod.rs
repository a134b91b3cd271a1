//! Lambda, locally: the configured functions, each a real executable driven
//! through its own Runtime API, started on first use and kept warm.
//!
//! What Lambda does and this does too:
//! - a cold start on the first invocation, and after the process died;
//! - one invocation at a time per process (this keeps one process per
//!   function, so invocations of a function are serialised, as with reserved
//!   concurrency 1; Secrets Manager never runs two steps of a secret at once);
//! - the timeout: when an invocation has not answered in time the process is
//!   killed and the invocation fails with `Sandbox.Timedout`, "Task timed out
//!   after N.00 seconds"; the clock starts when the invocation is handed over,
//!   so a cold start counts against the first invocation;
//! - a process that exits or is killed during an invocation fails it with
//!   `Runtime.ExitError` ("Runtime exited with error: signal: killed"), or
//!   with the error it posted to `/init/error`;
//! - the reserved environment (`AWS_LAMBDA_FUNCTION_NAME`, `…_MEMORY_SIZE`,
//!   `…_VERSION`, `AWS_LAMBDA_RUNTIME_API`, `_HANDLER`, region, credentials);
//! - `START`, `END` and `REPORT` lines around each invocation in its output.
//!
//! Memory size is passed to the function but not enforced.
//!
//! Each function gets its own access key id, so the endpoint can tell the
//! calls a function makes from a client's (see [`Functions::by_access_key`]).
//! Its `AWS_ENDPOINT_URL` points at the endpoint unless its configuration
//! says otherwise.

pub mod invoke_api;
mod runtime_api;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use self::runtime_api::{Delivery, RuntimeState};
use crate::config::{Config, FunctionConfig};

/// How much of a function's output is kept (the oldest goes first).
const OUTPUT_CAPACITY: usize = 4 << 20;

/// A function error as Lambda reports it: the body of an Invoke answer
/// carrying `X-Amz-Function-Error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionError {
    #[serde(rename = "errorType")]
    pub error_type: String,
    #[serde(rename = "errorMessage")]
    pub error_message: String,
}

/// What a test or an operator can see of a function.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FunctionStats {
    pub name: String,
    pub arn: String,
    /// The process serving invocations now, if one is running.
    pub pid: Option<u32>,
    pub timeout_seconds: u64,
    pub memory_mb: u32,
    pub invocations: u64,
    /// Invocations that ended in a function error (timeouts and crashes too).
    pub errors: u64,
    pub timeouts: u64,
    /// Processes that exited or were killed during an invocation.
    pub crashes: u64,
    pub cold_starts: u64,
    /// Cold starts after the first: processes started to replace one.
    pub restarts: u64,
    /// The last cold start's Init Duration (process start to its first
    /// request for work), in microseconds.
    pub last_init_us: Option<u64>,
}

#[derive(Debug)]
pub struct Functions {
    functions: BTreeMap<String, Function>,
    by_key: HashMap<String, String>,
}

impl Functions {
    /// `endpoint` is the URL the functions' SDKs are pointed at.
    pub fn new(config: &Config, endpoint: &str) -> Self {
        let functions: BTreeMap<String, Function> =
            config.functions.iter().map(|f| (f.name.clone(), Function::new(f.clone(), config, endpoint))).collect();
        let by_key = functions.values().map(|f| (f.access_key.clone(), f.config.name.clone())).collect();
        Self { functions, by_key }
    }

    pub fn get(&self, name: &str) -> Option<&Function> {
        self.functions.get(name)
    }

    /// The function a `RotationLambdaARN` (or Invoke's `FunctionName`) names.
    pub fn resolve(&self, arn_or_name: &str) -> Option<&Function> {
        self.functions.get(function_name(arn_or_name))
    }

    pub fn names(&self) -> Vec<&str> {
        self.functions.keys().map(String::as_str).collect()
    }

    /// The function whose credentials signed a request.
    pub fn by_access_key(&self, key: &str) -> Option<&str> {
        self.by_key.get(key).map(String::as_str)
    }

    pub fn stats(&self) -> Vec<FunctionStats> {
        self.functions.values().map(Function::stats).collect()
    }

    /// Kills every process (the ones in an invocation fail it).
    pub fn shutdown(&self) {
        for f in self.functions.values() {
            f.shutdown();
        }
    }

    /// Kills every process and waits until each is gone.
    pub async fn stop(&self) {
        for f in self.functions.values() {
            f.stop.send_replace(true);
            if let Some(mut instance) = f.slot.lock().await.take() {
                let _ = instance.child.kill().await;
            }
        }
    }
}

/// `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`,
/// `ACCOUNT:function:NAME`, `NAME[:QUALIFIER]` → `NAME`.
pub fn function_name(arn_or_name: &str) -> &str {
    match arn_or_name.split_once(":function:") {
        Some((_, rest)) => rest.split(':').next().unwrap_or(rest),
        None => arn_or_name.split(':').next().unwrap_or(arn_or_name),
    }
}

#[derive(Debug)]
pub struct Function {
    config: FunctionConfig,
    arn: String,
    access_key: String,
    region: String,
    endpoint: String,
    forward_output: bool,
    /// The running process, if any; held for the whole of an invocation.
    slot: tokio::sync::Mutex<Option<Instance>>,
    stats: Mutex<FunctionStats>,
    output: Arc<Mutex<String>>,
    stop: watch::Sender<bool>,
}

/// One process and the Runtime API server it talks to.
#[derive(Debug)]
struct Instance {
    child: Child,
    runtime: Arc<RuntimeState>,
    queue: mpsc::UnboundedSender<Delivery>,
    server: JoinHandle<()>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.server.abort();
        let _ = self.child.start_kill();
    }
}

enum End {
    Answered(runtime_api::Outcome),
    Exited(std::io::Result<ExitStatus>),
    TimedOut,
    Stopped,
}

impl Function {
    fn new(config: FunctionConfig, endpoint_config: &Config, endpoint: &str) -> Self {
        let arn = endpoint_config.lambda_arn(&config.name);
        let stats = FunctionStats {
            name: config.name.clone(),
            arn: arn.clone(),
            timeout_seconds: config.timeout.as_secs(),
            memory_mb: config.memory_mb,
            ..FunctionStats::default()
        };
        Self {
            access_key: format!("sm-local-function-{}", config.name),
            arn,
            region: endpoint_config.region.clone(),
            endpoint: endpoint.to_owned(),
            forward_output: endpoint_config.forward_function_output,
            slot: tokio::sync::Mutex::new(None),
            stats: Mutex::new(stats),
            output: Arc::default(),
            stop: watch::Sender::new(false),
            config,
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn arn(&self) -> &str {
        &self.arn
    }

    pub fn stats(&self) -> FunctionStats {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Everything the function's processes printed, plus Lambda's
    /// START/END/REPORT lines.
    pub fn output(&self) -> String {
        self.output.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn update(&self, change: impl FnOnce(&mut FunctionStats)) {
        change(&mut self.stats.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn line(&self, line: &str) {
        push_line(&self.output, line, self.forward_output.then_some(self.config.name.as_str()));
    }

    /// Invokes the function synchronously (Lambda's `RequestResponse`).
    pub async fn invoke(&self, payload: Bytes) -> Result<Bytes, FunctionError> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut slot = self.slot.lock().await;
        if *self.stop.borrow() {
            return Err(FunctionError {
                error_type: "ServiceException".into(),
                error_message: format!("RequestId: {request_id} Error: sm-local is shutting down"),
            });
        }
        self.update(|s| s.invocations += 1);
        if let Some(instance) = slot.as_mut()
            && let Ok(Some(status)) = instance.child.try_wait()
        {
            self.line(&format!("sm-local: the process exited while idle ({})", exit_text(status)));
            *slot = None;
        }
        let cold = slot.is_none();
        if cold {
            match self.spawn().await {
                Ok(instance) => {
                    let pid = instance.child.id();
                    *slot = Some(instance);
                    self.update(|s| {
                        s.cold_starts += 1;
                        s.restarts = s.cold_starts - 1;
                        s.pid = pid;
                    });
                }
                Err(e) => {
                    self.update(|s| s.errors += 1);
                    return Err(FunctionError {
                        error_type: "Runtime.InvalidEntrypoint".into(),
                        error_message: format!(
                            "RequestId: {request_id} Error: cannot start {}: {e}",
                            self.config.path.display()
                        ),
                    });
                }
            }
        }
        let Some(instance) = slot.as_mut() else {
            return Err(FunctionError { error_type: "ServiceException".into(), error_message: "no process".into() });
        };

        let timeout = self.config.timeout;
        let started = Instant::now();
        let deadline_ms = (SystemTime::now() + timeout).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let answer = instance.runtime.expect(&request_id);
        self.line(&format!("START RequestId: {request_id} Version: $LATEST"));
        let _ = instance.queue.send(Delivery {
            id: request_id.clone(),
            payload,
            deadline_ms: u64::try_from(deadline_ms).unwrap_or(u64::MAX),
            function_arn: self.arn.clone(),
        });
        let mut stop = self.stop.subscribe();
        let end = tokio::select! {
            biased;
            outcome = answer => End::Answered(outcome.unwrap_or_else(|_| Err(FunctionError {
                error_type: "ServiceException".into(),
                error_message: "the Runtime API dropped the invocation".into(),
            }))),
            status = instance.child.wait() => End::Exited(status),
            () = tokio::time::sleep(timeout) => End::TimedOut,
            _ = stop.wait_for(|stop| *stop) => End::Stopped,
        };

        let result = match end {
            End::Answered(outcome) => outcome,
            End::Exited(status) => {
                let init_error = instance.runtime.take_init_error();
                let text = status.map_or_else(|e| e.to_string(), exit_text);
                *slot = None;
                self.update(|s| {
                    s.crashes += 1;
                    s.pid = None;
                });
                Err(init_error.unwrap_or_else(|| FunctionError {
                    error_type: "Runtime.ExitError".into(),
                    error_message: format!("RequestId: {request_id} Error: Runtime exited with error: {text}"),
                }))
            }
            End::TimedOut => {
                let _ = instance.child.kill().await;
                *slot = None;
                self.update(|s| {
                    s.timeouts += 1;
                    s.pid = None;
                });
                let seconds = timeout.as_secs_f64();
                self.line(&format!("{request_id} Task timed out after {seconds:.2} seconds"));
                Err(FunctionError {
                    error_type: "Sandbox.Timedout".into(),
                    error_message: format!("RequestId: {request_id} Error: Task timed out after {seconds:.2} seconds"),
                })
            }
            End::Stopped => {
                let _ = instance.child.kill().await;
                *slot = None;
                self.update(|s| s.pid = None);
                Err(FunctionError {
                    error_type: "ServiceException".into(),
                    error_message: format!("RequestId: {request_id} Error: sm-local is shutting down"),
                })
            }
        };
        if result.is_err() {
            self.update(|s| s.errors += 1);
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let init = cold.then(|| slot.as_ref().and_then(|i| i.runtime.init_duration())).flatten();
        let init_ms = init.map(|d| d.as_secs_f64() * 1000.0);
        if let Some(init) = init {
            self.update(|s| s.last_init_us = Some(u64::try_from(init.as_micros()).unwrap_or(u64::MAX)));
        }
        self.line(&format!("END RequestId: {request_id}"));
        self.line(&format!(
            "REPORT RequestId: {request_id}\tDuration: {ms:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB{}",
            ms.ceil(),
            self.config.memory_mb,
            init_ms.map(|i| format!("\tInit Duration: {i:.2} ms")).unwrap_or_default()
        ));
        result
    }

    async fn spawn(&self) -> std::io::Result<Instance> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let runtime_api = listener.local_addr()?;
        let (runtime, queue) = RuntimeState::new();
        let app = runtime_api::router(runtime.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let mut command = Command::new(&self.config.path);
        command
            .env_clear()
            .envs(self.environment(runtime_api))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C in the terminal that runs the
            // endpoint (or a harness embedding it) reaches the endpoint, which
            // then stops the function; the function never gets it mid-step.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                server.abort();
                return Err(e);
            }
        };
        let prefix = self.forward_output.then(|| self.config.name.clone());
        let streams: [Option<Box<dyn AsyncRead + Unpin + Send>>; 2] = [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn AsyncRead + Unpin + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn AsyncRead + Unpin + Send>),
        ];
        for stream in streams.into_iter().flatten() {
            let output = self.output.clone();
            let prefix = prefix.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    push_line(&output, &line, prefix.as_deref());
                }
            });
        }
        Ok(Instance { child, runtime, queue, server })
    }

    /// The process's whole environment: PATH and locale, the configured
    /// variables over two defaults, then what Lambda reserves.
    fn environment(&self, runtime_api: SocketAddr) -> BTreeMap<String, String> {
        let name = &self.config.name;
        let task_root = self.config.path.parent().map(|p| p.display().to_string()).unwrap_or_default();
        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_owned(), v);
        };
        set("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()));
        set("LANG", "en_US.UTF-8".into());
        set("TZ", ":UTC".into());
        set("AWS_ENDPOINT_URL", self.endpoint.clone());
        set("AWS_EC2_METADATA_DISABLED", "true".into());
        for (k, v) in &self.config.environment {
            set(k, v.clone());
        }
        set("_HANDLER", self.config.handler.clone());
        set("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string());
        set("AWS_LAMBDA_FUNCTION_NAME", name.clone());
        set("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", self.config.memory_mb.to_string());
        set("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into());
        set("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into());
        set("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"));
        set("AWS_LAMBDA_LOG_STREAM_NAME", format!("sm-local/[$LATEST]{}", uuid::Uuid::new_v4().simple()));
        set("AWS_REGION", self.region.clone());
        set("AWS_DEFAULT_REGION", self.region.clone());
        set("AWS_ACCESS_KEY_ID", self.access_key.clone());
        set("AWS_SECRET_ACCESS_KEY", "sm-local".into());
        set("AWS_SESSION_TOKEN", "sm-local".into());
        set("LAMBDA_TASK_ROOT", task_root);
        set("LAMBDA_RUNTIME_DIR", "/var/runtime".into());
        env
    }

    fn shutdown(&self) {
        self.stop.send_replace(true);
        if let Ok(mut slot) = self.slot.try_lock() {
            *slot = None;
        }
    }
}

fn push_line(output: &Mutex<String>, line: &str, forward_as: Option<&str>) {
    if let Some(name) = forward_as {
        eprintln!("{name} | {line}");
    }
    let mut output = output.lock().unwrap_or_else(PoisonError::into_inner);
    if output.len() + line.len() + 1 > OUTPUT_CAPACITY {
        let cut = output.len().min(OUTPUT_CAPACITY / 4);
        let cut = (cut..output.len()).find(|i| output.is_char_boundary(*i)).unwrap_or(output.len());
        output.drain(..cut);
    }
    output.push_str(line);
    output.push('\n');
}

/// How Lambda describes a process's end: Go's `ExitError` text.
fn exit_text(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(9) => "signal: killed".into(),
        Some(15) => "signal: terminated".into(),
        Some(6) => "signal: aborted".into(),
        Some(11) => "signal: segmentation fault".into(),
        Some(2) => "signal: interrupt".into(),
        Some(n) => format!("signal: {n}"),
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;

    use super::*;

    #[test]
    fn function_names_from_arns() {
        assert_eq!(function_name("arn:aws:lambda:us-east-1:123456789012:function:rotation-fn"), "rotation-fn");
        assert_eq!(function_name("arn:aws:lambda:us-east-1:123456789012:function:rotation-fn:$LATEST"), "rotation-fn");
        assert_eq!(function_name("123456789012:function:rotation-fn"), "rotation-fn");
        assert_eq!(function_name("rotation-fn:prod"), "rotation-fn");
        assert_eq!(function_name("rotation-fn"), "rotation-fn");
    }

    #[test]
    fn exits_are_described_as_lambda_does() {
        assert_eq!(exit_text(ExitStatus::from_raw(9)), "signal: killed");
        assert_eq!(exit_text(ExitStatus::from_raw(1 << 8)), "exit status 1");
        assert_eq!(exit_text(ExitStatus::from_raw(0)), "exit status 0");
    }

    #[test]
    fn output_keeps_the_newest_lines() {
        let output = Mutex::new(String::new());
        let line = "x".repeat(1 << 20);
        for _ in 0..10 {
            push_line(&output, &line, None);
        }
        push_line(&output, "last", None);
        let text = output.lock().expect("lock").clone();
        assert!(text.len() <= OUTPUT_CAPACITY, "{}", text.len());
        assert!(text.ends_with("last\n"));
    }

    #[test]
    fn the_environment_is_lambdas() {
        let config = Config::new("http://127.0.0.1:5000")
            .function(FunctionConfig::new("fn", "/var/task/bootstrap").env("ROTATION_STRATEGY", "single-user"));
        let functions = Functions::new(&config, "http://127.0.0.1:4566");
        let f = functions.get("fn").expect("configured");
        let env = f.environment("127.0.0.1:9001".parse().expect("addr"));
        assert_eq!(env["AWS_LAMBDA_RUNTIME_API"], "127.0.0.1:9001");
        assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "fn");
        assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "128");
        assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "$LATEST");
        assert_eq!(env["AWS_ENDPOINT_URL"], "http://127.0.0.1:4566");
        assert_eq!(env["ROTATION_STRATEGY"], "single-user");
        assert_eq!(env["LAMBDA_TASK_ROOT"], "/var/task");
        assert_eq!(functions.by_access_key(&env["AWS_ACCESS_KEY_ID"]), Some("fn"));
        assert_eq!(functions.by_access_key("testing"), None);
    }
}
