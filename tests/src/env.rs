//! [`TestEnv`]: what an end-to-end test runs against. A real PostgreSQL 15
//! (TLS, scram-sha-256, every statement logged), moto behind the project's
//! own Secrets Manager endpoint (`sm-local`), and the real `bootstrap`
//! configured there as Lambda functions: one per strategy, a twin of the
//! single-user one (for races between two processes), and the provisioner.
//!
//! Nothing here plays Secrets Manager. [`TestEnv::rotate`] is a RotateSecret
//! through the endpoint, which runs the steps as the service does; tests that
//! drive the steps one by one prepare the rotation as RotateSecret would
//! ([`TestEnv::begin_rotation`]) and invoke each step through the endpoint's
//! Lambda side ([`TestEnv::step`]).
//!
//! The functions and the web app get a scratch directory of this
//! environment's as `TMPDIR` (their private socket directories go there), so a
//! process killed mid-connection leaves nothing behind once the environment
//! is dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::retry::RetryConfig;
use aws_sdk_secretsmanager::types::RotationRulesType;
use serde_json::{Value, json};
use sm_local::{Action, CallRecord, Config, FaultSpec, FunctionConfig, FunctionError, RotationRecord, SmLocal};

use crate::moto::Moto;
use crate::postgres::{self, Postgres, Tls};
use crate::process::bootstrap_path;

pub const STEPS: [&str; 4] = ["createSecret", "setSecret", "testSecret", "finishSecret"];
pub const SINGLE_USER: &str = "single-user";
pub const ALTERNATING_USERS: &str = "alternating-users";

/// The function configured with `ROTATION_STRATEGY=single-user`.
pub const SINGLE: &str = "rotation-single";
/// A second process of the single-user function, for races.
pub const SINGLE_TWIN: &str = "rotation-single-twin";
/// The function configured with `ROTATION_STRATEGY=alternating-users`.
pub const ALTERNATING: &str = "rotation-alternating";
/// The same binary as the deployment's database provisioner (`_HANDLER=provision`).
pub const PROVISIONER: &str = "provisioner";
const FUNCTIONS: [&str; 4] = [SINGLE, SINGLE_TWIN, ALTERNATING, PROVISIONER];

/// How long a test waits for a rotation before it fails.
const ROTATION_WAIT: Duration = Duration::from_secs(90);

/// A rotation that stopped at a step, as Secrets Manager records it.
#[derive(Debug, Clone)]
pub struct StepFailure {
    pub step: &'static str,
    pub error: FunctionError,
}

#[derive(Debug)]
pub struct TestEnv {
    pub pg: Postgres,
    pub moto: Moto,
    /// The local Secrets Manager; replaced when the functions are reconfigured.
    pub endpoint: SmLocal,
    /// A Secrets Manager client pointed at the endpoint.
    pub sm: Client,
    /// Which function [`TestEnv::rotate`] uses.
    strategy: &'static str,
    /// Function environment beyond the defaults (`None`: removed).
    overrides: BTreeMap<String, Option<String>>,
    timeout: Duration,
    bootstrap: PathBuf,
    /// Every password a test made or saw, for the leak check.
    passwords: BTreeSet<String>,
    /// What the functions of replaced endpoints printed.
    earlier_output: String,
    /// Every error message a step produced.
    errors: Vec<String>,
    /// Secrets created by this test (for the leak check over every version).
    secrets: Vec<String>,
    /// `TMPDIR` of the functions and the web app; declared last, so removed
    /// after everything else has stopped.
    scratch: tempfile::TempDir,
}

impl TestEnv {
    /// PostgreSQL with TLS, moto, the endpoint; rotations use the single-user function.
    pub async fn start() -> TestEnv {
        Self::start_with(Tls::On).await
    }

    /// The same; rotations use the alternating-users function.
    pub async fn start_alternating() -> TestEnv {
        Self::start_full(Tls::On, ALTERNATING_USERS).await
    }

    pub async fn start_with(tls: Tls) -> TestEnv {
        Self::start_full(tls, SINGLE_USER).await
    }

