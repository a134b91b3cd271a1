//! Throughput and latency of a database-backed endpoint (`GET /notes/{id}`) at a fixed
//! concurrency, in steady state at the default log level (`info`, a line per request) and
//! at `warn`, and during a run of single-user rotations that terminate every session of
//! the app at each password change, beside `pgbench -S` at the same concurrency on the
//! same server; and Secrets Manager calls per rotation. Results go to
//! web-app/BENCHMARKS.md by hand.
//!
//!   cargo build --release --bins
//!   WEB_APP_BIN=target/release/web-app BOOTSTRAP_BIN=target/release/bootstrap \
//!     cargo bench -p e2e --bench web_app
//!
//! BENCH_CLIENTS (default 32) and BENCH_SECONDS (default 20) change the run.

// A benchmark's report is its standard output.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use e2e::TestEnv;
use e2e::web_app::{Load, LoadReport, WebApp, percentile};
use tokio::process::Command;

const PASSWORD: &str = "Bench-Passw0rd-initial";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
}

fn figures(report: &LoadReport, elapsed: Duration) -> Figures {
    Figures {
        rps: report.ok as f64 / elapsed.as_secs_f64(),
        p50_ms: report.percentile_us(50.0) as f64 / 1000.0,
        p99_ms: report.percentile_us(99.0) as f64 / 1000.0,
        errors: report.failures.len() + report.ready_failures.len(),
    }
}

fn row(name: &str, f: &Figures) {
    println!("| {name} | {:.0} | {:.2} | {:.2} | {} |", f.rps, f.p50_ms, f.p99_ms, f.errors);
}

/// `pgbench -S` with `clients` connections for `seconds`, per-transaction log for the
/// percentiles.
async fn pgbench(env: &TestEnv, clients: u64, seconds: u64) -> Figures {
    let dir = tempfile::tempdir().expect("tmp");
    let conn = |cmd: &mut Command| {
        cmd.env("PGPASSWORD", env.pg.superuser_password()).env("PGSSLMODE", "require").args([
            "-h",
            "127.0.0.1",
            "-p",
            &env.pg.port().to_string(),
            "-U",
            "postgres",
        ]);
    };
    let mut init = Command::new("pgbench");
    conn(&mut init);
    let out = init.args(["-i", "-s", "1", "-q", "postgres"]).output().await.expect("pgbench -i");
    assert!(out.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&out.stderr));
    let mut run = Command::new("pgbench");
    conn(&mut run);
    let out = run
        .current_dir(dir.path())
        .args([
            "-S",
            "-n",
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            "--log",
            "--log-prefix=tx",
        ])
        .arg("postgres")
        .output()
        .await
        .expect("pgbench -S");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "pgbench -S: {text}{}", String::from_utf8_lossy(&out.stderr));
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .expect("tps line");
    // Log lines: client_id transaction_no time script_no time_epoch time_us [...]
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(dir.path()).expect("logs") {
        let log = std::fs::read_to_string(entry.expect("entry").path()).unwrap_or_default();
        latencies.extend(log.lines().filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok()));
    }
    let failed = text
        .lines()
        .find(|l| l.starts_with("number of failed transactions"))
        .map_or(0, |l| l.split_whitespace().nth(4).and_then(|v| v.parse().ok()).unwrap_or(0));
    Figures {
        rps: tps,
        p50_ms: percentile(&latencies, 50.0) as f64 / 1000.0,
        p99_ms: percentile(&latencies, 99.0) as f64 / 1000.0,
        errors: failed,
    }
}

/// A rotation as Secrets Manager runs it, with every session of the app terminated when
/// setSecret changes the password and again when finishSecret completes.
async fn rotate_killing_sessions(env: &mut TestEnv, arn: &str) -> i64 {
    let token = env.begin_rotation(arn).await;
    env.step("createSecret", arn, &token).await.expect("createSecret");
    env.step("setSecret", arn, &token).await.expect("setSecret");
    let mut killed = env.terminate_app_sessions().await;
    env.step("testSecret", arn, &token).await.expect("testSecret");
    env.step("finishSecret", arn, &token).await.expect("finishSecret");
    env.drop_pending(arn, &token).await;
    killed += env.terminate_app_sessions().await;
    killed
}

