//! The real `web-app` binary as a process: its environment, spawning it until ready,
//! `web-app migrate`, start-up failures, what it prints, SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};

use super::{Answer, Http, Metrics, http_client, request};
use crate::TestEnv;
use crate::postgres::HOST;
use crate::process::{binary_path, spawn_captured};

/// Where `cargo build` put the web app; `WEB_APP_BIN` overrides (a relative path is
/// taken from the workspace root, where the documented commands run).
pub fn web_app_path() -> PathBuf {
    let path = binary_path("WEB_APP_BIN", "web-app");
    if path.is_relative() { PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path) } else { path }
}

/// A running `web-app` process.
#[derive(Debug)]
pub struct WebApp {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    output: Arc<Mutex<String>>,
    http: Http,
}

/// Settings for a test: connections live 2–4 s and the change check
/// runs every second, so a one-minute test sees many pool generations. Waiting for a
/// connection may use most of the request deadline: a debug build on two busy cores
/// opens a TLS + SCRAM connection in 0.2–2 s.
pub const FAST_CYCLING: &[(&str, &str)] = &[
    ("APP_POOL_MAX_CONNECTIONS", "8"),
    ("APP_POOL_MIN_CONNECTIONS", "2"),
    ("APP_POOL_ACQUIRE_TIMEOUT", "9s"),
    ("APP_CONN_MAX_LIFETIME", "4s"),
    ("APP_CONN_LIFETIME_JITTER_PERCENT", "50"),
    ("APP_SECRET_CHECK_INTERVAL", "1s"),
    ("APP_SECRET_BACKOFF_MAX", "4s"),
    ("APP_REQUEST_TIMEOUT", "10s"),
    ("APP_SHUTDOWN_GRACE", "5s"),
];

impl WebApp {
    /// The environment the app gets in a test: the secret id, moto at `sm_endpoint`, the
    /// test CA, a free port, the test's scratch directory as `TMPDIR` (the app's private
    /// socket directories go there and go with it), and `extra` (later entries win).
    pub fn env(env: &TestEnv, secret_id: &str, sm_endpoint: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = env.moto.sdk_env().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        for (k, v) in &mut vars {
            if k == "AWS_ENDPOINT_URL" {
                sm_endpoint.clone_into(v);
            }
        }
        vars.push(("APP_SECRET_ID".into(), secret_id.into()));
        vars.push(("APP_LISTEN_ADDR".into(), format!("{HOST}:{}", crate::postgres::free_port())));
        vars.push(("APP_ADMIN_LISTEN_ADDR".into(), format!("{HOST}:{}", crate::postgres::free_port())));
        if env.pg.ca_bundle().exists() {
            vars.push(("APP_DB_CA_BUNDLE".into(), env.pg.ca_bundle().display().to_string()));
        }
        vars.push(("RUST_LOG".into(), "info,web_app=debug".into()));
        vars.push(("TMPDIR".into(), env.scratch_dir().display().to_string()));
        for (k, v) in extra {
            vars.retain(|(name, _)| name != k);
            vars.push(((*k).to_owned(), (*v).to_owned()));
        }
        vars
    }

    /// Spawns the binary with exactly `vars` (plus PATH) and waits until `/ready` says yes.
    pub async fn spawn(vars: &[(String, String)]) -> WebApp {
        let addr = |name: &str| -> SocketAddr {
            vars.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.parse().ok()).expect(name)
        };
        let (addr, admin) = (addr("APP_LISTEN_ADDR"), addr("APP_ADMIN_LISTEN_ADDR"));
        let (child, output) = spawn_process(vars, &[]);
        let app = WebApp { child, addr, admin, output, http: http_client() };
        app.wait_ready().await;
        app
    }

    /// Runs `web-app migrate` with `vars` plus `APP_OWNER_SECRET_ID=owner_secret`, as a
    /// deploy does before starting the app; returns the exit code and what it printed.
    pub async fn migrate(vars: &[(String, String)], owner_secret: &str) -> (Option<i32>, String) {
        let mut vars = vars.to_vec();
        vars.push(("APP_OWNER_SECRET_ID".into(), owner_secret.into()));
        let (mut child, output) = spawn_process(&vars, &["migrate"]);
        let status = tokio::time::timeout(Duration::from_secs(40), child.wait()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let text = output.lock().expect("output").clone();
        (status.ok().and_then(Result::ok).and_then(|s| s.code()), text)
    }

    /// Spawns the binary with `vars` and waits for it to exit; returns the exit code and
    /// everything it printed. For startup failures.
    pub async fn run_to_exit(vars: &[(String, String)], within: Duration) -> (Option<i32>, String) {
        let (mut child, output) = spawn_process(vars, &[]);
        let status = tokio::time::timeout(within, child.wait()).await;
        let _ = child.kill().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let text = output.lock().expect("output").clone();
        match status {
            Ok(Ok(s)) => (s.code(), text),
            _ => (None, text),
        }
    }

    async fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            if let Ok(a) = self.get("/ready").await
                && a.status == 200
            {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "web-app not ready:\n{}", self.output());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener (`/metrics`, `/whoami`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    pub async fn get(&self, path: &str) -> Result<Answer, String> {
        request(&self.http, "GET", &self.url(path), None).await
    }

    /// A GET on the admin listener.
    pub async fn admin_get(&self, path: &str) -> Result<Answer, String> {
        request(&self.http, "GET", &format!("http://{}{path}", self.admin), None).await
    }

    /// `/whoami` (admin): (database user of the connection, secret version id new
    /// connections use).
    pub async fn whoami(&self) -> (String, String) {
        let a = self.admin_get("/whoami").await.expect("whoami");
        assert_eq!(a.status, 200, "{}", a.body);
        let v = a.json();
        (
            v["db_user"].as_str().expect("db_user").to_owned(),
            v["secret_version_id"].as_str().expect("version").to_owned(),
        )
    }

    /// `/whoami` (admin) as JSON.
    pub async fn whoami_json(&self) -> Value {
        let a = self.admin_get("/whoami").await.expect("whoami");
        assert_eq!(a.status, 200, "{}", a.body);
        a.json()
    }

    pub async fn metrics(&self) -> Metrics {
        let a = self.admin_get("/metrics").await.expect("metrics");
        assert_eq!(a.status, 200);
        Metrics::parse(&a.body)
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        self.output.lock().expect("output").clone()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGTERM, then waits for a clean exit; returns the exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        }
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await.ok()?.ok()?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        status.code()
    }
}

impl Drop for WebApp {
    /// A failing test leaves the app's whole log behind for the post-mortem.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let path = std::env::temp_dir().join(format!("web-app-{}.log", self.addr.port()));
            if std::fs::write(&path, self.output()).is_ok() {
                eprintln!("the app's log: {}", path.display());
            }
        }
    }
}

/// The binary with exactly `vars` (plus PATH) and `args`, output captured, in its own
/// process group, killed on drop.
fn spawn_process(vars: &[(String, String)], args: &[&str]) -> (Child, Arc<Mutex<String>>) {
    spawn_captured(&web_app_path(), args, vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}
