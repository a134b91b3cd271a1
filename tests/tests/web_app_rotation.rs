//! The web app under sustained load while the real rotation function rotates its
//! database secret: no request and no readiness probe may fail, the app must end on the
//! newest credentials, and Secrets Manager calls must stay within the documented bound.
//!
//! Connections live 2–4 s and the change check runs every second, so every rotation
//! forces new physical connections (PostgreSQL keeps sessions opened before
//! `ALTER ROLE … PASSWORD` alive, so only new connections prove anything).

use std::time::{Duration, Instant};

use e2e::TestEnv;
use e2e::web_app::{FAST_CYCLING, Load, LoadReport, SmProxy, WebApp, leaked};
use serde_json::Value;

const OLD: &str = "Initial-Passw0rd-for-web-app";
const CLIENTS: usize = 32;
/// Quiet time after each quick rotation: longer than a connection's life, so every
/// rotation meets a pool that has fully moved to the previous one.
const BETWEEN_ROTATIONS: Duration = Duration::from_millis(4000);
/// Each client sends its next request this long after the last answer: ~120 requests/s
/// per test, which a debug build serves beside the other test running in parallel on
/// two cores (the throughput limit is the benchmark's business, in release).
const PACE: Duration = Duration::from_millis(250);

/// Secrets Manager calls the app may make: one DescribeSecret per change-check interval
/// (the interval is jittered by ±10 %, so at most `elapsed / 0.9 s` checks), plus a small
/// constant per rotation (a GetSecretValue for the new version and, when the old login is
/// refused first, one refresh: DescribeSecret + a GetSecretValue or two), plus startup.
fn call_bound(elapsed: Duration, rotations: u64) -> u64 {
    (elapsed.as_secs_f64() / 0.9).ceil() as u64 + 4 * rotations + 3
}

fn assert_no_failures(report: &LoadReport) {
    assert!(report.ok > 3000, "the load ran: {} requests", report.ok);
    assert!(report.ready_ok > 100, "readiness was probed: {}", report.ready_ok);
    assert!(
        report.failures.is_empty(),
        "{} failed requests, first: {:?}",
        report.failures.len(),
        &report.failures[..report.failures.len().min(5)]
    );
    assert!(
        report.ready_failures.is_empty(),
        "failed readiness checks: {:?}",
        &report.ready_failures[..report.ready_failures.len().min(5)]
    );
}

