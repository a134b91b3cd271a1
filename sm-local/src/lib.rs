//! A local Secrets Manager endpoint in front of moto that really rotates.
//!
//! moto stores secrets, versions and labels well, but cannot rotate: it
//! cannot invoke a Lambda outside itself, its "rotation in progress" check is
//! inverted, and without a Lambda ARN it moves AWSCURRENT onto an empty
//! version. This endpoint sits in front of it:
//!
//! ```text
//!   aws CLI / SDK ──► sm-local ──► moto (secrets, versions, labels)
//!                       │  ▲
//!      Runtime API ◄────┘  └──── the function's own Secrets Manager calls
//!          │
//!      bootstrap (the real rotation function, one warm process per function)
//! ```
//!
//! - Secrets Manager calls pass through to moto unchanged, except what moto
//!   gets wrong for rotation (the `secretsmanager` module lists each), and
//!   RotateSecret/CancelRotateSecret, which are implemented here as the
//!   service runs them (the `rotation` module), including rotation
//!   schedules ([`schedule`]).
//! - The functions are configured at start ([`Config`]); a rotation invokes
//!   the one its `RotationLambdaARN` names through a local Lambda Runtime API
//!   ([`lambda`]), which also serves Lambda's Invoke API.
//! - Tests get fault injection, a call log, rotation outcomes and function
//!   statistics, through [`SmLocal`]'s methods or the control API under
//!   `/_sm-local/` (see the `control` module).
//!
//! Nothing here logs a request or response body: GetSecretValue answers and
//! PutSecretValue requests carry secret values.

pub mod args;
pub mod aws;
pub mod calls;
pub mod config;
pub mod faults;
pub mod lambda;
pub mod schedule;
pub mod stages;

mod app;
mod control;
mod cron;
mod rotation;
mod secretsmanager;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, post};
use tokio::task::JoinHandle;

use crate::app::App;
pub use crate::aws::AwsError;
pub use crate::calls::CallRecord;
pub use crate::config::{Config, ConfigError, FunctionConfig};
pub use crate::faults::{Action, FaultError, FaultRule, FaultSpec};
pub use crate::lambda::{FunctionError, FunctionStats};
use crate::rotation::StartRequest;
pub use crate::rotation::{RotationRecord, RotationStatus, STEPS, StepFailure, StepRecord, Trigger};

/// How often the rotation schedules are looked at.
const SCHEDULE_TICK: Duration = Duration::from_millis(200);
/// Lambda's synchronous payload limit.
const BODY_LIMIT: usize = 6 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("moto is not reachable at {url}: {reason}")]
    Moto { url: String, reason: String },
}

/// Every route: the Secrets Manager API on `/`, Lambda's Invoke API, the
/// control API, and moto for anything else.
fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", any(secretsmanager::handle))
        .route("/2015-03-31/functions/{name}/invocations", post(lambda::invoke_api::invoke))
        .merge(control::routes())
        .fallback(secretsmanager::fallback)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(app)
}

/// A running endpoint. Dropping it stops the server and the schedule and
/// kills every function process.
#[derive(Debug)]
pub struct SmLocal {
    addr: SocketAddr,
    app: Arc<App>,
    server: JoinHandle<()>,
    scheduler: JoinHandle<()>,
}

