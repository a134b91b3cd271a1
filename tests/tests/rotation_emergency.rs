//! The operator's emergency rotation and the evidence of who is still connected as a
//! login whose password changes, end to end: the real function through the local Lambda
//! runtime, sm-local, the real PostgreSQL, and the web app serving under load.
//!
//! A "forgotten job" is a session opened with the old password by a client that never
//! reads the secret (application name `nightly-report`). The web app's connections live
//! ten minutes here, so its sessions from before a rotation are still open when the
//! emergency rotation ends them: the app must not fail a request for it.

use std::time::Duration;

use e2e::TestEnv;
use e2e::web_app::{Deployment, Load, LoadReport, WebApp};
use serde_json::{Value, json};
use sqlx::{ConnectOptions as _, Connection as _, PgConnection};

const OLD: &str = "Initial-Passw0rd-for-emergency";
const OWNER: &str = "Owner-Passw0rd-for-emergency";
const JOB: &str = "nightly-report";

/// The app's sessions: a full pool of long-lived connections, so that it opens no new
/// one (and so meets no refused login that would make it move by itself) until the
/// emergency rotation ends its sessions. The change check's interval is the test's.
const POOL: i64 = 8;
const LONG_LIVED: &[(&str, &str)] = &[
    ("APP_POOL_MAX_CONNECTIONS", "8"),
    ("APP_POOL_MIN_CONNECTIONS", "8"),
    ("APP_POOL_ACQUIRE_TIMEOUT", "9s"),
    ("APP_CONN_MAX_LIFETIME", "600s"),
    ("APP_REQUEST_TIMEOUT", "10s"),
    ("APP_SHUTDOWN_GRACE", "5s"),
];

/// A client that logged in with `password` and never reads the secret.
async fn forgotten_job(env: &TestEnv, user: &str, password: &str) -> PgConnection {
    env.pg.options(user, password, "postgres").application_name(JOB).connect().await.expect("the job logs in")
}

async fn alive(conn: &mut PgConnection) -> bool {
    sqlx::query("SELECT 1").execute(conn).await.is_ok()
}

fn emergency(arn: &str, wait_seconds: u64) -> Value {
    json!({"Operation": "emergency-rotation", "SecretId": arn, "FleetWaitSeconds": wait_seconds})
}

