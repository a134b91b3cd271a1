//! The real `web-app` binary for end-to-end tests and the benchmark: set the database up
//! the way the README tells a DBA to (an owner role, a DML-only app login), run
//! `web-app migrate`, spawn the app against this test's PostgreSQL and moto, drive it with
//! concurrent HTTP clients, read its metrics and logs, terminate its database sessions
//! as an administrator or a failover would, and cut it off from Secrets Manager (an
//! outage) without touching moto's state.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::TestEnv;
use crate::postgres::HOST;
use crate::process::{binary_path, capture_output};

/// Where `cargo build` put the web app; `WEB_APP_BIN` overrides (a relative path is
/// taken from the workspace root, where the documented commands run).
pub fn web_app_path() -> PathBuf {
    let path = binary_path("WEB_APP_BIN", "web-app");
    if path.is_relative() { PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path) } else { path }
}

/// A keep-alive HTTP/1.1 client, as a load balancer or a browser would hold.
pub type Http = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> Http {
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build_http()
}

/// One HTTP answer: status and body text.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// `GET` or `POST` (with a JSON body) to `url`; `Err` is a transport failure.
pub async fn request(http: &Http, method: &str, url: &str, body: Option<&Value>) -> Result<Answer, String> {
    let mut req = hyper::Request::builder().method(method).uri(url);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let payload = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let req = req.body(Full::new(payload)).map_err(|e| e.to_string())?;
    let resp = http.request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Answer { status, body: String::from_utf8_lossy(&bytes).into_owned() })
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
    let path = web_app_path();
    let mut child = Command::new(&path)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", path.display()));
    let output = capture_output(&mut child);
    (child, output)
}

/// The app's `/metrics`, parsed: `name{labels}` → value.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub samples: BTreeMap<String, f64>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (key, value) = l.rsplit_once(' ')?;
                Some((key.to_owned(), value.parse().ok()?))
            })
            .collect();
        Metrics { samples, text: text.to_owned() }
    }

    /// Sum of every sample of `name` whose labels contain all of `labels` (`k="v"`).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
            .filter(|(k, _)| labels.iter().all(|l| k.contains(l)))
            .map(|(_, v)| v)
            .sum()
    }

    pub fn secretsmanager_calls(&self) -> u64 {
        self.sum("web_app_secretsmanager_calls_total", &[]) as u64
    }

    pub fn secretsmanager(&self, operation: &str) -> u64 {
        self.sum("web_app_secretsmanager_calls_total", &[&format!("operation=\"{operation}\"")]) as u64
    }
}

/// What clients saw during a load run.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub ok: u64,
    /// (what was asked, what came back) for every non-2xx answer or transport failure.
    pub failures: Vec<String>,
    pub ready_ok: u64,
    pub ready_failures: Vec<String>,
    /// Latencies of successful requests to the database-backed endpoints, in µs.
    pub latencies_us: Vec<u64>,
    /// Every distinct database user `/whoami` reported.
    pub users_seen: Vec<String>,
    /// Every response body, for the leak check.
    pub bodies: String,
}

impl LoadReport {
    pub fn percentile_us(&self, p: f64) -> u64 {
        percentile(&self.latencies_us, p)
    }
}

pub fn percentile(values: &[u64], p: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

/// `clients` tasks hammering the app until [`Load::stop`]: each request touches the
/// database (create a note, list notes, fetch one, whoami), and one more task polls
/// `/ready` every 100 ms, as a load balancer would.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<LoadReport>>,
    pub requests: Arc<AtomicU64>,
}

impl Load {
    /// `clients` clients, each sending its next request `pace` after the last answer.
    pub fn start(app: &WebApp, clients: usize, pace: Duration) -> Load {
        Self::start_with(app.addr, app.admin, clients, true, pace)
    }