impl SmLocal {
    /// Validates `config`, checks that moto answers, binds and serves.
    pub async fn start(config: Config) -> Result<SmLocal, StartError> {
        config.validate()?;
        check_moto(&config.moto).await?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StartError::Listen { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen { addr: config.listen, source })?;
        let app = Arc::new(App::new(config, &format!("http://{addr}")));
        let routes = router(app.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, routes).await {
                tracing::error!(error = %e, "the endpoint stopped serving");
            }
        });
        let schedule = app.clone();
        let scheduler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SCHEDULE_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                schedule.fire_due_rotations().await;
            }
        });
        tracing::info!(%addr, moto = %app.config.moto, functions = ?app.functions.names(), "sm-local ready");
        Ok(SmLocal { addr, app, server, scheduler })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to give SDKs and the CLI (`--endpoint-url`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The ARN that makes a rotation invoke `function`.
    pub fn lambda_arn(&self, function: &str) -> String {
        self.app.config.lambda_arn(function)
    }

    pub fn add_fault(&self, spec: FaultSpec) -> Result<u64, FaultError> {
        self.app.faults().add(spec)
    }

    pub fn faults(&self) -> Vec<FaultRule> {
        self.app.faults().list()
    }

    pub fn clear_faults(&self) {
        self.app.faults().clear();
    }

    /// Every Secrets Manager call answered so far, oldest first.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.app.calls.list()
    }

    pub fn clear_calls(&self) {
        self.app.calls.clear();
    }

    pub fn rotation(&self, token: &str) -> Option<RotationRecord> {
        self.app.rotations.record(token)
    }

    /// Every rotation started, oldest first, optionally of one secret.
    pub fn rotations(&self, secret: Option<&str>) -> Vec<RotationRecord> {
        self.app.rotations.records(secret)
    }

    /// Waits until rotation `token` is no longer in progress (or `timeout`
    /// passes) and returns it as it is then.
    pub async fn wait_rotation(&self, token: &str, timeout: Duration) -> Option<RotationRecord> {
        self.app.rotations.wait(token, timeout).await
    }

    /// For a harness that plays Secrets Manager step by step: what
    /// RotateSecret with `token` and `function` would do before invoking the
    /// function (refuse while another rotation is unfinished, add the
    /// placeholder), and nothing more. The caller invokes the steps with
    /// [`SmLocal::invoke`]; a RotateSecret with the same token runs them all.
    pub async fn prepare_rotation(&self, secret_id: &str, token: &str, function: &str) -> Result<(), AwsError> {
        let request = StartRequest {
            secret_id: secret_id.to_owned(),
            token: Some(token.to_owned()),
            lambda_arn: Some(self.lambda_arn(function)),
            rules: None,
            rotate_immediately: true,
            trigger: Trigger::Harness,
            region: self.app.config.region.clone(),
        };
        self.app.prepare_rotation(request).await
    }

    /// Invokes `function` with `payload` as Lambda's Invoke does (cold start,
    /// timeout, crash and error reporting included).
    pub async fn invoke(
        &self,
        function: &str,
        payload: &serde_json::Value,
    ) -> Result<serde_json::Value, FunctionError> {
        let Some(f) = self.app.functions.get(function) else {
            return Err(FunctionError {
                error_type: "ResourceNotFoundException".into(),
                error_message: format!("Function not found: {function}"),
            });
        };
        let answer = f.invoke(axum::body::Bytes::from(payload.to_string())).await?;
        Ok(serde_json::from_slice(&answer).unwrap_or(serde_json::Value::Null))
    }

    pub fn function_stats(&self, name: &str) -> Option<FunctionStats> {
        self.app.functions.get(name).map(lambda::Function::stats)
    }

    /// Everything function `name` printed, with Lambda's START/END/REPORT lines.
    pub fn function_output(&self, name: &str) -> Option<String> {
        self.app.functions.get(name).map(lambda::Function::output)
    }

    /// Stops serving and kills every function process, and waits until
    /// they are gone.
    pub async fn stop(&self) {
        self.server.abort();
        self.scheduler.abort();
        self.app.stop().await;
    }

    /// Stops serving and kills every function process (without waiting).
    pub fn shutdown(&self) {
        self.server.abort();
        self.scheduler.abort();
        self.app.shutdown();
    }
}

