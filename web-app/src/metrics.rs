//! Prometheus text exposition, hand-rolled: a few counters and gauges do not justify a
//! metrics framework, and keeping the label sets explicit here documents what we export.
//!
//! Every label value is either a route *template*, an HTTP method, a status code, a
//! SQLSTATE, a Secrets Manager operation name, or a secret version id. None can carry a
//! credential.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What triggered a credential refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RefreshTrigger {
    /// The periodic DescribeSecret check saw AWSCURRENT on a new version.
    ChangeCheck,
    /// A new connection was refused by the database (SQLSTATE 28P01/28000).
    AuthFailure,
}

impl RefreshTrigger {
    fn as_str(self) -> &'static str {
        match self {
            Self::ChangeCheck => "change_check",
            Self::AuthFailure => "auth_failure",
        }
    }
}

/// How a refresh ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RefreshOutcome {
    /// The pool now uses another secret version.
    Switched,
    /// Nothing to do (another refresh already switched, or the new version was rejected
    /// and the working one kept).
    Kept,
    /// Secrets Manager or the database could not be reached, or no version authenticates.
    Failed,
}

impl RefreshOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Switched => "switched",
            Self::Kept => "kept",
            Self::Failed => "failed",
        }
    }
}

/// A point-in-time view of the connection pool for the gauges.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolGauges {
    pub size: u32,
    pub idle: usize,
}