/// Waits (at most a few change-check intervals) until new connections use AWSCURRENT.
async fn assert_ends_on_current(env: &TestEnv, app: &WebApp, arn: &str) {
    let current = env.version_with(arn, "AWSCURRENT").await.expect("AWSCURRENT");
    let expected_user =
        env.value(arn, "AWSCURRENT").await.expect("value")["username"].as_str().expect("user").to_owned();
    let started = Instant::now();
    loop {
        let answer = app.get("/whoami").await.expect("whoami");
        let v: Value = answer.json();
        if v["secret_version_id"] == current.as_str() && v["login_user"] == expected_user.as_str() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still on {v} instead of {current}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = app.metrics().await;
    assert_eq!(metrics.sum("web_app_secret_version_info", &[&format!("version_id=\"{current}\"")]), 1.0);
}

/// Waits until new connections use `version` (they must within a few connection
/// lifetimes), or fails with `what`.
async fn wait_for_version(app: &WebApp, version: &str, what: &str) {
    let started = Instant::now();
    while app.whoami().await.1 != version {
        assert!(started.elapsed() < Duration::from_secs(15), "{what}: still on {}", app.whoami().await.1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assert_no_password_anywhere(env: &mut TestEnv, app: &WebApp, report: &LoadReport) {
    let passwords = env.known_passwords().await;
    assert!(passwords.len() > 10, "the leak check knows the rotated passwords");
    let metrics = app.metrics().await.text;
    for (place, text) in [("app logs", app.output()), ("metrics", metrics), ("responses", report.bodies.clone())] {
        assert!(!text.is_empty(), "{place} captured");
        assert_eq!(leaked(&text, &passwords), Vec::<String>::new(), "a password leaked into the {place}");
    }
    env.assert_no_leaks().await;
}

/// One test's run: the app behind an outage proxy, under load from the start.
struct Run {
    env: TestEnv,
    arn: String,
    proxy: SmProxy,
    app: WebApp,
    load: Load,
    calls_before: u64,
    started: Instant,
    rotations: u64,
}

impl Run {
    async fn start(env: TestEnv, arn: String) -> Run {
        let proxy = SmProxy::start(&env.moto.endpoint()).await;
        let app = WebApp::spawn(&WebApp::env(&env, &arn, &proxy.endpoint(), FAST_CYCLING)).await;
        let calls_before = app.metrics().await.secretsmanager_calls();
        let started = Instant::now();
        let load = Load::start(&app, CLIENTS, PACE);
        tokio::time::sleep(Duration::from_secs(2)).await;
        Run { env, arn, proxy, app, load, calls_before, started, rotations: 0 }
    }

    async fn quick_rotations(&mut self, n: u64) {
        for _ in 0..n {
            self.env.rotate(&self.arn).await.expect("rotation");
            self.rotations += 1;
            tokio::time::sleep(BETWEEN_ROTATIONS).await;
        }
    }

    /// Stops the load and checks what every run must hold: no failed request or readiness
    /// probe, the app on AWSCURRENT, Secrets Manager calls within the bound.
    async fn finish(self, label: &str) -> (TestEnv, WebApp, LoadReport, String) {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let report = self.load.stop().await;
        let elapsed = self.started.elapsed();
        assert_no_failures(&report);
        assert_ends_on_current(&self.env, &self.app, &self.arn).await;
        let metrics = self.app.metrics().await;
        let calls = metrics.secretsmanager_calls() - self.calls_before;
        let bound = call_bound(elapsed, self.rotations);
        eprintln!(
            "{label}: {} requests, {} rotations in {elapsed:?}, {calls} Secrets Manager calls (bound {bound}), p50 {} µs, p99 {} µs",
            report.ok,
            self.rotations,
            report.percentile_us(50.0),
            report.percentile_us(99.0)
        );
        assert!(calls <= bound, "{calls} Secrets Manager calls > {bound}\n{}", metrics.text);
        drop(self.proxy);
        (self.env, self.app, report, metrics.text)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_user_rotations_under_load_fail_no_request() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("web-single", "app", OLD).await;
    env.pg.exec("GRANT CREATE ON SCHEMA public TO app").await;
    let mut run = Run::start(env, arn.clone()).await;
    run.quick_rotations(6).await;

    // A long pause between setSecret and finishSecret: the database already holds the
    // pending password, AWSCURRENT still names the old one. Every connection recycles
    // meanwhile; the app must find AWSPENDING.
    let token = run.env.begin_rotation(&arn).await;
    run.env.step("createSecret", &arn, &token).await.expect("createSecret");
    run.env.step("setSecret", &arn, &token).await.expect("setSecret");
    wait_for_version(&run.app, &token, "new connections use AWSPENDING before finishSecret").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    run.env.step("testSecret", &arn, &token).await.expect("testSecret");
    run.env.step("finishSecret", &arn, &token).await.expect("finishSecret");
    run.env.drop_pending(&arn, &token).await;
    run.rotations += 1;
    tokio::time::sleep(BETWEEN_ROTATIONS).await;

    // A rotation that fails after setSecret (testSecret cannot verify the database's
    // certificate with the CA bundle it was given) and is finished much later, when
    // Secrets Manager retries it with the same token.
    let token = run.env.begin_rotation(&arn).await;
    run.env.step("createSecret", &arn, &token).await.expect("createSecret");
    run.env.step("setSecret", &arn, &token).await.expect("setSecret");
    run.env.restart_function(&[("DB_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")]).await;
    run.env.step("testSecret", &arn, &token).await.expect_err("testSecret fails on the wrong CA");
    wait_for_version(&run.app, &token, "serving on the pending version of the failed rotation").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    run.env.restart_function(&[]).await;
    run.env.resume(&arn, &token).await.expect("the retry finishes the rotation");
    run.rotations += 1;
    tokio::time::sleep(BETWEEN_ROTATIONS).await;

    run.quick_rotations(3).await;
    let (mut env, mut app, report, _) = run.finish("single-user").await;
    assert!(
        app.metrics().await.sum("web_app_db_auth_failures_total", &[]) >= 1.0,
        "the rotations did refuse old logins"
    );
    assert_no_password_anywhere(&mut env, &app, &report).await;
    assert_eq!(app.terminate().await, Some(0), "SIGTERM stops the app cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alternating_user_rotations_and_a_secrets_manager_outage_fail_no_request() {
    let mut env = TestEnv::start_alternating().await;
    let master = env.secret_json("postgres", env.pg.superuser_password());
    let master_arn = env.create_secret("web-alt-master", &master).await;
    env.pg.set_password("app", OLD).await;
    env.pg.exec("GRANT CREATE ON SCHEMA public TO app").await;
    let mut value = env.secret_json("app", OLD);
    value["masterarn"] = Value::String(master_arn);
    let arn = env.create_secret("web-alt", &value).await;
    let mut run = Run::start(env, arn.clone()).await;
    run.quick_rotations(6).await;

    // Secrets Manager unreachable for 8 s while the credentials stay valid: keep serving,
    // back off (not one call per second), and report it.
    assert_ends_on_current(&run.env, &run.app, &arn).await;
    let version = run.app.whoami().await.1;
    let errors = |m: &e2e::web_app::Metrics| m.sum("web_app_secretsmanager_calls_total", &["outcome=\"error\""]);
    let errors_before = errors(&run.app.metrics().await);
    run.proxy.outage(true);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let during = run.app.metrics().await;
    let failed_calls = errors(&during) - errors_before;
    assert!(failed_calls >= 1.0, "the outage was noticed\n{}", during.text);
    assert!(failed_calls <= 5.0, "{failed_calls} calls in 8 s of outage: backoff, not a loop");
    assert!(during.sum("web_app_secret_change_check_failures", &[]) >= 1.0, "reported in metrics");
    assert_eq!(run.app.whoami().await.1, version, "kept the working login");
    run.proxy.outage(false);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(run.app.metrics().await.sum("web_app_secret_change_check_failures", &[]), 0.0, "recovered");

    run.quick_rotations(6).await;
    let (mut env, app, report, _) = run.finish("alternating").await;
    let mut users = report.users_seen.clone();
    users.sort();
    assert_eq!(users, ["app", "app_clone"], "requests were served by both users in turn");
    assert!(app.output().contains("change check failed; serving with the current login"), "the outage is in the logs");
    assert_no_password_anywhere(&mut env, &app, &report).await;
}
