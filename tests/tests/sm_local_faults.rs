//! Fault injection: the endpoint makes chosen Secrets Manager calls fail or
//! hang, for the function (whose SDK retries what AWS calls transient) and
//! for any client, and the call log shows what happened.

use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::config::retry::RetryConfig;
use aws_sdk_secretsmanager::error::ProvideErrorMetadata as _;
use e2e::moto::client;
use e2e::{SINGLE, TestEnv};
use sm_local::{Action, RotationStatus};

const OLD: &str = "Initial-Passw0rd-for-app";

fn error(code: &str, status: u16) -> Action {
    Action::Error { code: code.into(), status, message: None }
}

#[tokio::test]
async fn a_throttled_call_of_the_function_is_retried_by_its_sdk_and_the_rotation_succeeds() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-throttled", "app", OLD).await;
    env.inject("GetSecretValue", &arn, error("ThrottlingException", 400), 1);
    let token = env.rotate_secret(&arn, SINGLE).await;
    assert_eq!(env.wait(&token).await.status, RotationStatus::Succeeded);

    // The first read was throttled; the same read came again and was answered.
    let reads: Vec<_> = env.function_calls(SINGLE).into_iter().filter(|c| c.operation == "GetSecretValue").collect();
    let (throttled, retried) = (&reads[0], &reads[1]);
    assert_eq!(
        (throttled.status, throttled.error.as_deref(), throttled.fault),
        (400, Some("ThrottlingException"), Some("error"))
    );
    assert_eq!(retried.ids, throttled.ids, "the same call, retried");
    assert_eq!(retried.fault, None);
    assert_ne!(retried.error.as_deref(), Some("ThrottlingException"));
    let password = env.password(&arn, "AWSCURRENT").await;
    assert_eq!(env.pg.login("app", &password).await, Ok(()));
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn clients_see_injected_errors_as_aws_sends_them_and_hangs_delay_the_real_answer() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-faults", "app", OLD).await;
    // A client that does not retry, so that each fault is seen as sent.
    let once = client(&env.endpoint.endpoint(), RetryConfig::disabled());

    for (code, status) in [("ThrottlingException", 400), ("InternalServiceError", 500), ("ServiceUnavailable", 503)] {
        env.inject("DescribeSecret", &arn, error(code, status), 1);
        let err = once.describe_secret().secret_id(&arn).send().await.expect_err(code);
        assert_eq!(err.code(), Some(code));
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(status), "{code}");
    }
    // Only calls naming that secret are affected; the rule is used up.
    env.inject("*", &arn, error("ServiceUnavailable", 503), 1);
    once.list_secrets().send().await.expect("ListSecrets names no secret");
    once.describe_secret().secret_id(&arn).send().await.expect_err("this one is affected");
    once.describe_secret().secret_id(&arn).send().await.expect("the rule is used up");

    // A hang delays the call, then it is answered normally.
    env.inject("GetSecretValue", &arn, Action::Hang { ms: 700 }, 1);
    let started = Instant::now();
    let value = once.get_secret_value().secret_id(&arn).send().await.expect("answered after the hang");
    assert!(started.elapsed() >= Duration::from_millis(700), "{:?}", started.elapsed());
    assert!(value.secret_string().is_some_and(|s| s.contains(OLD)));

    let faulted: Vec<_> = env.endpoint.calls().into_iter().filter(|c| c.fault.is_some()).collect();
    let seen: Vec<_> = faulted.iter().map(|c| (c.operation.as_str(), c.status, c.fault)).collect();
    assert_eq!(
        seen,
        [
            ("DescribeSecret", 400, Some("error")),
            ("DescribeSecret", 500, Some("error")),
            ("DescribeSecret", 503, Some("error")),
            ("DescribeSecret", 503, Some("error")),
            ("GetSecretValue", 200, Some("hang")),
        ]
    );
    assert!(faulted.iter().all(|c| c.function.is_none()), "made by a client, not a function");
    env.assert_no_leaks().await;
}
