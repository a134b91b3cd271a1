//! The web app under sustained load while the real rotation function rotates its
//! database secret, and the database terminates every session of the app at the moment
//! the password changes and again when the rotation finishes (as an administrator, a
//! restart or a failover would): no request and no readiness probe may fail, the app must
//! end on the newest credentials, and Secrets Manager calls must stay within the
//! documented bound.
//!
//! The database is set up as the README's first deployment (an owner role, a DML-only
//! app login) and migrated with `web-app migrate`. Connections live 2–4 s and the change
//! check runs every second, so every rotation forces new physical connections.

use std::time::{Duration, Instant};

use e2e::TestEnv;
use e2e::web_app::{Deployment, FAST_CYCLING, Load, LoadReport, SmProxy, WebApp, leaked, switch_line};
use serde_json::Value;

const OLD: &str = "Initial-Passw0rd-for-web-app";
const OWNER: &str = "Owner-Passw0rd-for-web-app";
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
        let v: Value = app.whoami_json().await;
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

/// One test's run: the first deployment migrated, the app behind an outage proxy, under
/// load from the start.
struct Run {
    env: TestEnv,
    arn: String,
    proxy: SmProxy,
    app: WebApp,
    load: Load,
    calls_before: u64,
    started: Instant,
    rotations: u64,
    /// Sessions of the app the database terminated.
    killed: i64,
    /// Logins the server refused, per quick rotation (its log's FATAL lines).
    refused: Vec<usize>,
}

/// The versions of the app's `switched…` log lines, in order (as the CDK's
/// metric filter `$.message = "switched*"` with dimension `$.to` counts them).
fn switches(output: &str) -> Vec<String> {
    output.lines().filter_map(switch_line).filter_map(|v| v["to"].as_str().map(str::to_owned)).collect()
}

impl Run {
    async fn start(mut env: TestEnv, name: &str) -> Run {
        let deployment: Deployment = env.first_deployment(name, OLD, OWNER).await;
        env.migrate(&deployment).await;
        let arn = deployment.app_arn;
        let proxy = SmProxy::start(&env.moto.endpoint()).await;
        let app = WebApp::spawn(&WebApp::env(&env, &arn, &proxy.endpoint(), FAST_CYCLING)).await;
        // What the CDK's metric filter and dashboard read ($.message = "switched*",
        // $.to): the instance's version is known from its first line, not only after a rotation.
        let current = env.version_with(&arn, "AWSCURRENT").await.expect("current");
        assert_eq!(switches(&app.output()).first(), Some(&current), "the first login is logged as a switch");
        let calls_before = app.metrics().await.secretsmanager_calls();
        let started = Instant::now();
        let load = Load::start(&app, CLIENTS, PACE);
        tokio::time::sleep(Duration::from_secs(2)).await;
        Run { env, arn, proxy, app, load, calls_before, started, rotations: 0, killed: 0, refused: Vec::new() }
    }

    /// Every session of the app ends now.
    async fn kill_sessions(&mut self) {
        self.killed += self.env.terminate_app_sessions().await;
    }

    async fn step(&mut self, step: &str, token: &str) {
        let arn = self.arn.clone();
        self.env.step(step, &arn, token).await.unwrap_or_else(|e| panic!("{step}: {e:?}"));
    }

    /// A whole rotation, the app's sessions terminated right after setSecret changed the
    /// password and again after finishSecret moved AWSCURRENT.
    async fn rotate_killing_sessions(&mut self) {
        let token = self.env.begin_rotation(&self.arn).await;
        self.step("createSecret", &token).await;
        self.step("setSecret", &token).await;
        self.kill_sessions().await;
        self.step("testSecret", &token).await;
        self.step("finishSecret", &token).await;
        self.env.drop_pending(&self.arn, &token).await;
        self.kill_sessions().await;
        self.rotations += 1;
    }

