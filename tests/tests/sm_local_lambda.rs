//! The Lambda side of the endpoint: the real `bootstrap` cold-started once
//! and kept warm, killed at its timeout, replaced after a crash, and reached
//! through Lambda's Invoke API as well as by rotations.

use std::time::{Duration, Instant};

use e2e::http::http;
use e2e::process::signal;
use e2e::{SINGLE, TestEnv};
use serde_json::{Value, json};
use sm_local::{Action, RotationStatus};

const OLD: &str = "Initial-Passw0rd-for-app";

/// Starts a rotation whose createSecret is held inside its PutSecretValue
/// call for `hold_ms`, and returns its token once the function is there.
async fn rotation_held_in_create_secret(env: &TestEnv, secret: &str, hold_ms: u64) -> String {
    let fault = env.inject("PutSecretValue", secret, Action::Hang { ms: hold_ms }, 1);
    let token = env.rotate_secret(secret, SINGLE).await;
    env.wait_fault_used(fault).await;
    token
}

#[tokio::test]
async fn a_function_past_its_timeout_is_killed_and_the_step_fails_as_lambda_reports_it() {
    let mut env = TestEnv::start().await;
    env.set_timeout(Duration::from_secs(2)).await;
    let arn = env.create_user_and_secret("app-timeout", "app", OLD).await;
    let token = rotation_held_in_create_secret(&env, &arn, 1000).await;
    // The process stops answering anything: a hung function.
    let hung = env.pid(SINGLE).expect("a running process");
    signal(hung, "STOP").await;
    let stopped = Instant::now();

    let record = env.wait(&token).await;
    assert_eq!(record.status, RotationStatus::Failed);
    let error = record.error.as_ref().expect("error");
    assert_eq!((error.step.as_str(), error.error_type.as_str()), ("createSecret", "Sandbox.Timedout"));
    assert!(error.error_message.ends_with("Task timed out after 2.00 seconds"), "{}", error.error_message);
    assert_eq!(record.steps.len(), 1, "nothing runs after the failed step: {:?}", record.steps);
    assert!(stopped.elapsed() < Duration::from_secs(3), "killed at the timeout, not later: {:?}", stopped.elapsed());
    assert!(!std::path::Path::new(&format!("/proc/{hung}")).exists(), "the hung process was killed");
    let stats = env.endpoint.function_stats(SINGLE).expect("stats");
    assert_eq!((stats.timeouts, stats.pid), (1, None));
    let output = env.endpoint.function_output(SINGLE).expect("output");
    assert!(output.contains("Task timed out after 2.00 seconds"), "the log says it too");

    // Secrets Manager's retry runs in a fresh process and completes.
    env.sm.rotate_secret().secret_id(&arn).client_request_token(&token).send().await.expect("retry");
    assert_eq!(env.wait(&token).await.status, RotationStatus::Succeeded);
    let stats = env.endpoint.function_stats(SINGLE).expect("stats");
    assert_eq!((stats.cold_starts, stats.restarts), (2, 1));
    let password = env.password(&arn, "AWSCURRENT").await;
    assert_eq!(env.pg.login("app", &password).await, Ok(()));
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn a_process_killed_mid_invocation_fails_the_step_and_a_new_one_takes_over() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-crash", "app", OLD).await;
    let token = rotation_held_in_create_secret(&env, &arn, 1500).await;
    let crashed = env.pid(SINGLE).expect("a running process");
    signal(crashed, "KILL").await;

    let record = env.wait(&token).await;
    assert_eq!(record.status, RotationStatus::Failed);
    let error = record.error.as_ref().expect("error");
    assert_eq!((error.step.as_str(), error.error_type.as_str()), ("createSecret", "Runtime.ExitError"));
    assert!(error.error_message.contains("Runtime exited with error: signal: killed"), "{}", error.error_message);
    let steps: Vec<_> = record.steps.iter().map(|s| (s.step.as_str(), s.status)).collect();
    assert_eq!(steps, [("createSecret", "failed")], "nothing runs after the failed step");
    assert_eq!(env.endpoint.function_stats(SINGLE).expect("stats").crashes, 1);

    env.sm.rotate_secret().secret_id(&arn).client_request_token(&token).send().await.expect("retry");
    assert_eq!(env.wait(&token).await.status, RotationStatus::Succeeded);
    let stats = env.endpoint.function_stats(SINGLE).expect("stats");
    assert_eq!((stats.cold_starts, stats.restarts), (2, 1));
    assert_ne!(stats.pid, Some(crashed));
    let password = env.password(&arn, "AWSCURRENT").await;
    assert_eq!(env.pg.login("app", &password).await, Ok(()));
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn lambdas_invoke_api_reaches_the_same_warm_process() {
    let env = TestEnv::start().await;
    let url = format!("{}/2015-03-31/functions/{SINGLE}/invocations", env.endpoint.endpoint());
    let bogus = json!({"Step": "bogus", "SecretId": "x", "ClientRequestToken": "y"}).to_string();

    // A function error is a 200 that says so, with Lambda's error body.
    let (status, headers, body) = http("POST", &url, &[], &bogus).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-amz-function-error"], "Unhandled");
    let error: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(error["errorType"], "InvalidEvent");
    assert!(error["errorMessage"].as_str().is_some_and(|m| m.contains("bogus")), "{error}");
    let first_pid = env.pid(SINGLE).expect("a running process");

    // By ARN, warm: same process.
    let by_arn = format!("{}/2015-03-31/functions/{}/invocations", env.endpoint.endpoint(), env.lambda_arn(SINGLE));
    let (status, headers, _) = http("POST", &by_arn, &[], &bogus).await;
    assert_eq!((status, headers.contains_key("x-amz-function-error")), (200, true));
    let (status, _, _) = http("POST", &url, &[("x-amz-invocation-type", "DryRun")], "{}").await;
    assert_eq!(status, 204);
    let stats = env.endpoint.function_stats(SINGLE).expect("stats");
    assert_eq!((stats.invocations, stats.cold_starts, stats.pid), (2, 1, Some(first_pid)));

    let missing = format!("{}/2015-03-31/functions/nope/invocations", env.endpoint.endpoint());
    let (status, headers, _) = http("POST", &missing, &[], "{}").await;
    assert_eq!(status, 404);
    assert_eq!(headers["x-amzn-errortype"], "ResourceNotFoundException");
}
