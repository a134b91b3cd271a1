//! The local demo: a throwaway PostgreSQL with TLS, moto as Secrets Manager,
//! the real `bootstrap` binary behind the Lambda Runtime API emulator, and the
//! real web app serving clients while its credentials rotate under it.
//! Run it with `bash tests/demo.sh`; `bash tests/demo.sh --keep-running`
//! then leaves the app up and rotates every 30 s until Ctrl-C.
//!
//! It prints what happened, never a password: version ids, users, which login
//! the database accepts, what the clients saw, the function's typed errors.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use e2e::web_app::{FAST_CYCLING, Load, WebApp};
use e2e::{STEPS, TestEnv};
use serde_json::{Value, json};

const INITIAL: &str = "Demo-initial-passw0rd";

fn short(id: &str) -> &str {
    &id[..8.min(id.len())]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn show_login(env: &TestEnv, user: &str, password: &str, label: &str) {
    let verdict = match env.pg.login(user, password).await {
        Ok(()) => "accepted".to_owned(),
        Err(code) => format!("rejected ({code})"),
    };
    println!("      login as {user:?} with {label:<11} → {verdict}");
}

/// Runs `steps` of the rotation `token`, printing each outcome.
async fn run_steps(env: &mut TestEnv, arn: &str, token: &str, steps: &[&str]) -> Vec<String> {
    let mut parts = Vec::new();
    for step in steps {
        let t = Instant::now();
        let out = env.step(step, arn, token).await.unwrap();
        parts.push(format!("{step} {} ({:.1} ms)", out["outcome"].as_str().unwrap_or("?"), ms(t.elapsed())));
    }
    parts
}

async fn rotate_verbosely(env: &mut TestEnv, arn: &str) -> String {
    let token = env.begin_rotation(arn).await;
    let started = Instant::now();
    let parts = run_steps(env, arn, &token, &STEPS).await;
    env.drop_pending(arn, &token).await;
    println!("    rotation {} in {:.1} ms: {}", short(&token), ms(started.elapsed()), parts.join(", "));
    token
}

async fn credentials(env: &TestEnv, arn: &str, stage: &str) -> (String, String) {
    let v: Value = env.value(arn, stage).await.unwrap();
    (v["username"].as_str().unwrap().to_owned(), v["password"].as_str().unwrap().to_owned())
}

/// Waits until new connections of the app use `version`; prints how long it took.
async fn app_follows(app: &WebApp, version: &str) {
    let started = Instant::now();
    loop {
        let (user, seen) = app.whoami().await;
        if seen == version {
            println!(
                "      web app: new connections log in as {user:?} with version {} after {:.0} ms",
                short(&seen),
                ms(started.elapsed())
            );
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the app did not pick up {version}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let keep_running = std::env::args().any(|a| a == "--keep-running");
    println!("==> starting PostgreSQL 15 (TLS, scram-sha-256, log_statement=all), moto, and the real bootstrap");
    let mut env = TestEnv::start().await;
    println!("    PostgreSQL on 127.0.0.1:{}, moto at {}", env.pg.port(), env.moto.endpoint());

    let arn = env.create_user_and_secret("demo/app", "app", INITIAL).await;
    env.pg.exec("GRANT CREATE ON SCHEMA public TO app").await;
    let vars = WebApp::env(&env, &arn, &env.moto.endpoint(), FAST_CYCLING);
    let app = WebApp::spawn(&vars).await;
    println!("\n==> web app at http://{} (secret demo/app; connections live 1.5–3 s)", app.addr());
    let (user, version) = app.whoami().await;
    println!("    /whoami: user {user:?}, secret version {}", short(&version));
    let load = Load::start(&app, 16, Duration::from_millis(5));
    println!("    16 clients now create, list and read notes without pause");

    println!("\n==> single-user rotations of demo/app while the clients run");
    for _ in 0..2 {
        let token = rotate_verbosely(&mut env, &arn).await;
        let (user, current) = credentials(&env, &arn, "AWSCURRENT").await;
        let (_, previous) = credentials(&env, &arn, "AWSPREVIOUS").await;
        show_login(&env, &user, &current, "AWSCURRENT").await;
        show_login(&env, &user, &previous, "AWSPREVIOUS").await;
        app_follows(&app, &token).await;
    }

    println!("\n==> the dangerous window: the database has the new password, AWSCURRENT does not");
    let token = env.begin_rotation(&arn).await;
    println!("    {}", run_steps(&mut env, &arn, &token, &["createSecret", "setSecret"]).await.join(", "));
    let before = load.requests.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let served = load.requests.load(std::sync::atomic::Ordering::Relaxed) - before;
    let (user, seen) = app.whoami().await;
    let which = if seen == token { "AWSPENDING, which the database already holds" } else { "not the pending one" };
    println!("    paused 5 s before finishSecret: {served} requests answered meanwhile");
    println!("    /whoami in the window: user {user:?}, secret version {} ({which})", short(&seen));
    println!("    {}", run_steps(&mut env, &arn, &token, &["testSecret", "finishSecret"]).await.join(", "));
    env.drop_pending(&arn, &token).await;
    app_follows(&app, &token).await;

    println!("\n==> alternating-users rotation of demo/app-alt (master: the superuser's secret)");
    let superuser = env.pg.superuser_password().to_owned();
    let master = env.create_secret("demo/master", &env.secret_json("postgres", &superuser)).await;
    env.pg.set_password("reporting", INITIAL).await;
    let mut value = env.secret_json("reporting", INITIAL);
    value["masterarn"] = json!(master);
    let alt = env.create_secret("demo/app-alt", &value).await;
    env.use_strategy(e2e::ALTERNATING_USERS).await;
    for _ in 0..2 {
        rotate_verbosely(&mut env, &alt).await;
        let (user, current) = credentials(&env, &alt, "AWSCURRENT").await;
        let (old_user, previous) = credentials(&env, &alt, "AWSPREVIOUS").await;
        show_login(&env, &user, &current, "AWSCURRENT").await;
        show_login(&env, &old_user, &previous, "AWSPREVIOUS").await;
    }

    println!("\n==> a broken secret: the error is typed, precise, and nothing is written");
    let mut broken = env.secret_json("app", INITIAL);
    broken.as_object_mut().unwrap().remove("host");
    let broken = env.create_secret("demo/broken", &broken).await;
    let failure = env.rotate(&broken).await.unwrap_err();
    println!("    {} failed: {}: {}", failure.step, failure.error.error_type, failure.error.error_message);

    if keep_running {
        println!("\n==> keeping the web app up at http://{}; rotating demo/app every 30 s (Ctrl-C stops)", app.addr());
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                () = tokio::time::sleep(Duration::from_secs(30)) => {
                    let token = rotate_verbosely(&mut env, &arn).await;
                    app_follows(&app, &token).await;
                }
            }
        }
    }

    let report = load.stop().await;
    let metrics = app.metrics().await;
    println!("\n==> what the clients saw");
    println!(
        "    {} requests answered, {} failed; {} readiness checks passed, {} failed",
        report.ok,
        report.failures.len(),
        report.ready_ok,
        report.ready_failures.len()
    );
    println!(
        "    latency p50 {:.1} ms, p99 {:.1} ms; database users seen: {:?}",
        report.percentile_us(50.0) as f64 / 1e3,
        report.percentile_us(99.0) as f64 / 1e3,
        report.users_seen
    );
    println!("    the app made {} Secrets Manager calls in all", metrics.secretsmanager_calls());
    for failure in report.failures.iter().take(5) {
        println!("    failed: {failure}");
    }

    println!("\n==> what the database server saw of the new passwords");
    let log = env.pg.server_log();
    if let Some(line) = log.lines().rev().find(|l| l.contains("ALTER ROLE")) {
        let verifier_start = line.find("SCRAM-SHA-256$").unwrap_or(0);
        println!("    {}…", &line[..(verifier_start + 22).min(line.len())]);
    }
    env.assert_no_leaks().await;
    let app_output = app.output();
    for text in [&app_output, &report.bodies, &metrics.text] {
        for stage in ["AWSCURRENT", "AWSPREVIOUS"] {
            let (_, password) = credentials(&env, &arn, stage).await;
            assert!(!text.contains(&password), "a password leaked from the web app");
        }
    }
    println!("    no password appears in the server's statement log, the function's or the app's output,");
    println!("    moto's log, the app's responses and metrics, or any error");
}
