//! End-to-end test harness: a real PostgreSQL server, moto as Secrets Manager,
//! and the real binaries. [`TestEnv::start`] spawns what a test needs and
//! returns one handle whose methods are named after what tests do.
//!
//! moto cannot invoke our function, so the harness plays Secrets Manager's
//! part of a rotation the way the service does it (see [`TestEnv::rotate`]).

pub mod moto;
pub mod postgres;
pub mod process;
pub mod runtime_api;
pub mod sm_local;
pub mod web_app;

use std::collections::{BTreeSet, HashMap};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::types::RotationRulesType;
use serde_json::{Value, json};

pub use crate::moto::Moto;
pub use crate::postgres::{Postgres, Tls};
pub use crate::runtime_api::{Function, FunctionError};

pub const STEPS: [&str; 4] = ["createSecret", "setSecret", "testSecret", "finishSecret"];
pub const SINGLE_USER: &str = "single-user";
pub const ALTERNATING_USERS: &str = "alternating-users";

/// A rotation that stopped at a step, as Secrets Manager would record it.
#[derive(Debug, Clone)]
pub struct StepFailure {
    pub step: &'static str,
    pub error: FunctionError,
}

#[derive(Debug)]
pub struct TestEnv {
    pub pg: Postgres,
    pub moto: Moto,
    pub sm: Client,
    pub function: Option<Function>,
    /// `ROTATION_STRATEGY` the function runs with.
    strategy: &'static str,
    /// Every password a test made or saw, for the leak check.
    passwords: BTreeSet<String>,
    /// Everything the function printed before it was restarted or stopped.
    function_output: String,
    /// Every error message a rotation produced.
    errors: Vec<String>,
    /// Secrets created by this test (for the leak check over every version).
    secrets: Vec<String>,
}

impl TestEnv {
    /// PostgreSQL with TLS, moto, and the function (single user) configured for both.
    pub async fn start() -> TestEnv {
        Self::start_with(Tls::On).await
    }

    /// The same, with the function rotating alternating users.
    pub async fn start_alternating() -> TestEnv {
        Self::start_full(Tls::On, ALTERNATING_USERS).await
    }

    pub async fn start_with(tls: Tls) -> TestEnv {
        Self::start_full(tls, SINGLE_USER).await
    }

    pub async fn start_full(tls: Tls, strategy: &'static str) -> TestEnv {
        let (pg, moto) = tokio::join!(Postgres::start(tls), Moto::start());
        let sm = moto.client();
        let mut env = TestEnv {
            passwords: BTreeSet::from([pg.superuser_password().to_owned()]),
            pg,
            moto,
            sm,
            function: None,
            strategy,
            function_output: String::new(),
            errors: Vec::new(),
            secrets: Vec::new(),
        };
        env.restart_function(&[]).await;
        env
    }

    /// The environment the function runs with by default: the emulator's
    /// endpoint and the test CA.
    pub fn function_env(&self) -> Vec<(&'static str, String)> {
        let mut env = self.moto.sdk_env();
        env.push(("RUST_LOG", "info".into()));
        env.push(("ROTATION_STRATEGY", self.strategy.into()));
        if self.pg.ca_bundle().exists() {
            env.push(("DB_CA_BUNDLE", self.pg.ca_bundle().display().to_string()));
        }
        env
    }

    /// Switches the strategy the function is (re)started with.
    pub async fn use_strategy(&mut self, strategy: &'static str) {
        self.strategy = strategy;
        self.restart_function(&[]).await;
    }

