//! The rotated role against its own rotation. A role may configure its own
//! sessions (`ALTER ROLE CURRENT_USER SET …`), and single-user rotation logs
//! in as that role: nothing it sets may keep its password from changing, or
//! make the function spend the invocation on a verifier.

use std::time::{Duration, Instant};

use e2e::TestEnv;
use sqlx::Connection as _;

const OLD: &str = "Initial-Passw0rd-for-app";

/// Runs `sql` as `app` itself.
async fn as_app(env: &TestEnv, password: &str, sql: &str) {
    let mut conn = sqlx::PgConnection::connect_with(&env.pg.options("app", password, "postgres")).await.expect("login");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut conn).await.expect(sql);
    let _ = conn.close().await;
}

async fn stored_verifier(env: &TestEnv) -> String {
    let mut conn = env.pg.superuser().await;
    sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
        .fetch_one(&mut conn)
        .await
        .expect("pg_authid")
}

#[tokio::test]
async fn a_role_cannot_stop_its_own_rotation_by_configuring_its_sessions() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-self-configured", "app", OLD).await;
    env.pg.exec("CREATE ROLE decoy NOLOGIN; GRANT decoy TO app").await;
    // Read-only sessions, acting as a role that may not change app's
    // password, catalog lookups through a schema of its own, no time at all.
    as_app(
        &env,
        OLD,
        "ALTER ROLE CURRENT_USER SET default_transaction_read_only = on; \
         ALTER ROLE CURRENT_USER SET role = 'decoy'; \
         ALTER ROLE CURRENT_USER SET search_path = app_own, pg_catalog; \
         ALTER ROLE CURRENT_USER SET statement_timeout = 1; \
         ALTER ROLE CURRENT_USER SET lock_timeout = 1",
    )
    .await;
    env.rotate(&arn).await.expect("the rotation goes through");
    let current = env.value(&arn, "AWSCURRENT").await.expect("current")["password"].as_str().expect("pw").to_owned();
    assert_eq!(env.pg.login("app", &current).await, Ok(()));
    assert_eq!(env.pg.login("app", OLD).await, Err("28P01".into()));
    env.assert_no_leaks().await;
}

/// PostgreSQL 16+: `scram_iterations` is a setting a role may set for its own
/// sessions. 2^31-1 would keep the function computing a verifier past any
/// deadline (and every retry the same), 1 would give a 1-round verifier.
/// Only the server's own configuration counts; CI runs this on 17.
#[tokio::test]
async fn on_16_and_later_a_role_cannot_choose_its_own_scram_iterations() {
    let mut env = TestEnv::start().await;
    if env.pg.older_than(16).await {
        return;
    }
    let arn = env.create_user_and_secret("app-own-iterations", "app", OLD).await;
    let mut password = OLD.to_owned();
    for (iterations, scope) in [("2147483647", "CURRENT_USER"), ("1", "CURRENT_USER IN DATABASE postgres")] {
        as_app(&env, &password, &format!("ALTER ROLE {scope} SET scram_iterations = {iterations}")).await;
        let started = Instant::now();
        env.rotate(&arn).await.expect("the rotation goes through");
        assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
        let stored = stored_verifier(&env).await;
        assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{iterations}: stored verifier {}", &stored[..24]);
        password = env.value(&arn, "AWSCURRENT").await.expect("current")["password"].as_str().expect("pw").to_owned();
        assert_eq!(env.pg.login("app", &password).await, Ok(()));
        as_app(&env, &password, "ALTER ROLE CURRENT_USER RESET ALL").await;
    }
    // The server's own setting, outside the range, is clamped into it.
    env.pg.exec("ALTER SYSTEM SET scram_iterations = 1").await;
    env.pg.exec("SELECT pg_reload_conf()").await;
    env.rotate(&arn).await.expect("rotation");
    assert!(stored_verifier(&env).await.starts_with("SCRAM-SHA-256$4096:"));
    env.assert_no_leaks().await;
}
