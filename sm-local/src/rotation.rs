//! Secrets Manager's side of a rotation, as the service runs it.
//!
//! RotateSecret (from a client, or from the schedule):
//! 1. refuses while another rotation of the secret is unfinished — running
//!    here, or AWSPENDING left on a version that is not AWSCURRENT — with
//!    "A previous rotation isn't complete. That rotation will be
//!    reattempted."; the same token instead resumes that rotation;
//! 2. stores the rotation configuration (Lambda ARN, rules, enabled);
//! 3. adds the placeholder: a version whose id is the ClientRequestToken,
//!    labelled AWSPENDING, with no value (with `RotateImmediately=false`, a
//!    copy of AWSCURRENT's value, for testSecret to log in with);
//! 4. answers ARN, Name and VersionId at once; the steps run afterwards.
//!
//! The rotation then invokes the function for createSecret, setSecret,
//! testSecret and finishSecret in order, with the same token, and stops at
//! the first failure, leaving every label where it is (a retry resumes it).
//! After finishSecret the token must be AWSCURRENT; AWSPENDING is then
//! removed from it and LastRotatedDate set. With `RotateImmediately=false`
//! only testSecret runs, and the placeholder's AWSPENDING label is removed
//! whatever it answered.
//!
//! CancelRotateSecret turns rotation off and stops a running rotation before
//! its next step; labels stay as they are, and the answer names the
//! unfinished version so that the caller can clean up.
//!
//! moto keeps the versions and values. It cannot do the above itself (its
//! in-progress check is inverted, it cannot invoke the function, and without
//! a Lambda ARN it moves AWSCURRENT onto an empty version), but asked to
//! rotate with a Lambda ARN it does not know, it adds exactly the placeholder
//! and then fails to find the function: that is how step 3 is done, and the
//! result is checked so that a moto behaving otherwise fails loudly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::app::App;
use crate::aws::{AwsError, arn_region};
use crate::faults::same_secret;
use crate::lambda::FunctionError;
use crate::schedule::RotationRules;
use crate::stages::{Admission, CURRENT, PENDING, Versions};

pub const STEPS: [&str; 4] = ["createSecret", "setSecret", "testSecret", "finishSecret"];

const PREVIOUS_INCOMPLETE: &str = "A previous rotation isn't complete. That rotation will be reattempted.";
const NO_LAMBDA: &str = "You tried to enable rotation on a secret that doesn't already have a Lambda function ARN \
                         configured and you didn't include such an ARN as a parameter in this call.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RotationStatus {
    InProgress,
    Succeeded,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    RotateSecret,
    Schedule,
    /// A test harness that plays Secrets Manager step by step: admission and
    /// placeholder as for RotateSecret, but the steps are the caller's to
    /// invoke (a later RotateSecret with the same token runs them all).
    Harness,
}

/// One rotation (one token), as `GET /_sm-local/rotations/{token}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RotationRecord {
    pub token: String,
    pub secret_arn: String,
    pub secret_name: String,
    pub function: String,
    pub trigger: Trigger,
    pub rotate_immediately: bool,
    pub status: RotationStatus,
    /// How many times the steps were started for this token; a retry with
    /// the same token adds one.
    pub attempts: u32,
    /// The steps of the latest attempt, in the order they ran.
    pub steps: Vec<StepRecord>,
    /// Why the latest attempt failed.
    pub error: Option<StepFailure>,
    pub started_at_ms: u64,
    pub finished_at_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    pub step: String,
    /// `running`, `succeeded` or `failed`.
    pub status: &'static str,
    pub duration_ms: Option<f64>,
}

/// The step a rotation stopped at and the function's error (Lambda's
/// `errorType`/`errorMessage`), or the service's own when `step` is not one
/// of the four.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepFailure {
    pub step: String,
    #[serde(rename = "errorType")]
    pub error_type: String,
    #[serde(rename = "errorMessage")]
    pub error_message: String,
}

/// A secret's rotation configuration and state.
#[derive(Debug, Clone)]
struct SecretRotation {
    region: String,
    lambda_arn: String,
    rules: Option<RotationRules>,
    enabled: bool,
    last_rotated: Option<SystemTime>,
    /// When the current schedule interval began.
    anchor: SystemTime,
    running: Option<Running>,
}