    /// `mixed`: create, list, fetch one, and `/whoami` on the admin listener in turn; else
    /// `GET /notes/{id}` only (the benchmark).
    pub fn start_with(addr: SocketAddr, admin: SocketAddr, clients: usize, mixed: bool, pace: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for client in 0..clients {
            let (stop, requests) = (stop.clone(), requests.clone());
            tasks.push(tokio::spawn(async move {
                let http = http_client();
                let base = format!("http://{addr}");
                let admin_base = format!("http://{admin}");
                let mut report = LoadReport::default();
                let mut own_note: Option<i64> = None;
                let mut i = client;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let (method, path, body) = match (mixed, own_note, i % 4) {
                        (false, Some(id), _) | (true, Some(id), 2) => ("GET", format!("/notes/{id}"), None),
                        (_, None, _) | (true, _, 0) => (
                            "POST",
                            "/notes".to_owned(),
                            Some(serde_json::json!({"body": format!("client {client} note {i}")})),
                        ),
                        (true, _, 1) => ("GET", "/notes?limit=5".to_owned(), None),
                        (true, _, _) => ("GET", "/whoami".to_owned(), None),
                    };
                    let started = Instant::now();
                    let host = if path == "/whoami" { &admin_base } else { &base };
                    let result = request(&http, method, &format!("{host}{path}"), body.as_ref()).await;
                    let elapsed = started.elapsed().as_micros() as u64;
                    requests.fetch_add(1, Ordering::Relaxed);
                    match result {
                        Ok(a) if (200..300).contains(&a.status) => {
                            report.ok += 1;
                            report.latencies_us.push(elapsed);
                            if method == "POST" {
                                own_note = a.json()["id"].as_i64();
                            }
                            if path == "/whoami" {
                                let user = a.json()["db_user"].as_str().unwrap_or_default().to_owned();
                                if !report.users_seen.contains(&user) {
                                    report.users_seen.push(user);
                                }
                            }
                            if mixed {
                                report.bodies.push_str(&a.body);
                            }
                        }
                        Ok(a) => report.failures.push(format!("{method} {path} -> {} {}", a.status, a.body)),
                        Err(e) => report.failures.push(format!("{method} {path} -> {e}")),
                    }
                    if !pace.is_zero() {
                        tokio::time::sleep(pace).await;
                    }
                }
                report
            }));
        }
        let stop2 = stop.clone();
        tasks.push(tokio::spawn(async move {
            let http = http_client();
            let url = format!("http://{addr}/ready");
            let mut report = LoadReport::default();
            while !stop2.load(Ordering::Relaxed) {
                match request(&http, "GET", &url, None).await {
                    Ok(a) if a.status == 200 => report.ready_ok += 1,
                    Ok(a) => report.ready_failures.push(format!("/ready -> {} {}", a.status, a.body)),
                    Err(e) => report.ready_failures.push(format!("/ready -> {e}")),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            report
        }));
        Load { stop, tasks, requests }
    }

    /// Stops every client and merges what they saw.
    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = LoadReport::default();
        for t in self.tasks {
            let r = t.await.expect("load task");
            all.ok += r.ok;
            all.failures.extend(r.failures);
            all.ready_ok += r.ready_ok;
            all.ready_failures.extend(r.ready_failures);
            all.latencies_us.extend(r.latencies_us);
            for u in r.users_seen {
                if !all.users_seen.contains(&u) {
                    all.users_seen.push(u);
                }
            }
            all.bodies.push_str(&r.bodies);
        }
        all
    }
}

/// A TCP proxy in front of moto: the app talks to Secrets Manager through it, and
/// [`SmProxy::outage`] cuts every connection and refuses new ones, while moto (and the
/// rotation function, which talks to moto directly) keeps its state.
#[derive(Debug)]
pub struct SmProxy {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl SmProxy {
    pub async fn start(upstream: &str) -> SmProxy {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind((HOST, 0)).await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let down = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let (down, connections) = (down.clone(), connections.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if down.load(Ordering::SeqCst) {
                        drop(inbound); // connection reset: Secrets Manager unreachable
                        continue;
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    let mut c = connections.lock().expect("connections");
                    c.retain(|t| !t.is_finished());
                    c.push(task);
                }
            }
        });
        SmProxy { addr, down, connections, accept }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `true`: drop every open connection and refuse new ones. `false`: forward again.
    pub fn outage(&self, on: bool) {
        self.down.store(on, Ordering::SeqCst);
        if on {
            for t in self.connections.lock().expect("connections").drain(..) {
                t.abort();
            }
        }
    }
}

