//! Single-user rotation, end to end: the real bootstrap, PostgreSQL, moto.

use e2e::{STEPS, TestEnv};

const OLD: &str = "Initial-Passw0rd-for-app";

async fn password(env: &TestEnv, arn: &str, stage: &str) -> String {
    let value = env.value(arn, stage).await.unwrap_or_else(|| panic!("{stage} has a value"));
    value["password"].as_str().expect("password").to_owned()
}

#[tokio::test]
async fn full_rotation_switches_the_database_and_the_secret() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-single", "app", OLD).await;
    let old_version = env.version_with(&arn, "AWSCURRENT").await.expect("current");

    let token = env.rotate(&arn).await.expect("rotation succeeds");

    let new_password = password(&env, &arn, "AWSCURRENT").await;
    assert_ne!(new_password, OLD);
    assert_eq!(env.version_with(&arn, "AWSCURRENT").await.as_deref(), Some(token.as_str()));
    assert_eq!(env.version_with(&arn, "AWSPREVIOUS").await, Some(old_version));
    assert_eq!(env.version_with(&arn, "AWSPENDING").await, None, "AWSPENDING dropped after success");
    assert_eq!(password(&env, &arn, "AWSPREVIOUS").await, OLD);
    assert_eq!(env.pg.login("app", &new_password).await, Ok(()));
    assert_eq!(env.pg.login("app", OLD).await, Err("28P01".into()));

    // The server received a verifier, never the password.
    let log = env.pg.server_log();
    assert!(log.contains(r#"ALTER ROLE "app" PASSWORD 'SCRAM-SHA-256$4096:"#), "{log}");
    env.assert_no_leaks().await;
}

/// PostgreSQL 16 and later: the verifier uses the server's `scram_iterations`,
/// as the server's own `ALTER ROLE … PASSWORD 'plain'` would, and the login
/// with it works. CI runs this file on PostgreSQL 17 (tests/run.sh); on 15,
/// which has no such setting, it says it is skipped.
#[tokio::test]
async fn on_16_and_later_the_verifier_uses_the_servers_scram_iterations() {
    let mut env = TestEnv::start().await;
    if env.pg.older_than(16).await {
        return;
    }
    env.pg.exec("ALTER SYSTEM SET scram_iterations = 10000").await;
    env.pg.exec("SELECT pg_reload_conf()").await;
    let arn = env.create_user_and_secret("app-iterations", "app", OLD).await;
    env.rotate(&arn).await.expect("rotation succeeds");

    let mut conn = env.pg.superuser().await;
    let stored: String = sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
        .fetch_one(&mut conn)
        .await
        .expect("pg_authid");
    assert!(stored.starts_with("SCRAM-SHA-256$10000:"), "stored verifier {}", &stored[..24]);
    assert_eq!(env.pg.login("app", &password(&env, &arn, "AWSCURRENT").await).await, Ok(()));
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn three_rotations_in_a_row_keep_previous_one_behind() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-chain", "app", OLD).await;
    let mut seen = vec![OLD.to_owned()];
    for _ in 0..3 {
        env.rotate(&arn).await.expect("rotation");
        let current = password(&env, &arn, "AWSCURRENT").await;
        assert_eq!(password(&env, &arn, "AWSPREVIOUS").await, *seen.last().expect("last"));
        assert!(!seen.contains(&current), "a fresh password each time");
        assert_eq!(env.pg.login("app", &current).await, Ok(()));
        seen.push(current);
    }
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn every_step_run_twice_has_the_same_effect_as_once() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-twice", "app", OLD).await;
    let token = env.begin_rotation(&arn).await;
    let mut outcomes = Vec::new();
    for step in STEPS {
        for _ in 0..2 {
            let out = env.step(step, &arn, &token).await.expect("step succeeds");
            outcomes.push(out["outcome"].as_str().expect("outcome").to_owned());
        }
    }
    assert_eq!(
        outcomes,
        [
            "created",
            "already_created",
            "password_set",
            "already_set",
            "tested",
            "tested",
            "finished",
            "already_current"
        ]
    );
    env.drop_pending(&arn, &token).await;
    let pending_value = env.version_value(&arn, &token).await.expect("token value");
    let current = password(&env, &arn, "AWSCURRENT").await;
    assert_eq!(
        pending_value["password"].as_str(),
        Some(current.as_str()),
        "the second createSecret kept the first value"
    );
    assert_eq!(env.pg.login("app", &current).await, Ok(()));
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn a_crash_after_any_step_is_healed_by_retrying_with_the_same_token() {
    let mut env = TestEnv::start().await;
    for crash_after in 1..=4 {
        let user = format!("crash{crash_after}");
        let arn = env.create_user_and_secret(&format!("app-crash-{crash_after}"), &user, OLD).await;
        let token = env.begin_rotation(&arn).await;
        for step in &STEPS[..crash_after] {
            env.step(step, &arn, &token).await.expect("step before the crash");
        }
        // The process dies; Secrets Manager retries the whole rotation later,
        // in a fresh process, with the same token.
        env.kill_function().await;
        env.resume(&arn, &token).await.unwrap_or_else(|f| panic!("retry after {crash_after} steps: {f:?}"));

        let current = password(&env, &arn, "AWSCURRENT").await;
        assert_eq!(env.version_with(&arn, "AWSCURRENT").await.as_deref(), Some(token.as_str()));
        assert_eq!(env.pg.login(&user, &current).await, Ok(()), "after a crash following step {crash_after}");
        assert_eq!(env.pg.login(&user, OLD).await, Err("28P01".into()));
    }
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn a_new_rotation_is_refused_while_one_is_unfinished() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-inflight", "app", OLD).await;
    let first = env.begin_rotation(&arn).await;
    env.step("createSecret", &arn, &first).await.expect("create");
    env.step("setSecret", &arn, &first).await.expect("set");
    // The database now has the pending password; AWSCURRENT does not.
    let pending = env.version_value(&arn, &first).await.expect("pending")["password"].as_str().expect("pw").to_owned();
    assert_eq!(env.pg.login("app", &pending).await, Ok(()));

    let second = uuid::Uuid::new_v4().to_string();
    let refused = env.start_rotation(&arn, &second).await.expect_err("refused");
    assert!(refused.contains("isn't complete"), "{refused}");
    // The function also refuses a token that is not the rotation in progress.
    let err = env.step("createSecret", &arn, &second).await.expect_err("unknown token");
    assert_eq!(err.error_type, "VersionStageMismatch");

    env.resume(&arn, &first).await.expect("the first rotation completes");
    assert_eq!(password(&env, &arn, "AWSCURRENT").await, pending);
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn unusual_usernames_are_quoted_not_mangled() {
    let mut env = TestEnv::start().await;
    let names = ["App-User", "we\"ird'name", "Ünïcödé user", "select", &"x".repeat(63)];
    for (i, user) in names.iter().enumerate() {
        let arn = env.create_user_and_secret(&format!("odd-{i}"), user, OLD).await;
        env.rotate(&arn).await.unwrap_or_else(|f| panic!("{user:?}: {f:?}"));
        let current = password(&env, &arn, "AWSCURRENT").await;
        assert_eq!(env.pg.login(user, &current).await, Ok(()), "{user:?}");
        assert_eq!(env.pg.login(user, OLD).await, Err("28P01".into()), "{user:?}");
    }
    env.assert_no_leaks().await;
}
