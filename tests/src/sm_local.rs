//! The local Secrets Manager endpoint (`sm-local`) in front of moto, with the
//! real `bootstrap` configured twice (one function per strategy) and a real
//! PostgreSQL with TLS. [`SmEnv::start`] spawns them; its methods are named
//! after what the `sm_local_*` tests do.
//!
//! Unlike [`crate::TestEnv`], nothing here plays Secrets Manager: rotations
//! start with RotateSecret, as an operator's or the schedule's would, and the
//! endpoint runs the steps.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use ::sm_local::{Action, CallRecord, Config, FaultSpec, FunctionConfig, RotationRecord, SmLocal};
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::retry::RetryConfig;
use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_secretsmanager::types::RotationRulesType;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};

use crate::moto::REGION;
use crate::postgres::{self, Postgres, Tls};
use crate::{Moto, runtime_api};

/// The function configured with `ROTATION_STRATEGY=single-user`.
pub const SINGLE: &str = "rotation-single";
/// The function configured with `ROTATION_STRATEGY=alternating-users`.
pub const ALTERNATING: &str = "rotation-alternating";

/// How long a test waits for a rotation before it fails.
const ROTATION_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct SmEnv {
    pub pg: Postgres,
    pub moto: Moto,
    pub endpoint: SmLocal,
    /// A Secrets Manager client pointed at the endpoint.
    pub sm: Client,
    /// Every password a test made or saw, for the leak check.
    passwords: BTreeSet<String>,
    secrets: Vec<String>,
}

impl SmEnv {
    pub async fn start() -> SmEnv {
        Self::start_with(|f| f).await
    }

    /// As [`SmEnv::start`]; `tune` adjusts each function's configuration.
    pub async fn start_with(tune: impl Fn(FunctionConfig) -> FunctionConfig) -> SmEnv {
        let (pg, moto) = tokio::join!(Postgres::start(Tls::On), Moto::start());
        let config = Config::new(moto.endpoint())
            .function(tune(function_config(&pg, SINGLE, "single-user")))
            .function(tune(function_config(&pg, ALTERNATING, "alternating-users")));
        let endpoint = SmLocal::start(config).await.expect("sm-local starts");
        let sm = client(&endpoint.endpoint(), RetryConfig::standard());
        SmEnv {
            passwords: BTreeSet::from([pg.superuser_password().to_owned()]),
            pg,
            moto,
            endpoint,
            sm,
            secrets: Vec::new(),
        }
    }

    pub fn lambda_arn(&self, function: &str) -> String {
        self.endpoint.lambda_arn(function)
    }

    /// Records a password so the leak check looks for it.
    pub fn remember(&mut self, password: &str) {
        self.passwords.insert(password.to_owned());
    }

    pub fn secret_json(&self, user: &str, password: &str) -> Value {
        json!({
            "engine": "postgres", "host": postgres::HOST, "port": self.pg.port(),
            "username": user, "password": password, "dbname": "postgres",
        })
    }

    /// Creates a login role with `password` and a secret describing it.
    pub async fn create_user_and_secret(&mut self, name: &str, user: &str, password: &str) -> String {
        self.pg.set_password(user, password).await;
        let value = self.secret_json(user, password);
        self.create_secret(name, &value).await
    }

    pub async fn create_secret(&mut self, name: &str, value: &Value) -> String {
        if let Some(p) = value.get("password").and_then(Value::as_str) {
            self.remember(p);
        }
        let out =
            self.sm.create_secret().name(name).secret_string(value.to_string()).send().await.expect("CreateSecret");
        let arn = out.arn().expect("arn").to_owned();
        self.secrets.push(arn.clone());
        arn
    }

    /// RotateSecret with `function` and a 30-day schedule; returns the token
    /// (the answer's VersionId). The rotation runs in the background.
    pub async fn rotate_secret(&self, secret: &str, function: &str) -> String {
        let out = self
            .sm
            .rotate_secret()
            .secret_id(secret)
            .rotation_lambda_arn(self.lambda_arn(function))
            .rotation_rules(RotationRulesType::builder().automatically_after_days(30).build())
            .send()
            .await
            .expect("RotateSecret");
        out.version_id().expect("VersionId").to_owned()
    }

    /// Waits for the rotation `token` to end and returns how it ended.
    pub async fn wait(&self, token: &str) -> RotationRecord {
        let record = self.endpoint.wait_rotation(token, ROTATION_WAIT).await.expect("a rotation with that token");
        assert_ne!(record.status, ::sm_local::RotationStatus::InProgress, "still running after {ROTATION_WAIT:?}");
        record
    }

    /// Adds a fault rule for calls naming `secret`; returns its id.
    pub fn inject(&self, operation: &str, secret: &str, action: Action, times: u32) -> u64 {
        let spec = FaultSpec { operation: operation.into(), secret: Some(secret.into()), action, times };
        self.endpoint.add_fault(spec).expect("valid fault rule")
    }