/// The deployment migrated, the app serving it under load, looking for a new secret
/// version every `check_interval`.
async fn serving(env: &mut TestEnv, name: &str, check_interval: &str) -> (String, WebApp, Load) {
    let deployment: Deployment = env.first_deployment(name, OLD, OWNER).await;
    env.migrate(&deployment).await;
    let arn = deployment.app_arn;
    let mut vars = LONG_LIVED.to_vec();
    vars.extend([("APP_SECRET_CHECK_INTERVAL", check_interval), ("APP_SECRET_BACKOFF_MAX", "60s")]);
    let app = WebApp::spawn(&WebApp::env(env, &arn, &env.moto.endpoint(), &vars)).await;
    let load = Load::start(&app, 16, Duration::from_millis(100));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut conn = env.pg.superuser().await;
    for _ in 0..100 {
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'web-app'")
            .fetch_one(&mut conn)
            .await
            .expect("pg_stat_activity");
        if open >= POOL {
            return (arn, app, load);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the app never filled its pool of {POOL}")
}

fn assert_served(report: &LoadReport) {
    assert!(report.ok > 200, "the load ran: {} requests", report.ok);
    assert!(
        report.failures.is_empty(),
        "{} failed requests, first: {:?}",
        report.failures.len(),
        &report.failures[..report.failures.len().min(5)]
    );
    assert!(report.ready_failures.is_empty(), "failed readiness checks: {:?}", report.ready_failures);
}

/// A secret value's user and password.
fn login_of(value: &Value) -> (String, String) {
    let field = |k: &str| value[k].as_str().unwrap_or_else(|| panic!("{k} in the secret")).to_owned();
    (field("username"), field("password"))
}

fn applications(list: &Value) -> Vec<String> {
    list.as_array().expect("a list").iter().map(|s| s["application"].as_str().unwrap_or_default().to_owned()).collect()
}

/// The sessions of `user` that started before `since` (the server's clock, epoch seconds).
async fn sessions_older_than(env: &TestEnv, user: &str, since: f64) -> i64 {
    let mut conn = env.pg.superuser().await;
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND backend_start < to_timestamp($2)")
        .bind(user)
        .bind(since)
        .fetch_one(&mut conn)
        .await
        .expect("pg_stat_activity")
}

async fn server_clock(env: &TestEnv) -> f64 {
    let mut conn = env.pg.superuser().await;
    sqlx::query_scalar("SELECT extract(epoch FROM clock_timestamp())::float8")
        .fetch_one(&mut conn)
        .await
        .expect("clock")
}

/// The app checks for a new version only every minute, so it is still on the leaked
/// password when the emergency rotation ends its sessions: it must find the new
/// version on its own (refused login, refresh) without failing a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_user_emergency_rotation_locks_the_old_password_out_and_ends_every_old_session_under_load() {
    let mut env = TestEnv::start().await;
    let (arn, app, load) = serving(&mut env, "emergency-single", "60s").await;
    let mut job = forgotten_job(&env, "app", OLD).await;
    let before = env.version_with(&arn, "AWSCURRENT").await.expect("current");
    let asked = server_clock(&env).await;

    let report = env.invoke(&emergency(&arn, 1)).await.expect("the emergency rotation succeeds");

    let current = env.version_with(&arn, "AWSCURRENT").await.expect("current");
    assert_ne!(current, before, "rotated now");
    assert_eq!(env.version_with(&arn, "AWSPREVIOUS").await, Some(before), "the leaked version is AWSPREVIOUS");
    assert_eq!(env.version_with(&arn, "AWSPENDING").await, None, "nothing left AWSPENDING");
    assert_eq!(report["passwords_changed"], json!(["app"]));
    assert!(env.pg.login("app", OLD).await.is_err(), "the leaked password no longer logs in");
    let new = env.password(&arn, "AWSCURRENT").await;
    env.remember(&new);
    assert_eq!(env.pg.login("app", &new).await, Ok(()));

    assert!(!alive(&mut job).await, "the forgotten job's session was ended");
    let ended = applications(&report["sessions_ended"]);
    assert!(ended.iter().any(|a| a == JOB), "reported as ended: {report:#}");
    assert!(ended.iter().any(|a| a == "web-app"), "the app's sessions from before were ended too: {report:#}");
    assert_eq!(applications(&report["clients_not_moved"]), [JOB, "web-app"], "neither had moved: {report:#}");
    assert_eq!(sessions_older_than(&env, "app", asked).await, 0, "no session from before the emergency is left");
    let set = &report["rotations"][0][1];
    assert_eq!(set["step"], "setSecret");
    assert!(applications(&set["evidence"]["sessions"]).iter().any(|a| a == JOB), "setSecret saw the job: {set:#}");

    tokio::time::sleep(Duration::from_secs(3)).await;
    let served = load.stop().await;
    assert_served(&served);
    assert_eq!(app.whoami().await.1, current, "the app follows the new version");
    let output = env.function_output();
    assert!(output.contains("emergency rotation done"), "the function logs what it did");
    env.assert_no_leaks().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alternating_emergency_rotation_gives_both_logins_fresh_passwords_under_load() {
    let mut env = TestEnv::start_alternating().await;
    let (arn, app, load) = serving(&mut env, "emergency-alt", "1s").await;
    env.rotate(&arn).await.expect("a normal rotation first: both logins in use");
    let current = env.value(&arn, "AWSCURRENT").await.expect("current");
    let previous = env.value(&arn, "AWSPREVIOUS").await.expect("previous");
    let ((cur_user, cur_pw), (prev_user, prev_pw)) = (login_of(&current), login_of(&previous));
    let (cur_user, cur_pw, prev_user, prev_pw) =
        (cur_user.as_str(), cur_pw.as_str(), prev_user.as_str(), prev_pw.as_str());
    assert_ne!(cur_user, prev_user);
    // The job still uses the login the last rotation retired.
    let mut job = forgotten_job(&env, prev_user, prev_pw).await;
    let asked = server_clock(&env).await;

    let report = env.invoke(&emergency(&arn, 2)).await.expect("the emergency rotation succeeds");

    assert_eq!(report["passwords_changed"], json!([prev_user, cur_user]), "{report:#}");
    assert_eq!(report["rotations"].as_array().map(Vec::len), Some(2));
    for (user, password) in [(cur_user, cur_pw), (prev_user, prev_pw), ("app", OLD)] {
        assert!(env.pg.login(user, password).await.is_err(), "no earlier password of {user} works");
    }
    let now = env.value(&arn, "AWSCURRENT").await.expect("current");
    assert_eq!(now["username"], cur_user, "two rotations end on the same login, with a new password");
    for stage in ["AWSCURRENT", "AWSPREVIOUS"] {
        let v = env.value(&arn, stage).await.expect(stage);
        let (user, password) = login_of(&v);
        env.remember(&password);
        assert_eq!(env.pg.login(&user, &password).await, Ok(()), "{stage} logs in");
    }
    assert_eq!(env.version_with(&arn, "AWSPENDING").await, None);

    assert!(!alive(&mut job).await, "the forgotten job's session was ended");
    let ended = &report["sessions_ended"];
    assert!(
        ended.as_array().expect("a list").iter().any(|s| s["application"] == JOB && s["login"] == prev_user),
        "{report:#}"
    );
    assert_eq!(applications(&report["clients_not_moved"]), [JOB], "the app moved within the wait: {report:#}");
    for user in [cur_user, prev_user] {
        assert_eq!(sessions_older_than(&env, user, asked).await, 0, "no session of {user} from before is left");
    }

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_served(&load.stop().await);
    assert_eq!(app.whoami().await.0, cur_user);
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn an_emergency_rotation_waits_for_an_unfinished_rotation_instead_of_interleaving() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("emergency-busy", "busy", "Busy-Passw0rd-1").await;
    let token = env.begin_rotation(&arn).await;
    env.step("createSecret", &arn, &token).await.expect("createSecret");
    let stages = env.stages(&arn).await;

    let error = env.invoke(&emergency(&arn, 0)).await.expect_err("refused");

    assert_eq!(error.error_type, "RotationInProgress");
    assert!(error.error_message.contains(&token), "names the unfinished version: {}", error.error_message);
    assert!(error.error_message.contains("--client-request-token"), "says how to resume it");
    assert_eq!(env.stages(&arn).await, stages, "nothing written");
    assert_eq!(env.pg.login("busy", "Busy-Passw0rd-1").await, Ok(()), "the password did not change");
    env.assert_no_leaks().await;
}

/// A secret for user `evidence` whose master is the server's superuser.
async fn alternating_secret(env: &mut TestEnv, name: &str) -> String {
    let superuser = env.pg.superuser_password().to_owned();
    let master = env.secret_json("postgres", &superuser);
    let master_arn = env.create_secret(&format!("{name}-master"), &master).await;
    env.pg.set_password("evidence", "Evidence-Passw0rd-1").await;
    let mut value = env.secret_json("evidence", "Evidence-Passw0rd-1");
    value["masterarn"] = master_arn.into();
    env.create_secret(name, &value).await
}

#[tokio::test]
async fn a_retiring_login_still_in_use_is_reported_and_under_the_fail_policy_holds_the_rotation() {
    let mut env = TestEnv::start_alternating().await;
    let arn = alternating_secret(&mut env, "evidence").await;
    env.rotate(&arn).await.expect("first rotation: the clone becomes current");
    let previous = env.value(&arn, "AWSPREVIOUS").await.expect("previous");
    let (user, password) = login_of(&previous);
    let (user, password) = (user.as_str(), password.as_str());
    let mut job = forgotten_job(&env, user, password).await;

    // Under the default policy the rotation proceeds and says who had not moved.
    let token = env.begin_rotation(&arn).await;
    env.step("createSecret", &arn, &token).await.expect("createSecret");
    let set = env.step("setSecret", &arn, &token).await.expect("setSecret proceeds by default");
    assert_eq!(set["evidence"]["login"], user);
    assert_eq!(applications(&set["evidence"]["sessions"]), [JOB], "{set:#}");
    let line = env
        .function_output()
        .lines()
        .rev()
        .find(|l| l.contains(rotation_fn::IN_USE_MESSAGE))
        .map(str::to_owned)
        .expect("the evidence line");
    let line: Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!((line["fields"]["sessions"].as_u64(), line["fields"]["login"].as_str()), (Some(1), Some(user)));
    assert!(line["fields"]["clients"].as_str().is_some_and(|c| c.contains(JOB)), "{line}");
    env.resume(&arn, &token).await.expect("the rotation finishes");
    assert!(alive(&mut job).await, "a normal rotation ends no session");
    let _ = job.close().await;

    // Another job on the login the next rotation retires; under `fail`, setSecret stops.
    env.rotate(&arn).await.expect("another rotation");
    let previous = env.value(&arn, "AWSPREVIOUS").await.expect("previous");
    let (other, other_password) = login_of(&previous);
    let mut other_job = forgotten_job(&env, &other, &other_password).await;
    env.restart_function(&[("RETIRING_LOGIN_IN_USE", "fail")]).await;
    let before = env.version_with(&arn, "AWSCURRENT").await;
    let token = env.begin_rotation(&arn).await;
    env.step("createSecret", &arn, &token).await.expect("createSecret");
    let error = env.step("setSecret", &arn, &token).await.expect_err("held");
    assert_eq!(error.error_type, "LoginStillInUse");
    assert!(error.error_message.contains(JOB) && error.error_message.contains(&other), "{}", error.error_message);
    assert!(alive(&mut other_job).await);
    assert_eq!(env.pg.login(&other, &other_password).await, Ok(()), "its password unchanged");
    assert_eq!(env.version_with(&arn, "AWSCURRENT").await, before, "AWSCURRENT did not move");

    // Once the job has moved (closed its session), Secrets Manager's retry goes through.
    let _ = other_job.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.resume(&arn, &token).await.expect("the retry finishes once the login is free");
    env.assert_no_leaks().await;
}
