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
pub use crate::calls::CallRecord;
pub use crate::config::{Config, ConfigError, FunctionConfig};
pub use crate::faults::{Action, FaultError, FaultRule, FaultSpec};
pub use crate::lambda::{FunctionError, FunctionStats};
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
