//! The operator's view (issue 10): the `sm-local` binary started with flags
//! in front of moto, driven by the real aws CLI with `--endpoint-url`.
//! `rotate-secret` rotates, and the next `rotate-secret` is not refused.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_secretsmanager::config::retry::RetryConfig;
use e2e::http::http;
use e2e::moto::client;
use e2e::postgres::{Postgres, Tls};
use e2e::process::{binary_path, bootstrap_path, signal};
use e2e::{Moto, process};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

const OLD: &str = "Initial-Passw0rd-for-app";
const FUNCTION: &str = "rotation-fn";

/// The `sm-local` binary, its URL and everything it wrote to stderr.
struct Binary {
    child: Child,
    url: String,
    stderr: Arc<Mutex<String>>,
}

impl Binary {
    async fn start(moto: &Moto, pg: &Postgres) -> Binary {
        let mut child = Command::new(binary_path("SM_LOCAL_BIN", "sm-local"))
            .args(["--moto", &moto.endpoint()])
            .args(["--function", &format!("{FUNCTION}={}", bootstrap_path().display())])
            .args(["--env", &format!("{FUNCTION}:ROTATION_STRATEGY=single-user")])
            .args(["--env", &format!("{FUNCTION}:DB_CA_BUNDLE={}", pg.ca_bundle().display())])
            .args(["--timeout", &format!("{FUNCTION}=30")])
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn sm-local");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = process::capture_output(&mut child);
        let first = tokio::time::timeout(Duration::from_secs(30), BufReader::new(stdout).lines().next_line()).await;
        let url = match first {
            Ok(Ok(Some(line))) => line,
            other => panic!("sm-local printed no URL ({other:?}): {}", stderr.lock().expect("stderr")),
        };
        assert!(url.starts_with("http://127.0.0.1:"), "one line, the URL: {url:?}");
        Binary { child, url, stderr }
    }

    /// Runs the aws CLI against the endpoint; returns (success, stdout, stderr).
    async fn aws(&self, args: &[&str]) -> (bool, String, String) {
        let cli = std::env::var_os("AWS_CLI").map_or_else(|| process::tool("aws"), std::path::PathBuf::from);
        let out = Command::new(&cli)
            .args(args)
            .args(["--endpoint-url", &self.url, "--output", "json"])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("AWS_MAX_ATTEMPTS", "1")
            .output()
            .await
            .unwrap_or_else(|e| panic!("{} (awscli; set AWS_CLI to its path): {e}", cli.display()));
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    }

