//! A fleet, simulated: N instances (default 200) of the web app's credential logic in one
//! process — each with its own Secrets Manager client view, `Credentials` state machine,
//! change checks and acquire path (`web_app::Acquirer`), and a model pool of two
//! connections whose logins are real TLS + SCRAM logins to PostgreSQL (opened, counted,
//! closed: 400 held sessions would not fit the test server's 100) — against moto, through
//! single-user and alternating-users rotations run by the real rotation function.
//!
//! Reports per rotation: Secrets Manager calls per instance (beyond the periodic change
//! checks, measured in a steady window first), database logins (the pools' and the
//! verification logins), refused logins (the fleet's, and the most one instance caused), the most logins in any one second against the fleet's total pool
//! size, failed acquires, and the time until every instance's new connections use the new
//! version. Results go to web-app/BENCHMARKS.md by hand.
//!
//!   cargo build --release --bins
//!   BOOTSTRAP_BIN=target/release/bootstrap cargo bench -p e2e --bench web_app_fleet
//!
//! FLEET_INSTANCES (200), FLEET_ROTATIONS (3 per strategy), FLEET_CHECK_SECONDS (10) and
//! FLEET_LIFETIME_SECONDS (10) change the run.

// A benchmark's report is its standard output.
#![allow(clippy::print_stdout)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use db_secret::{Connector, DbSecret, TlsFloor, Trust};
use e2e::TestEnv;
use e2e::web_app::Deployment;
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use web_app::AwsSecretSource;
use web_app::Metrics;
use web_app::{Acquirer, Connections, PoolSignals};
use web_app::{CredentialTarget, Credentials, RefreshPolicy, Verify, VerifyError, initial_login};

const POOL_SIZE: usize = 2;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Every login attempt of the whole fleet: when, and whether it was a verification.
#[derive(Debug, Default)]
struct Logins {
    at: Mutex<Vec<Instant>>,
    pool: AtomicU64,
    verify: AtomicU64,
    refused: AtomicU64,
}

impl Logins {
    fn record(&self, verify: bool) {
        self.at.lock().expect("logins").push(Instant::now());
        if verify { &self.verify } else { &self.pool }.fetch_add(1, Ordering::Relaxed);
    }

    fn total(&self) -> u64 {
        self.pool.load(Ordering::Relaxed) + self.verify.load(Ordering::Relaxed)
    }

    /// The most logins that started within any one second of `[from, to]`.
    fn peak_per_second(&self, from: Instant, to: Instant) -> usize {
        let mut at: Vec<Instant> =
            self.at.lock().expect("logins").iter().copied().filter(|t| *t >= from && *t <= to).collect();
        at.sort_unstable();
        let mut best = 0;
        let mut start = 0;
        for end in 0..at.len() {
            while at[end].duration_since(at[start]) > Duration::from_secs(1) {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }
}

/// One real login with `secret` through the connector, closed at once.
async fn login(connector: &Connector, secret: &DbSecret) -> Result<(), sqlx::Error> {
    let options = connector.pool_options(secret).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let conn = PgConnection::connect_with(&options).await?;
    conn.close().await
}

/// Verifies a candidate login the way the app does: one real login.
#[derive(Debug, Clone)]
struct Verifier {
    connector: Connector,
    logins: Arc<Logins>,
    /// The instance's refused logins (its pool's and its verifications').
    refused: Arc<AtomicU64>,
}

impl Verify for Verifier {
    async fn verify(&self, secret: &DbSecret) -> Result<(), VerifyError> {
        self.logins.record(true);
        match login(&self.connector, secret).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let failure = db_secret::DbFailure::classify(&e);
                if failure.is_auth() {
                    self.logins.refused.fetch_add(1, Ordering::Relaxed);
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    Err(VerifyError::Rejected { sqlstate: failure.label().to_owned() })
                } else {
                    Err(VerifyError::Unreachable(failure.to_string()))
                }
            }
        }
    }
}

/// Where an instance's login lives (what the real app's pool options hold). Clones share it.
#[derive(Debug, Clone)]
struct Target {
    verifier: Verifier,
    login: Arc<Mutex<Arc<DbSecret>>>,
}

impl Verify for Target {
    async fn verify(&self, secret: &DbSecret) -> Result<(), VerifyError> {
        self.verifier.verify(secret).await
    }
}

impl CredentialTarget for Target {
    fn switch_to(&self, secret: &DbSecret) {
        *self.login.lock().expect("login") = Arc::new(secret.clone());
    }
}

/// A pool of `POOL_SIZE` connections that each live a jittered lifetime; an expired one
/// is replaced by a real login with the instance's current login when a request needs it.
#[derive(Debug)]
struct ModelPool {
    target: Target,
    expires: Mutex<Vec<Instant>>,
    lifetime: Duration,
    /// Logins of this instance's pool the database refused.
    refused: Arc<AtomicU64>,
}

impl Connections for ModelPool {
    type Conn = ();