fn app_env(env: &TestEnv, arn: &str, log_level: &str, check_interval: u64) -> Vec<(String, String)> {
    WebApp::env(
        env,
        arn,
        &env.moto.endpoint(),
        &[
            ("RUST_LOG", log_level),
            ("APP_POOL_MAX_CONNECTIONS", "16"),
            ("APP_POOL_MIN_CONNECTIONS", "16"),
            ("APP_CONN_MAX_LIFETIME", "10s"),
            ("APP_SECRET_CHECK_INTERVAL", &format!("{check_interval}s")),
            ("APP_SECRET_BACKOFF_MAX", "30s"),
        ],
    )
}

/// `GET /notes/{id}` from `clients` clients for `seconds`, after a 3 s warm-up.
async fn steady(app: &WebApp, clients: u64, seconds: u64) -> Figures {
    let warm = Load::start_with(app.addr(), app.admin_addr(), clients as usize, false, Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(3)).await;
    warm.stop().await;
    let load = Load::start_with(app.addr(), app.admin_addr(), clients as usize, false, Duration::ZERO);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    figures(&load.stop().await, started.elapsed())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let clients = env_number("BENCH_CLIENTS", 32);
    let seconds = env_number("BENCH_SECONDS", 20);
    let mut env = TestEnv::start().await;
    let deployment = env.first_deployment("bench/db", PASSWORD, "Bench-Passw0rd-owner").await;
    env.migrate(&deployment).await;
    let arn = deployment.app_arn.clone();
    let check_interval = 5;

    // Logging at `warn`: no per-request line.
    let mut quiet = WebApp::spawn(&app_env(&env, &arn, "warn", check_interval)).await;
    let steady_warn = steady(&quiet, clients, seconds).await;
    quiet.terminate().await;

    // The default level (`info`): one JSON line per request, through the non-blocking writer.
    let app = WebApp::spawn(&app_env(&env, &arn, "info", check_interval)).await;
    let steady_info = steady(&app, clients, seconds).await;
    let log_lines = app.output().lines().count();

    let calls_before = app.metrics().await.secretsmanager_calls();
    let load = Load::start_with(app.addr(), app.admin_addr(), clients as usize, false, Duration::ZERO);
    let started = Instant::now();
    let (mut rotations, mut killed) = (0u64, 0i64);
    while started.elapsed() < Duration::from_secs(seconds) {
        killed += rotate_killing_sessions(&mut env, &arn).await;
        rotations += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let elapsed = started.elapsed();
    let during = figures(&load.stop().await, elapsed);
    tokio::time::sleep(Duration::from_secs(check_interval + 1)).await;
    let metrics = app.metrics().await;
    let calls = metrics.secretsmanager_calls() - calls_before;
    let retried = metrics.sum("web_app_db_retries_total", &["reason=\"session_lost\""]);
    let periodic = (elapsed.as_secs_f64() + check_interval as f64 + 1.0) / check_interval as f64;
    let per_rotation = (calls as f64 - periodic).max(0.0) / rotations as f64;

    let pg = pgbench(&env, clients, seconds).await;

    println!("\nconcurrency {clients}, {seconds} s per run, pool 16, TLS to PostgreSQL 15 on loopback\n");
    println!("| run | requests/s | p50 ms | p99 ms | errors |");
    println!("|---|---:|---:|---:|---:|");
    row("pgbench -S (ceiling)", &pg);
    row("web-app GET /notes/{id}, steady, RUST_LOG=info (default)", &steady_info);
    row("web-app GET /notes/{id}, steady, RUST_LOG=warn", &steady_warn);
    row(
        &format!("web-app GET /notes/{{id}}, {rotations} rotations, {killed} sessions terminated, RUST_LOG=info"),
        &during,
    );
    println!(
        "\nweb-app / pgbench: {:.0} % (info), {:.0} % (warn); p99 during rotations / steady: {:.2}x",
        100.0 * steady_info.rps / pg.rps,
        100.0 * steady_warn.rps / pg.rps,
        during.p99_ms / steady_info.p99_ms
    );
    println!("log lines written at info: {log_lines} (one per request)");
    println!("requests retried on a new connection after their session was terminated: {retried}");
    println!(
        "Secrets Manager calls while rotating: {calls} in {:.1} s ({rotations} rotations, check every {check_interval} s): \
         ≈ {periodic:.1} periodic + {per_rotation:.1} per rotation",
        elapsed.as_secs_f64()
    );
}