/// Process-wide counters. Cheap to update from the request path (one short mutex per
/// labelled family, atomics for the rest).
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    db_errors: Mutex<BTreeMap<String, u64>>,
    refreshes: Mutex<BTreeMap<(RefreshTrigger, RefreshOutcome), u64>>,
    sm_calls: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    auth_failures: AtomicU64,
    change_check_failures_in_a_row: AtomicU64,
    secret_version: Mutex<String>,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    let mut map = map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    *map.entry(key).or_insert(0) += 1;
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// One finished HTTP request. `route` must be the matched template (`/notes/{id}`).
    pub fn record_request(&self, method: &str, route: &str, status: u16) {
        bump(&self.requests, (method.to_owned(), route.to_owned(), status));
    }

    /// A database error surfaced to a request or a background task, by SQLSTATE (or a
    /// coarse class such as `pool_timeout` or `io` when the server sent none).
    pub fn record_db_error(&self, sqlstate: &str) {
        bump(&self.db_errors, sqlstate.to_owned());
    }

    pub fn record_refresh(&self, trigger: RefreshTrigger, outcome: RefreshOutcome) {
        bump(&self.refreshes, (trigger, outcome));
    }

    /// One Secrets Manager API call (SDK-level retries count once).
    pub fn record_secretsmanager_call(&self, operation: &'static str, ok: bool) {
        bump(&self.sm_calls, (operation, if ok { "ok" } else { "error" }));
    }

    /// A new connection was refused with SQLSTATE 28P01/28000.
    pub fn record_auth_failure(&self) {
        self.auth_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_change_check_failures_in_a_row(&self, n: u64) {
        self.change_check_failures_in_a_row.store(n, Ordering::Relaxed);
    }

    pub fn set_secret_version(&self, version_id: &str) {
        let mut v = self.secret_version.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        version_id.clone_into(&mut v);
    }

    /// Total Secrets Manager calls so far, all operations and outcomes.
    pub fn secretsmanager_calls_total(&self) -> u64 {
        self.sm_calls.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().sum()
    }

    /// Renders everything in the Prometheus text format (version 0.0.4).
    pub fn render(&self, pool: PoolGauges) -> String {
        let mut out = String::with_capacity(2048);
        family(
            &mut out,
            "web_app_http_requests_total",
            "counter",
            "HTTP requests by method, route template and status.",
        );
        for ((method, route, status), n) in lock(&self.requests).iter() {
            sample(
                &mut out,
                "web_app_http_requests_total",
                &[("method", method), ("route", route), ("status", &status.to_string())],
                *n,
            );
        }
        family(
            &mut out,
            "web_app_db_errors_total",
            "counter",
            "Database errors by SQLSTATE (or pool_timeout/io/tls/other).",
        );
        for (code, n) in lock(&self.db_errors).iter() {
            sample(&mut out, "web_app_db_errors_total", &[("sqlstate", code)], *n);
        }
        family(
            &mut out,
            "web_app_credential_refreshes_total",
            "counter",
            "Credential refreshes by trigger and outcome.",
        );
        for ((trigger, outcome), n) in lock(&self.refreshes).iter() {
            sample(
                &mut out,
                "web_app_credential_refreshes_total",
                &[("trigger", trigger.as_str()), ("outcome", outcome.as_str())],
                *n,
            );
        }
        family(
            &mut out,
            "web_app_secretsmanager_calls_total",
            "counter",
            "Secrets Manager API calls by operation and outcome.",
        );
        for ((op, outcome), n) in lock(&self.sm_calls).iter() {
            sample(&mut out, "web_app_secretsmanager_calls_total", &[("operation", op), ("outcome", outcome)], *n);
        }
        family(
            &mut out,
            "web_app_db_auth_failures_total",
            "counter",
            "New database connections refused with SQLSTATE 28P01/28000.",
        );
        sample(&mut out, "web_app_db_auth_failures_total", &[], self.auth_failures.load(Ordering::Relaxed));
        family(
            &mut out,
            "web_app_secret_change_check_failures",
            "gauge",
            "Consecutive failed change checks (Secrets Manager unreachable or throttling).",
        );
        sample(
            &mut out,
            "web_app_secret_change_check_failures",
            &[],
            self.change_check_failures_in_a_row.load(Ordering::Relaxed),
        );
        family(&mut out, "web_app_db_pool_connections", "gauge", "Open connections in the pool.");
        sample(&mut out, "web_app_db_pool_connections", &[], u64::from(pool.size));
        family(&mut out, "web_app_db_pool_idle_connections", "gauge", "Idle connections in the pool.");
        sample(&mut out, "web_app_db_pool_idle_connections", &[], pool.idle as u64);
        family(
            &mut out,
            "web_app_secret_version_info",
            "gauge",
            "The secret version whose credentials new connections use.",
        );
        let version = lock(&self.secret_version).clone();
        sample(&mut out, "web_app_secret_version_info", &[("version_id", &version)], 1);
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Label values escape backslash, double quote and newline (exposition format spec).
fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels_and_gauges() {
        let m = Metrics::new();
        m.record_request("GET", "/notes/{id}", 200);
        m.record_request("GET", "/notes/{id}", 200);
        m.record_request("POST", "/notes", 500);
        m.record_db_error("23505");
        m.record_refresh(RefreshTrigger::AuthFailure, RefreshOutcome::Switched);
        m.record_secretsmanager_call("DescribeSecret", true);
        m.record_secretsmanager_call("GetSecretValue", false);
        m.record_auth_failure();
        m.set_secret_version("v-1");
        let text = m.render(PoolGauges { size: 4, idle: 3 });

        assert!(text.contains("web_app_http_requests_total{method=\"GET\",route=\"/notes/{id}\",status=\"200\"} 2\n"));
        assert!(text.contains("web_app_http_requests_total{method=\"POST\",route=\"/notes\",status=\"500\"} 1\n"));
        assert!(text.contains("web_app_db_errors_total{sqlstate=\"23505\"} 1\n"));
        assert!(text.contains("web_app_credential_refreshes_total{trigger=\"auth_failure\",outcome=\"switched\"} 1\n"));
        assert!(
            text.contains("web_app_secretsmanager_calls_total{operation=\"GetSecretValue\",outcome=\"error\"} 1\n")
        );
        assert!(text.contains("web_app_db_auth_failures_total 1\n"));
        assert!(text.contains("web_app_db_pool_connections 4\n"));
        assert!(text.contains("web_app_db_pool_idle_connections 3\n"));
        assert!(text.contains("web_app_secret_version_info{version_id=\"v-1\"} 1\n"));
        assert_eq!(m.secretsmanager_calls_total(), 2);
        // Every family is announced exactly once.
        assert_eq!(text.matches("# TYPE web_app_http_requests_total counter").count(), 1);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
