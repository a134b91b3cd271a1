//! The demo's clients: each creates a note, lists the newest, reads its own
//! note and asks the admin listener's `/whoami`, in turn, without end.
//!
//! Unlike the test harness's `Load`, nothing here grows with the number of
//! requests (a `--keep-running` demo may run for hours): requests are
//! counted into 50 ms buckets, each with a latency histogram, and every
//! response body is checked at once against the passwords known so far.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use e2e::web_app::{http_client, request};
use serde_json::json;
use tokio::task::JoinHandle;

use crate::timeline::Clock;

/// The timeline's resolution.
pub const BUCKET_SECONDS: f64 = 0.05;
/// Latency bins: a quarter octave each from 100 µs; the last one takes
/// everything above ≈ 26 s.
const BINS: usize = 73;
/// A request unanswered this long counts as failed (the app's own deadline is 10 s).
const REQUEST_DEADLINE: Duration = Duration::from_secs(15);
/// How many failures are kept word for word for the summary.
const FAILURES_KEPT: usize = 5;

fn bin(latency: Duration) -> usize {
    let us = latency.as_secs_f64() * 1e6;
    if us <= 100.0 { 0 } else { (((us / 100.0).log2() * 4.0).ceil() as usize).min(BINS - 1) }
}

/// The geometric middle of bin `i`, in milliseconds.
fn bin_ms(i: usize) -> f64 {
    if i == 0 { 0.1 } else { 0.1 * 2f64.powf((i as f64 - 0.5) / 4.0) }
}

/// Requests that ended within one bucket of time.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub ok: u32,
    pub failed: u32,
    latencies: [u32; BINS],
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket { ok: 0, failed: 0, latencies: [0; BINS] }
    }
}

/// Latencies of successful requests, to within a quarter octave.
#[derive(Debug, Clone)]
pub struct Histogram([u64; BINS]);

impl Default for Histogram {
    fn default() -> Self {
        Histogram([0; BINS])
    }
}

impl Histogram {
    pub fn add(&mut self, bucket: &Bucket) {
        for (total, n) in self.0.iter_mut().zip(bucket.latencies) {
            *total += u64::from(n);
        }
    }

    pub fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The `q` quantile (0–1) in milliseconds, `None` without samples.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (i, n) in self.0.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bin_ms(i));
            }
        }
        Some(bin_ms(BINS - 1))
    }
}

/// What the clients saw, shared with the demo while they run.
#[derive(Debug)]
pub struct Stats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    /// Response bodies that contained a known password (the demo says so; it never should).
    pub leaks: AtomicU64,
    clock: Clock,
    buckets: Mutex<Vec<Bucket>>,
    failures: Mutex<Vec<String>>,
    users: Mutex<Vec<String>>,
    passwords: RwLock<Vec<String>>,
}

