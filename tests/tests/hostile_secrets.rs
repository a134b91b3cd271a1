//! Hostile secret contents in every key: missing, null, the wrong type, empty,
//! text that needs quoting, far too long; and whole values that are not JSON,
//! not an object, binary, or nested past any parser's patience. Each is
//! rotated as Secrets Manager would. What may happen:
//!
//! - refused before anything is written (`InvalidSecret` naming the key): no
//!   AWSPENDING value, no statement that changes the database;
//! - refused by the database, or no database there (a user, password,
//!   database or port that does not exist): the database is not changed either;
//! - rotated, when the value is one the format allows (a missing port is
//!   5432; a single-user rotation keeps but ignores `masterarn`).
//!
//! Never a half-written state, an injected statement, or a password in an
//! error.

use e2e::TestEnv;
use serde_json::{Value, json};

const OLD: &str = "Initial-Passw0rd-for-app";
/// Text that would end a quoted string or identifier and run a statement.
const QUOTING: &str = "x'\"; DROP ROLE postgres; --";
/// The same as a password (distinct, so the leak check can tell them apart:
/// a username may appear in the server's log, a password never).
const QUOTING_PASSWORD: &str = "Pw'\"; DROP ROLE postgres; --";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Refused,
    DatabaseRefuses,
    Rotates,
}

use Expect::{DatabaseRefuses, Refused, Rotates};