impl Drop for SmLocal {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// moto answers on its host and port (the URL is validated already).
async fn check_moto(url: &str) -> Result<(), StartError> {
    let fail = |reason: String| StartError::Moto { url: url.to_owned(), reason };
    let uri: axum::http::Uri = url.parse().map_err(|_| fail("not a URL".into()))?;
    let host = uri.host().ok_or_else(|| fail("no host".into()))?.trim_matches(['[', ']']);
    let port = uri.port_u16().unwrap_or(80);
    let connect = tokio::net::TcpStream::connect((host, port));
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(fail(e.to_string())),
        Err(_) => Err(fail("no answer within 5 s".into())),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt as _;
    use serde_json::{Value, json};
    use tower::ServiceExt as _;

    use super::*;

    /// An endpoint whose moto is nowhere: only what never reaches moto works.
    fn app() -> Arc<App> {
        Arc::new(App::new(Config::new("http://127.0.0.1:9"), "http://127.0.0.1:4566"))
    }

    async fn send(app: &Arc<App>, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
        let response = router(app.clone()).oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    fn post(uri: &str, body: &str) -> Request<Body> {
        Request::post(uri).body(Body::from(body.to_owned())).expect("request")
    }

    fn get(uri: &str) -> Request<Body> {
        Request::get(uri).body(Body::empty()).expect("request")
    }

    fn secretsmanager(operation: &str, input: &Value) -> Request<Body> {
        Request::post("/")
            .header("x-amz-target", format!("secretsmanager.{operation}"))
            .header("content-type", "application/x-amz-json-1.1")
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/secretsmanager/aws4_request",
            )
            .body(Body::from(input.to_string()))
            .expect("request")
    }

    #[tokio::test]
    async fn an_injected_error_is_answered_as_aws_does_and_logged() {
        let app = app();
        let rule = r#"{"operation":"GetSecretValue","secret":"db","action":{"type":"error","code":"ThrottlingException"},"times":1}"#;
        let (status, _, body) = send(&app, post("/_sm-local/faults", rule)).await;
        assert_eq!((status, body), (StatusCode::CREATED, json!({"id": 1})));

        let input = json!({"SecretId": "db", "VersionStage": "AWSCURRENT"});
        let (status, headers, body) = send(&app, secretsmanager("GetSecretValue", &input)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(headers["x-amzn-errortype"], "ThrottlingException");
        assert_eq!(body, json!({"__type": "ThrottlingException", "message": "Rate exceeded"}));

        let (_, _, faults) = send(&app, get("/_sm-local/faults")).await;
        assert_eq!(faults["faults"][0]["remaining"], 0);
        assert_eq!(
            faults["faults"][0]["action"],
            json!({"type": "error", "code": "ThrottlingException", "status": 400})
        );
        let (_, _, calls) = send(&app, get("/_sm-local/calls?function=client")).await;
        let call = &calls["calls"][0];
        assert_eq!(call["operation"], "GetSecretValue");
        assert_eq!(call["secret_id"], "db");
        assert_eq!(call["version_stage"], "AWSCURRENT");
        assert_eq!(
            (call["status"].clone(), call["error"].clone(), call["fault"].clone()),
            (json!(400), json!("ThrottlingException"), json!("error"))
        );
        let (_, _, none) = send(&app, get("/_sm-local/calls?function=rotation-fn")).await;
        assert_eq!(none["calls"], json!([]));
    }

    #[tokio::test]
    async fn moto_out_of_reach_is_a_service_error_not_a_hang() {
        let app = app();
        let (status, headers, body) = send(&app, secretsmanager("ListSecrets", &json!({}))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers["x-amzn-errortype"], "ServiceUnavailable");
        assert!(body["message"].as_str().is_some_and(|m| m.contains("cannot reach moto")), "{body}");
    }

    #[tokio::test]
    async fn control_api_mistakes_are_answered_with_an_error() {
        let app = app();
        let (status, _, body) = send(&app, post("/_sm-local/faults", r#"{"operation":"GetSecretValue"}"#)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].as_str().is_some_and(|e| e.contains("action")), "{body}");
        let zero = r#"{"operation":"GetSecretValue","action":{"type":"hang","ms":5},"times":0}"#;
        let (status, _, body) = send(&app, post("/_sm-local/faults", zero)).await;
        assert_eq!((status, body), (StatusCode::BAD_REQUEST, json!({"error": "times must be at least 1"})));
        let (status, _, _) = send(&app, get("/_sm-local/rotations/no-such-token")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) = send(&app, get("/_sm-local/rotations/no-such-token?wait=soon")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _, _) = send(&app, get("/_sm-local/functions/nope")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn invoking_an_unknown_function_is_lambdas_404() {
        let app = app();
        let (status, headers, body) = send(&app, post("/2015-03-31/functions/nope/invocations", "{}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers["x-amzn-errortype"], "ResourceNotFoundException");
        assert_eq!(body["message"], "Function not found: arn:aws:lambda:us-east-1:123456789012:function:nope");
    }
}
