//! The function as Lambda runs it: deadlines, concurrent invocations from
//! two processes, and logs at the most verbose level.

use std::time::{Duration, Instant};

use e2e::{SINGLE, SINGLE_TWIN, STEPS, TestEnv};
use serde_json::json;

const OLD: &str = "Initial-Passw0rd-for-app";

#[tokio::test]
async fn a_database_that_never_answers_ends_in_a_precise_error_before_lambdas_timeout() {
    let mut env = TestEnv::start().await;
    // Accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    env.pg.set_password("app", OLD).await;
    let mut value = env.secret_json("app", OLD);
    value["port"] = json!(port);
    let arn = env.create_secret("app-silent", &value).await;
    let timeout = Duration::from_secs(3);
    // The silent server is not the pinned endpoint; without the pin the
    // function does try it.
    env.restart_without("DB_ENDPOINTS").await;
    env.set_timeout(timeout).await;

    let started = Instant::now();
    let failure = env.rotate(&arn).await.expect_err("no answer");
    assert_eq!(failure.step, "setSecret");
    assert_eq!(failure.error.error_type, "DeadlineExceeded", "{}", failure.error.error_message);
    let message = &failure.error.error_message;
    assert!(message.contains("AWSCURRENT") && message.contains("transient"), "{message}");
    // createSecret and setSecret each had the whole timeout; the function
    // answered before Lambda would have killed it.
    assert!(started.elapsed() < 2 * timeout, "{:?}", started.elapsed());
    held.abort();
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn two_processes_running_the_same_steps_at_once_agree() {
    // Reserved concurrency 1 prevents this in production, but an operator's
    // manual rotate-secret racing a retry must still end in one password.
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-race", "app", OLD).await;
    let token = env.begin_rotation(&arn).await;
    for step in STEPS {
        let event = json!({ "Step": step, "SecretId": arn, "ClientRequestToken": token });
        let (mine, theirs) =
            tokio::join!(env.endpoint.invoke(SINGLE, &event), env.endpoint.invoke(SINGLE_TWIN, &event));
        // One may see the other's work half done; a failure must be one
        // Secrets Manager's retry heals, and both must not fail.
        assert!(mine.is_ok() || theirs.is_ok(), "{step}: {mine:?} / {theirs:?}");
    }
    env.drop_pending(&arn, &token).await;
    let current = env.value(&arn, "AWSCURRENT").await.expect("current");
    assert_eq!(env.version_with(&arn, "AWSCURRENT").await.as_deref(), Some(token.as_str()));
    let password = current["password"].as_str().expect("password");
    assert_eq!(env.pg.login("app", password).await, Ok(()), "the database holds what AWSCURRENT holds");
    assert_ne!(env.pid(SINGLE), env.pid(SINGLE_TWIN), "two processes");
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn trace_level_logs_carry_the_story_but_no_password() {
    let mut env = TestEnv::start().await;
    env.restart_function(&[("RUST_LOG", "trace")]).await;
    let arn = env.create_user_and_secret("app-trace", "app", OLD).await;
    let token = env.rotate(&arn).await.expect("rotation");
    let output = env.function_output();
    for step in STEPS {
        assert!(output.contains(step), "the log names {step}");
    }
    assert!(output.contains(&token), "the log names the token");
    assert!(output.lines().count() > 50, "trace level is really on: {} lines", output.lines().count());
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn rotation_token_and_unknown_event_fields_are_accepted_and_never_logged() {
    let mut env = TestEnv::start().await;
    env.restart_function(&[("RUST_LOG", "trace")]).await;
    let arn = env.create_user_and_secret("app-event", "app", OLD).await;
    let token = env.begin_rotation(&arn).await;
    let rotation_token = "Rotation-token-that-must-stay-private-1";
    let stray = "Stray-secret-in-an-unknown-field-2";
    env.remember(rotation_token);
    env.remember(stray);
    for step in STEPS {
        let event = json!({
            "Step": step, "SecretId": arn, "ClientRequestToken": token,
            "RotationToken": rotation_token, "FutureField": { "password": stray },
        });
        env.invoke(&event).await.unwrap_or_else(|e| panic!("{step}: {e:?}"));
    }
    env.drop_pending(&arn, &token).await;
    assert_eq!(env.version_with(&arn, "AWSCURRENT").await.as_deref(), Some(token.as_str()));
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn every_step_logs_one_json_line_with_step_secret_token_outcome_and_duration() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-logs", "app", OLD).await;
    let token = env.rotate(&arn).await.expect("rotation");
    let broken = env.create_raw_secret("app-logs-broken", "{}").await;
    let failure = env.rotate(&broken).await.expect_err("invalid secret");

    let lines: Vec<serde_json::Value> =
        env.function_output().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let summary = |message: &str| -> Vec<&serde_json::Value> {
        lines.iter().filter(|l| l["fields"]["message"] == message).collect()
    };
    let succeeded = summary("step succeeded");
    assert_eq!(succeeded.len(), 4, "one line per step: {succeeded:?}");
    for (line, step) in succeeded.iter().zip(STEPS) {
        let text = line.to_string();
        assert!(text.contains(step) && text.contains(&arn) && text.contains(&token), "{text}");
        assert!(line["fields"]["duration_ms"].as_f64().is_some_and(|d| d > 0.0), "{text}");
        assert_eq!(line["level"], "INFO");
    }
    let failed = summary("step failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["level"], "ERROR");
    assert_eq!(failed[0]["fields"]["kind"], failure.error.error_type);
    assert_eq!(failed[0]["fields"]["transient"], false);
    env.assert_no_leaks().await;
}
