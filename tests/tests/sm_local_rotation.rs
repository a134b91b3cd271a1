//! Rotations started with RotateSecret against the local endpoint, as an
//! operator starts them on AWS: sm-local runs the real function's four steps
//! in the background and keeps the labels the way Secrets Manager does.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_secretsmanager::error::ProvideErrorMetadata as _;
use aws_sdk_secretsmanager::types::RotationRulesType;
use e2e::{ALTERNATING, SINGLE, TestEnv};
use serde_json::Value;
use sm_local::{Action, RotationStatus, STEPS};

const OLD: &str = "Initial-Passw0rd-for-app";
const PREVIOUS_INCOMPLETE: &str = "A previous rotation isn't complete. That rotation will be reattempted.";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

fn hang(ms: u64) -> Action {
    Action::Hang { ms }
}

fn throttle() -> Action {
    Action::Error { code: "ThrottlingException".into(), status: 400, message: None }
}

/// A RotateSecret with a fresh token that Secrets Manager must refuse;
/// returns the error's code and message.
async fn refused_rotation(env: &TestEnv, secret: &str) -> (String, String) {
    let err = env
        .sm
        .rotate_secret()
        .secret_id(secret)
        .rotation_lambda_arn(env.lambda_arn(SINGLE))
        .send()
        .await
        .expect_err("RotateSecret refused");
    (err.code().unwrap_or_default().to_owned(), err.message().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn rotate_secret_answers_at_once_and_runs_the_four_steps_as_secrets_manager_does() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-sm", "app", OLD).await;
    let old_version = env.version_with(&arn, "AWSCURRENT").await.expect("current");

    let out = env
        .sm
        .rotate_secret()
        .secret_id(&arn)
        .rotation_lambda_arn(env.lambda_arn(SINGLE))
        .rotation_rules(RotationRulesType::builder().automatically_after_days(30).build())
        .send()
        .await
        .expect("RotateSecret");
    let answered_ms = now_ms();
    let token = out.version_id().expect("VersionId").to_owned();
    assert_eq!((out.arn(), out.name()), (Some(arn.as_str()), Some("app-sm")));

    let record = env.wait(&token).await;
    assert_eq!(record.status, RotationStatus::Succeeded, "{record:?}");
    assert!(record.finished_at_ms.expect("finished") > answered_ms, "RotateSecret answered before the steps ran");
    let steps: Vec<_> = record.steps.iter().map(|s| (s.step.as_str(), s.status)).collect();
    assert_eq!(steps, STEPS.map(|s| (s, "succeeded")), "the four steps, in order");

    // The token is AWSCURRENT, the old version AWSPREVIOUS, and AWSPENDING is gone.
    let stages = env.stages(&arn).await;
    assert_eq!(stages[&token], ["AWSCURRENT"]);
    assert_eq!(stages[&old_version], ["AWSPREVIOUS"]);
    let new = env.password(&arn, "AWSCURRENT").await;
    assert_eq!(env.pg.login("app", &new).await, Ok(()), "the database holds what AWSCURRENT holds");
    assert_eq!(env.pg.login("app", OLD).await, Err("28P01".into()));
    // A read naming no stage reads AWSCURRENT (moto alone can answer the old version).
    let stageless = env.sm.get_secret_value().secret_id(&arn).send().await.expect("GetSecretValue");
    assert_eq!(stageless.version_id(), Some(token.as_str()));

    let described = env.sm.describe_secret().secret_id(&arn).send().await.expect("DescribeSecret");
    assert_eq!(described.rotation_enabled(), Some(true));
    assert_eq!(described.rotation_lambda_arn(), Some(env.lambda_arn(SINGLE).as_str()));
    assert_eq!(described.rotation_rules().and_then(|r| r.automatically_after_days()), Some(30));
    let last = described.last_rotated_date().expect("LastRotatedDate").secs();
    let now = (now_ms() / 1000) as i64;
    assert!((now - 60..=now).contains(&last), "LastRotatedDate {last} is now ({now})");
    let next = described.next_rotation_date().expect("NextRotationDate").secs();
    assert!((next - last - 30 * 86_400).abs() < 60, "NextRotationDate {next} is 30 days later");

    // The function's own calls went through the endpoint and are attributed to it.
    let calls = env.function_calls(SINGLE);
    let promote = calls.iter().find(|c| c.operation == "UpdateSecretVersionStage").expect("finishSecret's call");
    assert_eq!(promote.ids.version_stage.as_deref(), Some("AWSCURRENT"));
    assert_eq!(promote.ids.move_to_version_id.as_deref(), Some(token.as_str()));
    assert!(calls.iter().any(|c| c.operation == "PutSecretValue"), "createSecret stored the new value");

    // The operator's next rotate-secret needs no ARN: the configuration is stored.
    let again = env.sm.rotate_secret().secret_id(&arn).send().await.expect("second RotateSecret");
    let second = again.version_id().expect("VersionId").to_owned();
    assert_eq!(env.wait(&second).await.status, RotationStatus::Succeeded);
    assert_eq!(env.version_with(&arn, "AWSPREVIOUS").await.as_deref(), Some(token.as_str()));
    let stats = env.endpoint.function_stats(SINGLE).expect("stats");
    assert_eq!((stats.invocations, stats.cold_starts, stats.restarts), (8, 1, 0), "one warm process: {stats:?}");
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn alternating_users_rotate_through_rotate_secret() {
    let mut env = TestEnv::start().await;
    let superuser = env.pg.superuser_password().to_owned();
    let master = env.secret_json("postgres", &superuser);
    let master_arn = env.create_secret("alt-master", &master).await;
    env.pg.set_password("app", OLD).await;
    let mut value = env.secret_json("app", OLD);
    value["masterarn"] = Value::String(master_arn.clone());
    let arn = env.create_secret("alt-app", &value).await;

    let first = env.rotate_secret(&arn, ALTERNATING).await;
    assert_eq!(env.wait(&first).await.status, RotationStatus::Succeeded);
    let current = env.value(&arn, "AWSCURRENT").await.expect("current");
    let pw1 = current["password"].as_str().expect("password").to_owned();
    assert_eq!(current["username"], "app_clone");
    assert_eq!(env.pg.login("app_clone", &pw1).await, Ok(()));
    assert_eq!(env.pg.login("app", OLD).await, Ok(()), "the previous login keeps working");

    let second = env.sm.rotate_secret().secret_id(&arn).send().await.expect("RotateSecret");
    let second = second.version_id().expect("VersionId").to_owned();
    assert_eq!(env.wait(&second).await.status, RotationStatus::Succeeded);
    let current = env.value(&arn, "AWSCURRENT").await.expect("current");
    assert_eq!(current["username"], "app");
    assert_eq!(env.pg.login("app", current["password"].as_str().expect("password")).await, Ok(()));
    assert_eq!(env.pg.login("app_clone", &pw1).await, Ok(()), "AWSPREVIOUS still logs in");
    assert_eq!(env.endpoint.function_stats(SINGLE).expect("stats").invocations, 0, "the ARN chose the function");
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn a_second_rotation_is_refused_while_the_first_runs() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-busy", "app", OLD).await;
    // createSecret's write hangs, so the first rotation is still running.
    let fault = env.inject("PutSecretValue", &arn, hang(1500), 1);
    let first = env.rotate_secret(&arn, SINGLE).await;
    env.wait_fault_used(fault).await;

    let (code, message) = refused_rotation(&env, &arn).await;
    assert_eq!((code.as_str(), message.as_str()), ("InvalidRequestException", PREVIOUS_INCOMPLETE));
    // Its own token again (a client's retry) is accepted, and runs nothing twice.
    let same = env.sm.rotate_secret().secret_id(&arn).client_request_token(&first).send().await.expect("same token");
    assert_eq!(same.version_id(), Some(first.as_str()));

    let record = env.wait(&first).await;
    assert_eq!(record.status, RotationStatus::Succeeded, "the refusal did not disturb the first: {record:?}");
    assert_eq!(record.attempts, 1, "no second run of the same rotation: {record:?}");
    let next = env.rotate_secret(&arn, SINGLE).await;
    assert_eq!(env.wait(&next).await.status, RotationStatus::Succeeded, "accepted once the first finished");
    assert_eq!(env.version_with(&arn, "AWSPREVIOUS").await.as_deref(), Some(first.as_str()));
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn a_failed_rotation_blocks_new_ones_and_resumes_when_retried_with_its_token() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-retry", "app", OLD).await;
    let old_version = env.version_with(&arn, "AWSCURRENT").await.expect("current");
    // finishSecret's stage move is throttled on all three of its SDK's attempts.
    env.inject("UpdateSecretVersionStage", &arn, throttle(), 3);
    let token = env.rotate_secret(&arn, SINGLE).await;

    let failed = env.wait(&token).await;
    assert_eq!(failed.status, RotationStatus::Failed);
    let error = failed.error.as_ref().expect("error");
    assert_eq!((error.step.as_str(), error.error_type.as_str()), ("finishSecret", "SecretsManagerError"));
    assert!(error.error_message.contains("ThrottlingException"), "{}", error.error_message);
    let throttled = env.function_calls(SINGLE).iter().filter(|c| c.fault == Some("error")).count();
    assert_eq!(throttled, 3, "the function's SDK tried three times");
    // Stopped at the failure: the database has the pending password, AWSCURRENT is unchanged.
    let pending = env.version_value(&arn, &token).await.expect("pending value")["password"]
        .as_str()
        .expect("password")
        .to_owned();
    assert_eq!(env.pg.login("app", &pending).await, Ok(()));
    assert_eq!(env.stages(&arn).await[&token], ["AWSPENDING"]);
    assert_eq!(env.version_with(&arn, "AWSCURRENT").await, Some(old_version));

    let (code, message) = refused_rotation(&env, &arn).await;
    assert_eq!((code.as_str(), message.as_str()), ("InvalidRequestException", PREVIOUS_INCOMPLETE));
    // A second createSecret racing with another value is refused, as on AWS
    // (moto alone would overwrite the pending value); the same value is an
    // idempotent retry.
    let intruder = "Intruding-Passw0rd-never-set";
    env.remember(intruder);
    let put = |value: Value| {
        env.sm
            .put_secret_value()
            .secret_id(&arn)
            .client_request_token(&token)
            .secret_string(value.to_string())
            .version_stages("AWSPENDING")
            .send()
    };
    let err = put(env.secret_json("app", intruder)).await.expect_err("a different value");
    assert_eq!(err.code(), Some("ResourceExistsException"));
    let same = env.version_value(&arn, &token).await.expect("pending value");
    put(same).await.expect("the same value again");
    assert_eq!(env.password(&arn, "AWSPENDING").await, pending);

    // The retry with the same token resumes: createSecret finds its value
    // and writes nothing, so the password set by the first attempt wins.
    let calls_before = env.function_calls(SINGLE).len();
    let retry = env.sm.rotate_secret().secret_id(&arn).client_request_token(&token).send().await.expect("retry");
    assert_eq!(retry.version_id(), Some(token.as_str()));
    let resumed = env.wait(&token).await;
    assert_eq!((resumed.status, resumed.attempts), (RotationStatus::Succeeded, 2), "{resumed:?}");
    let retry_calls = &env.function_calls(SINGLE)[calls_before..];
    assert!(!retry_calls.iter().any(|c| c.operation == "PutSecretValue"), "nothing rewritten: {retry_calls:?}");
    assert_eq!(env.password(&arn, "AWSCURRENT").await, pending);
    assert_eq!(env.stages(&arn).await[&token], ["AWSCURRENT"]);
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn rotate_immediately_false_only_tests_the_configuration_and_removes_the_placeholder() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-test-only", "app", OLD).await;
    let old_version = env.version_with(&arn, "AWSCURRENT").await.expect("current");

    let out = env
        .sm
        .rotate_secret()
        .secret_id(&arn)
        .rotation_lambda_arn(env.lambda_arn(SINGLE))
        .rotation_rules(RotationRulesType::builder().automatically_after_days(7).build())
        .rotate_immediately(false)
        .send()
        .await
        .expect("RotateSecret");
    let token = out.version_id().expect("VersionId").to_owned();
    let record = env.wait(&token).await;
    assert_eq!(record.status, RotationStatus::Succeeded, "{record:?}");
    let steps: Vec<_> = record.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(steps, ["testSecret"]);
    // testSecret logged in with the placeholder, a copy of AWSCURRENT.
    let read = env.function_calls(SINGLE);
    assert!(
        read.iter().any(|c| c.operation == "GetSecretValue"
            && c.ids.version_id.as_deref() == Some(token.as_str())
            && c.status == 200),
        "{read:?}"
    );

    let stages = env.stages(&arn).await;
    assert!(!stages.values().flatten().any(|l| l == "AWSPENDING"), "placeholder removed: {stages:?}");
    assert_eq!(env.version_with(&arn, "AWSCURRENT").await, Some(old_version));
    assert_eq!(env.password(&arn, "AWSCURRENT").await, OLD);
    assert_eq!(env.pg.login("app", OLD).await, Ok(()), "nothing rotated");
    let described = env.sm.describe_secret().secret_id(&arn).send().await.expect("DescribeSecret");
    assert_eq!(described.rotation_enabled(), Some(true));
    assert_eq!(described.last_rotated_date(), None, "no rotation happened");
    assert!(described.next_rotation_date().is_some(), "the schedule is on");

    let next = env.sm.rotate_secret().secret_id(&arn).send().await.expect("a real rotation next");
    assert_eq!(env.wait(next.version_id().expect("VersionId")).await.status, RotationStatus::Succeeded);
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn cancel_rotate_secret_stops_before_the_next_step_and_leaves_the_labels_to_clean_up() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-cancel", "app", OLD).await;
    let err = env.sm.cancel_rotate_secret().secret_id(&arn).send().await.expect_err("never configured");
    assert_eq!(err.code(), Some("InvalidRequestException"));

    let fault = env.inject("PutSecretValue", &arn, hang(1000), 1);
    let token = env.rotate_secret(&arn, SINGLE).await;
    env.wait_fault_used(fault).await; // createSecret is running
    let out = env.sm.cancel_rotate_secret().secret_id(&arn).send().await.expect("CancelRotateSecret");
    assert_eq!(out.version_id(), Some(token.as_str()), "names the unfinished version");

    let record = env.wait(&token).await;
    assert_eq!(record.status, RotationStatus::Cancelled, "{record:?}");
    let steps: Vec<_> = record.steps.iter().map(|s| (s.step.as_str(), s.status)).collect();
    assert_eq!(steps, [("createSecret", "succeeded")], "the running step finished, no other started");
    assert_eq!(env.pg.login("app", OLD).await, Ok(()), "setSecret never ran");
    assert_eq!(env.stages(&arn).await[&token], ["AWSPENDING"], "labels are left as they were");
    let described = env.sm.describe_secret().secret_id(&arn).send().await.expect("DescribeSecret");
    assert_eq!(described.rotation_enabled(), Some(false));
    assert_eq!(described.rotation_lambda_arn(), Some(env.lambda_arn(SINGLE).as_str()));
    assert_eq!(described.next_rotation_date(), None);

    // As documented: the cancelled version blocks new rotations until its
    // AWSPENDING label is removed; RotateSecret then turns rotation back on.
    let (code, _) = refused_rotation(&env, &arn).await;
    assert_eq!(code, "InvalidRequestException");
    env.sm
        .update_secret_version_stage()
        .secret_id(&arn)
        .version_stage("AWSPENDING")
        .remove_from_version_id(&token)
        .send()
        .await
        .expect("remove AWSPENDING");
    let again = env.sm.rotate_secret().secret_id(&arn).send().await.expect("RotateSecret");
    assert_eq!(env.wait(again.version_id().expect("VersionId")).await.status, RotationStatus::Succeeded);
    let described = env.sm.describe_secret().secret_id(&arn).send().await.expect("DescribeSecret");
    assert_eq!(described.rotation_enabled(), Some(true));
    assert_ne!(env.password(&arn, "AWSCURRENT").await, OLD);
    env.assert_no_leaks().await;
}
