//! Load: concurrent clients hammering the app, and what they saw.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::{WebApp, http_client, request};

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
        Self::start_with(app.addr(), app.admin_addr(), clients, true, pace)
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