    async fn acquire(&self) -> Result<(), sqlx::Error> {
        if self.try_idle().is_some() {
            return Ok(());
        }
        let secret = self.target.login.lock().expect("login").clone();
        let verifier = &self.target.verifier;
        verifier.logins.record(false);
        match login(&verifier.connector, &secret).await {
            Ok(()) => {
                let life = self.lifetime.mul_f64(0.8 + 0.2 * rand::random::<f64>());
                let mut expires = self.expires.lock().expect("slots");
                expires.retain(|t| *t > Instant::now());
                if expires.len() < POOL_SIZE {
                    expires.push(Instant::now() + life);
                }
                Ok(())
            }
            Err(e) => {
                if db_secret::DbFailure::classify(&e).is_auth() {
                    verifier.logins.refused.fetch_add(1, Ordering::Relaxed);
                    self.refused.fetch_add(1, Ordering::Relaxed);
                }
                Err(e)
            }
        }
    }

    fn try_idle(&self) -> Option<()> {
        let mut expires = self.expires.lock().expect("slots");
        expires.retain(|t| *t > Instant::now());
        (expires.len() == POOL_SIZE).then_some(())
    }

    fn size(&self) -> u32 {
        let mut expires = self.expires.lock().expect("slots");
        expires.retain(|t| *t > Instant::now());
        expires.len() as u32
    }
}

type Creds = Arc<Credentials<AwsSecretSource, Target>>;