    pub async fn start_full(tls: Tls, strategy: &'static str) -> TestEnv {
        let (pg, moto) = tokio::join!(Postgres::start(tls), Moto::start());
        let bootstrap = bootstrap_path();
        let timeout = Duration::from_secs(30);
        let scratch = tempfile::Builder::new().prefix("e2e-scratch-").tempdir().expect("scratch dir");
        let configs = function_configs(&pg, &bootstrap, &BTreeMap::new(), timeout, scratch.path());
        let endpoint = start_endpoint(&moto, &configs).await;
        let sm = crate::moto::client(&endpoint.endpoint(), RetryConfig::standard());
        TestEnv {
            passwords: BTreeSet::from([pg.superuser_password().to_owned()]),
            pg,
            moto,
            endpoint,
            sm,
            strategy,
            overrides: BTreeMap::new(),
            timeout,
            bootstrap,
            earlier_output: String::new(),
            errors: Vec::new(),
            secrets: Vec::new(),
            scratch,
        }
    }

    /// The functions' and the web app's `TMPDIR`, removed with this environment.
    pub fn scratch_dir(&self) -> &std::path::Path {
        self.scratch.path()
    }

    /// `ROTATION_STRATEGY` of the function rotations use.
    pub fn strategy(&self) -> &'static str {
        self.strategy
    }

    /// The function [`TestEnv::rotate`] and [`TestEnv::step`] use.
    pub fn function(&self) -> &'static str {
        if self.strategy == ALTERNATING_USERS { ALTERNATING } else { SINGLE }
    }

    pub fn lambda_arn(&self, function: &str) -> String {
        self.endpoint.lambda_arn(function)
    }

    /// Switches the function rotations use.
    pub async fn use_strategy(&mut self, strategy: &'static str) {
        self.strategy = strategy;
    }

    /// Restarts the endpoint (and so every function process) with the
    /// default function environment plus `extra` (later entries win).
    pub async fn restart_function(&mut self, extra: &[(&str, &str)]) {
        self.overrides = extra.iter().map(|(k, v)| ((*k).to_owned(), Some((*v).to_owned()))).collect();
        self.reconfigure().await;
    }

    /// The same, with `var` removed from the default environment.
    pub async fn restart_without(&mut self, var: &str) {
        self.overrides = BTreeMap::from([(var.to_owned(), None)]);
        self.reconfigure().await;
    }

    /// Lambda's timeout for every function.
    pub async fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.reconfigure().await;
    }

    /// Runs the functions from another executable (the shipped artifact).
    pub async fn use_bootstrap(&mut self, path: PathBuf) {
        self.bootstrap = path;
        self.reconfigure().await;
    }

    async fn reconfigure(&mut self) {
        self.earlier_output.push_str(&self.functions_output_now());
        self.endpoint.stop().await;
        let configs = function_configs(&self.pg, &self.bootstrap, &self.overrides, self.timeout, self.scratch.path());
        self.endpoint = start_endpoint(&self.moto, &configs).await;
        self.sm = crate::moto::client(&self.endpoint.endpoint(), RetryConfig::standard());
    }

    /// The process serving `function` now, if one runs.
    pub fn pid(&self, function: &str) -> Option<u32> {
        self.endpoint.function_stats(function).and_then(|s| s.pid)
    }

    /// Kills the process serving the rotation function, as a crash would;
    /// the next invocation starts a new one.
    pub async fn kill_function(&self) {
        if let Some(pid) = self.pid(self.function()) {
            crate::process::signal(pid, "KILL").await;
            crate::process::wait_gone(pid).await;
        }
    }

    /// Everything every function printed so far (Lambda's START/END/REPORT
    /// lines included), across restarts.
    pub fn function_output(&self) -> String {
        format!("{}{}", self.earlier_output, self.functions_output_now())
    }

    fn functions_output_now(&self) -> String {
        FUNCTIONS.iter().filter_map(|f| self.endpoint.function_output(f)).collect::<Vec<_>>().join("\n")
    }

    /// Records a password so the leak check looks for it.
    pub fn remember(&mut self, password: &str) {
        // An empty "password" (a hostile secret's) is in every text.
        if !password.is_empty() {
            self.passwords.insert(password.to_owned());
        }
    }

    /// The JSON a secret for `user` on this test's server holds.
    pub fn secret_json(&self, user: &str, password: &str) -> Value {
        json!({
            "engine": "postgres",
            "host": postgres::HOST,
            "port": self.pg.port(),
            "username": user,
            "password": password,
            "dbname": "postgres",
        })
    }

    /// Creates a login role with `password` and a secret describing it.
    pub async fn create_user_and_secret(&mut self, name: &str, user: &str, password: &str) -> String {
        self.pg.set_password(user, password).await;
        let value = self.secret_json(user, password);
        self.create_secret(name, &value).await
    }

    pub async fn create_secret(&mut self, name: &str, value: &Value) -> String {
        self.create_raw_secret(name, &value.to_string()).await
    }

    /// Adds a version of `secret` holding `value`, labelled `stage` (a new
    /// AWSCURRENT moves AWSPREVIOUS along, as AWS does), as whoever may write
    /// the secret can; remembers its password. Returns the version id.
    pub async fn put_value(&mut self, secret: &str, value: &Value, stage: &str) -> String {
        if let Some(p) = value.get("password").and_then(Value::as_str) {
            self.remember(p);
        }
        let put = self.sm.put_secret_value().secret_id(secret).secret_string(value.to_string()).version_stages(stage);
        put.send().await.expect("PutSecretValue").version_id().expect("version id").to_owned()
    }

    /// A secret whose SecretString is `text`, JSON or not.
    pub async fn create_raw_secret(&mut self, name: &str, text: &str) -> String {
        let value: Option<Value> = serde_json::from_str(text).ok();
        if let Some(p) = value.as_ref().and_then(|v| v.get("password")).and_then(Value::as_str) {
            self.remember(p);
        }
        let out = self.sm.create_secret().name(name).secret_string(text).send().await.expect("CreateSecret");
        let arn = out.arn().expect("arn").to_owned();
        self.secrets.push(arn.clone());
        arn
    }

    /// The value of the version carrying `stage`, if any.
    pub async fn value(&self, secret: &str, stage: &str) -> Option<Value> {
        serde_json::from_str(&self.raw_value(secret, stage).await?).ok()
    }

    /// The password of the version carrying `stage`.
    pub async fn password(&self, secret: &str, stage: &str) -> String {
        let value = self.value(secret, stage).await.unwrap_or_else(|| panic!("no {stage} version"));
        value["password"].as_str().expect("password").to_owned()
    }

    /// The SecretString of the version carrying `stage`, unparsed.
    pub async fn raw_value(&self, secret: &str, stage: &str) -> Option<String> {
        let out = self.sm.get_secret_value().secret_id(secret).version_stage(stage).send().await.ok()?;
        out.secret_string().map(str::to_owned)
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

    /// What RotateSecret with `token` does before it invokes the function:
    /// refuses while another rotation is unfinished, else adds the
    /// placeholder version `token` labelled AWSPENDING. The steps are then
    /// the test's to invoke.
    pub async fn start_rotation(&self, secret: &str, token: &str) -> Result<(), String> {
        self.endpoint.prepare_rotation(secret, token, self.function()).await.map_err(|e| e.to_string())
    }

    /// Prepares a rotation with a fresh token and returns the token; panics
    /// if Secrets Manager would refuse it.
    pub async fn begin_rotation(&self, secret: &str) -> String {
        let token = uuid::Uuid::new_v4().to_string();
        self.start_rotation(secret, &token).await.unwrap_or_else(|e| panic!("RotateSecret refused: {e}"));
        token
    }

    /// Invokes one step of the rotation function, as Secrets Manager does.
    pub async fn step(&mut self, step: &str, secret: &str, token: &str) -> Result<Value, FunctionError> {
        let event = json!({ "Step": step, "SecretId": secret, "ClientRequestToken": token });
        self.invoke(&event).await
    }

    /// Invokes the rotation function with any event.
    pub async fn invoke(&mut self, event: &Value) -> Result<Value, FunctionError> {
        self.invoke_function(self.function(), event).await
    }

    pub async fn invoke_function(&mut self, function: &str, event: &Value) -> Result<Value, FunctionError> {
        let result = self.endpoint.invoke(function, event).await;
        if let Err(e) = &result {
            self.errors.push(format!("{}: {}", e.error_type, e.error_message));
        }
        result
    }

    /// RotateSecret with `function` and a 30-day schedule; returns the token
    /// (the answer's VersionId). The rotation runs in the background.
    pub async fn rotate_secret(&self, secret: &str, function: &str) -> String {
        self.rotate_secret_with_token(secret, function, None).await.unwrap_or_else(|e| panic!("RotateSecret: {e}"))
    }

    async fn rotate_secret_with_token(
        &self,
        secret: &str,
        function: &str,
        token: Option<&str>,
    ) -> Result<String, String> {
        let out = self
            .sm
            .rotate_secret()
            .secret_id(secret)
            .set_client_request_token(token.map(str::to_owned))
            .rotation_lambda_arn(self.lambda_arn(function))
            .rotation_rules(RotationRulesType::builder().automatically_after_days(30).build())
            .send()
            .await
            .map_err(|e| aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string())?;
        Ok(out.version_id().expect("VersionId").to_owned())
    }

    /// Waits for the rotation `token` to end and returns how it ended.
    pub async fn wait(&self, token: &str) -> RotationRecord {
        let record = self.endpoint.wait_rotation(token, ROTATION_WAIT).await.expect("a rotation with that token");
        assert_ne!(record.status, sm_local::RotationStatus::InProgress, "still running after {ROTATION_WAIT:?}");
        record
    }

    /// A whole rotation, started as an operator does (RotateSecret) and run
    /// by the endpoint to its end. Returns the token.
    pub async fn rotate(&mut self, secret: &str) -> Result<String, StepFailure> {
        let token = self.rotate_secret_with_token(secret, self.function(), None).await.map_err(|e| StepFailure {
            step: "RotateSecret",
            error: FunctionError { error_type: "InvalidRequestException".into(), error_message: e },
        })?;
        self.finished(&token).await.map(|()| token)
    }

    /// Secrets Manager's retry of the rotation `token`: every step again.
    pub async fn resume(&mut self, secret: &str, token: &str) -> Result<(), StepFailure> {
        let attempts = self.endpoint.rotation(token).map_or(0, |r| r.attempts);
        let started = self.rotate_secret_with_token(secret, self.function(), Some(token)).await;
        started.map_err(|e| StepFailure {
            step: "RotateSecret",
            error: FunctionError { error_type: "InvalidRequestException".into(), error_message: e },
        })?;
        if self.endpoint.rotation(token).map_or(0, |r| r.attempts) == attempts {
            // Nothing ran: the token is AWSCURRENT already.
            return Ok(());
        }
        self.finished(token).await
    }

    async fn finished(&mut self, token: &str) -> Result<(), StepFailure> {
        let record = self.wait(token).await;
        match record.error {
            None if record.status == sm_local::RotationStatus::Succeeded => Ok(()),
            None => panic!("rotation {token} ended {:?} without an error", record.status),
            Some(failure) => {
                let step = STEPS.into_iter().find(|s| *s == failure.step).unwrap_or("RotateSecret");
                let error = FunctionError { error_type: failure.error_type, error_message: failure.error_message };
                self.errors.push(format!("{}: {}", error.error_type, error.error_message));
                Err(StepFailure { step, error })
            }
        }
    }

    /// What Secrets Manager does after finishSecret returns.
    pub async fn drop_pending(&self, secret: &str, token: &str) {
        self.sm
            .update_secret_version_stage()
            .secret_id(secret)
            .version_stage("AWSPENDING")
            .remove_from_version_id(token)
            .send()
            .await
            .expect("remove AWSPENDING");
    }

    /// Adds a fault rule at the endpoint for calls naming `secret`.
    pub fn inject(&self, operation: &str, secret: &str, action: Action, times: u32) -> u64 {
        let spec = FaultSpec { operation: operation.into(), secret: Some(secret.into()), action, times, skip: 0 };
        self.endpoint.add_fault(spec).expect("valid fault rule")
    }

    /// Waits until the fault rule `id` has been used up.
    pub async fn wait_fault_used(&self, id: u64) {
        let started = Instant::now();
        while self.endpoint.faults().iter().any(|r| r.id == id && r.remaining > 0) {
            assert!(started.elapsed() < Duration::from_secs(30), "fault rule {id} never applied");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The Secrets Manager calls `function` made so far.
    pub fn function_calls(&self, function: &str) -> Vec<CallRecord> {
        self.endpoint.calls().into_iter().filter(|c| c.function.as_deref() == Some(function)).collect()
    }

    /// Asserts that none of the passwords this test created, nor any version
    /// of any secret it created, appears in the server's log, the functions'
    /// output, moto's log, the endpoint's call log and rotation records, or
    /// any error a step returned.
    pub async fn assert_no_leaks(&mut self) {
        self.collect_stored_passwords().await;
        let places = [
            ("PostgreSQL server log", self.pg.server_log()),
            ("functions' output", self.function_output()),
            ("moto log", self.moto.log()),
            ("call log", serde_json::to_string(&self.endpoint.calls()).expect("calls")),
            ("rotation records", serde_json::to_string(&self.endpoint.rotations(None)).expect("rotations")),
            ("errors", self.errors.join("\n")),
        ];
        assert!(self.passwords.len() > 1, "the leak check has passwords to look for");
        for (place, text) in &places {
            for password in &self.passwords {
                assert!(
                    !text.contains(password.as_str()),
                    "a password ({} characters) leaked into the {place}",
                    password.len()
                );
            }
        }
    }

    /// Every password this test created or saw, including every stored
    /// version of every secret it created.
    pub async fn known_passwords(&mut self) -> Vec<String> {
        self.collect_stored_passwords().await;
        self.passwords.iter().cloned().collect()
    }

    async fn collect_stored_passwords(&mut self) {
        for secret in self.secrets.clone() {
            let versions = self
                .sm
                .list_secret_version_ids()
                .secret_id(&secret)
                .include_deprecated(true)
                .send()
                .await
                .expect("ListSecretVersionIds");
            for v in versions.versions() {
                let Some(id) = v.version_id() else { continue };
                if let Some(p) =
                    self.version_value(&secret, id).await.and_then(|v| v["password"].as_str().map(str::to_owned))
                {
                    self.remember(&p);
                }
            }
        }
    }

    /// The error messages steps returned so far.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }
}

async fn start_endpoint(moto: &Moto, functions: &[FunctionConfig]) -> SmLocal {
    let config = functions.iter().cloned().fold(Config::new(moto.endpoint()), Config::function);
    SmLocal::start(config).await.expect("sm-local starts")
}

/// The real `bootstrap` as the four functions, trusting the test CA, with
/// `scratch` as their `TMPDIR` (Lambda's `/tmp`).
fn function_configs(
    pg: &Postgres,
    bootstrap: &std::path::Path,
    overrides: &BTreeMap<String, Option<String>>,
    timeout: Duration,
    scratch: &std::path::Path,
) -> Vec<FunctionConfig> {
    let function = |name: &str, strategy: &str| {
        let mut env = BTreeMap::from([
            ("ROTATION_STRATEGY".to_owned(), Some(strategy.to_owned())),
            ("RUST_LOG".to_owned(), Some("info".to_owned())),
            ("DB_CA_BUNDLE".to_owned(), pg.ca_bundle().exists().then(|| pg.ca_bundle().display().to_string())),
            ("TMPDIR".to_owned(), Some(scratch.display().to_string())),
            // As the CDK app deploys it: logins go to this server only.
            ("DB_ENDPOINTS".to_owned(), Some(format!("{}:{}", crate::postgres::HOST, pg.port()))),
        ]);
        env.extend(overrides.clone());
        env.into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .fold(FunctionConfig::new(name, bootstrap).timeout(timeout), |f, (k, v)| f.env(&k, v))
    };
    let mut provisioner = function(PROVISIONER, SINGLE_USER);
    provisioner.handler = "provision".into();
    vec![
        function(SINGLE, SINGLE_USER),
        function(SINGLE_TWIN, SINGLE_USER),
        function(ALTERNATING, ALTERNATING_USERS),
        provisioner,
    ]
}
