//! Rotation benchmark, through the real orchestration path: RotateSecret at
//! the local Secrets Manager endpoint, which invokes the release `bootstrap`
//! through the Lambda Runtime API, against the throwaway PostgreSQL 15 (TLS,
//! scram-sha-256) and moto. Times are what a user of `rotate-secret` sees:
//! from the RotateSecret call to the rotation's end, and per step as the
//! endpoint timed each invocation.
//!
//! ```sh
//! cargo build --release -p rotation-fn
//! BOOTSTRAP_BIN=$PWD/target/release/bootstrap cargo bench -p e2e --bench rotation
//! ```
//!
//! Prints a Markdown table; the README keeps the last one. The "I/O floor"
//! is what a rotation cannot avoid: the Secrets Manager calls the function
//! made, as long as the endpoint took to answer each (its call log), plus its
//! database logins and statements (the server's `connection authorized` and
//! statement lines), each priced at the median this process measures for one
//! against the same server. Above the floor is what the function itself
//! costs: its code, and Lambda's Runtime API round trip per step. The
//! CPU-quota rows confine the warm function process to Lambda's CPU share at
//! a memory size (a cgroup quota; 1,769 MB = one vCPU).
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::{ALTERNATING, SINGLE, STEPS, TestEnv};
use serde_json::json;

const WARM_ROTATIONS: usize = 40;
const COLD_ROTATIONS: usize = 10;
const QUOTA_ROTATIONS: usize = 10;
const MEMORY_SIZES_MB: [u32; 4] = [128, 256, 512, 1024];

#[derive(Default, Clone)]
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

/// One rotation as an operator starts it; its per-step times, its total, and
/// the Secrets Manager calls and logins the function made.
struct Rotation {
    steps: [Duration; 4],
    total: Duration,
    calls: usize,
    /// How long the endpoint took to answer the function's calls, summed.
    call_time: Duration,
    logins: usize,
    /// The server's side of the logins (accepted to authorized, TLS and SCRAM
    /// included) and of the statements (`log_duration`).
    login_time: Duration,
    statement_time: Duration,
    /// The four steps as the function itself timed them (its log's `duration_ms`).
    inside: Duration,
}

async fn rotate(env: &mut TestEnv, arn: &str, function: &str) -> Rotation {
    let calls_before = env.function_calls(function).len();
    let log_before = env.pg.server_log().len();
    let started = Instant::now();
    let token = env.rotate_secret(arn, function).await;
    let record = env.wait(&token).await;
    let total = started.elapsed();
    assert!(record.error.is_none(), "{:?}", record.error);
    let mut steps = [Duration::ZERO; 4];
    for s in &record.steps {
        let i = STEPS.iter().position(|n| *n == s.step).unwrap();
        steps[i] = Duration::from_secs_f64(s.duration_ms.unwrap_or_default() / 1000.0);
    }
    let calls = &env.function_calls(function)[calls_before..];
    let call_time = calls.iter().map(|c| Duration::from_secs_f64(c.duration_ms / 1000.0)).sum();
    let log = &env.pg.server_log()[log_before..];
    let logins = log.matches("connection authorized: user=").count();
    let (login_time, statement_time) = server_time(log);
    let output = env.endpoint.function_output(function).unwrap_or_default();
    let inside = output
        .lines()
        .filter(|l| l.contains(&token) && l.contains("\"step succeeded\""))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["fields"]["duration_ms"].as_f64())
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .sum();
    Rotation { steps, total, calls: calls.len(), call_time, logins, login_time, statement_time, inside }
}

/// From a PostgreSQL log (`log_line_prefix='%m [%p] …'`, `log_connections`,
/// `log_duration`): the time from each connection's arrival to its
/// authorization, and every statement's duration, summed.
fn server_time(log: &str) -> (Duration, Duration) {
    let mut received = std::collections::HashMap::new();
    let (mut logins, mut statements) = (Duration::ZERO, Duration::ZERO);
    for line in log.lines() {
        // `2026-12-02 04:15:55.123 UTC [4242] app@postgres LOG:  …`
        let mut parts = line.splitn(4, ' ');
        let (Some(_date), Some(time), Some(_zone), Some(rest)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Some(pid) = rest.strip_prefix('[').and_then(|r| r.split(']').next()) else { continue };
        let at = time.split(':').map(|p| p.parse::<f64>().unwrap_or(0.0)).fold(0.0, |acc, p| acc * 60.0 + p);
        if rest.contains("LOG:  connection received") {
            received.insert(pid.to_owned(), at);
        } else if rest.contains("LOG:  connection authorized")
            && let Some(start) = received.remove(pid)
        {
            logins += Duration::from_secs_f64((at - start).max(0.0));
        } else if let Some(d) = rest.split("LOG:  duration: ").nth(1).and_then(|d| d.split(" ms").next()) {
            statements += Duration::from_secs_f64(d.parse::<f64>().unwrap_or(0.0) / 1000.0);
        }
    }
    (logins, statements)
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

/// A CPU quota for one process, as Lambda gives a function of `memory_mb`
/// (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us`); removed on drop.
struct CpuQuota {
    dir: PathBuf,
}

impl CpuQuota {
    fn confine(pid: u32, memory_mb: u32) -> Option<CpuQuota> {
        let period = 100_000u64;
        let quota = (u64::from(memory_mb) * period / 1769).max(1000);
        let name = format!("rotation-bench-{}-{memory_mb}", std::process::id());
        if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            let dir = Path::new("/sys/fs/cgroup").join(name);
            std::fs::create_dir(&dir).ok()?;
            std::fs::write(dir.join("cpu.max"), format!("{quota} {period}")).ok()?;
            std::fs::write(dir.join("cgroup.procs"), pid.to_string()).ok()?;
            Some(CpuQuota { dir })
        } else {
            let dir = Path::new("/sys/fs/cgroup/cpu").join(name);
            std::fs::create_dir(&dir).ok()?;
            std::fs::write(dir.join("cpu.cfs_period_us"), period.to_string()).ok()?;
            std::fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string()).ok()?;
            std::fs::write(dir.join("cgroup.procs"), pid.to_string()).ok()?;
            Some(CpuQuota { dir })
        }
    }
}