struct Instance {
    creds: Creds,
    metrics: Arc<Metrics>,
    failures: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Fleet {
    instances: Vec<Instance>,
    logins: Arc<Logins>,
}

impl Fleet {
    async fn start(env: &TestEnv, arn: &str, n: usize, check: Duration, lifetime: Duration) -> Fleet {
        let pem = std::fs::read(env.pg.ca_bundle()).expect("CA");
        let trust = Trust::with_bundle("test CA", &pem).expect("trust");
        let connector = Connector::new(TlsFloor::verify_full("APP_DB_TLS"), trust, "web-app");
        let client = env.sm.clone();
        let logins = Arc::new(Logins::default());
        let mut instances = Vec::with_capacity(n);
        for _ in 0..n {
            let metrics = Arc::new(Metrics::new());
            let source = AwsSecretSource::new(client.clone(), arn.to_owned(), metrics.clone());
            let refused = Arc::new(AtomicU64::new(0));
            let verifier = Verifier { connector: connector.clone(), logins: logins.clone(), refused: refused.clone() };
            let (initial, seen) = initial_login(&source, &verifier).await.expect("initial login");
            let target = Target { verifier, login: Arc::new(Mutex::new(initial.secret.clone())) };
            let creds: Creds = Arc::new(Credentials::new(
                source,
                target.clone(),
                metrics.clone(),
                initial,
                seen,
                RefreshPolicy::new(Duration::from_secs(300)),
            ));
            let pool = ModelPool { target, expires: Mutex::new(Vec::new()), lifetime, refused: refused.clone() };
            let acquirer = Arc::new(Acquirer::new(
                pool,
                Arc::new(creds.clone()),
                metrics.clone(),
                Arc::new(PoolSignals::default()),
                Duration::from_secs(5),
            ));
            let failures = Arc::new(AtomicU64::new(0));
            let checks = tokio::spawn(creds.clone().run_change_checks(check, Duration::from_secs(300)));
            // Requests: one every ~250 ms per instance, each needing a connection.
            let requests = tokio::spawn({
                let failures = failures.clone();
                async move {
                    loop {
                        if acquirer.acquire().await.is_err() {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(Duration::from_millis(200 + rand::random::<u64>() % 100)).await;
                    }
                }
            });
            instances.push(Instance { creds, metrics, failures, refused, tasks: vec![checks, requests] });
            // Instances start over a few seconds, as a real fleet's do.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Fleet { instances, logins }
    }

    fn sm_calls(&self) -> u64 {
        self.instances.iter().map(|i| i.metrics.secretsmanager_calls_total()).sum()
    }

    fn failures(&self) -> u64 {
        self.instances.iter().map(|i| i.failures.load(Ordering::Relaxed)).sum()
    }

    /// Refused pool logins per instance so far.
    fn refused_per_instance(&self) -> Vec<u64> {
        self.instances.iter().map(|i| i.refused.load(Ordering::Relaxed)).collect()
    }

    fn on_version(&self, version: &str) -> usize {
        self.instances.iter().filter(|i| i.creds.active().version_id == version).count()
    }
}

struct Row {
    strategy: &'static str,
    calls_per_instance: f64,
    logins: f64,
    peak_per_second: usize,
    refused: f64,
    /// The most refused logins one instance caused in one rotation.
    refused_max_instance: u64,
    failed: u64,
    all_switched_s: f64,
    after_finish_s: f64,
}

async fn run(strategy: &'static str, n: usize, rotations: u64, check: Duration, lifetime: Duration) -> Row {
    let mut env =
        if strategy == e2e::SINGLE_USER { TestEnv::start().await } else { TestEnv::start_alternating().await };
    let deployment: Deployment =
        env.first_deployment("fleet/db", "Fleet-Passw0rd-initial", "Fleet-Passw0rd-owner").await;
    let arn = deployment.app_arn;
    let fleet = Fleet::start(&env, &arn, n, check, lifetime).await;
    // Let the fleet settle (every pool full, change checks spread), then measure the
    // periodic cost: DescribeSecret per check interval per instance.
    tokio::time::sleep(check + lifetime).await;
    let (calls0, logins0, t0) = (fleet.sm_calls(), fleet.logins.total(), Instant::now());
    tokio::time::sleep(check * 2).await;
    let periodic_per_second = (fleet.sm_calls() - calls0) as f64 / t0.elapsed().as_secs_f64();
    let steady_logins_per_second = (fleet.logins.total() - logins0) as f64 / t0.elapsed().as_secs_f64();
    let steady_peak = fleet.logins.peak_per_second(t0, Instant::now());

    let (calls_start, logins_start, refused_start, failed_start) =
        (fleet.sm_calls(), fleet.logins.total(), fleet.logins.refused.load(Ordering::Relaxed), fleet.failures());
    let started = Instant::now();
    let (mut switched_total, mut after_finish_total, mut peak, mut refused_max) = (0.0, 0.0, 0, 0);
    for _ in 0..rotations {
        let refused_before = fleet.refused_per_instance();
        let rotation_started = Instant::now();
        let token = env.rotate(&arn).await.expect("rotation");
        let finished = Instant::now();
        loop {
            if fleet.on_version(&token) == n {
                break;
            }
            assert!(rotation_started.elapsed() < check * 3 + lifetime * 2, "the fleet did not follow");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let done = Instant::now();
        switched_total += done.duration_since(rotation_started).as_secs_f64();
        after_finish_total += done.saturating_duration_since(finished).as_secs_f64();
        peak = peak.max(fleet.logins.peak_per_second(rotation_started, done));
        // Quiet time before the next rotation: a full pool generation.
        tokio::time::sleep(lifetime).await;
        let refused_after = fleet.refused_per_instance();
        let most = refused_after.iter().zip(&refused_before).map(|(a, b)| a - b).max().unwrap_or(0);
        refused_max = refused_max.max(most);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let calls = (fleet.sm_calls() - calls_start) as f64 - periodic_per_second * elapsed;
    let per_rotation = |x: f64| x / rotations as f64;
    let row = Row {
        strategy,
        calls_per_instance: per_rotation(calls.max(0.0)) / n as f64,
        logins: per_rotation((fleet.logins.total() - logins_start) as f64 - steady_logins_per_second * elapsed),
        peak_per_second: peak,
        refused: per_rotation((fleet.logins.refused.load(Ordering::Relaxed) - refused_start) as f64),
        refused_max_instance: refused_max,
        failed: fleet.failures() - failed_start,
        all_switched_s: per_rotation(switched_total),
        after_finish_s: per_rotation(after_finish_total),
    };
    println!(
        "{strategy}: steady state {periodic_per_second:.1} Secrets Manager calls/s for {n} instances ({:.2} per instance \
         per check interval), {steady_logins_per_second:.1} logins/s (pool cycling), at most {steady_peak} in one second",
        periodic_per_second * check.as_secs_f64() / n as f64
    );
    drop(fleet);
    env.assert_no_leaks().await;
    row
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n = env_number("FLEET_INSTANCES", 200) as usize;
    let rotations = env_number("FLEET_ROTATIONS", 3);
    let check = Duration::from_secs(env_number("FLEET_CHECK_SECONDS", 10));
    let lifetime = Duration::from_secs(env_number("FLEET_LIFETIME_SECONDS", 10));
    let mut rows = Vec::new();
    for strategy in [e2e::SINGLE_USER, e2e::ALTERNATING_USERS] {
        rows.push(run(strategy, n, rotations, check, lifetime).await);
    }
    println!(
        "\n{n} instances, pool {POOL_SIZE} each ({} connections), change check every {} s, connection lifetime {} s (−20 % jitter), {rotations} rotations per strategy; figures per rotation\n",
        n * POOL_SIZE,
        check.as_secs(),
        lifetime.as_secs()
    );
    println!(
        "| strategy | SM calls / instance | DB logins beyond pool cycling | refused logins | most refused by one instance | peak logins in 1 s | failed acquires | all on new version after | after finishSecret |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.2} | {:.0} | {:.0} | {} | {} | {} | {:.1} s | {:.1} s |",
            r.strategy,
            r.calls_per_instance,
            r.logins,
            r.refused,
            r.refused_max_instance,
            r.peak_per_second,
            r.failed,
            r.all_switched_s,
            r.after_finish_s
        );
    }
}
