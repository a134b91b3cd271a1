//! Bad configuration stops the real binary at startup with a message that names the
//! problem, a non-zero exit code, and no password in anything it printed.

use std::time::Duration;

use e2e::TestEnv;
use e2e::web_app::WebApp;
use serde_json::json;

const PASSWORD: &str = "Startup-Passw0rd-never-printed";

/// Runs the app against `secret_id` with `extra` variables; returns (exit code, output).
async fn start(env: &TestEnv, secret_id: &str, extra: &[(&str, &str)]) -> (Option<i32>, String) {
    let vars = WebApp::env(env, secret_id, &env.moto.endpoint(), extra);
    WebApp::run_to_exit(&vars, Duration::from_secs(40)).await
}

fn assert_refused(outcome: &(Option<i32>, String), names: &str) {
    let (code, output) = outcome;
    assert!(matches!(code, Some(c) if *c != 0), "exit code {code:?}\n{output}");
    assert!(output.contains("startup failed") && output.contains(names), "expected {names:?} in:\n{output}");
    assert!(!output.contains(PASSWORD), "the password leaked into the startup error");
}

#[tokio::test]
async fn every_bad_configuration_is_named_at_startup_without_the_password() {
    let mut env = TestEnv::start().await;
    let not_json = env.create_raw_secret("bad/not-json", &format!("password={PASSWORD}")).await;
    let mut no_user = env.secret_json("app", PASSWORD);
    no_user.as_object_mut().expect("object").remove("username");
    let missing_key = env.create_secret("bad/missing-key", &no_user).await;
    let wrong_engine = env
        .create_secret("bad/engine", &json!({"engine": "mysql", "host": "h", "username": "u", "password": PASSWORD}))
        .await;

    // No secret id at all: a configuration error, before any AWS call.
    let mut vars = WebApp::env(&env, "unused", &env.moto.endpoint(), &[]);
    vars.retain(|(k, _)| k != "APP_SECRET_ID");
    let outcome = WebApp::run_to_exit(&vars, Duration::from_secs(10)).await;
    assert_refused(&outcome, "APP_SECRET_ID is required");

    // A credential passed as configuration is refused by name, its value never echoed.
    assert_refused(
        &start(&env, &not_json, &[("APP_DB_PASSWORD", PASSWORD)]).await,
        "APP_DB_PASSWORD looks like a credential",
    );
    assert_refused(&start(&env, &not_json, &[("APP_REQUEST_TIMEOUT", "10")]).await, "APP_REQUEST_TIMEOUT");

    assert_refused(&start(&env, &not_json, &[]).await, "is not a JSON object");
    assert_refused(&start(&env, &missing_key, &[]).await, "key `username` is missing");
    assert_refused(&start(&env, &wrong_engine, &[]).await, "key `engine` must be `postgres`");
    assert_refused(&start(&env, "does/not/exist", &[]).await, "secret does/not/exist not found");

    // A region is required (the SDK cannot guess it outside AWS).
    let mut vars = WebApp::env(&env, &not_json, &env.moto.endpoint(), &[]);
    vars.retain(|(k, _)| k != "AWS_REGION");
    assert_refused(&WebApp::run_to_exit(&vars, Duration::from_secs(10)).await, "AWS_REGION");

    // Access denied: the role may not read the secret.
    env.assert_no_leaks().await; // before IAM locks the test out of reading versions
    env.moto.enforce_iam().await;
    assert_refused(&start(&env, &missing_key, &[]).await, "access denied calling GetSecretValue");
}

#[tokio::test]
async fn a_login_the_database_refuses_is_named_with_every_version_tried() {
    let mut env = TestEnv::start().await;
    env.pg.set_password("app", "the-real-one-Passw0rd").await;
    env.remember("the-real-one-Passw0rd");
    let arn = env.create_secret("bad/login", &env.secret_json("app", PASSWORD)).await;
    let outcome = start(&env, &arn, &[]).await;
    assert_refused(&outcome, "no version of secret");
    assert!(outcome.1.contains("AWSCURRENT"), "{}", outcome.1);
    assert!(!outcome.1.contains("the-real-one-Passw0rd"));
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn serving_waits_for_the_schema_then_names_web_app_migrate_and_migrate_needs_the_owner() {
    let mut env = TestEnv::start().await;
    let deployment = env.first_deployment("unmigrated", PASSWORD, "Owner-Passw0rd-config").await;
    let outcome = start(&env, &deployment.app_arn, &[("APP_SCHEMA_WAIT", "2s")]).await;
    assert_refused(&outcome, "run `web-app migrate`");

    // `migrate` with the runtime login instead of the owner's: the least-privilege login
    // may not create the schema, and says so.
    let vars = WebApp::env(&env, &deployment.app_arn, &env.moto.endpoint(), &[]);
    let (code, output) = WebApp::migrate(&vars, &deployment.app_arn).await;
    assert!(matches!(code, Some(c) if c != 0), "{output}");
    assert!(output.contains("migration failed") && output.contains("42501"), "{output}");
    assert!(!output.contains(PASSWORD));
    // Without APP_OWNER_SECRET_ID at all.
    let mut vars = vars;
    vars.retain(|(k, _)| k != "APP_OWNER_SECRET_ID");
    let (code, output) = WebApp::migrate(&vars, "").await;
    assert!(matches!(code, Some(c) if c != 0) && output.contains("APP_OWNER_SECRET_ID is required"), "{output}");

    env.migrate(&deployment).await;
    vars.retain(|(k, _)| k != "RUST_LOG");
    vars.push(("RUST_LOG".into(), "info,rustls=debug".into()));
    let app = WebApp::spawn(&vars).await;
    assert_eq!(app.whoami().await.0, "app");
    // Libraries that log through the `log` crate (rustls here, sqlx's notices) reach the
    // JSON log too.
    let output = app.output();
    assert!(
        output.lines().any(|l| l.starts_with('{') && l.contains(r#""target":"rustls::"#)),
        "no bridged `log` record in:\n{output}"
    );
    env.assert_no_leaks().await;
}