impl Drop for CpuQuota {
    fn drop(&mut self) {
        // Hand the process back to the parent group, then remove ours.
        let parent = self.dir.parent().unwrap().join("cgroup.procs");
        if let Ok(pids) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in pids.lines() {
                let _ = std::fs::write(&parent, pid);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Some(bin) = std::env::var_os("BOOTSTRAP_BIN") else {
        eprintln!("set BOOTSTRAP_BIN to a release build: cargo build --release -p rotation-fn");
        std::process::exit(2);
    };
    let binary_size = std::fs::metadata(&bin).unwrap().len();
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("bench", "app", "Initial-Passw0rd-for-bench").await;

    // Cold: the first rotation of a fresh process, Init Duration included in
    // its createSecret (TLS roots, SDK client and first connections too).
    let (mut cold, mut cold_total, mut init) = (<[Samples; 4]>::default(), Samples::default(), Samples::default());
    let mut cold_hwm = 0;
    for _ in 0..COLD_ROTATIONS {
        env.restart_function(&[]).await;
        let r = rotate(&mut env, &arn, SINGLE).await;
        for (s, t) in cold.iter_mut().zip(r.steps) {
            s.push(t);
        }
        cold_total.push(r.total);
        let stats = env.endpoint.function_stats(SINGLE).unwrap();
        init.push(Duration::from_micros(stats.last_init_us.unwrap()));
        cold_hwm = cold_hwm.max(vm_hwm_kib(stats.pid.unwrap()));
    }

    // Warm: one process, many rotations.
    env.restart_function(&[]).await;
    rotate(&mut env, &arn, SINGLE).await; // warm-up
    let (mut warm, mut warm_total) = (<[Samples; 4]>::default(), Samples::default());
    let (mut calls, mut logins, mut warm_steps, mut warm_io) = (Vec::new(), Vec::new(), Samples::default(), Vec::new());
    for _ in 0..WARM_ROTATIONS {
        let r = rotate(&mut env, &arn, SINGLE).await;
        for (s, t) in warm.iter_mut().zip(r.steps) {
            s.push(t);
        }
        warm_total.push(r.total);
        warm_steps.push(r.steps.iter().sum());
        calls.push(r.calls);
        logins.push(r.logins);
        warm_io.push(r);
    }
    let warm_pid = env.pid(SINGLE).unwrap();
    let warm_hwm = vm_hwm_kib(warm_pid);

    // Alternating users, warm: the master logs in too.
    let superuser = env.pg.superuser_password().to_owned();
    let master = env.create_secret("bench-master", &env.secret_json("postgres", &superuser)).await;
    env.pg.set_password("reporting", "Initial-Passw0rd-for-bench").await;
    let mut value = env.secret_json("reporting", "Initial-Passw0rd-for-bench");
    value["masterarn"] = json!(master);
    let alt = env.create_secret("bench-alt", &value).await;
    rotate(&mut env, &alt, ALTERNATING).await; // creates the clone
    let (mut alt_total, mut alt_calls, mut alt_logins) = (Samples::default(), Vec::new(), Vec::new());
    for _ in 0..WARM_ROTATIONS / 2 {
        let r = rotate(&mut env, &alt, ALTERNATING).await;
        alt_total.push(r.total);
        alt_calls.push(r.calls);
        alt_logins.push(r.logins);
    }

    // The floor: one Secrets Manager call through the endpoint, one TLS login.
    let sm = env.sm.clone();
    let sm_call = median_of(50, async || {
        sm.describe_secret().secret_id(&arn).send().await.unwrap();
    })
    .await;
    let current = env.password(&arn, "AWSCURRENT").await;
    let secret = db_secret::DbSecret::parse(&env.secret_json("app", &current).to_string()).unwrap();
    let ca = std::fs::read(env.pg.ca_bundle()).unwrap();
    let trust = db_secret::Trust::with_bundle("ca.crt", &ca).unwrap();
    let connector = db_secret::Connector::new(db_secret::TlsFloor::verify_full("DB_TLS"), trust, "bench");
    let login = median_of(30, async || {
        use sqlx::Connection as _;
        connector.connect(&secret, |o| o).await.unwrap().close().await.unwrap();
    })
    .await;
    let mode = |v: &[usize]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v[v.len() / 2]
    };
    let (calls, logins) = (mode(&calls), mode(&logins));
    // Each warm rotation's own floor: its calls as answered, its logins and statements as priced.
    let floors: Vec<Duration> = warm_io.iter().map(|r| r.call_time + r.login_time + r.statement_time).collect();
    let (mut above, mut above_inside) = (Samples::default(), Samples::default());
    for (r, floor) in warm_io.iter().zip(&floors) {
        above.push(r.steps.iter().sum::<Duration>().saturating_sub(*floor));
        above_inside.push(r.inside.saturating_sub(*floor));
    }
    let mut floor_samples = Samples::default();
    floors.iter().for_each(|f| floor_samples.push(*f));
    let mean = |f: fn(&Rotation) -> Duration| warm_io.iter().map(f).sum::<Duration>() / warm_io.len() as u32;
    let (login_time, statement_time) = (mean(|r| r.login_time), mean(|r| r.statement_time));
    let mean_call =
        warm_io.iter().map(|r| r.call_time).sum::<Duration>() / warm_io.iter().map(|r| r.calls as u32).sum::<u32>();

    // CPU quotas like Lambda's, on the warm process.
    let mut quota_rows = Vec::new();
    for memory in MEMORY_SIZES_MB {
        let Some(quota) = CpuQuota::confine(warm_pid, memory) else {
            quota_rows.push(format!("| {memory} MB | not measured: no writable cgroup |"));
            continue;
        };
        rotate(&mut env, &arn, SINGLE).await;
        let mut total = Samples::default();
        let mut set = Samples::default();
        for _ in 0..QUOTA_ROTATIONS {
            let r = rotate(&mut env, &arn, SINGLE).await;
            total.push(r.total);
            set.push(r.steps[1]);
        }
        drop(quota);
        quota_rows.push(format!(
            "| {memory} MB ({:.1} % of a vCPU) | {} ms | {} ms |",
            f64::from(memory) / 17.69,
            total.cell(),
            set.cell()
        ));
    }

    println!("| Measure (release build, {}, through sm-local) | median / p90 |", std::env::consts::ARCH);
    println!("|---|---|");
    println!("| Init Duration (process start → first request for work, {COLD_ROTATIONS} runs) | {} ms |", init.cell());
    for (i, step) in STEPS.iter().enumerate() {
        println!("| {step}, warm ({WARM_ROTATIONS} rotations) | {} ms |", warm[i].cell());
    }
    println!("| **Rotation, warm, RotateSecret to done** | {} ms |", warm_total.cell());
    for (i, step) in STEPS.iter().enumerate() {
        println!("| {step}, cold (first rotation of a new process, {COLD_ROTATIONS} runs) | {} ms |", cold[i].cell());
    }
    println!("| **Rotation, cold, RotateSecret to done** | {} ms |", cold_total.cell());
    println!("| Rotation, alternating users, warm ({} rotations) | {} ms |", WARM_ROTATIONS / 2, alt_total.cell());
    println!(
        "| Per single-user rotation, warm: Secrets Manager calls / database logins | {calls} / {logins} (alternating: {} / {}) |",
        mode(&alt_calls),
        mode(&alt_logins)
    );
    println!(
        "| I/O floor of a warm rotation: {calls} calls as the endpoint answered them (mean {:.2} ms each) + {logins} logins as the server took them ({:.2} ms in all) + its statements ({:.2} ms in all) | {} ms |",
        ms(mean_call),
        ms(login_time),
        ms(statement_time),
        floor_samples.cell()
    );
    println!(
        "| For comparison, from this process: one DescribeSecret through the endpoint / one TLS login | {:.2} / {:.2} ms |",
        ms(sm_call),
        ms(login)
    );
    println!("| The four steps, warm, as the endpoint timed the invocations | {} ms |", warm_steps.cell());
    println!(
        "| **The four steps above their I/O floor** (the function's code and 4 Runtime API round trips) | {} ms |",
        above.cell()
    );
    println!(
        "| The four steps above their I/O floor, as the function timed itself (no Runtime API) | {} ms |",
        above_inside.cell()
    );
    println!(
        "| Peak RSS (VmHWM), warm process after {} rotations | {:.1} MiB |",
        WARM_ROTATIONS + 1,
        warm_hwm as f64 / 1024.0
    );
    println!("| Peak RSS (VmHWM), cold process after one rotation (max) | {:.1} MiB |", cold_hwm as f64 / 1024.0);
    println!("| Binary size (`bootstrap`, stripped) | {:.1} MiB |", binary_size as f64 / 1024.0 / 1024.0);
    println!();
    println!("| Lambda memory size (CPU share) | warm rotation, median / p90 | setSecret, median / p90 |");
    println!("|---|---|---|");
    for row in quota_rows {
        println!("{row}");
    }
    env.assert_no_leaks().await;
}
