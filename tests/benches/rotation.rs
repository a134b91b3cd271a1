//! Rotation benchmark: the release `bootstrap` against the throwaway
//! PostgreSQL and moto, driven through the Runtime API emulator.
//!
//! Run with `make bench-rotation` (builds the release binary, then
//! `BOOTSTRAP_BIN=target/release/bootstrap cargo bench -p e2e --bench rotation`).
//! Prints a Markdown table; the README keeps the last one.
//!
//! The "I/O floor" is what a rotation cannot avoid: the Secrets Manager calls
//! and database connections the function made during the steps (counted in
//! moto's and PostgreSQL's logs), each priced at the median this process
//! measures for one such call against the same servers.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use e2e::{Function, STEPS, TestEnv, runtime_api};
use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgSslMode};

const WARM_ROTATIONS: usize = 40;
const COLD_ROTATIONS: usize = 12;
const COLD_STARTS: usize = 30;

#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d);
    }
    fn quantile(&self, q: f64) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        v[((v.len() - 1) as f64 * q).round() as usize]
    }
    fn cell(&self) -> String {
        format!("{:.2} / {:.2}", ms(self.quantile(0.5)), ms(self.quantile(0.9)))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One rotation, step by step, as Secrets Manager runs it. Also counts the
/// Secrets Manager calls and database connections made during the steps.
async fn timed_rotation(env: &mut TestEnv, arn: &str) -> ([Duration; 4], usize, usize) {
    let token = env.begin_rotation(arn).await;
    let mut times = [Duration::ZERO; 4];
    let (mut calls, mut connections) = (0, 0);
    for (i, step) in STEPS.iter().enumerate() {
        let (moto_before, pg_before) = (env.moto.log().len(), env.pg.server_log().len());
        let started = Instant::now();
        env.step(step, arn, &token).await.unwrap();
        times[i] = started.elapsed();
        calls += env.moto.log()[moto_before..].matches("\"POST / HTTP").count();
        connections += env.pg.server_log()[pg_before..].matches("connection received").count();
    }
    env.drop_pending(arn, &token).await;
    (times, calls, connections)
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn median_of(n: usize, mut f: impl AsyncFnMut()) -> Duration {
    let mut s = Samples::default();
    for _ in 0..n {
        let started = Instant::now();
        f().await;
        s.push(started.elapsed());
    }
    s.quantile(0.5)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Some(bin) = std::env::var_os("BOOTSTRAP_BIN") else {
        eprintln!("set BOOTSTRAP_BIN to a release build (see `make bench-rotation`)");
        std::process::exit(2);
    };
    let binary_size = std::fs::metadata(&bin).unwrap().len();
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("bench", "app", "Initial-Passw0rd-for-bench").await;

    // Cold start: process start to its first request for work.
    let mut cold_start = Samples::default();
    for _ in 0..COLD_STARTS {
        let f = Function::spawn(&runtime_api::bootstrap_path(), &env.function_env()).await;
        cold_start.push(f.cold_start().await);
        f.stop().await;
    }

    // Cold: the first rotation of a fresh process (TLS roots, SDK client,
    // first connections).
    let (mut cold, mut cold_total) = (<[Samples; 4]>::default(), Samples::default());
    let mut cold_hwm = 0;
    for _ in 0..COLD_ROTATIONS {
        env.restart_function(&[]).await;
        env.function.as_ref().unwrap().cold_start().await;
        let (times, _, _) = timed_rotation(&mut env, &arn).await;
        for (s, t) in cold.iter_mut().zip(times) {
            s.push(t);
        }
        cold_total.push(times.iter().sum());
        cold_hwm = cold_hwm.max(vm_hwm_kib(env.function.as_ref().unwrap().pid().unwrap()));
    }

    // Warm: one process, many rotations.
    env.restart_function(&[]).await;
    timed_rotation(&mut env, &arn).await; // warm-up
    let (mut warm, mut warm_total) = (<[Samples; 4]>::default(), Samples::default());
    let (mut calls, mut connections) = (0, 0);
    for _ in 0..WARM_ROTATIONS {
        let (times, c, n) = timed_rotation(&mut env, &arn).await;
        for (s, t) in warm.iter_mut().zip(times) {
            s.push(t);
        }
        warm_total.push(times.iter().sum());
        (calls, connections) = (c, n);
    }
    let warm_hwm = vm_hwm_kib(env.function.as_ref().unwrap().pid().unwrap());

    // The floor: one Secrets Manager call, one TLS + SCRAM login, from here.
    let sm = env.sm.clone();
    let sm_call = median_of(50, async || {
        sm.describe_secret().secret_id(&arn).send().await.unwrap();
    })
    .await;
    let current = env.value(&arn, "AWSCURRENT").await.unwrap()["password"].as_str().unwrap().to_owned();
    // Priced with the function's own connection policy: verify-full against the CA.
    let secret = db_secret::DbSecret::parse(&env.secret_json("app", &current).to_string()).unwrap();
    let ca = std::fs::read(env.pg.ca_bundle()).unwrap();
    let trust = db_secret::Trust::with_bundle("ca.crt", &ca).unwrap();
    let connector = db_secret::Connector::new(db_secret::TlsFloor::verify_full("DB_TLS"), trust, "bench");
    let login = median_of(30, async || {
        connector.connect(&secret, |o| o).await.unwrap().close().await.unwrap();
    })
    .await;
    let plain = env.pg.options("app", &current, "postgres").ssl_mode(PgSslMode::Disable);
    let plain_login =
        median_of(30, async || PgConnection::connect_with(&plain).await.unwrap().close().await.unwrap()).await;
    let floor = sm_call * calls as u32 + login * connections as u32;

    println!("| Measure (release build, {}) | median / p90 |", std::env::consts::ARCH);
    println!("|---|---|");
    println!("| Cold start, process start → ready ({COLD_STARTS} runs) | {} ms |", cold_start.cell());
    for (i, step) in STEPS.iter().enumerate() {
        println!("| {step}, warm ({WARM_ROTATIONS} rotations) | {} ms |", warm[i].cell());
    }
    println!("| **Rotation total, warm** | {} ms |", warm_total.cell());
    for (i, step) in STEPS.iter().enumerate() {
        println!("| {step}, cold (first rotation of a new process, {COLD_ROTATIONS} runs) | {} ms |", cold[i].cell());
    }
    println!("| **Rotation total, cold** | {} ms |", cold_total.cell());
    println!(
        "| I/O floor: {calls} Secrets Manager calls × {:.2} ms + {connections} logins × {:.2} ms | {:.2} ms |",
        ms(sm_call),
        ms(login),
        ms(floor)
    );
    println!("| One login, TLS verify-full, TCP_NODELAY (as the function does it) | {:.2} ms |", ms(login));
    println!("| One login, plain text (for comparison) | {:.2} ms |", ms(plain_login));
    println!("| Warm rotation above the I/O floor | {:.2} ms |", ms(warm_total.quantile(0.5).saturating_sub(floor)));
    println!(
        "| Peak RSS (VmHWM), warm process after {} rotations | {:.1} MiB |",
        WARM_ROTATIONS + 1,
        warm_hwm as f64 / 1024.0
    );
    println!("| Peak RSS (VmHWM), cold process after one rotation (max) | {:.1} MiB |", cold_hwm as f64 / 1024.0);
    println!("| Binary size (`bootstrap`, stripped) | {:.1} MiB |", binary_size as f64 / 1024.0 / 1024.0);
    env.assert_no_leaks().await;
}