    /// (Re)starts the real `bootstrap` with the default environment plus
    /// `extra` (later entries win).
    pub async fn restart_function(&mut self, extra: &[(&'static str, &str)]) {
        self.stop_function().await;
        let mut env = self.function_env();
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        self.function = Some(Function::spawn(&runtime_api::bootstrap_path(), &env).await);
    }

    pub async fn stop_function(&mut self) {
        if let Some(f) = self.function.take() {
            self.function_output.push_str(&f.stop().await);
        }
    }

    pub fn function_output(&self) -> String {
        let live = self.function.as_ref().map(Function::output).unwrap_or_default();
        format!("{}{live}", self.function_output)
    }

    /// Records a password so the leak check looks for it.
    pub fn remember(&mut self, password: &str) {
        self.passwords.insert(password.to_owned());
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

    /// Secrets Manager's RotateSecret, up to invoking the function: refuses
    /// while another rotation is unfinished, else adds the placeholder
    /// version `token` labelled AWSPENDING (no value) and enables rotation.
    ///
    /// moto's own check is inverted and it cannot call an external Lambda, so
    /// the refusal is done here, and the placeholder comes from a RotateSecret
    /// naming a function moto does not know: moto adds the version, enables
    /// rotation, then fails to find the function. The result is checked, so a
    /// moto that behaves differently fails loudly here.
    pub async fn start_rotation(&self, secret: &str, token: &str) -> Result<(), String> {
        let stages = self.stages(secret).await;
        if stages.contains_key(token) {
            return Ok(()); // a retry with the same token reuses the version
        }
        if let Some((id, _)) =
            stages.iter().find(|(_, s)| s.iter().any(|l| l == "AWSPENDING") && !s.iter().any(|l| l == "AWSCURRENT"))
        {
            return Err(format!("a previous rotation ({id}) isn't complete"));
        }
        let _ = self
            .sm
            .rotate_secret()
            .secret_id(secret)
            .client_request_token(token)
            .rotation_lambda_arn("arn:aws:lambda:us-east-1:123456789012:function:rotation-fn")
            .rotation_rules(RotationRulesType::builder().automatically_after_days(30).build())
            .send()
            .await;
        let stages = self.stages(secret).await;
        assert_eq!(stages.get(token).map(Vec::as_slice), Some(&["AWSPENDING".to_owned()][..]), "placeholder");
        assert!(self.raw_value(secret, "AWSCURRENT").await.is_some(), "AWSCURRENT kept its value");
        Ok(())
    }

    /// Starts a rotation with a fresh token and returns the token; panics if
    /// Secrets Manager would refuse it.
    pub async fn begin_rotation(&self, secret: &str) -> String {
        let token = uuid::Uuid::new_v4().to_string();
        self.start_rotation(secret, &token).await.unwrap_or_else(|e| panic!("RotateSecret refused: {e}"));
        token
    }

    /// Invokes one step through the Runtime API.
    pub async fn step(&mut self, step: &str, secret: &str, token: &str) -> Result<Value, FunctionError> {
        let event = json!({ "Step": step, "SecretId": secret, "ClientRequestToken": token });
        self.invoke(&event).await
    }

    pub async fn invoke(&mut self, event: &Value) -> Result<Value, FunctionError> {
        let function = self.function.as_mut().expect("function running");
        let result = function.invoke(event).await;
        if let Err(e) = &result {
            self.errors.push(format!("{}: {}", e.error_type, e.error_message));
        }
        result
    }

    /// A whole rotation as Secrets Manager runs it: placeholder, the four
    /// steps in order with one token, stop at the first failure; on success
    /// AWSPENDING is removed. Returns the token.
    pub async fn rotate(&mut self, secret: &str) -> Result<String, StepFailure> {
        let token = uuid::Uuid::new_v4().to_string();
        self.start_rotation(secret, &token).await.map_err(|e| StepFailure {
            step: "RotateSecret",
            error: FunctionError { error_type: "InvalidRequestException".into(), error_message: e },
        })?;
        self.resume(secret, &token).await.map(|()| token)
    }

    /// Runs (or re-runs, as Secrets Manager's retry does) every step for `token`.
    pub async fn resume(&mut self, secret: &str, token: &str) -> Result<(), StepFailure> {
        for step in STEPS {
            self.step(step, secret, token).await.map_err(|error| StepFailure { step, error })?;
        }
        self.drop_pending(secret, token).await;
        Ok(())
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

    /// Asserts that none of the passwords this test created, nor any version
    /// of any secret it created, appears in the server's log, the function's
    /// output, moto's log or any error the function returned.
    pub async fn assert_no_leaks(&mut self) {
        self.collect_stored_passwords().await;
        let places = [
            ("PostgreSQL server log", self.pg.server_log()),
            ("function output", self.function_output()),
            ("moto log", self.moto.log()),
            ("function errors", self.errors.join("\n")),
        ];
        assert!(self.passwords.len() > 1, "the leak check has passwords to look for");
        for (place, text) in &places {
            for password in &self.passwords {
                assert!(!text.contains(password.as_str()), "a password leaked into the {place}");
            }
        }
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
                    self.passwords.insert(p);
                }
            }
        }
    }

    /// The error messages the function returned so far.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }
}
