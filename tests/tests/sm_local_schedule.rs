//! Rotation schedules: RotationRules with a short `rate()` make the endpoint
//! rotate by itself, retry an unfinished rotation with its own token, and
//! stop when rotation is cancelled. (AWS's shortest schedule is four hours;
//! sm-local allows seconds so that a test can watch it.)

use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::error::ProvideErrorMetadata as _;
use aws_sdk_secretsmanager::types::RotationRulesType;
use e2e::{SINGLE, TestEnv};
use sm_local::{Action, RotationRecord, RotationStatus, Trigger};

const OLD: &str = "Initial-Passw0rd-for-app";

/// The scheduled rotations of `secret`, oldest first.
fn scheduled(env: &TestEnv, secret: &str) -> Vec<RotationRecord> {
    env.endpoint.rotations(Some(secret)).into_iter().filter(|r| r.trigger == Trigger::Schedule).collect()
}

/// Waits until `done` holds for the scheduled rotations of `secret`.
async fn wait_for(
    env: &TestEnv,
    secret: &str,
    what: &str,
    done: impl Fn(&[RotationRecord]) -> bool,
) -> Vec<RotationRecord> {
    let started = Instant::now();
    loop {
        let records = scheduled(env, secret);
        if done(&records) {
            return records;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{what}: {records:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_schedule_rotates_by_itself_retries_what_failed_and_stops_when_cancelled() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-scheduled", "app", OLD).await;

    // Rules Secrets Manager refuses are refused, and nothing is configured.
    for (rules, why) in [
        (RotationRulesType::builder().schedule_expression("cron(0 2 * * * *)").build(), "cron with both day fields"),
        (RotationRulesType::builder().schedule_expression("rate(0 minutes)").build(), "zero"),
        (RotationRulesType::builder().schedule_expression("rate(1 day)").automatically_after_days(1).build(), "both"),
    ] {
        let err = env
            .sm
            .rotate_secret()
            .secret_id(&arn)
            .rotation_lambda_arn(env.lambda_arn(SINGLE))
            .rotation_rules(rules)
            .send()
            .await
            .expect_err(why);
        assert_eq!(err.code(), Some("InvalidParameterException"), "{why}: {err:?}");
    }
    assert!(env.endpoint.rotations(Some(&arn)).is_empty());

    // finishSecret's stage move will be throttled on all three of its SDK's
    // attempts: the first scheduled rotation fails there.
    let fault = env.inject(
        "UpdateSecretVersionStage",
        &arn,
        Action::Error { code: "ThrottlingException".into(), status: 400, message: None },
        3,
    );
    // A one-second schedule, without rotating now (testSecret only).
    let out = env
        .sm
        .rotate_secret()
        .secret_id(&arn)
        .rotation_lambda_arn(env.lambda_arn(SINGLE))
        .rotation_rules(RotationRulesType::builder().schedule_expression("rate(1 second)").build())
        .rotate_immediately(false)
        .send()
        .await
        .expect("RotateSecret");
    assert_eq!(env.wait(out.version_id().expect("VersionId")).await.status, RotationStatus::Succeeded);
    let described = env.sm.describe_secret().secret_id(&arn).send().await.expect("DescribeSecret");
    assert_eq!(described.rotation_rules().and_then(|r| r.schedule_expression()), Some("rate(1 second)"));
    assert!(described.next_rotation_date().is_some());

    // The schedule fires by itself; the failed rotation is retried with its
    // own token ("That rotation will be reattempted"), then a new one runs.
    let records = wait_for(&env, &arn, "two scheduled rotations", |r| {
        r.len() >= 2 && r[..2].iter().all(|r| r.status == RotationStatus::Succeeded)
    })
    .await;
    assert_eq!(records[0].attempts, 2, "retried with the same token: {records:#?}");
    assert_eq!(records[1].attempts, 1);
    env.wait_fault_used(fault).await;

    // Cancelled, the schedule stops.
    env.sm.cancel_rotate_secret().secret_id(&arn).send().await.expect("CancelRotateSecret");
    for record in env.endpoint.rotations(Some(&arn)) {
        env.wait(&record.token).await;
    }
    let settled = env.endpoint.rotations(Some(&arn));
    tokio::time::sleep(Duration::from_millis(1_500)).await; // one and a half intervals
    assert_eq!(env.endpoint.rotations(Some(&arn)).len(), settled.len(), "no rotation after the cancel");
    let described = env.sm.describe_secret().secret_id(&arn).send().await.expect("DescribeSecret");
    assert_eq!(described.rotation_enabled(), Some(false));

    // Each scheduled rotation really rotated.
    let succeeded: Vec<_> =
        settled.iter().filter(|r| r.status == RotationStatus::Succeeded).map(|r| &r.token).collect();
    let last = *succeeded.last().expect("a succeeded rotation");
    assert_eq!(env.version_with(&arn, "AWSCURRENT").await.as_ref(), Some(last));
    assert_eq!(env.version_with(&arn, "AWSPREVIOUS").await.as_ref(), Some(succeeded[succeeded.len() - 2]));
    // A cancel that lands between setSecret and finishSecret leaves the
    // database on that rotation's pending password, as it would on AWS.
    let mut logins = vec![env.password(&arn, "AWSCURRENT").await];
    if let Some(cancelled) = settled.last().filter(|r| r.status == RotationStatus::Cancelled)
        && let Some(pending) = env.version_value(&arn, &cancelled.token).await
    {
        logins.push(pending["password"].as_str().expect("password").to_owned());
    }
    let mut accepted = Vec::new();
    for password in &logins {
        accepted.push(env.pg.login("app", password).await.is_ok());
    }
    assert!(accepted.contains(&true), "the database accepts the rotated password");
    assert_eq!(env.pg.login("app", OLD).await, Err("28P01".into()));
    env.assert_no_leaks().await;
}