#[derive(Debug, Clone)]
struct Running {
    token: String,
    cancel: Arc<AtomicBool>,
}

impl SecretRotation {
    /// Whether the schedule wants a rotation now.
    fn is_due(&self, now: SystemTime) -> bool {
        self.enabled && self.running.is_none() && self.rules.as_ref().is_some_and(|r| now >= r.next_due(self.anchor))
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// By secret ARN.
    secrets: HashMap<String, SecretRotation>,
    /// By token.
    records: HashMap<String, RotationRecord>,
}

#[derive(Debug)]
pub struct Rotations {
    /// Serialises the decisions of RotateSecret, CancelRotateSecret and the
    /// schedule (each reads labels from moto, then acts on them).
    admin: tokio::sync::Mutex<()>,
    inner: Mutex<Inner>,
    /// Bumped on every change of a record, for waiters.
    changed: watch::Sender<u64>,
}

impl Default for Rotations {
    fn default() -> Self {
        Self { admin: tokio::sync::Mutex::default(), inner: Mutex::default(), changed: watch::Sender::new(0) }
    }
}

impl Rotations {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn record(&self, token: &str) -> Option<RotationRecord> {
        self.lock().records.get(token).cloned()
    }

    /// Every rotation, oldest first, optionally of one secret (name or ARN).
    pub fn records(&self, secret: Option<&str>) -> Vec<RotationRecord> {
        let mut records: Vec<RotationRecord> = self
            .lock()
            .records
            .values()
            .filter(|r| secret.is_none_or(|s| same_secret(s, &r.secret_arn) || s == r.secret_name))
            .cloned()
            .collect();
        records.sort_by(|a, b| a.started_at_ms.cmp(&b.started_at_ms).then_with(|| a.token.cmp(&b.token)));
        records
    }

    /// Waits until the rotation `token` is no longer in progress, or
    /// `timeout` passes; returns the record as it is then.
    pub async fn wait(&self, token: &str, timeout: Duration) -> Option<RotationRecord> {
        let mut changes = self.changed.subscribe();
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let record = self.record(token);
            if record.as_ref().is_some_and(|r| r.status != RotationStatus::InProgress) {
                return record;
            }
            if tokio::time::timeout_at(until, changes.changed()).await.is_err() {
                return record;
            }
        }
    }

    pub fn clear(&self) {
        let mut inner = self.lock();
        for secret in inner.secrets.values() {
            if let Some(running) = &secret.running {
                running.cancel.store(true, Ordering::SeqCst);
            }
        }
        *inner = Inner::default();
        drop(inner);
        self.notify();
    }

    /// The secrets whose schedule wants a rotation now; each one's interval
    /// restarts now, whether or not the rotation then starts.
    fn claim_due(&self, now: SystemTime) -> Vec<(String, String)> {
        let mut inner = self.lock();
        inner
            .secrets
            .iter_mut()
            .filter(|(_, s)| s.is_due(now))
            .map(|(arn, s)| {
                s.anchor = now;
                (arn.clone(), s.region.clone())
            })
            .collect()
    }

    /// DescribeSecret (and each ListSecrets entry) as Secrets Manager would
    /// answer after what the endpoint did; secrets it never rotated are left
    /// as moto describes them.
    pub fn patch_description(&self, secret: &mut Value) {
        let Some(arn) = secret.get("ARN").and_then(Value::as_str).map(str::to_owned) else { return };
        let inner = self.lock();
        let (Some(state), Some(fields)) = (inner.secrets.get(&arn), secret.as_object_mut()) else { return };
        fields.insert("RotationEnabled".into(), json!(state.enabled));
        fields.insert("RotationLambdaARN".into(), json!(state.lambda_arn));
        match &state.rules {
            Some(rules) => fields.insert("RotationRules".into(), rules.to_json()),
            None => fields.remove("RotationRules"),
        };
        match state.last_rotated {
            Some(at) => fields.insert("LastRotatedDate".into(), json!(epoch_seconds(at))),
            None => fields.remove("LastRotatedDate"),
        };
        match (&state.rules, state.enabled) {
            (Some(rules), true) => {
                fields.insert("NextRotationDate".into(), json!(epoch_seconds(rules.next_due(state.anchor))))
            }
            _ => fields.remove("NextRotationDate"),
        };
    }