    /// Waits until the fault rule `id` has been used up: the call it delays
    /// is in progress (a hang) or answered (an error).
    pub async fn wait_fault_used(&self, id: u64) {
        let started = Instant::now();
        while self.endpoint.faults().iter().any(|r| r.id == id && r.remaining > 0) {
            assert!(started.elapsed() < Duration::from_secs(30), "fault rule {id} never applied");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The process currently serving `function`.
    pub fn pid(&self, function: &str) -> u32 {
        self.endpoint.function_stats(function).and_then(|s| s.pid).expect("a running process")
    }

    /// The Secrets Manager calls `function` made so far.
    pub fn function_calls(&self, function: &str) -> Vec<CallRecord> {
        self.endpoint.calls().into_iter().filter(|c| c.function.as_deref() == Some(function)).collect()
    }

    /// The value of the version carrying `stage`, if any.
    pub async fn value(&self, secret: &str, stage: &str) -> Option<Value> {
        let out = self.sm.get_secret_value().secret_id(secret).version_stage(stage).send().await.ok()?;
        serde_json::from_str(out.secret_string()?).ok()
    }

    pub async fn password(&self, secret: &str, stage: &str) -> String {
        let value = self.value(secret, stage).await.unwrap_or_else(|| panic!("no {stage} version"));
        value["password"].as_str().expect("password").to_owned()
    }

    pub async fn version_value(&self, secret: &str, version: &str) -> Option<Value> {
        let out = self.sm.get_secret_value().secret_id(secret).version_id(version).send().await.ok()?;
        serde_json::from_str(out.secret_string()?).ok()
    }

    /// Version id → labels, as DescribeSecret reports them.
    pub async fn stages(&self, secret: &str) -> HashMap<String, Vec<String>> {
        let out = self.sm.describe_secret().secret_id(secret).send().await.expect("DescribeSecret");
        out.version_ids_to_stages().cloned().unwrap_or_default()
    }

    pub async fn version_with(&self, secret: &str, stage: &str) -> Option<String> {
        self.stages(secret).await.into_iter().find(|(_, s)| s.iter().any(|l| l == stage)).map(|(id, _)| id)
    }

    /// Asserts that no password this test made or saw, nor any version of
    /// any secret it created, appears in the database's log, the functions'
    /// output, moto's log, the endpoint's call log or its rotation records
    /// (which carry the functions' error messages).
    pub async fn assert_no_leaks(&mut self) {
        for secret in self.secrets.clone() {
            let versions = self
                .sm
                .list_secret_version_ids()
                .secret_id(&secret)
                .include_deprecated(true)
                .send()
                .await
                .expect("ListSecretVersionIds");
            for id in versions.versions().iter().filter_map(|v| v.version_id()) {
                if let Some(p) =
                    self.version_value(&secret, id).await.and_then(|v| v["password"].as_str().map(str::to_owned))
                {
                    self.passwords.insert(p);
                }
            }
        }
        let output = [SINGLE, ALTERNATING].map(|f| self.endpoint.function_output(f).unwrap_or_default()).join("\n");
        let calls = serde_json::to_string(&self.endpoint.calls()).expect("calls");
        let rotations = serde_json::to_string(&self.endpoint.rotations(None)).expect("rotations");
        let places = [
            ("PostgreSQL server log", self.pg.server_log()),
            ("functions' output", output),
            ("moto log", self.moto.log()),
            ("call log", calls),
            ("rotation records", rotations),
        ];
        assert!(self.passwords.len() > 1, "the leak check has passwords to look for");
        for (place, text) in &places {
            for password in &self.passwords {
                assert!(!text.contains(password.as_str()), "a password leaked into the {place}");
            }
        }
    }
}

/// The real `bootstrap` as a function with `strategy`, trusting the test CA.
pub fn function_config(pg: &Postgres, name: &str, strategy: &str) -> FunctionConfig {
    FunctionConfig::new(name, runtime_api::bootstrap_path())
        .env("ROTATION_STRATEGY", strategy)
        .env("DB_CA_BUNDLE", pg.ca_bundle().display().to_string())
        .env("RUST_LOG", "info")
}

/// A Secrets Manager client for `endpoint` with dummy credentials.
pub fn client(endpoint: &str, retry: RetryConfig) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "e2e"))
        .retry_config(retry)
        .http_client(http)
        .build();
    Client::from_conf(config)
}

/// Sends `signal` (`STOP`, `KILL`, `TERM`) to a process.
pub async fn signal(pid: u32, signal: &str) {
    let status = tokio::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .await
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// A plain HTTP request: status, headers, body.
pub async fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> (u16, hyper::HeaderMap, Bytes) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let mut request = hyper::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body.to_owned()))).expect("request");
    let response = client.request(request).await.expect("HTTP request");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (parts.status.as_u16(), parts.headers, body)
}
