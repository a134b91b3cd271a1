//! The stage/retry matrix, against an in-memory Secrets Manager that behaves
//! as the service does (a second, different value under one token is refused;
//! moving AWSCURRENT names the version it leaves). Steps that need a database
//! are the e2e tests' business; these are the ones that don't: the guard,
//! createSecret, finishSecret, and what a warm process reads again.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::Rotator;
use crate::config::Config;
use crate::deadline::Deadline;
use crate::error::{AwsFailure, RotationError};
use crate::guard::{CURRENT, PENDING, PREVIOUS, SecretState};
use crate::store::{ApiFuture, PutOutcome, SecretsApi, Version, VersionInfo};

const ARN: &str = "arn:aws:secretsmanager:eu-west-1:1:secret:app";
const MASTER: &str = "arn:aws:secretsmanager:eu-west-1:1:secret:master";

#[derive(Debug, Default)]
struct Stored {
    stages: Vec<String>,
    value: Option<String>,
    created: i64,
}

type BeforeMove = Box<dyn Fn(&mut HashMap<String, HashMap<String, Stored>>) + Send + Sync>;

#[derive(Default)]
struct FakeSecrets {
    secrets: Mutex<HashMap<String, HashMap<String, Stored>>>,
    enabled: Mutex<Option<bool>>,
    calls: Mutex<Vec<String>>,
    /// Runs inside UpdateSecretVersionStage before it checks anything: a race.
    before_move: Mutex<Option<BeforeMove>>,
}

impl std::fmt::Debug for FakeSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeSecrets")
    }
}

fn aws(operation: &'static str, code: &str) -> AwsFailure {
    AwsFailure { operation, code: code.into(), message: String::new(), transient: false }
}

impl FakeSecrets {
    fn add(&self, arn: &str, id: &str, stages: &[&str], value: Option<Value>) {
        let mut secrets = self.secrets.lock().unwrap();
        let versions = secrets.entry(arn.into()).or_default();
        let created = versions.len() as i64;
        versions.insert(
            id.into(),
            Stored {
                stages: stages.iter().map(|s| (*s).into()).collect(),
                value: value.map(|v| v.to_string()),
                created,
            },
        );
    }

    fn value(&self, arn: &str, id: &str) -> Option<Value> {
        let secrets = self.secrets.lock().unwrap();
        secrets[arn].get(id)?.value.as_ref().map(|v| serde_json::from_str(v).unwrap())
    }

    fn holder(&self, arn: &str, stage: &str) -> Option<String> {
        let secrets = self.secrets.lock().unwrap();
        secrets[arn].iter().find(|(_, v)| v.stages.iter().any(|s| s == stage)).map(|(id, _)| id.clone())
    }

    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    fn log(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

impl SecretsApi for FakeSecrets {
    fn describe<'a>(&'a self, secret_id: &'a str) -> ApiFuture<'a, SecretState> {
        self.log("DescribeSecret".into());
        let secrets = self.secrets.lock().unwrap();
        let versions = secrets[secret_id].iter().map(|(id, v)| (id.clone(), v.stages.clone())).collect();
        let enabled = self.enabled.lock().unwrap().unwrap_or(true);
        Box::pin(std::future::ready(Ok(SecretState { arn: secret_id.into(), rotation_enabled: enabled, versions })))
    }

    fn get<'a>(
        &'a self,
        secret_id: &'a str,
        stage: Option<&'a str>,
        version_id: Option<&'a str>,
    ) -> ApiFuture<'a, Option<Version>> {
        self.log(format!("GetSecretValue {}", stage.or(version_id).unwrap_or_default()));
        let secrets = self.secrets.lock().unwrap();
        let found = secrets[secret_id].iter().find(|(id, v)| {
            version_id.is_none_or(|want| want == id.as_str())
                && stage.is_none_or(|want| v.stages.iter().any(|s| s == want))
        });
        let version = found.and_then(|(id, v)| {
            let value = v.value.as_ref()?;
            Some(Version { id: id.clone(), value: Some(SecretString::from(value.clone())) })
        });
        Box::pin(std::future::ready(Ok(version)))
    }