    /// Rotations with quiet time after each; the server's log must show at most one
    /// refused login per rotation, whatever the pool size and the 32 clients waiting: a
    /// refused login stays a signal worth paging on.
    async fn quick_rotations(&mut self, n: u64) {
        for _ in 0..n {
            let mark = self.env.server_log_mark();
            self.rotate_killing_sessions().await;
            tokio::time::sleep(BETWEEN_ROTATIONS).await;
            let refused = self.env.refused_logins_since(mark);
            assert!(refused.len() <= 1, "{} refused logins in one rotation:\n{}", refused.len(), refused.join("\n"));
            self.refused.push(refused.len());
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
        let retried = metrics.sum("web_app_db_retries_total", &["reason=\"session_lost\""]);
        eprintln!(
            "{label}: {} requests, {} rotations in {elapsed:?}, {} sessions terminated, {retried} retried on a new \
             connection, refused logins per quick rotation {:?}, {calls} Secrets Manager calls (bound {bound}), \
             p50 {} µs, p99 {} µs",
            report.ok,
            self.rotations,
            self.killed,
            self.refused,
            report.percentile_us(50.0),
            report.percentile_us(99.0)
        );
        assert!(calls <= bound, "{calls} Secrets Manager calls > {bound}\n{}", metrics.text);
        assert!(self.killed >= 2 * self.rotations as i64, "the database did terminate the app's sessions");
        assert!(retried >= 1.0, "requests did meet dead sessions (and were retried)\n{}", metrics.text);
        drop(self.proxy);
        let switched = switches(&self.app.output());
        assert!(switched.len() >= 2, "every switch is one `switched…` line with its version: {switched:?}");
        (self.env, self.app, report, metrics.text)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_user_rotations_with_sessions_terminated_fail_no_request() {
    let env = TestEnv::start().await;
    let mut run = Run::start(env, "web-single").await;
    let arn = run.arn.clone();
    run.quick_rotations(4).await;

    // A long pause between setSecret and finishSecret: the database already holds the
    // pending password, AWSCURRENT still names the old one, and every session is gone.
    // The app must find AWSPENDING.
    let mark = run.env.server_log_mark();
    let token = run.env.begin_rotation(&arn).await;
    run.step("createSecret", &token).await;
    run.step("setSecret", &token).await;
    run.kill_sessions().await;
    wait_for_version(&run.app, &token, "new connections use AWSPENDING before finishSecret").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    run.kill_sessions().await;
    run.step("testSecret", &token).await;
    run.step("finishSecret", &token).await;
    run.env.drop_pending(&arn, &token).await;
    run.kill_sessions().await;
    run.rotations += 1;
    tokio::time::sleep(BETWEEN_ROTATIONS).await;
    let refused = run.env.refused_logins_since(mark);
    assert_eq!(refused.len(), 1, "one refused login for the rotation that paused:\n{}", refused.join("\n"));

    // A rotation that fails after setSecret (testSecret cannot verify the database's
    // certificate with the CA bundle it was given) and is finished much later, when
    // Secrets Manager retries it with the same token.
    let token = run.env.begin_rotation(&arn).await;
    run.step("createSecret", &token).await;
    run.step("setSecret", &token).await;
    run.kill_sessions().await;
    run.env.restart_function(&[("DB_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")]).await;
    run.env.step("testSecret", &arn, &token).await.expect_err("testSecret fails on the wrong CA");
    wait_for_version(&run.app, &token, "serving on the pending version of the failed rotation").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    run.env.restart_function(&[]).await;
    run.env.resume(&arn, &token).await.expect("the retry finishes the rotation");
    run.kill_sessions().await;
    run.rotations += 1;
    tokio::time::sleep(BETWEEN_ROTATIONS).await;

    // The login itself refused for 3 s (a pg_hba mistake, quickly reverted): requests wait
    // for sessions others release, and the refresh finds the same login working again
    // instead of giving up until the next rotation.
    let version = run.app.whoami().await.1;
    run.env.pg.exec("ALTER ROLE app NOLOGIN").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    run.env.pg.exec("ALTER ROLE app LOGIN").await;
    tokio::time::sleep(BETWEEN_ROTATIONS).await;
    assert_eq!(run.app.whoami().await.1, version, "kept the login that was briefly refused");

    run.quick_rotations(3).await;
    let run_refused = run.refused.clone();
    let (mut env, mut app, report, metrics) = run.finish("single-user").await;
    let metrics = e2e::web_app::Metrics::parse(&metrics);
    assert!(metrics.sum("web_app_db_auth_failures_total", &[]) >= 1.0, "the rotations did refuse old logins");
    assert!(run_refused.iter().sum::<usize>() >= 1, "the server did refuse old logins: {run_refused:?}");
    assert!(
        metrics.sum("web_app_credential_refreshes_total", &["trigger=\"auth_failure\"", "outcome=\"kept\""]) >= 1.0,
        "the briefly refused login was found working again\n{}",
        metrics.text
    );
    assert_no_password_anywhere(&mut env, &app, &report).await;
    assert_eq!(app.terminate().await, Some(0), "SIGTERM stops the app cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alternating_user_rotations_sessions_terminated_and_a_secrets_manager_outage_fail_no_request() {
    let env = TestEnv::start_alternating().await;
    let mut run = Run::start(env, "web-alt").await;
    let arn = run.arn.clone();
    run.quick_rotations(5).await;

    // Secrets Manager unreachable for 8 s while the credentials stay valid, and the
    // database ends every session meanwhile: keep serving (reconnecting with the login
    // in hand), back off (not one call per second), and report it.
    assert_ends_on_current(&run.env, &run.app, &arn).await;
    let version = run.app.whoami().await.1;
    let errors = |m: &e2e::web_app::Metrics| m.sum("web_app_secretsmanager_calls_total", &["outcome=\"error\""]);
    let errors_before = errors(&run.app.metrics().await);
    run.proxy.outage(true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    run.kill_sessions().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during = run.app.metrics().await;
    let failed_calls = errors(&during) - errors_before;
    assert!(failed_calls >= 1.0, "the outage was noticed\n{}", during.text);
    assert!(failed_calls <= 5.0, "{failed_calls} calls in 8 s of outage: backoff, not a loop");
    assert!(during.sum("web_app_secret_change_check_failures", &[]) >= 1.0, "reported in metrics");
    assert_eq!(run.app.whoami().await.1, version, "kept the working login");
    run.proxy.outage(false);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(run.app.metrics().await.sum("web_app_secret_change_check_failures", &[]), 0.0, "recovered");

    run.quick_rotations(5).await;
    let (mut env, app, report, _) = run.finish("alternating").await;
    let mut users = report.users_seen.clone();
    users.sort();
    assert_eq!(users, ["app", "app_clone"], "requests were served by both users in turn");
    assert!(app.output().contains("change check failed; serving with the current login"), "the outage is in the logs");
    assert_no_password_anywhere(&mut env, &app, &report).await;
}
