//! Prometheus metrics through `prometheus-client` (the Prometheus project's Rust client),
//! served on the admin listener in the OpenMetrics text format.
//!
//! Every label value comes from a fixed set, so no client can create series: a route
//! *template* from the router's table (or `unmatched`), one of the standard HTTP methods
//! (or `other`), a status code, a SQLSTATE (five characters, or a coarse class), a Secrets
//! Manager operation name, or the id of the secret version in use (one series at a time).
//! None can carry a credential.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// What triggered a credential refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RefreshTrigger {
    /// The periodic DescribeSecret check saw AWSCURRENT on a new version.
    change_check,
    /// A new connection was refused by the database (SQLSTATE 28P01/28000).
    auth_failure,
}

/// How a refresh ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RefreshOutcome {
    /// The pool now uses another secret version.
    switched,
    /// The login in use was kept (the new version was refused, or the refused login
    /// works again).
    kept,
    /// Secrets Manager or the database could not be reached, or no version authenticates.
    failed,
}

/// Why a request's database work was tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RetryReason {
    /// The session was closed by the server or the network (57P01, reset, broken pipe).
    session_lost,
    /// A new connection was refused (28P01/28000) and the login was refreshed.
    login_refused,
    /// A new connection could not be opened (server restarting, unreachable).
    connect_failed,
}

/// Why a secret version was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum VersionRefusal {
    /// It names a server `APP_DB_ENDPOINTS` does not allow; nothing was dialled.
    endpoint_not_allowed,
    /// The database refused its login (or it failed for a reason waiting will not cure).
    login_refused,
}

/// HTTP methods as a closed set: any other method a client sends is `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)] // the label values are the HTTP method names
pub enum Method {
    GET,
    HEAD,
    POST,
    PUT,
    PATCH,
    DELETE,
    OPTIONS,
    #[allow(non_camel_case_types)]
    other,
}