    fn begin(&self, run: &Run, cancel: Arc<AtomicBool>) {
        let mut inner = self.lock();
        if let Some(secret) = inner.secrets.get_mut(&run.arn) {
            secret.running = Some(Running { token: run.token.clone(), cancel });
        }
        let record = inner.records.entry(run.token.clone()).or_insert_with(|| RotationRecord {
            token: run.token.clone(),
            secret_arn: run.arn.clone(),
            secret_name: run.name.clone(),
            function: run.function.clone(),
            trigger: run.trigger,
            rotate_immediately: run.immediate,
            status: RotationStatus::InProgress,
            attempts: 0,
            steps: Vec::new(),
            error: None,
            started_at_ms: 0,
            finished_at_ms: None,
        });
        record.attempts += 1;
        record.trigger = run.trigger;
        record.function.clone_from(&run.function);
        record.rotate_immediately = run.immediate;
        record.status = RotationStatus::InProgress;
        record.steps.clear();
        record.error = None;
        record.started_at_ms = epoch_ms(SystemTime::now());
        record.finished_at_ms = None;
        drop(inner);
        self.notify();
    }

    fn step(&self, token: &str, step: &str, outcome: Option<(bool, f64)>) {
        let mut inner = self.lock();
        if let Some(record) = inner.records.get_mut(token) {
            match outcome {
                None => record.steps.push(StepRecord { step: step.to_owned(), status: "running", duration_ms: None }),
                Some((ok, ms)) => {
                    if let Some(last) = record.steps.last_mut() {
                        last.status = if ok { "succeeded" } else { "failed" };
                        last.duration_ms = Some(ms);
                    }
                }
            }
        }
        drop(inner);
        self.notify();
    }

    fn end(&self, run: &Run, status: RotationStatus, error: Option<StepFailure>, rotated: Option<SystemTime>) {
        let mut inner = self.lock();
        if let Some(secret) = inner.secrets.get_mut(&run.arn) {
            if secret.running.as_ref().is_some_and(|r| r.token == run.token) {
                secret.running = None;
            }
            if rotated.is_some() {
                secret.last_rotated = rotated;
            }
        }
        if let Some(record) = inner.records.get_mut(&run.token) {
            record.status = status;
            record.error = error;
            record.finished_at_ms = Some(epoch_ms(SystemTime::now()));
        }
        drop(inner);
        self.notify();
    }
}

/// A RotateSecret request, from a client or from the schedule.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub secret_id: String,
    pub token: Option<String>,
    pub lambda_arn: Option<String>,
    pub rules: Option<Value>,
    pub rotate_immediately: bool,
    pub trigger: Trigger,
    /// The region the request was signed for.
    pub region: String,
}

impl StartRequest {
    pub fn from_input(input: &Value, region: &str) -> Result<Self, AwsError> {
        let text = |key: &str| input.get(key).and_then(Value::as_str).map(str::to_owned);
        let secret_id = text("SecretId")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AwsError::invalid_parameter("You must specify SecretId."))?;
        let token = text("ClientRequestToken");
        if let Some(token) = &token
            && !(32..=64).contains(&token.len())
        {
            return Err(AwsError::invalid_parameter("ClientRequestToken must be 32-64 characters long."));
        }
        Ok(Self {
            secret_id,
            token,
            lambda_arn: text("RotationLambdaARN").filter(|s| !s.is_empty()),
            rules: input.get("RotationRules").filter(|v| !v.is_null()).cloned(),
            rotate_immediately: input.get("RotateImmediately").and_then(Value::as_bool).unwrap_or(true),
            trigger: Trigger::RotateSecret,
            region: region.to_owned(),
        })
    }
}

/// A rotation about to run.
#[derive(Debug, Clone)]
struct Run {
    arn: String,
    name: String,
    region: String,
    token: String,
    function: String,
    immediate: bool,
    trigger: Trigger,
}

impl App {
    /// RotateSecret: answers as soon as the rotation is started.
    /// RotateSecret's admission and placeholder without its steps; see [`Trigger::Harness`].
    pub async fn prepare_rotation(self: &Arc<Self>, mut request: StartRequest) -> Result<(), AwsError> {
        request.trigger = Trigger::Harness;
        self.start_rotation(request).await.map(drop)
    }