    async fn aws_json(&self, args: &[&str]) -> Value {
        let (ok, stdout, stderr) = self.aws(args).await;
        assert!(ok, "aws {args:?}: {stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("aws {args:?} printed {stdout:?}"))
    }

    /// The rotation `token` once it ended, through the control API.
    async fn wait(&self, token: &str) -> Value {
        let url = format!("{}/_sm-local/rotations/{token}?wait=60", self.url);
        let (status, _, body) = http("GET", &url, &[], "").await;
        assert_eq!(status, 200);
        serde_json::from_slice(&body).expect("JSON")
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }
}

#[tokio::test]
async fn the_aws_cli_rotates_through_the_sm_local_binary_and_no_secret_reaches_its_log() {
    let (pg, moto) = tokio::join!(Postgres::start(Tls::On), Moto::start());
    pg.set_password("app", OLD).await;
    let mut sm = Binary::start(&moto, &pg).await;
    let value = json!({
        "engine": "postgres", "host": "127.0.0.1", "port": pg.port(),
        "username": "app", "password": OLD, "dbname": "postgres",
    });
    // Setup and incidental reads go through the same endpoint with the SDK;
    // the CLI (≈1 s a call) does what the operator types.
    let sdk = client(&sm.url, RetryConfig::standard());
    sdk.create_secret().name("app-cli").secret_string(value.to_string()).send().await.expect("CreateSecret");

    let lambda_arn = format!("arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}");
    let first = sm
        .aws_json(&[
            "secretsmanager",
            "rotate-secret",
            "--secret-id",
            "app-cli",
            "--rotation-lambda-arn",
            &lambda_arn,
            "--rotation-rules",
            "AutomaticallyAfterDays=30",
        ])
        .await;
    let token = first["VersionId"].as_str().expect("VersionId (the CLI made the token)").to_owned();
    let record = sm.wait(&token).await;
    assert_eq!(record["status"], "Succeeded", "{record}");
    assert_eq!(record["steps"].as_array().map(Vec::len), Some(4));

    let current = sm.aws_json(&["secretsmanager", "get-secret-value", "--secret-id", "app-cli"]).await;
    assert_eq!(current["VersionId"], token.as_str(), "a stage-less read sees the rotated version");
    let secret: Value = serde_json::from_str(current["SecretString"].as_str().expect("SecretString")).expect("JSON");
    let rotated = secret["password"].as_str().expect("password").to_owned();
    assert_eq!(pg.login("app", &rotated).await, Ok(()));

    // The operator's next rotate-secret is not refused (issue 10).
    let second = sm.aws_json(&["secretsmanager", "rotate-secret", "--secret-id", "app-cli"]).await;
    let second = second["VersionId"].as_str().expect("VersionId").to_owned();
    assert_eq!(sm.wait(&second).await["status"], "Succeeded");
    let described = sm.aws_json(&["secretsmanager", "describe-secret", "--secret-id", "app-cli"]).await;
    assert_eq!(described["RotationEnabled"], true);
    assert_eq!(described["RotationLambdaARN"], lambda_arn.as_str());
    assert!(described["LastRotatedDate"].is_string() || described["LastRotatedDate"].is_number(), "{described}");
    assert_eq!(described["VersionIdsToStages"][&second], json!(["AWSCURRENT"]));
    let now = sdk.get_secret_value().secret_id("app-cli").version_stage("AWSCURRENT").send().await.expect("read");
    let latest: Value = serde_json::from_str(now.secret_string().expect("SecretString")).expect("JSON");
    let latest = latest["password"].as_str().expect("password").to_owned();

    // Lambda's Invoke API through the CLI: a function error is reported as such.
    let out_file = tempfile::NamedTempFile::new().expect("temp file");
    let out_path = out_file.path().display().to_string();
    let invoked = sm
        .aws_json(&["lambda", "invoke", "--function-name", FUNCTION, "--payload", r#"{"Step":"bogus"}"#, &out_path])
        .await;
    assert_eq!((invoked["StatusCode"].clone(), invoked["FunctionError"].clone()), (json!(200), json!("Unhandled")));
    let payload: Value = serde_json::from_str(&std::fs::read_to_string(&out_path).expect("payload")).expect("JSON");
    assert_eq!(payload["errorType"], "InvalidEvent");

    // The operator's emergency rotation, typed as the README and the demo print it.
    let emergency = r#"{"Operation":"emergency-rotation","SecretId":"app-cli","FleetWaitSeconds":0}"#;
    let invoked =
        sm.aws_json(&["lambda", "invoke", "--function-name", FUNCTION, "--payload", emergency, &out_path]).await;
    assert_eq!(
        (invoked["StatusCode"].clone(), invoked["FunctionError"].clone()),
        (json!(200), Value::Null),
        "{invoked}"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out_path).expect("payload")).expect("JSON");
    assert_eq!(report["passwords_changed"], json!(["app"]), "{report}");
    assert!(pg.login("app", &latest).await.is_err(), "the password before the emergency no longer logs in");
    let now = sdk.get_secret_value().secret_id("app-cli").version_stage("AWSCURRENT").send().await.expect("read");
    let after: Value = serde_json::from_str(now.secret_string().expect("SecretString")).expect("JSON");
    let after = after["password"].as_str().expect("password").to_owned();
    assert_eq!(pg.login("app", &after).await, Ok(()));

    // A fault rule posted to the control API reaches the CLI as AWS would send it.
    let rule = r#"{"operation":"ListSecrets","action":{"type":"error","code":"ThrottlingException"},"times":1}"#;
    let (status, _, body) = http("POST", &format!("{}/_sm-local/faults", sm.url), &[], rule).await;
    assert_eq!((status, serde_json::from_slice::<Value>(&body).expect("JSON")), (201, json!({"id": 1})));
    let (ok, _, stderr) = sm.aws(&["secretsmanager", "list-secrets"]).await;
    assert!(!ok && stderr.contains("ThrottlingException") && stderr.contains("Rate exceeded"), "{stderr}");
    let calls_url = format!("{}/_sm-local/calls?operation=ListSecrets", sm.url);
    let (_, _, calls) = http("GET", &calls_url, &[], "").await;
    let calls: Value = serde_json::from_slice(&calls).expect("JSON");
    assert_eq!(calls["calls"][0]["error"], "ThrottlingException");
    assert_eq!(calls["calls"][0]["fault"], "error");

    // SIGTERM stops it cleanly.
    let pid = sm.child.id().expect("pid");
    signal(pid, "TERM").await;
    let status = tokio::time::timeout(Duration::from_secs(10), sm.child.wait()).await.expect("exits").expect("status");
    assert!(status.success(), "{status:?}");

    let log = sm.stderr();
    assert!(log.contains("secretsmanager call") && log.contains("operation=GetSecretValue"), "it logs the calls");
    assert!(log.contains(&format!("{FUNCTION} | END RequestId")), "and the function's output");
    for password in [OLD, rotated.as_str(), latest.as_str(), after.as_str()] {
        assert!(!log.contains(password), "a password reached sm-local's log");
    }
}
