//! The local demo: a throwaway PostgreSQL with TLS, moto as Secrets Manager,
//! and the real `bootstrap` binary behind the Lambda Runtime API emulator,
//! rotating credentials live. Run it with `bash tests/demo.sh`.
//!
//! It prints what happened, never a password: version ids, users, which login
//! the database accepts, the function's typed errors.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::time::Instant;

use e2e::{STEPS, TestEnv};
use serde_json::{Value, json};

const INITIAL: &str = "Demo-initial-passw0rd";

fn short(id: &str) -> &str {
    &id[..8.min(id.len())]
}

async fn show_login(env: &TestEnv, user: &str, password: &str, label: &str) {
    let verdict = match env.pg.login(user, password).await {
        Ok(()) => "accepted".to_owned(),
        Err(code) => format!("rejected ({code})"),
    };
    println!("      login as {user:?} with {label:<11} → {verdict}");
}

async fn rotate_verbosely(env: &mut TestEnv, arn: &str) {
    let token = uuid::Uuid::new_v4().to_string();
    env.start_rotation(arn, &token).await.unwrap();
    let started = Instant::now();
    let mut parts = Vec::new();
    for step in STEPS {
        let t = Instant::now();
        let out = env.step(step, arn, &token).await.unwrap();
        parts.push(format!(
            "{step} {} ({:.1} ms)",
            out["outcome"].as_str().unwrap_or("?"),
            t.elapsed().as_secs_f64() * 1e3
        ));
    }
    env.drop_pending(arn, &token).await;
    println!("    rotation {} in {:.1} ms: {}", short(&token), started.elapsed().as_secs_f64() * 1e3, parts.join(", "));
}

async fn credentials(env: &TestEnv, arn: &str, stage: &str) -> (String, String) {
    let v: Value = env.value(arn, stage).await.unwrap();
    (v["username"].as_str().unwrap().to_owned(), v["password"].as_str().unwrap().to_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    println!("==> starting PostgreSQL 15 (TLS, scram-sha-256, log_statement=all), moto, and the real bootstrap");
    let mut env = TestEnv::start().await;
    let cold = env.function.as_ref().unwrap().cold_start().await;
    println!("    PostgreSQL on 127.0.0.1:{}, moto at {}", env.pg.port(), env.moto.endpoint());
    println!("    function ready {:.1} ms after its process started", cold.as_secs_f64() * 1e3);

    println!("\n==> single-user rotation of secret demo/app (user \"app\")");
    let arn = env.create_user_and_secret("demo/app", "app", INITIAL).await;
    for _ in 0..3 {
        rotate_verbosely(&mut env, &arn).await;
        let (user, current) = credentials(&env, &arn, "AWSCURRENT").await;
        let (_, previous) = credentials(&env, &arn, "AWSPREVIOUS").await;
        show_login(&env, &user, &current, "AWSCURRENT").await;
        show_login(&env, &user, &previous, "AWSPREVIOUS").await;
    }

    println!("\n==> alternating-users rotation of secret demo/app-alt (master: the superuser's secret)");
    let superuser = env.pg.superuser_password().to_owned();
    let master = env.create_secret("demo/master", &env.secret_json("postgres", &superuser)).await;
    env.pg.set_password("reporting", INITIAL).await;
    let mut value = env.secret_json("reporting", INITIAL);
    value["masterarn"] = json!(master);
    let alt = env.create_secret("demo/app-alt", &value).await;
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

    println!("\n==> what the database server saw of the new passwords");
    let log = env.pg.server_log();
    if let Some(line) = log.lines().rev().find(|l| l.contains("ALTER ROLE")) {
        let verifier_start = line.find("SCRAM-SHA-256$").unwrap_or(0);
        println!("    {}…", &line[..(verifier_start + 22).min(line.len())]);
    }
    env.assert_no_leaks().await;
    println!("    no password appears in the server's statement log, the function's output, moto's log or any error");
}