/// What each key does with each kind of hostile value.
fn expectations(key: &str) -> [(&'static str, Value, Expect); 9] {
    let long = Value::String("z".repeat(10_000));
    let when_missing = match key {
        "dbname" | "ssl" | "masterarn" => Rotates,
        // 5432, where this test's server does not listen.
        "port" => DatabaseRefuses,
        _ => Refused,
    };
    let quoting = match key {
        // Valid identifiers and strings, quoted on the way to the server.
        "username" | "password" => DatabaseRefuses,
        "dbname" => DatabaseRefuses,
        "masterarn" => Rotates,
        _ => Refused,
    };
    let long_text = match key {
        "password" => DatabaseRefuses,
        "masterarn" => Rotates,
        _ => Refused,
    };
    [
        ("missing", Value::Null, when_missing), // removed, below
        ("null", Value::Null, when_missing),
        ("a number", json!(12345), if key == "port" { DatabaseRefuses } else { Refused }),
        ("an array", json!(["a", 1]), Refused),
        ("an object", json!({"k": "v"}), Refused),
        ("a boolean", json!(true), if key == "ssl" { Rotates } else { Refused }),
        ("empty", json!(""), Refused),
        ("text that needs quoting", json!(if key == "password" { QUOTING_PASSWORD } else { QUOTING }), quoting),
        ("10,000 characters", long, long_text),
    ]
}

#[tokio::test]
async fn every_key_with_every_kind_of_hostile_value() {
    let mut env = TestEnv::start().await;
    // Parsing is under test; a host or port the endpoint pin refuses would
    // end every case at createSecret (the pin has tests of its own).
    env.restart_without("DB_ENDPOINTS").await;
    env.pg.set_password("app", OLD).await;
    env.remember(OLD);
    let good = env.secret_json("app", OLD);
    // Every case that rotates moves the password on; the next starts from it.
    let mut in_force = OLD.to_owned();
    let mut case = 0;
    for key in ["engine", "host", "port", "username", "password", "dbname", "masterarn", "ssl"] {
        for (what, value, expect) in expectations(key) {
            case += 1;
            let mut secret = good.clone();
            if what == "missing" {
                secret.as_object_mut().expect("object").remove(key);
            } else {
                secret[key] = value;
            }
            if key != "password" {
                secret["password"] = json!(in_force);
            }
            let arn = env.create_raw_secret(&format!("hostile-{case}"), &secret.to_string()).await;
            let case = format!("`{key}` {what}");
            if let Some(rotated) = rotate_and_check(&mut env, &arn, &case, expect, Some(key)).await {
                in_force = rotated;
            }
        }
    }
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn whole_values_that_are_not_a_secret_object() {
    let mut env = TestEnv::start().await;
    env.pg.set_password("app", OLD).await;
    env.remember(OLD);
    let mut nested = json!(OLD);
    for _ in 0..300 {
        nested = json!({ "password": nested });
    }
    let cases = [
        ("not JSON", format!("password={OLD}")),
        ("truncated JSON", format!("{{\"engine\":\"postgres\",\"password\":\"{OLD}\"")),
        ("a JSON array", json!([OLD]).to_string()),
        ("a JSON string", json!(OLD).to_string()),
        ("nested 300 deep", nested.to_string()),
        ("64 KiB of one key", json!({ "engine": "postgres", "x": "y".repeat(65_000) }).to_string()),
    ];
    for (i, (what, text)) in cases.into_iter().enumerate() {
        let arn = env.create_raw_secret(&format!("whole-{i}"), &text).await;
        rotate_and_check(&mut env, &arn, what, Refused, None).await;
    }
    // A binary secret has no SecretString at all.
    let out = env
        .sm
        .create_secret()
        .name("binary")
        .secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(OLD.as_bytes()))
        .send()
        .await
        .expect("CreateSecret");
    rotate_and_check(&mut env, out.arn().expect("arn"), "binary", Refused, None).await;
    env.assert_no_leaks().await;
}

/// Rotates `arn` as Secrets Manager does and checks what `expect` says;
/// returns the new password when it rotated.
async fn rotate_and_check(
    env: &mut TestEnv,
    arn: &str,
    case: &str,
    expect: Expect,
    key: Option<&str>,
) -> Option<String> {
    let log_before = env.pg.server_log().len();
    let before = env.raw_value(arn, "AWSCURRENT").await;
    let result = env.rotate(arn).await;
    // A statement the server ran that changes roles (log_statement=all).
    let changed = |log: &str| {
        log.lines().filter_map(|l| l.split_once("statement: ")).any(|(_, sql)| {
            let sql = sql.trim_start().to_ascii_uppercase();
            ["ALTER", "CREATE", "DROP", "GRANT", "REVOKE"].iter().any(|verb| sql.starts_with(verb))
        })
    };
    match (expect, result) {
        (Rotates, Ok(_)) => {
            let password = env.value(arn, "AWSCURRENT").await.expect("current")["password"].clone();
            let password = password.as_str().expect("pw").to_owned();
            assert_eq!(env.pg.login("app", &password).await, Ok(()), "{case}");
            assert_superuser_intact(env, case).await;
            return Some(password);
        }
        (Refused, Err(failure)) => {
            assert_eq!(
                (failure.step, failure.error.error_type.as_str()),
                ("createSecret", "InvalidSecret"),
                "{case}: {}",
                failure.error.error_message
            );
            let message = &failure.error.error_message;
            if let Some(key) = key {
                assert!(message.contains(&format!("`{key}`")), "{case}: the message names the key: {message}");
            }
            assert!(!message.contains(QUOTING) && !message.contains("zzzzzzzz"), "{case}: not echoed: {message}");
            let token = env.version_with(arn, "AWSPENDING").await.expect("the placeholder");
            assert_eq!(env.version_value(arn, &token).await, None, "{case}: no AWSPENDING value written");
            assert_eq!(env.raw_value(arn, "AWSCURRENT").await, before, "{case}: AWSCURRENT untouched");
            assert!(!changed(&env.pg.server_log()[log_before..]), "{case}: the database was not touched");
        }
        (DatabaseRefuses, Err(failure)) => {
            assert_eq!(failure.step, "setSecret", "{case}: {}", failure.error.error_message);
            let kinds = ["DatabaseAuthenticationFailed", "DatabaseError", "DatabaseTlsFailed", "DatabaseUnreachable"];
            assert!(kinds.contains(&failure.error.error_type.as_str()), "{case}: {failure:?}");
            assert!(!changed(&env.pg.server_log()[log_before..]), "{case}: the database was not touched");
        }
        (expect, result) => panic!("{case}: expected {expect:?}, got {result:?}"),
    }
    assert_superuser_intact(env, case).await;
    None
}

async fn assert_superuser_intact(env: &TestEnv, case: &str) {
    assert_eq!(env.pg.login("postgres", env.pg.superuser_password()).await, Ok(()), "{case}: no role was dropped");
}