impl Drop for SmProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A line of the app's JSON log that says it switched logins, read as the
/// CDK's metric filter and dashboard read it: `$.message = "switched*"`, the
/// version in `$.to`.
pub fn switch_line(line: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    (v["message"].as_str()?.starts_with("switched") && v["to"].is_string()).then_some(v)
}

/// Every password in `text` that the test knows of (for leak assertions on app output).
pub fn leaked<'a>(text: &str, passwords: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    passwords.into_iter().filter(|p| text.contains(p.as_str())).map(|p| format!("{}…", &p[..4.min(p.len())])).collect()
}

/// The database the README's first-deployment SQL sets up.
pub const DBNAME: &str = "notes";
pub const OWNER_USER: &str = "app_owner";
pub const APP_USER: &str = "app";

/// The SQL block of web-app/README.md's "First deployment" section (the one after the
/// `<!-- first-deployment-sql -->` marker): tests run exactly what the README tells a DBA.
pub fn first_deployment_sql() -> String {
    let readme = include_str!("../../web-app/README.md");
    let after_marker = &readme[readme.find("<!-- first-deployment-sql -->").expect("marker in the README")..];
    let start = after_marker.find("```sql\n").expect("sql block after the marker") + "```sql\n".len();
    let len = after_marker[start..].find("```").expect("end of the sql block");
    after_marker[start..start + len].to_owned()
}

/// What [`TestEnv::first_deployment`] created.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The app's secret (`app`, DML only).
    pub app_arn: String,
    /// The schema owner's secret (`app_owner`), for `web-app migrate`.
    pub owner_arn: String,
}

impl TestEnv {
    /// A superuser session on the app's database.
    pub async fn superuser_on_app_db(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        let options = self.pg.options("postgres", self.pg.superuser_password(), DBNAME);
        sqlx::PgConnection::connect_with(&options).await.expect("superuser login to the app database")
    }

    /// The README's first deployment, on PostgreSQL 15's default privileges: database
    /// `notes`, the SQL block run as the master user, both passwords set (as SCRAM
    /// verifiers, like psql's `\password`), a secret for each login (the app's with
    /// `masterarn` for alternating users), nothing migrated yet.
    pub async fn first_deployment(&mut self, name: &str, app_password: &str, owner_password: &str) -> Deployment {
        self.pg.exec(&format!("CREATE DATABASE {DBNAME}")).await;
        let mut conn = self.superuser_on_app_db().await;
        let sql = first_deployment_sql();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{sql}"));
        let _ = sqlx::Connection::close(conn).await;
        self.pg.set_password(OWNER_USER, owner_password).await;
        self.pg.set_password(APP_USER, app_password).await;
        let mut owner = self.secret_json(OWNER_USER, owner_password);
        owner["dbname"] = DBNAME.into();
        let owner_arn = self.create_secret(&format!("{name}/owner"), &owner).await;
        let mut app = self.secret_json(APP_USER, app_password);
        app["dbname"] = DBNAME.into();
        if self.strategy() == crate::ALTERNATING_USERS {
            let mut master = self.secret_json("postgres", self.pg.superuser_password());
            master["dbname"] = DBNAME.into();
            let master_arn = self.create_secret(&format!("{name}/master"), &master).await;
            app["masterarn"] = master_arn.into();
        }
        let app_arn = self.create_secret(name, &app).await;
        Deployment { app_arn, owner_arn }
    }

    /// `web-app migrate` as the owner; panics unless it succeeds.
    pub async fn migrate(&self, deployment: &Deployment) {
        let vars = WebApp::env(self, &deployment.app_arn, &self.moto.endpoint(), &[]);
        let (code, output) = WebApp::migrate(&vars, &deployment.owner_arn).await;
        assert_eq!(code, Some(0), "web-app migrate failed:\n{output}");
    }

    /// `pg_terminate_backend` on every session the web app holds (verification logins
    /// included), as an administrator, a restart or a failover would end them. Returns
    /// how many there were.
    pub async fn terminate_app_sessions(&self) -> i64 {
        let mut conn = self.pg.superuser().await;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'web-app'",
        )
        .fetch_one(&mut conn)
        .await
        .expect("terminate the app's sessions");
        let _ = sqlx::Connection::close(conn).await;
        n
    }
}