impl Stats {
    fn record(&self, ended: f64, latency: Duration, ok: bool) {
        let index = (ended / BUCKET_SECONDS).max(0.0) as usize;
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() <= index {
            buckets.resize(index + 1, Bucket::default());
        }
        let bucket = &mut buckets[index];
        if ok {
            bucket.ok += 1;
            bucket.latencies[bin(latency)] += 1;
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            bucket.failed += 1;
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn failure(&self, what: String) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() < FAILURES_KEPT {
            failures.push(what);
        }
    }

    fn check_body(&self, body: &str) {
        let passwords = self.passwords.read().unwrap_or_else(PoisonError::into_inner);
        if passwords.iter().any(|p| body.contains(p.as_str())) {
            self.leaks.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Passwords the clients look for in every response from now on.
    pub fn watch_for(&self, passwords: impl IntoIterator<Item = String>) {
        let mut known = self.passwords.write().unwrap_or_else(PoisonError::into_inner);
        for p in passwords {
            if !p.is_empty() && !known.contains(&p) {
                known.push(p);
            }
        }
    }

    /// Every bucket so far; bucket `i` holds the requests that ended in
    /// `[i, i + 1) × BUCKET_SECONDS` on the demo's clock.
    pub fn buckets(&self) -> Vec<Bucket> {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The first few failures, word for word.
    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Every database user `/whoami` answered with, in order of appearance.
    pub fn users(&self) -> Vec<String> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn counts(&self) -> (u64, u64) {
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }

    /// Latencies of the requests that ended between `from` and `to` seconds.
    pub fn histogram(&self, from: f64, to: f64) -> Histogram {
        let mut h = Histogram::default();
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let first = (from / BUCKET_SECONDS).max(0.0) as usize;
        let last = ((to / BUCKET_SECONDS).ceil() as usize).min(buckets.len());
        for b in buckets.get(first..last).unwrap_or_default() {
            h.add(b);
        }
        h
    }
}

#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    pub stats: Arc<Stats>,
}

impl Load {
    /// `clients` clients of the app at `addr` (admin listener `admin`), each
    /// waiting `pace` after an answer before its next request.
    pub fn start(addr: SocketAddr, admin: SocketAddr, clients: usize, pace: Duration, clock: Clock) -> Load {
        let stats = Arc::new(Stats {
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            leaks: AtomicU64::new(0),
            clock,
            buckets: Mutex::default(),
            failures: Mutex::default(),
            users: Mutex::default(),
            passwords: RwLock::default(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|client| {
                let (stop, stats) = (stop.clone(), stats.clone());
                tokio::spawn(async move { run_client(client, addr, admin, pace, &stop, &stats).await })
            })
            .collect();
        Load { stop, tasks, stats }
    }

    /// Stops every client after its request in flight.
    pub async fn stop(self) -> Arc<Stats> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        self.stats
    }
}

async fn run_client(
    client: usize,
    addr: SocketAddr,
    admin: SocketAddr,
    pace: Duration,
    stop: &AtomicBool,
    stats: &Stats,
) {
    let http = http_client();
    let mut own_note: Option<i64> = None;
    let mut i = client;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let (method, url, body) = match (own_note, i % 4) {
            (None, _) | (_, 0) => {
                ("POST", format!("http://{addr}/notes"), Some(json!({"body": format!("client {client} note {i}")})))
            }
            (_, 1) => ("GET", format!("http://{addr}/notes?limit=5"), None),
            (Some(id), 2) => ("GET", format!("http://{addr}/notes/{id}"), None),
            _ => ("GET", format!("http://{admin}/whoami"), None),
        };
        let started = Instant::now();
        let answer = tokio::time::timeout(REQUEST_DEADLINE, request(&http, method, &url, body.as_ref())).await;
        let latency = started.elapsed();
        let ended = stats.clock.now();
        match answer {
            Ok(Ok(a)) if (200..300).contains(&a.status) => {
                stats.record(ended, latency, true);
                stats.check_body(&a.body);
                let value: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
                if method == "POST" {
                    own_note = value["id"].as_i64();
                }
                if let Some(user) = value["db_user"].as_str() {
                    let mut users = stats.users.lock().unwrap_or_else(PoisonError::into_inner);
                    if !users.iter().any(|u| u == user) {
                        users.push(user.to_owned());
                    }
                }
            }
            Ok(Ok(a)) => {
                stats.record(ended, latency, false);
                stats.check_body(&a.body);
                stats.failure(format!("{method} {url} -> {} {}", a.status, a.body));
            }
            Ok(Err(e)) => {
                stats.record(ended, latency, false);
                stats.failure(format!("{method} {url} -> {e}"));
            }
            Err(_) => {
                stats.record(ended, latency, false);
                stats.failure(format!("{method} {url} -> no answer in {REQUEST_DEADLINE:?}"));
            }
        }
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_quarter_octave() {
        let mut bucket = Bucket::default();
        for ms in 1..=100u64 {
            bucket.latencies[bin(Duration::from_millis(ms))] += 1;
        }
        let mut h = Histogram::default();
        h.add(&bucket);
        assert_eq!(h.count(), 100);
        for (q, exact) in [(0.5, 50.0), (0.99, 99.0), (0.01, 1.0)] {
            let got = h.quantile_ms(q).expect("samples");
            assert!((got / exact - 1.0).abs() < 0.19, "q{q}: {got} vs {exact}");
        }
        assert_eq!(Histogram::default().quantile_ms(0.5), None);
        assert_eq!(bin(Duration::from_secs(3600)), BINS - 1);
    }
}