impl Method {
    pub fn from_http(m: &axum::http::Method) -> Self {
        match *m {
            axum::http::Method::GET => Self::GET,
            axum::http::Method::HEAD => Self::HEAD,
            axum::http::Method::POST => Self::POST,
            axum::http::Method::PUT => Self::PUT,
            axum::http::Method::PATCH => Self::PATCH,
            axum::http::Method::DELETE => Self::DELETE,
            axum::http::Method::OPTIONS => Self::OPTIONS,
            _ => Self::other,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: Method,
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    method: Method,
    route: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SqlstateLabels {
    sqlstate: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefreshLabels {
    trigger: RefreshTrigger,
    outcome: RefreshOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TriggerLabels {
    trigger: RefreshTrigger,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SmCallLabels {
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RetryLabels {
    reason: RetryReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionRefusalLabels {
    reason: VersionRefusal,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionLabels {
    version_id: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Request latency: 1 ms to 10 s (the default request deadline).
fn request_buckets() -> Histogram {
    Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

/// Waiting for a pooled connection: 100 µs (an idle one) to 5 s (the acquire timeout).
fn acquire_buckets() -> Histogram {
    Histogram::new([0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
}

/// A credential refresh: a DescribeSecret, maybe a GetSecretValue, one or more logins.
fn refresh_buckets() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

/// Every metric the app exports, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<RouteLabels>,
    acquire_duration: Histogram,
    db_errors: Family<SqlstateLabels, Counter>,
    db_retries: Family<RetryLabels, Counter>,
    refreshes: Family<RefreshLabels, Counter>,
    refresh_duration: HistogramFamily<TriggerLabels>,
    switches: Counter,
    sm_calls: Family<SmCallLabels, Counter>,
    auth_failures: Counter,
    versions_refused: Family<VersionRefusalLabels, Counter>,
    change_check_failures: Gauge,
    pool_connections: Gauge,
    pool_idle: Gauge,
    secret_version: Family<VersionLabels, Gauge>,
    /// Serialises "clear, then set" of the version series so a scrape never sees two.
    version_lock: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        // prometheus-client appends `_total` to counters.
        registry.register(
            "web_app_http_requests",
            "HTTP requests by method, route template and status",
            requests.clone(),
        );
        let request_duration: HistogramFamily<RouteLabels> = Family::new_with_constructor(request_buckets);
        registry.register(
            "web_app_http_request_duration_seconds",
            "Time to answer a request, by method and route template",
            request_duration.clone(),
        );
        let acquire_duration = acquire_buckets();
        registry.register(
            "web_app_db_acquire_duration_seconds",
            "Time a request waited for a database connection (including login refreshes and retries)",
            acquire_duration.clone(),
        );
        let db_errors = Family::<SqlstateLabels, Counter>::default();
        registry.register(
            "web_app_db_errors",
            "Database errors by SQLSTATE (or pool_timeout/io/tls/other), including those retried",
            db_errors.clone(),
        );
        let db_retries = Family::<RetryLabels, Counter>::default();
        registry.register(
            "web_app_db_retries",
            "Database work tried again on a fresh connection, by reason",
            db_retries.clone(),
        );
        let refreshes = Family::<RefreshLabels, Counter>::default();
        registry.register(
            "web_app_credential_refreshes",
            "Credential refreshes by trigger and outcome",
            refreshes.clone(),
        );
        let refresh_duration: HistogramFamily<TriggerLabels> = Family::new_with_constructor(refresh_buckets);
        registry.register(
            "web_app_credential_refresh_duration_seconds",
            "Duration of credential refreshes (Secrets Manager calls and login checks), by trigger",
            refresh_duration.clone(),
        );
        let switches = Counter::default();
        registry.register(
            "web_app_credential_switches",
            "Times new connections switched to another secret version",
            switches.clone(),
        );
        let sm_calls = Family::<SmCallLabels, Counter>::default();
        registry.register(
            "web_app_secretsmanager_calls",
            "Secrets Manager API calls by operation and outcome",
            sm_calls.clone(),
        );
        let auth_failures = Counter::default();
        registry.register(
            "web_app_db_auth_failures",
            "New database connections refused with SQLSTATE 28P01/28000",
            auth_failures.clone(),
        );
        let versions_refused = Family::<VersionRefusalLabels, Counter>::default();
        registry.register(
            "web_app_secret_versions_refused",
            "Secret versions not used, by reason (a server APP_DB_ENDPOINTS does not allow, or a refused login)",
            versions_refused.clone(),
        );
        let change_check_failures = Gauge::default();
        registry.register(
            "web_app_secret_change_check_failures",
            "Consecutive failed change checks (Secrets Manager unreachable or throttling)",
            change_check_failures.clone(),
        );
        let pool_connections = Gauge::default();
        registry.register("web_app_db_pool_connections", "Open connections in the pool", pool_connections.clone());
        let pool_idle = Gauge::default();
        registry.register("web_app_db_pool_idle_connections", "Idle connections in the pool", pool_idle.clone());
        let secret_version = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "web_app_secret_version_info",
            "The secret version whose credentials new connections use (value 1)",
            secret_version.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            acquire_duration,
            db_errors,
            db_retries,
            refreshes,
            refresh_duration,
            switches,
            sm_calls,
            auth_failures,
            versions_refused,
            change_check_failures,
            pool_connections,
            pool_idle,
            secret_version,
            version_lock: Mutex::new(()),
        }
    }

    /// One finished HTTP request. `route` is a template from the router's table.
    pub fn record_request(&self, method: Method, route: &'static str, status: u16, took: Duration) {
        self.requests.get_or_create(&RequestLabels { method, route, status }).inc();
        self.request_duration.get_or_create(&RouteLabels { method, route }).observe(took.as_secs_f64());
    }

    /// A secret version judged unusable (see [`VersionRefusal`]).
    pub fn record_version_refused(&self, reason: VersionRefusal) {
        self.versions_refused.get_or_create(&VersionRefusalLabels { reason }).inc();
    }

    /// How long a request waited for a connection.
    pub fn record_acquire(&self, took: Duration) {
        self.acquire_duration.observe(took.as_secs_f64());
    }

    /// A database error surfaced to a request or a background task, by SQLSTATE (or a
    /// coarse class such as `pool_timeout` or `io` when the server sent none).
    pub fn record_db_error(&self, class: &str) {
        self.db_errors.get_or_create(&SqlstateLabels { sqlstate: bounded_class(class) }).inc();
    }

    pub fn record_retry(&self, reason: RetryReason) {
        self.db_retries.get_or_create(&RetryLabels { reason }).inc();
    }

    pub fn record_refresh(&self, trigger: RefreshTrigger, outcome: RefreshOutcome, took: Duration) {
        self.refreshes.get_or_create(&RefreshLabels { trigger, outcome }).inc();
        self.refresh_duration.get_or_create(&TriggerLabels { trigger }).observe(took.as_secs_f64());
    }

    /// One Secrets Manager API call (SDK-level retries count once).
    pub fn record_secretsmanager_call(&self, operation: &'static str, ok: bool) {
        self.sm_calls.get_or_create(&SmCallLabels { operation, outcome: if ok { "ok" } else { "error" } }).inc();
    }

    /// A new connection was refused with SQLSTATE 28P01/28000.
    pub fn record_auth_failure(&self) {
        self.auth_failures.inc();
    }

    pub fn set_change_check_failures_in_a_row(&self, n: u64) {
        self.change_check_failures.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// New connections now use `version_id` (the first call is startup, not a switch).
    pub fn set_secret_version(&self, version_id: &str) {
        let _guard = self.version_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.secret_version.clear();
        self.secret_version.get_or_create(&VersionLabels { version_id: version_id.to_owned() }).set(1);
    }

    pub fn record_switch(&self) {
        self.switches.inc();
    }

    /// Total Secrets Manager calls so far, all operations and outcomes.
    pub fn secretsmanager_calls_total(&self) -> u64 {
        [("DescribeSecret", "ok"), ("DescribeSecret", "error"), ("GetSecretValue", "ok"), ("GetSecretValue", "error")]
            .iter()
            .map(|(operation, outcome)| self.sm_calls.get(&SmCallLabels { operation, outcome }).map_or(0, |c| c.get()))
            .sum()
    }

    /// Renders everything in the OpenMetrics text format, with the pool gauges as of now.
    pub fn render(&self, pool: PoolGauges) -> String {
        self.pool_connections.set(i64::from(pool.size));
        self.pool_idle.set(i64::try_from(pool.idle).unwrap_or(i64::MAX));
        let _guard = self.version_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::with_capacity(8192);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The OpenMetrics content type `render` produces.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A SQLSTATE is five characters of `[0-9A-Z]`; the coarse classes are a short fixed
/// list. Anything else (a broken server, a future sqlx variant) is `other`.
fn bounded_class(class: &str) -> String {
    const CLASSES: [&str; 7] = ["pool_timeout", "pool_closed", "io", "tls", "other", "unknown", "schema"];
    let sqlstate = class.len() == 5 && class.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase());
    if sqlstate || CLASSES.contains(&class) { class.to_owned() } else { "other".to_owned() }
}

/// A point-in-time view of the connection pool for the gauges.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolGauges {
    pub size: u32,
    pub idle: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges_with_fixed_labels() {
        let m = Metrics::new();
        m.record_request(Method::GET, "/notes/{id}", 200, Duration::from_millis(3));
        m.record_request(Method::GET, "/notes/{id}", 200, Duration::from_millis(3));
        m.record_request(Method::from_http(&"BREW".parse().unwrap()), "unmatched", 405, Duration::ZERO);
        m.record_db_error("57P01");
        m.record_db_error("a value a server made up");
        m.record_retry(RetryReason::session_lost);
        m.record_refresh(RefreshTrigger::auth_failure, RefreshOutcome::switched, Duration::from_millis(40));
        m.record_secretsmanager_call("DescribeSecret", true);
        m.record_secretsmanager_call("GetSecretValue", false);
        m.record_auth_failure();
        m.record_switch();
        m.set_secret_version("v-1");
        m.set_secret_version("v-2");
        let text = m.render(PoolGauges { size: 4, idle: 3 });

        assert!(
            text.contains("web_app_http_requests_total{method=\"GET\",route=\"/notes/{id}\",status=\"200\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("web_app_http_requests_total{method=\"other\",route=\"unmatched\",status=\"405\"} 1\n"));
        assert!(
            text.contains(
                "web_app_http_request_duration_seconds_bucket{le=\"0.005\",method=\"GET\",route=\"/notes/{id}\"} 2\n"
            ) || text.contains(
                "web_app_http_request_duration_seconds_bucket{method=\"GET\",route=\"/notes/{id}\",le=\"0.005\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains("web_app_db_errors_total{sqlstate=\"57P01\"} 1\n"));
        assert!(text.contains("web_app_db_errors_total{sqlstate=\"other\"} 1\n"));
        assert!(text.contains("web_app_db_retries_total{reason=\"session_lost\"} 1\n"));
        assert!(text.contains("web_app_credential_refreshes_total{trigger=\"auth_failure\",outcome=\"switched\"} 1\n"));
        assert!(text.contains("web_app_credential_refresh_duration_seconds_count{trigger=\"auth_failure\"} 1\n"));
        assert!(text.contains("web_app_credential_switches_total 1\n"));
        assert!(
            text.contains("web_app_secretsmanager_calls_total{operation=\"GetSecretValue\",outcome=\"error\"} 1\n")
        );
        assert!(text.contains("web_app_db_auth_failures_total 1\n"));
        assert!(text.contains("web_app_db_pool_connections 4\n"));
        assert!(text.contains("web_app_db_pool_idle_connections 3\n"));
        assert!(text.contains("web_app_secret_version_info{version_id=\"v-2\"} 1\n"));
        assert!(!text.contains("v-1"), "only the version in use has a series");
        assert_eq!(m.secretsmanager_calls_total(), 2);
        assert_eq!(text.matches("# TYPE web_app_http_requests counter").count(), 1);
        assert!(text.ends_with("# EOF\n"));
    }
}