    pub async fn rotate_secret(self: &Arc<Self>, request: StartRequest) -> Result<Value, AwsError> {
        let run = self.start_rotation(request).await?;
        Ok(json!({ "ARN": run.arn, "Name": run.name, "VersionId": run.token }))
    }

    async fn start_rotation(self: &Arc<Self>, request: StartRequest) -> Result<Run, AwsError> {
        let _admin = self.rotations.admin.lock().await;
        let described = self.describe(&request.region, &request.secret_id).await?;
        if described.get("DeletedDate").is_some_and(|d| !d.is_null()) {
            return Err(AwsError::invalid_request(
                "You can't perform this operation on the secret because it was marked for deletion.",
            ));
        }
        let arn = described.get("ARN").and_then(Value::as_str).unwrap_or_default().to_owned();
        let name = described.get("Name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let region = arn_region(&arn).unwrap_or(&request.region).to_owned();
        let existing = self.rotations.lock().secrets.get(&arn).cloned();
        if request.trigger == Trigger::Schedule && !existing.as_ref().is_some_and(|e| e.enabled) {
            // Cancelled between the schedule's claim and now.
            return Err(AwsError::invalid_request("rotation is not enabled on the secret"));
        }

        let lambda_arn = request
            .lambda_arn
            .clone()
            .or_else(|| existing.as_ref().map(|e| e.lambda_arn.clone()))
            .ok_or_else(|| AwsError::invalid_request(NO_LAMBDA))?;
        let function = self.functions.resolve(&lambda_arn).ok_or_else(|| {
            AwsError::access_denied(format!(
                "Secrets Manager cannot invoke the specified Lambda function {lambda_arn}. \
                 (sm-local has no function of that name; it has: {})",
                self.functions.names().join(", ")
            ))
        })?;
        let rules = match &request.rules {
            Some(value) => {
                Some(RotationRules::from_json(value).map_err(|e| AwsError::invalid_parameter(e.to_string()))?)
            }
            None => existing.as_ref().and_then(|e| e.rules.clone()),
        };
        let versions = Versions::from_describe(&described);
        let scheduled_retry = (request.trigger == Trigger::Schedule).then(|| versions.unfinished()).flatten();
        let token = request
            .token
            .clone()
            .or_else(|| scheduled_retry.map(str::to_owned))
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let run = Run {
            arn: arn.clone(),
            name,
            region: region.clone(),
            token: token.clone(),
            function: function.name().to_owned(),
            immediate: request.rotate_immediately,
            trigger: request.trigger,
        };

        // The labels alone miss one moment of a running rotation: after
        // finishSecret moved AWSCURRENT, before AWSPENDING is removed, it
        // looks finished. So a running rotation refuses on its own.
        if let Some(running) = existing.as_ref().and_then(|e| e.running.as_ref()) {
            if running.token == token {
                return Ok(run); // that very rotation is running: nothing to add
            }
            return Err(AwsError::invalid_request(PREVIOUS_INCOMPLETE));
        }
        let mut start_steps = true;
        match versions.admit(&token) {
            Admission::PreviousIncomplete { .. } => return Err(AwsError::invalid_request(PREVIOUS_INCOMPLETE)),
            Admission::TokenInUse { labels } => {
                return Err(AwsError::invalid_request(format!(
                    "ClientRequestToken {token} is already the id of a version of the secret that is not an \
                     unfinished rotation (labels: [{}]); use a new token.",
                    labels.join(", ")
                )));
            }
            Admission::AlreadyDone => start_steps = false,
            Admission::Resume => {}
            Admission::Start => self.add_placeholder(&run, &lambda_arn, &versions).await?,
        }

        let now = SystemTime::now();
        let mut inner = self.rotations.lock();
        let secret = inner.secrets.entry(arn).or_insert_with(|| SecretRotation {
            region,
            lambda_arn: lambda_arn.clone(),
            rules: None,
            enabled: true,
            last_rotated: None,
            anchor: now,
            running: None,
        });
        secret.lambda_arn = lambda_arn;
        secret.rules = rules;
        secret.enabled = true;
        secret.anchor = now;
        drop(inner);
        if start_steps && run.trigger != Trigger::Harness {
            self.spawn_rotation(run.clone());
        }
        Ok(run)
    }

    /// Adds the version `run.token` labelled AWSPENDING, with no value (or
    /// AWSCURRENT's, for a test-only rotation), through moto's RotateSecret.
    async fn add_placeholder(&self, run: &Run, lambda_arn: &str, versions: &Versions) -> Result<(), AwsError> {
        let current = versions.with_label(CURRENT).map(str::to_owned).ok_or_else(|| {
            AwsError::invalid_request("The secret has no AWSCURRENT version to rotate; put a value first.")
        })?;
        if let Some(finished) = versions.pending_on_current() {
            // A finished rotation whose label nobody removed: harmless to
            // Secrets Manager, but moto refuses to rotate while it is there.
            let input = json!({"SecretId": run.arn, "VersionStage": PENDING, "RemoveFromVersionId": finished});
            self.upstream.call(&run.region, "UpdateSecretVersionStage", &input).await?;
        }
        let input = json!({
            "SecretId": run.arn, "ClientRequestToken": run.token,
            "RotationLambdaARN": lambda_arn, "RotateImmediately": true,
        });
        match self.upstream.call(&run.region, "RotateSecret", &input).await {
            Ok(_) => {}
            Err(e) if e.code == "ResourceNotFoundException" => {} // moto knows no such Lambda: expected
            Err(e) => return Err(e),
        }
        let after = Versions::from_describe(&self.describe(&run.region, &run.arn).await?);
        let labels = after.labels(&run.token);
        if labels != Some(&[PENDING.to_owned()][..]) || after.with_label(CURRENT) != Some(current.as_str()) {
            return Err(AwsError::internal(format!(
                "sm-local: moto did not add the placeholder version {} as expected (its labels: {labels:?}); \
                 moto 5.x is required",
                run.token
            )));
        }
        if !run.immediate {
            // testSecret alone logs in with the pending version: a copy of
            // AWSCURRENT, made here rather than by moto, whose copy can be stale.
            let input = json!({"SecretId": run.arn, "VersionStage": CURRENT});
            let value = self.upstream.call(&run.region, "GetSecretValue", &input).await?;
            let mut put = json!({"SecretId": run.arn, "ClientRequestToken": run.token, "VersionStages": [PENDING]});
            for member in ["SecretString", "SecretBinary"] {
                if let Some(v) = value.get(member) {
                    put[member] = v.clone();
                }
            }
            self.upstream.call(&run.region, "PutSecretValue", &put).await?;
        }
        Ok(())
    }

    fn spawn_rotation(self: &Arc<Self>, run: Run) {
        let cancel = Arc::new(AtomicBool::new(false));
        self.rotations.begin(&run, cancel.clone());
        info!(secret = %run.arn, token = %run.token, function = %run.function, trigger = ?run.trigger,
              rotate_immediately = run.immediate, "rotation started");
        let app = self.clone();
        self.spawn(async move { app.run_rotation(run, cancel).await });
    }

    async fn run_rotation(self: Arc<Self>, run: Run, cancel: Arc<AtomicBool>) {
        let steps: &[&str] = if run.immediate { &STEPS } else { &STEPS[2..3] };
        let mut failure = None;
        let mut cancelled = false;
        for step in steps {
            if cancel.load(Ordering::SeqCst) {
                cancelled = true;
                break;
            }
            self.rotations.step(&run.token, step, None);
            let event = json!({
                "Step": step, "SecretId": run.arn, "ClientRequestToken": run.token,
                "RotationToken": uuid::Uuid::new_v4().to_string(),
            });
            let started = Instant::now();
            let result = match self.functions.get(&run.function) {
                Some(function) => function.invoke(Bytes::from(event.to_string())).await.map(drop),
                None => {
                    Err(FunctionError { error_type: "ResourceNotFoundException".into(), error_message: String::new() })
                }
            };
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            self.rotations.step(&run.token, step, Some((result.is_ok(), ms)));
            if let Err(e) = result {
                warn!(secret = %run.arn, token = %run.token, step, error_type = %e.error_type, duration_ms = ms,
                      "rotation step failed");
                failure = Some(StepFailure {
                    step: (*step).to_owned(),
                    error_type: e.error_type,
                    error_message: e.error_message,
                });
                break;
            }
            info!(secret = %run.arn, token = %run.token, step, duration_ms = ms, "rotation step succeeded");
        }
        let (status, error, rotated) = self.conclude(&run, failure, cancelled).await;
        info!(secret = %run.arn, token = %run.token, ?status, "rotation ended");
        self.rotations.end(&run, status, error, rotated);
    }

    /// What Secrets Manager does once the steps stopped.
    async fn conclude(
        &self,
        run: &Run,
        failure: Option<StepFailure>,
        cancelled: bool,
    ) -> (RotationStatus, Option<StepFailure>, Option<SystemTime>) {
        let service_failure =
            |e: AwsError| StepFailure { step: "sm-local".into(), error_type: e.code, error_message: e.message };
        if !run.immediate {
            // The test placeholder goes, whatever testSecret said.
            if let Err(e) = self.remove_pending(run).await {
                return (RotationStatus::Failed, failure.or_else(|| Some(service_failure(e))), None);
            }
        }
        if cancelled {
            return (RotationStatus::Cancelled, None, None);
        }
        if let Some(failure) = failure {
            return (RotationStatus::Failed, Some(failure), None);
        }
        if !run.immediate {
            return (RotationStatus::Succeeded, None, None);
        }
        let versions = match self.describe(&run.region, &run.arn).await {
            Ok(described) => Versions::from_describe(&described),
            Err(e) => return (RotationStatus::Failed, Some(service_failure(e)), None),
        };
        if versions.with_label(CURRENT) != Some(run.token.as_str()) {
            let labels = versions.labels(&run.token).map(|l| l.join(", ")).unwrap_or_default();
            let failure = StepFailure {
                step: "finishSecret".into(),
                error_type: "sm-local".into(),
                error_message: format!(
                    "finishSecret returned success, but version {} is not AWSCURRENT (its labels: [{labels}])",
                    run.token
                ),
            };
            return (RotationStatus::Failed, Some(failure), None);
        }
        match self.remove_pending(run).await {
            Ok(()) => (RotationStatus::Succeeded, None, Some(SystemTime::now())),
            Err(e) => (RotationStatus::Failed, Some(service_failure(e)), None),
        }
    }

    async fn remove_pending(&self, run: &Run) -> Result<(), AwsError> {
        let versions = Versions::from_describe(&self.describe(&run.region, &run.arn).await?);
        if versions.labels(&run.token).is_some_and(|l| l.iter().any(|s| s == PENDING)) {
            let input = json!({"SecretId": run.arn, "VersionStage": PENDING, "RemoveFromVersionId": run.token});
            self.upstream.call(&run.region, "UpdateSecretVersionStage", &input).await?;
        }
        Ok(())
    }

    async fn describe(&self, region: &str, secret_id: &str) -> Result<Value, AwsError> {
        self.upstream.call(region, "DescribeSecret", &json!({ "SecretId": secret_id })).await
    }

    /// CancelRotateSecret.
    pub async fn cancel_rotate_secret(&self, region: &str, input: &Value) -> Result<Value, AwsError> {
        let secret_id = input
            .get("SecretId")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AwsError::invalid_parameter("You must specify SecretId."))?;
        let _admin = self.rotations.admin.lock().await;
        let described = self.describe(region, secret_id).await?;
        let arn = described.get("ARN").and_then(Value::as_str).unwrap_or_default();
        let mut inner = self.rotations.lock();
        let secret = inner.secrets.get_mut(arn).ok_or_else(|| AwsError::invalid_request(NO_LAMBDA))?;
        secret.enabled = false;
        let running = secret.running.as_ref().map(|r| {
            r.cancel.store(true, Ordering::SeqCst);
            r.token.clone()
        });
        drop(inner);
        let versions = Versions::from_describe(&described);
        let version = running.or_else(|| versions.unfinished().map(str::to_owned));
        info!(secret = %arn, version = ?version, "rotation cancelled");
        let mut answer = json!({ "ARN": arn, "Name": described.get("Name").cloned().unwrap_or(Value::Null) });
        if let Some(version) = version {
            answer["VersionId"] = json!(version);
        }
        Ok(answer)
    }

