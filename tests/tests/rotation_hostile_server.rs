//! A server that holds the database's certificate but not its honesty, and a
//! writer of the application secret who points it somewhere else: what they
//! get from the function is nothing. The hostile server (the harness's own,
//! `e2e::HostileServer`) records every byte a client sends.

use std::time::{Duration, Instant};

use e2e::{Ask, HostileServer, TestEnv};
use serde_json::json;

const OLD: &str = "Initial-Passw0rd-for-app";

/// A single-user secret whose server is the impostor, which sits where the
/// operator's endpoint pin says the database is (a stolen certificate and a
/// hijacked address: verify-full passes).
async fn impostor(ask: Ask) -> (TestEnv, HostileServer, String) {
    let mut env = TestEnv::start().await;
    let hostile = HostileServer::start(env.pg.dir(), ask).await;
    let mut value = env.secret_json("app", OLD);
    value["port"] = json!(hostile.port());
    let arn = env.create_secret("app-impostor", &value).await;
    env.restart_function(&[("DB_ENDPOINTS", &format!("127.0.0.1:{}", hostile.port()))]).await;
    (env, hostile, arn)
}

#[tokio::test]
async fn a_server_asking_for_a_cleartext_password_or_an_md5_hash_gets_no_answer() {
    for (ask, named) in [(Ask::Cleartext, "a cleartext password"), (Ask::Md5, "an MD5 password hash")] {
        let (mut env, hostile, arn) = impostor(ask).await;
        let failure = env.rotate(&arn).await.expect_err("refused");
        assert_eq!(failure.step, "setSecret");
        assert_eq!(failure.error.error_type, "DatabaseAuthMethodRefused", "{}", failure.error.error_message);
        let message = &failure.error.error_message;
        assert!(message.contains(named) && message.contains("permanent"), "{message}");
        let seen = hostile.seen();
        assert!(!seen.is_empty(), "the function did reach the impostor");
        assert!(seen.iter().all(|s| s.answer.is_empty()), "not a byte answered the request: {seen:?}");
        for password in env.known_passwords().await {
            assert!(!hostile.received(&password), "a password reached the impostor");
        }
        env.assert_no_leaks().await;
    }
}

#[tokio::test]
async fn a_server_choosing_a_huge_scram_iteration_count_is_refused_at_once() {
    let (mut env, hostile, arn) = impostor(Ask::ScramIterations(2_147_483_647)).await;
    let started = Instant::now();
    let failure = env.rotate(&arn).await.expect_err("refused");
    assert!(started.elapsed() < Duration::from_secs(10), "refused at once, not after {:?}", started.elapsed());
    assert_eq!(failure.error.error_type, "DatabaseAuthMethodRefused", "{}", failure.error.error_message);
    let message = &failure.error.error_message;
    assert!(message.contains("2147483647 SCRAM iterations") && message.contains("100000"), "{message}");
    assert!(!hostile.seen().is_empty());
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn a_secret_a_server_sends_back_never_reaches_an_error_or_a_log() {
    // The impostor learned AWSCURRENT's password somehow and echoes it,
    // hoping it lands in CloudWatch.
    let mut env = TestEnv::start().await;
    let text = format!("no such thing as {OLD}");
    let hostile = HostileServer::start(env.pg.dir(), Ask::Error(text)).await;
    let mut value = env.secret_json("app", OLD);
    value["port"] = json!(hostile.port());
    let arn = env.create_secret("app-echo", &value).await;
    env.restart_function(&[("DB_ENDPOINTS", &format!("127.0.0.1:{}", hostile.port()))]).await;
    let failure = env.rotate(&arn).await.expect_err("the server said no");
    let message = &failure.error.error_message;
    assert!(message.contains("XX000") && message.contains("no such thing as [redacted]"), "{message}");
    env.assert_no_leaks().await;
}

/// Alternating users with an RDS-managed master secret (username and
/// password only): whoever writes the app secret must not choose where the
/// master logs in.
#[tokio::test]
async fn the_master_never_logs_in_where_the_app_secret_points() {
    let mut env = TestEnv::start_alternating().await;
    let hostile = HostileServer::start(env.pg.dir(), Ask::Cleartext).await;
    let superuser = env.pg.superuser_password().to_owned();
    let master_arn = env.create_secret("rds-managed", &json!({"username": "postgres", "password": superuser})).await;
    let mut value = env.secret_json("app", OLD);
    value["masterarn"] = json!(master_arn);
    value["port"] = json!(hostile.port());
    let arn = env.create_secret("app-pointed-away", &value).await;

    // The operator's pin (the database's endpoint): the app secret's server
    // is not it, so nothing is written and nobody is dialled.
    let failure = env.rotate(&arn).await.expect_err("refused");
    assert_eq!((failure.step, failure.error.error_type.as_str()), ("createSecret", "InvalidSecret"));
    let message = &failure.error.error_message;
    assert!(message.contains(&format!("127.0.0.1:{} is not among", hostile.port())), "{message}");

    // Without a pin, a master secret that names no server is refused.
    env.restart_without("DB_ENDPOINTS").await;
    let token = env.version_with(&arn, "AWSPENDING").await.expect("placeholder");
    let failure = env.resume(&arn, &token).await.expect_err("refused");
    assert_eq!((failure.step, failure.error.error_type.as_str()), ("createSecret", "InvalidSecret"));
    assert!(failure.error.error_message.contains("names no server"), "{}", failure.error.error_message);

    // A master secret with a host but no port means 5432, never the port the
    // app secret names.
    let with_host = json!({"username": "postgres", "password": superuser, "host": "127.0.0.1"});
    env.put_value(&master_arn, &with_host, "AWSCURRENT").await;
    let failure = env.resume(&arn, &token).await.expect_err("refused");
    assert_eq!(failure.error.error_type, "InconsistentSecret", "{}", failure.error.error_message);
    assert!(failure.error.error_message.contains("the master secret points at 127.0.0.1:5432"));

    assert!(hostile.seen().is_empty(), "the master (or anyone) was sent to the app secret's server");
    assert_eq!(env.version_value(&arn, &token).await, None, "no pending value written");
    env.assert_no_leaks().await;
}
