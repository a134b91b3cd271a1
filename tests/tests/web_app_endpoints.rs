//! `APP_DB_ENDPOINTS`, the operator's pin on where the app may connect: a secret version
//! naming another server (another host, another port) is refused like a version that
//! does not log in, without a byte sent there, and the app keeps serving on the login
//! that works; at start-up, when no version names an allowed server, it refuses to start.
//!
//! Each foreign server is a real listener that counts the connections it accepts, so
//! "never dialled" is observed from the outside, not from the app's own account.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e::TestEnv;
use e2e::web_app::{FAST_CYCLING, Load, WebApp};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const OLD: &str = "Pinned-Passw0rd-for-web-app";
const NEW: &str = "Pinned-Passw0rd-rotated-next";
const OWNER: &str = "Owner-Passw0rd-for-pinned-app";

/// A server the operator did not allow: accepts connections and counts them.
struct Foreign {
    host: &'static str,
    port: u16,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Foreign {
    async fn listen(host: &'static str, port: u16) -> Foreign {
        let listener = TcpListener::bind((host, port)).await.unwrap_or_else(|e| panic!("bind {host}:{port}: {e}"));
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Foreign { host, port, accepted, task }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The app's secret value for `password`, naming `server` instead of the test's database.
fn naming(env: &TestEnv, server: &Foreign, password: &str) -> Value {
    let mut value = env.secret_json(e2e::web_app::APP_USER, password);
    value["dbname"] = e2e::web_app::DBNAME.into();
    value["host"] = server.host.into();
    value["port"] = server.port.into();
    value
}

/// Adds a version carrying `stage` (AWSCURRENT moves AWSPREVIOUS along, as AWS does).
async fn put(env: &mut TestEnv, arn: &str, value: &Value, stage: &str) -> String {
    env.put_value(arn, value, stage).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn versions_naming_another_server_are_refused_without_a_dial_and_requests_keep_succeeding() {
    let mut env = TestEnv::start().await;
    let deployment = env.first_deployment("web-pin", OLD, OWNER).await;
    env.migrate(&deployment).await;
    let arn = deployment.app_arn.clone();
    // Another host on the database's own port, and the database's host on another port.
    let other_host = Foreign::listen("127.0.0.2", env.pg.port()).await;
    let other_port = Foreign::listen("127.0.0.1", 0).await;
    let pin = format!("127.0.0.1:{}", env.pg.port());
    let mut settings = FAST_CYCLING.to_vec();
    settings.push(("APP_DB_ENDPOINTS", &pin));
    let app = WebApp::spawn(&WebApp::env(&env, &arn, &env.moto.endpoint(), &settings)).await;
    let first = app.whoami().await.1;
    let load = Load::start(&app, 8, Duration::from_millis(50));

    // Whoever can write the secret points AWSCURRENT at their own server, with a login
    // that would work there. The change check refuses it and keeps the working login.
    let value = naming(&env, &other_host, OLD);
    let hijack = put(&mut env, &arn, &value, "AWSCURRENT").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(app.whoami().await.1, first, "kept the login on the allowed server");
    let refused = |m: &e2e::web_app::Metrics| {
        m.sum("web_app_secret_versions_refused_total", &["reason=\"endpoint_not_allowed\""])
    };
    let metrics = app.metrics().await;
    assert_eq!(refused(&metrics), 1.0, "refused once, not at every check\n{}", metrics.text);
    let line = app
        .output()
        .lines()
        .find(|l| l.contains("refused without connecting") && l.contains(&hijack))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no log line names the refusal:\n{}", app.output()));
    assert!(line.contains("127.0.0.2") && line.contains("APP_DB_ENDPOINTS"), "{line}");

    // The password moves on, AWSCURRENT names the database's host on another port, the
    // new login on the allowed server is only AWSPENDING, and every session of the app
    // ends: the refresh after the refused login skips AWSCURRENT and takes AWSPENDING.
    let value = naming(&env, &other_port, NEW);
    put(&mut env, &arn, &value, "AWSCURRENT").await;
    let mut good = env.secret_json(e2e::web_app::APP_USER, NEW);
    good["dbname"] = e2e::web_app::DBNAME.into();
    let pending = put(&mut env, &arn, &good, "AWSPENDING").await;
    env.pg.set_password(e2e::web_app::APP_USER, NEW).await;
    env.terminate_app_sessions().await;
    let started = Instant::now();
    while app.whoami().await.1 != pending {
        assert!(started.elapsed() < Duration::from_secs(15), "still on {}\n{}", app.whoami().await.1, app.output());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.stop().await;
    assert!(report.ok > 300, "the load ran: {} requests", report.ok);
    assert!(report.failures.is_empty(), "{} failed, first: {:?}", report.failures.len(), report.failures.first());
    assert!(report.ready_failures.is_empty(), "{:?}", report.ready_failures.first());
    assert!(refused(&app.metrics().await) >= 2.0, "the other port was refused too");
    assert_eq!(other_host.accepted(), 0, "nothing ever connected to the other host");
    assert_eq!(other_port.accepted(), 0, "nothing ever connected to the other port");

    // Start-up with only versions naming other servers: a clear error, nothing dialled.
    let mut only_foreign = naming(&env, &other_host, NEW);
    only_foreign["port"] = other_host.port.into();
    let lone = env.create_secret("web-pin/foreign", &only_foreign).await;
    let vars = WebApp::env(&env, &lone, &env.moto.endpoint(), &[("APP_DB_ENDPOINTS", &pin)]);
    let (code, output) = WebApp::run_to_exit(&vars, Duration::from_secs(40)).await;
    assert!(matches!(code, Some(c) if c != 0), "exit code {code:?}\n{output}");
    assert!(
        output.contains("startup failed")
            && output.contains(&format!(
                "127.0.0.2:{} is not among the database endpoints APP_DB_ENDPOINTS allows",
                other_host.port
            )),
        "{output}"
    );
    assert_eq!(other_host.accepted(), 0, "start-up did not dial it either");
    env.assert_no_leaks().await;
}