    fn put_pending<'a>(
        &'a self,
        secret_id: &'a str,
        token: &'a str,
        value: &'a SecretString,
        _rotation_token: Option<&'a str>,
    ) -> ApiFuture<'a, PutOutcome> {
        self.log("PutSecretValue".into());
        let mut secrets = self.secrets.lock().unwrap();
        let versions = secrets.get_mut(secret_id).unwrap();
        let created = versions.len() as i64;
        let version = versions.entry(token.into()).or_insert_with(|| Stored { created, ..Stored::default() });
        let outcome = match &version.value {
            Some(existing) if existing == value.expose_secret() => Ok(PutOutcome::Written),
            Some(_) => Ok(PutOutcome::AlreadyExists),
            None => {
                version.value = Some(value.expose_secret().to_owned());
                if !version.stages.iter().any(|s| s == PENDING) {
                    version.stages.push(PENDING.into());
                }
                Ok(PutOutcome::Written)
            }
        };
        Box::pin(std::future::ready(outcome))
    }

    fn remove_pending<'a>(&'a self, secret_id: &'a str, version: &'a str) -> ApiFuture<'a, ()> {
        self.log("UpdateSecretVersionStage".into());
        if let Some(v) = self.secrets.lock().unwrap().get_mut(secret_id).and_then(|vs| vs.get_mut(version)) {
            v.stages.retain(|s| s != PENDING);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn move_current<'a>(&'a self, secret_id: &'a str, to: &'a str, from: &'a str) -> ApiFuture<'a, ()> {
        self.log("UpdateSecretVersionStage".into());
        let mut secrets = self.secrets.lock().unwrap();
        if let Some(race) = self.before_move.lock().unwrap().take() {
            race(&mut secrets);
        }
        let versions = secrets.get_mut(secret_id).unwrap();
        let result = if !versions.get(from).is_some_and(|v| v.stages.iter().any(|s| s == CURRENT)) {
            Err(aws("UpdateSecretVersionStage", "InvalidParameterException"))
        } else {
            for v in versions.values_mut() {
                v.stages.retain(|s| s != PREVIOUS);
            }
            let old = versions.get_mut(from).unwrap();
            old.stages.retain(|s| s != CURRENT);
            old.stages.push(PREVIOUS.into());
            versions.get_mut(to).unwrap().stages.push(CURRENT.into());
            Ok(())
        };
        Box::pin(std::future::ready(result))
    }

    fn list_versions<'a>(&'a self, secret_id: &'a str) -> ApiFuture<'a, Vec<VersionInfo>> {
        self.log("ListSecretVersionIds".into());
        let secrets = self.secrets.lock().unwrap();
        let list = secrets[secret_id]
            .iter()
            .map(|(id, v)| VersionInfo { id: id.clone(), stages: v.stages.clone(), created: v.created })
            .collect();
        Box::pin(std::future::ready(Ok(list)))
    }
}

fn app_secret(user: &str, password: &str) -> Value {
    json!({"engine": "postgres", "host": "db.internal", "port": 5432, "username": user, "password": password,
           "dbname": "orders", "team": {"owner": "payments"}})
}

fn setup(strategy: &str, extra: &[(&str, &str)]) -> (Rotator, Arc<FakeSecrets>) {
    let fake = Arc::new(FakeSecrets::default());
    let mut vars: HashMap<String, String> = HashMap::from([("ROTATION_STRATEGY".into(), strategy.into())]);
    vars.extend(extra.iter().map(|(k, v)| ((*k).into(), (*v).into())));
    let config = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
    (Rotator::new(fake.clone(), config), fake)
}

async fn step(rotator: &Rotator, step: &str, token: &str) -> Result<Value, RotationError> {
    let event = json!({"Step": step, "SecretId": ARN, "ClientRequestToken": token});
    rotator.handle(&event, Deadline::after(Duration::from_secs(5))).await
}