    /// One pass of the schedule: starts (or resumes) every due rotation.
    pub async fn fire_due_rotations(self: &Arc<Self>) {
        for (arn, region) in self.rotations.claim_due(SystemTime::now()) {
            let request = StartRequest {
                secret_id: arn.clone(),
                token: None,
                lambda_arn: None,
                rules: None,
                rotate_immediately: true,
                trigger: Trigger::Schedule,
                region,
            };
            if let Err(e) = self.start_rotation(request).await {
                warn!(secret = %arn, error = %e, "scheduled rotation not started");
            }
        }
    }
}

fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Secrets Manager's timestamps: seconds since the epoch, with a fraction.
fn epoch_seconds(at: SystemTime) -> f64 {
    (epoch_ms(at) as f64) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(rules: Option<&str>, enabled: bool, anchor: SystemTime) -> SecretRotation {
        SecretRotation {
            region: "us-east-1".into(),
            lambda_arn: "arn:aws:lambda:us-east-1:123456789012:function:f".into(),
            rules: rules.map(|e| RotationRules::from_json(&json!({ "ScheduleExpression": e })).expect("rules")),
            enabled,
            last_rotated: None,
            anchor,
            running: None,
        }
    }

    #[test]
    fn a_schedule_is_due_one_interval_after_its_anchor() {
        let anchor = UNIX_EPOCH + Duration::from_secs(1_000);
        let s = secret(Some("rate(10 seconds)"), true, anchor);
        assert!(!s.is_due(anchor + Duration::from_secs(9)));
        assert!(s.is_due(anchor + Duration::from_secs(10)));
        assert!(!secret(Some("rate(10 seconds)"), false, anchor).is_due(anchor + Duration::from_secs(60)), "disabled");
        assert!(!secret(None, true, anchor).is_due(anchor + Duration::from_secs(86_400 * 400)), "no schedule");
        let mut busy = s.clone();
        busy.running = Some(Running { token: "t".into(), cancel: Arc::default() });
        assert!(!busy.is_due(anchor + Duration::from_secs(60)), "one rotation at a time");
    }

    #[test]
    fn claiming_restarts_the_interval() {
        let rotations = Rotations::default();
        let anchor = UNIX_EPOCH + Duration::from_secs(1_000);
        rotations.lock().secrets.insert("arn".into(), secret(Some("rate(10 seconds)"), true, anchor));
        let now = anchor + Duration::from_secs(12);
        assert_eq!(rotations.claim_due(now), vec![("arn".to_owned(), "us-east-1".to_owned())]);
        assert!(rotations.claim_due(now + Duration::from_secs(9)).is_empty());
        assert_eq!(rotations.claim_due(now + Duration::from_secs(10)).len(), 1);
    }

    #[test]
    fn descriptions_are_patched_only_for_secrets_the_endpoint_rotates() {
        let rotations = Rotations::default();
        let anchor = UNIX_EPOCH + Duration::from_secs(1_000);
        let mut state = secret(Some("rate(10 seconds)"), true, anchor);
        state.last_rotated = Some(anchor);
        rotations.lock().secrets.insert("arn".into(), state);

        let mut known = json!({"ARN": "arn", "RotationEnabled": false, "RotationRules": {"AutomaticallyAfterDays": 0},
                               "LastRotatedDate": null});
        rotations.patch_description(&mut known);
        assert_eq!(known["RotationEnabled"], true);
        assert_eq!(known["RotationLambdaARN"], "arn:aws:lambda:us-east-1:123456789012:function:f");
        assert_eq!(known["RotationRules"], json!({"ScheduleExpression": "rate(10 seconds)"}));
        assert_eq!(known["LastRotatedDate"], json!(1000.0));
        assert_eq!(known["NextRotationDate"], json!(1010.0));

        let mut unknown = json!({"ARN": "other", "RotationEnabled": false});
        rotations.patch_description(&mut unknown);
        assert_eq!(unknown, json!({"ARN": "other", "RotationEnabled": false}));
    }

    #[test]
    fn rotate_secret_requests_are_validated() {
        let ok = StartRequest::from_input(
            &json!({"SecretId": "db", "ClientRequestToken": "a".repeat(36), "RotateImmediately": false}),
            "us-east-1",
        )
        .expect("valid");
        assert!(!ok.rotate_immediately);
        assert!(StartRequest::from_input(&json!({"SecretId": "db"}), "r").expect("valid").rotate_immediately);
        let short = StartRequest::from_input(&json!({"SecretId": "db", "ClientRequestToken": "short"}), "r");
        assert_eq!(short.expect_err("short").code, "InvalidParameterException");
        assert!(StartRequest::from_input(&json!({}), "r").is_err());
    }
}
