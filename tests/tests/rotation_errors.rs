//! What goes wrong, and what the function does then: a precise, typed error,
//! no secret material in it, and nothing half-written.

use e2e::{TestEnv, postgres};
use serde_json::{Value, json};

const OLD: &str = "Initial-Passw0rd-for-app";

#[tokio::test]
async fn each_missing_or_malformed_key_is_named_and_nothing_is_written() {
    let mut env = TestEnv::start().await;
    env.pg.set_password("app", OLD).await;
    env.remember(OLD);
    let good = env.secret_json("app", OLD);
    let without = |key: &str| {
        let mut v = good.clone();
        v.as_object_mut().expect("object").remove(key);
        v.to_string()
    };
    let with = |key: &str, value: Value| {
        let mut v = good.clone();
        v[key] = value;
        v.to_string()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("no-host", without("host"), "key `host` is missing"),
        ("no-username", without("username"), "key `username` is missing"),
        ("no-password", without("password"), "key `password` is missing"),
        ("no-engine", without("engine"), "key `engine` is missing"),
        ("mysql", with("engine", json!("mysql")), "key `engine` must be `postgres` or `aurora-postgresql`"),
        ("port-word", with("port", json!("five")), "key `port`"),
        ("port-range", with("port", json!(70000)), "key `port`"),
        ("long-user", with("username", json!("u".repeat(64))), "63-byte"),
        ("empty-host", with("host", json!("")), "key `host` must be a host name or address"),
        ("spaced-host", with("host", json!("db host")), "key `host` must be a host name or address"),
        ("ssl-maybe", with("ssl", json!("maybe")), "key `ssl`"),
        ("masterarn-number", with("masterarn", json!(42)), "key `masterarn`"),
        ("password-number", with("password", json!(12345)), "key `password`"),
        ("not-json", format!("password={OLD}"), "not a JSON object"),
        ("json-array", json!([OLD]).to_string(), "not a JSON object"),
    ];
    let log_before = env.pg.server_log().len();
    for (name, secret_string, expected) in cases {
        let arn = env.create_raw_secret(name, &secret_string).await;
        let token = env.begin_rotation(&arn).await;
        let err = env.step("createSecret", &arn, &token).await.expect_err(name);
        assert_eq!(err.error_type, "InvalidSecret", "{name}: {}", err.error_message);
        assert!(err.error_message.contains(expected), "{name}: {}", err.error_message);
        assert!(
            err.error_message.contains("AWSCURRENT") && err.error_message.contains("permanent"),
            "{name}: {}",
            err.error_message
        );
        assert_eq!(env.version_value(&arn, &token).await, None, "{name}: no pending value written");
        assert_eq!(
            env.raw_value(&arn, "AWSCURRENT").await.as_deref(),
            Some(secret_string.as_str()),
            "{name}: AWSCURRENT kept"
        );
    }
    assert!(!env.pg.server_log()[log_before..].contains("ALTER ROLE"), "the database was not touched");
    assert_eq!(env.pg.login("app", OLD).await, Ok(()));
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn unknown_keys_survive_a_rotation() {
    let mut env = TestEnv::start().await;
    env.pg.set_password("app", OLD).await;
    let mut value = env.secret_json("app", OLD);
    value["port"] = json!(env.pg.port().to_string()); // a string port, as some tools write it
    value["team"] = json!({ "owner": "payments", "tags": [1, 2] });
    value["dbInstanceIdentifier"] = json!("orders-prod");
    let arn = env.create_secret("app-extra-keys", &value).await;
    env.rotate(&arn).await.expect("rotation");
    let current = env.value(&arn, "AWSCURRENT").await.expect("current");
    assert_eq!(current["team"], value["team"]);
    assert_eq!(current["dbInstanceIdentifier"], value["dbInstanceIdentifier"]);
    assert_eq!(current["host"], value["host"]);
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn tokens_that_are_not_the_rotation_in_progress() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-tokens", "app", OLD).await;

    // Not a version of the secret at all.
    let stranger = uuid::Uuid::new_v4().to_string();
    let pending = env.begin_rotation(&arn).await;
    let err = env.step("setSecret", &arn, &stranger).await.expect_err("unknown token");
    assert_eq!(err.error_type, "VersionStageMismatch");
    assert!(
        err.error_message.contains(&stranger) && err.error_message.contains("not a version"),
        "{}",
        err.error_message
    );

    // Already AWSCURRENT: every step succeeds and does nothing.
    let alters_before = env.pg.server_log().matches("ALTER ROLE").count();
    env.resume(&arn, &pending).await.expect("rotation");
    let current = env.value(&arn, "AWSCURRENT").await;
    for step in e2e::STEPS {
        let out = env.step(step, &arn, &pending).await.expect("no-op");
        assert_eq!(out["outcome"], "already_current", "{step}");
    }
    assert_eq!(env.value(&arn, "AWSCURRENT").await, current);
    let alters = env.pg.server_log().matches("ALTER ROLE").count();
    assert_eq!(alters, alters_before + 1, "only the rotation itself changed the password");

    // Once AWSPREVIOUS: not pending, so refused.
    let old_version = env.version_with(&arn, "AWSPREVIOUS").await.expect("previous");
    let err = env.step("createSecret", &arn, &old_version).await.expect_err("not pending");
    assert_eq!(err.error_type, "VersionStageMismatch");
    assert!(err.error_message.contains("AWSPREVIOUS"), "{}", err.error_message);
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn a_secret_whose_rotation_was_turned_off_is_refused() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-disabled", "app", OLD).await;
    let token = env.begin_rotation(&arn).await;
    env.sm.cancel_rotate_secret().secret_id(&arn).send().await.expect("CancelRotateSecret");
    assert_eq!(
        env.sm.describe_secret().secret_id(&arn).send().await.expect("describe").rotation_enabled(),
        Some(false)
    );
    let err = env.step("createSecret", &arn, &token).await.expect_err("disabled");
    assert_eq!(err.error_type, "RotationDisabled");
    assert!(err.error_message.contains("not enabled"), "{}", err.error_message);
    assert_eq!(env.version_value(&arn, &token).await, None, "nothing written");
    env.assert_no_leaks().await;
}

/// DescribeSecret of a secret never configured for rotation has no
/// RotationEnabled field at all; AWS's own templates proceed then, and so does
/// the function (an operator invoking it by hand, for example).
#[tokio::test]
async fn a_secret_without_the_rotation_enabled_field_is_not_disabled() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-no-field", "app", OLD).await;
    let token = uuid::Uuid::new_v4().to_string();
    env.sm
        .put_secret_value()
        .secret_id(&arn)
        .client_request_token(&token)
        .secret_string(env.secret_json("app", OLD).to_string())
        .version_stages("AWSPENDING")
        .send()
        .await
        .expect("PutSecretValue");
    let described = env.sm.describe_secret().secret_id(&arn).send().await.expect("describe");
    assert_eq!(described.rotation_enabled(), None, "moto, like AWS, leaves the field out");
    let out = env.step("createSecret", &arn, &token).await.expect("proceeds");
    assert_eq!(out["outcome"], "already_created");
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn an_unreachable_database_is_reported_as_transient_and_nothing_changes() {
    let mut env = TestEnv::start().await;
    env.pg.set_password("app", OLD).await;
    let mut value = env.secret_json("app", OLD);
    value["port"] = json!(postgres::free_port()); // nobody listens there
    env.restart_without("DB_ENDPOINTS").await; // else refused before any attempt
    let arn = env.create_secret("app-unreachable", &value).await;
    let token = env.begin_rotation(&arn).await;

    let failure = env.resume(&arn, &token).await.expect_err("no server");
    assert_eq!(failure.step, "setSecret");
    assert_eq!(failure.error.error_type, "DatabaseUnreachable");
    let message = &failure.error.error_message;
    assert!(message.contains("AWSCURRENT") && message.contains("transient"), "{message}");
    assert_eq!(env.value(&arn, "AWSCURRENT").await.expect("current")["password"], OLD);
}

#[tokio::test]
async fn a_stale_current_password_falls_back_to_previous_and_neither_is_a_clear_error() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-stale", "app", OLD).await;
    env.rotate(&arn).await.expect("first rotation");
    // Someone restores the old password (or a rotation set the database and
    // was abandoned): AWSCURRENT no longer logs in, AWSPREVIOUS does.
    env.pg.set_password("app", OLD).await;
    env.rotate(&arn).await.expect("the rotation logs in with AWSPREVIOUS");
    let current = env.value(&arn, "AWSCURRENT").await.expect("current")["password"].as_str().expect("pw").to_owned();
    assert_eq!(env.pg.login("app", &current).await, Ok(()));
    assert!(env.function_output().contains("logged in with AWSPREVIOUS"));

    let unknown = "Set-by-hand-outside-rotation-9";
    env.remember(unknown);
    env.pg.set_password("app", unknown).await;
    let failure = env.rotate(&arn).await.expect_err("nothing logs in");
    assert_eq!(failure.step, "setSecret");
    assert_eq!(failure.error.error_type, "DatabaseAuthenticationFailed");
    let message = &failure.error.error_message;
    assert!(
        message.contains("AWSCURRENT") && message.contains("AWSPREVIOUS") && message.contains("28P01"),
        "{message}"
    );
    assert_eq!(env.value(&arn, "AWSCURRENT").await.expect("current")["password"].as_str(), Some(current.as_str()));
    assert_eq!(env.pg.login("app", unknown).await, Ok(()), "the database was left alone");
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn access_denied_by_iam_is_named_and_permanent() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-denied", "app", OLD).await;
    let token = env.begin_rotation(&arn).await;
    env.assert_no_leaks().await; // before IAM locks the test out of reading versions
    env.moto.enforce_iam().await; // the function's dummy credentials have no policy
    let err = env.step("createSecret", &arn, &token).await.expect_err("denied");
    assert_eq!(err.error_type, "SecretsManagerAccessDenied");
    assert!(
        err.error_message.contains("AccessDenied") && err.error_message.contains("permanent"),
        "{}",
        err.error_message
    );
    assert!(!err.error_message.contains(OLD));
}