fn outcome(result: Result<Value, RotationError>) -> String {
    result.unwrap()["outcome"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_guard_refuses_what_is_not_the_rotation_in_progress() {
    let (rotator, fake) = setup("single-user", &[]);
    fake.add(ARN, "v1", &[CURRENT], Some(app_secret("app", "old")));
    fake.add(ARN, "v0", &[PREVIOUS], Some(app_secret("app", "older")));
    fake.add(ARN, "t", &[PENDING], None);
    let kind = |r: Result<Value, RotationError>| r.unwrap_err().kind();
    assert_eq!(kind(step(&rotator, "createSecret", "unknown").await), "VersionStageMismatch");
    assert_eq!(kind(step(&rotator, "createSecret", "v0").await), "VersionStageMismatch");
    assert_eq!(outcome(step(&rotator, "setSecret", "v1").await), "already_current", "a finished rotation");
    *fake.enabled.lock().unwrap() = Some(false);
    assert_eq!(kind(step(&rotator, "createSecret", "t").await), "RotationDisabled");
    assert_eq!(fake.value(ARN, "t"), None, "nothing written");
}

#[tokio::test]
async fn create_writes_once_and_a_retry_keeps_the_first_value() {
    let (rotator, fake) = setup("single-user", &[]);
    fake.add(ARN, "v1", &[CURRENT], Some(app_secret("app", "old")));
    fake.add(ARN, "t", &[PENDING], None);
    assert_eq!(outcome(step(&rotator, "createSecret", "t").await), "created");
    let written = fake.value(ARN, "t").unwrap();
    assert_eq!(written["username"], "app");
    assert_ne!(written["password"], "old");
    assert_eq!(written["team"], json!({"owner": "payments"}), "unknown keys kept");
    fake.calls();
    assert_eq!(outcome(step(&rotator, "createSecret", "t").await), "already_created");
    assert_eq!(fake.value(ARN, "t"), Some(written), "the first value stands");
    assert!(!fake.calls().contains(&"PutSecretValue".to_owned()), "no second write");
}

#[tokio::test]
async fn a_secret_that_does_not_fit_the_configured_strategy_is_refused_before_any_write() {
    // Alternating users configured, but the secret has no masterarn (someone removed it).
    let (rotator, fake) = setup("alternating-users", &[]);
    fake.add(ARN, "v1", &[CURRENT], Some(app_secret("app", "old")));
    fake.add(ARN, "t", &[PENDING], None);
    let err = step(&rotator, "createSecret", "t").await.unwrap_err();
    assert_eq!(err.kind(), "InvalidSecret");
    assert!(err.to_string().contains("ROTATION_STRATEGY=alternating-users needs key `masterarn`"), "{err}");
    assert_eq!(fake.value(ARN, "t"), None);
    assert!(!fake.calls().contains(&"PutSecretValue".to_owned()));

    // Plain text asked for by the secret, not allowed by the operator.
    let (rotator, fake) = setup("single-user", &[]);
    let mut plain = app_secret("app", "old");
    plain["ssl"] = json!(false);
    fake.add(ARN, "v1", &[CURRENT], Some(plain));
    fake.add(ARN, "t", &[PENDING], None);
    let err = step(&rotator, "createSecret", "t").await.unwrap_err();
    assert_eq!(err.kind(), "InvalidSecret");
    assert!(err.to_string().contains("DB_TLS=allow-plaintext"), "{err}");
    assert_eq!(fake.value(ARN, "t"), None);
}

#[tokio::test]
async fn alternating_create_names_the_alternate_and_accepts_an_rds_managed_master() {
    // What RDS writes for ManageMasterUserPassword: no host, port or engine.
    let rds_master = json!({"username": "postgres", "password": "m"});
    let (rotator, fake) = setup("alternating-users", &[("DB_ENDPOINTS", "db.internal:5432")]);
    let mut current = app_secret("app", "old");
    current["masterarn"] = json!(MASTER);
    fake.add(ARN, "v1", &[CURRENT], Some(current.clone()));
    fake.add(ARN, "t", &[PENDING], None);
    fake.add(MASTER, "m1", &[CURRENT], Some(rds_master.clone()));
    assert_eq!(outcome(step(&rotator, "createSecret", "t").await), "created");
    assert_eq!(fake.value(ARN, "t").unwrap()["username"], "app_clone");

    // Without DB_ENDPOINTS the master's server would come from the app
    // secret, which its writer chooses: refused, nothing written.
    let (rotator, fake) = setup("alternating-users", &[]);
    fake.add(ARN, "v1", &[CURRENT], Some(current.clone()));
    fake.add(ARN, "t", &[PENDING], None);
    fake.add(MASTER, "m1", &[CURRENT], Some(rds_master.clone()));
    let err = step(&rotator, "createSecret", "t").await.unwrap_err();
    assert_eq!(err.kind(), "InvalidSecret");
    assert!(err.to_string().contains("DB_ENDPOINTS"), "{err}");
    assert_eq!(fake.value(ARN, "t"), None);

    // With it, an app secret naming another server is refused before anything.
    let (rotator, fake) = setup("alternating-users", &[("DB_ENDPOINTS", "db.internal:5432")]);
    let mut elsewhere = current.clone();
    elsewhere["host"] = json!("attacker.example");
    fake.add(ARN, "v1", &[CURRENT], Some(elsewhere));
    fake.add(ARN, "t", &[PENDING], None);
    fake.add(MASTER, "m1", &[CURRENT], Some(rds_master));
    let err = step(&rotator, "createSecret", "t").await.unwrap_err();
    assert!(err.to_string().contains("attacker.example:5432 is not among"), "{err}");
    assert_eq!(fake.value(ARN, "t"), None);

    // A master that is one of the pair is refused.
    let (rotator, fake) = setup("alternating-users", &[]);
    fake.add(ARN, "v1", &[CURRENT], Some(current));
    fake.add(ARN, "t", &[PENDING], None);
    let own = json!({"username": "app_clone", "password": "m", "host": "db.internal"});
    fake.add(MASTER, "m1", &[CURRENT], Some(own));
    assert_eq!(step(&rotator, "createSecret", "t").await.unwrap_err().kind(), "InconsistentSecret");
    assert_eq!(fake.value(ARN, "t"), None);
}

#[tokio::test]
async fn finish_moves_current_and_a_lost_race_is_transient() {
    let (rotator, fake) = setup("single-user", &[]);
    fake.add(ARN, "v1", &[CURRENT], Some(app_secret("app", "old")));
    fake.add(ARN, "t", &[PENDING], Some(app_secret("app", "new")));
    assert_eq!(outcome(step(&rotator, "finishSecret", "t").await), "finished");
    assert_eq!(fake.holder(ARN, CURRENT).as_deref(), Some("t"));
    assert_eq!(fake.holder(ARN, PREVIOUS).as_deref(), Some("v1"));
    // A retry after a crash between the move and the answer: a no-op.
    assert_eq!(outcome(step(&rotator, "finishSecret", "t").await), "already_current");

    // Someone moves AWSCURRENT between the guard and the move.
    let (rotator, fake) = setup("single-user", &[]);
    fake.add(ARN, "v1", &[CURRENT], Some(app_secret("app", "old")));
    fake.add(ARN, "t", &[PENDING], Some(app_secret("app", "new")));
    fake.add(ARN, "v2", &[], Some(app_secret("app", "operator")));
    *fake.before_move.lock().unwrap() = Some(Box::new(|secrets| {
        let versions = secrets.get_mut(ARN).unwrap();
        versions.get_mut("v1").unwrap().stages.retain(|s| s != CURRENT);
        versions.get_mut("v2").unwrap().stages.push(CURRENT.into());
    }));
    let err = step(&rotator, "finishSecret", "t").await.unwrap_err();
    assert_eq!(err.kind(), "VersionStageMismatch");
    assert!(err.is_transient(), "{}", err.report());
    assert!(err.to_string().contains("moved from version v1 to v2"), "{err}");

    // Or a concurrent finishSecret of the same rotation got there first.
    let (rotator, fake) = setup("single-user", &[]);
    fake.add(ARN, "v1", &[CURRENT], Some(app_secret("app", "old")));
    fake.add(ARN, "t", &[PENDING], Some(app_secret("app", "new")));
    *fake.before_move.lock().unwrap() = Some(Box::new(|secrets| {
        let versions = secrets.get_mut(ARN).unwrap();
        versions.get_mut("v1").unwrap().stages = vec![PREVIOUS.into()];
        versions.get_mut("t").unwrap().stages.push(CURRENT.into());
    }));
    assert_eq!(outcome(step(&rotator, "finishSecret", "t").await), "already_current");
}

#[tokio::test]
async fn a_warm_process_reads_a_value_once_per_version() {
    let (rotator, fake) = setup("single-user", &[]);
    fake.add(ARN, "v1", &[CURRENT], Some(app_secret("app", "old")));
    fake.add(ARN, "t1", &[PENDING], None);
    step(&rotator, "createSecret", "t1").await.unwrap();
    let cold: Vec<String> = fake.calls();
    assert_eq!(cold, ["DescribeSecret", "GetSecretValue AWSPENDING", "GetSecretValue AWSCURRENT", "PutSecretValue"]);
    // The next rotation: t1 is AWSCURRENT now. Its value was never read
    // (only written), so one read; v1's value was read and is cached.
    {
        let mut secrets = fake.secrets.lock().unwrap();
        let versions = secrets.get_mut(ARN).unwrap();
        versions.get_mut("v1").unwrap().stages = vec![PREVIOUS.into()];
        versions.get_mut("t1").unwrap().stages = vec![CURRENT.into()];
    }
    fake.add(ARN, "t2", &[PENDING], None);
    step(&rotator, "createSecret", "t2").await.unwrap();
    assert_eq!(
        fake.calls(),
        ["DescribeSecret", "GetSecretValue AWSPENDING", "GetSecretValue AWSCURRENT", "PutSecretValue"]
    );
    // A retry of createSecret reads the pending value once; after that it is cached.
    step(&rotator, "createSecret", "t2").await.unwrap();
    step(&rotator, "createSecret", "t2").await.unwrap();
    assert_eq!(fake.calls(), ["DescribeSecret", "GetSecretValue AWSPENDING", "DescribeSecret"]);
}
