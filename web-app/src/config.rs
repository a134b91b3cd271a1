//! Configuration from the environment, read and validated once at startup.
//!
//! Only the secret's *id* is configuration. Credentials come from Secrets Manager; the
//! AWS credentials for that call come from the SDK's default chain (the instance role
//! through IMDSv2 on EC2), never from an `APP_*` variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use db_secret::{Endpoints, EndpointsError, TlsFloor};

/// Every `APP_*` variable this program understands. Any other `APP_*` variable is a typo
/// and refused at startup rather than silently ignored.
pub const KNOWN_VARS: &[&str] = &[
    "APP_SECRET_ID",
    "APP_OWNER_SECRET_ID",
    "APP_LISTEN_ADDR",
    "APP_ADMIN_LISTEN_ADDR",
    "APP_DB_CA_BUNDLE",
    "APP_DB_TLS",
    "APP_DB_ENDPOINTS",
    "APP_POOL_MAX_CONNECTIONS",
    "APP_POOL_MIN_CONNECTIONS",
    "APP_POOL_ACQUIRE_TIMEOUT",
    "APP_CONN_MAX_LIFETIME",
    "APP_CONN_LIFETIME_JITTER_PERCENT",
    "APP_SECRET_CHECK_INTERVAL",
    "APP_SECRET_BACKOFF_MAX",
    "APP_REQUEST_TIMEOUT",
    "APP_SHUTDOWN_GRACE",
    "APP_SCHEMA_WAIT",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// ARN or name of the database secret.
    pub secret_id: String,
    /// Public listener: health, readiness, the notes API.
    pub listen_addr: SocketAddr,
    /// Admin listener: `/metrics`, `/whoami`. Loopback by default.
    pub admin_listen_addr: SocketAddr,
    /// PEM bundle that signs the database's certificate; platform roots when `None`.
    pub db_ca_bundle: Option<PathBuf>,
    /// `APP_DB_TLS`: the TLS floor (verified TLS unless the operator allows plain text).
    pub db_tls: TlsFloor,
    /// `APP_DB_ENDPOINTS`: the database servers (`host:port`, comma-separated) the app
    /// may connect to. A secret version naming any other is refused without being
    /// dialled. `None` (unset): whatever the secret names (local development only;
    /// production sets it, the CDK app from the database it creates).
    pub db_endpoints: Option<Endpoints>,
    pub pool_max_connections: u32,
    pub pool_min_connections: u32,
    pub pool_acquire_timeout: Duration,
    /// Upper bound of a connection's life; each connection gets a random lifetime in
    /// `[max * (1 - jitter), max]`.
    pub conn_max_lifetime: Duration,
    pub conn_lifetime_jitter: f64,
    /// How often DescribeSecret checks whether AWSCURRENT moved.
    pub secret_check_interval: Duration,
    /// Ceiling of the backoff when Secrets Manager fails or throttles.
    pub secret_backoff_max: Duration,
    pub request_timeout: Duration,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// How long serving waits at start for the schema `web-app migrate` applies.
    pub schema_wait: Duration,
}

/// What `web-app migrate` needs: the owner's secret and how to reach the database.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrateConfig {
    /// ARN or name of the schema owner's secret (same JSON format as the app's).
    pub owner_secret_id: String,
    pub db_ca_bundle: Option<PathBuf>,
    pub db_tls: TlsFloor,
    /// The same pin as serving's: the owner's secret must name an allowed server too.
    pub db_endpoints: Option<Endpoints>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("APP_SECRET_ID is required (the ARN or name of the database secret)")]
    MissingSecretId,
    #[error("APP_OWNER_SECRET_ID is required by `web-app migrate` (the ARN or name of the schema owner's secret)")]
    MissingOwnerSecretId,
    #[error("{var}={value:?} is invalid: {reason}")]
    Invalid { var: &'static str, value: String, reason: &'static str },
    #[error("unknown variable {0} (known: {known})", known = KNOWN_VARS.join(", "))]
    Unknown(String),
    #[error("{0}")]
    Endpoints(#[from] EndpointsError),
    #[error("{0} looks like a credential; credentials come only from Secrets Manager, set APP_SECRET_ID instead")]
    CredentialInEnvironment(String),
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Builds the configuration from `(name, value)` pairs; variables that do not start
    /// with `APP_` are ignored.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let vars = app_vars(vars)?;
        let get = |name: &str| get(&vars, name);

        let secret_id = get("APP_SECRET_ID").ok_or(ConfigError::MissingSecretId)?.to_owned();
        let listen_addr = address(get("APP_LISTEN_ADDR"), "APP_LISTEN_ADDR", ([0, 0, 0, 0], 8080))?;
        let admin_listen_addr = address(get("APP_ADMIN_LISTEN_ADDR"), "APP_ADMIN_LISTEN_ADDR", ([127, 0, 0, 1], 9090))?;
        let db_ca_bundle = get("APP_DB_CA_BUNDLE").map(PathBuf::from);
        let db_tls = tls_floor(get("APP_DB_TLS"))?;
        let db_endpoints = Endpoints::from_setting("APP_DB_ENDPOINTS", get("APP_DB_ENDPOINTS"))?;
        let pool_max_connections = number(get("APP_POOL_MAX_CONNECTIONS"), "APP_POOL_MAX_CONNECTIONS", 10, 1, 1000)?;
        let pool_min_connections = number(get("APP_POOL_MIN_CONNECTIONS"), "APP_POOL_MIN_CONNECTIONS", 1, 0, 1000)?;
        if pool_min_connections > pool_max_connections {
            return Err(ConfigError::Invalid {
                var: "APP_POOL_MIN_CONNECTIONS",
                value: pool_min_connections.to_string(),
                reason: "must not exceed APP_POOL_MAX_CONNECTIONS",
            });
        }
        let jitter_percent =
            number(get("APP_CONN_LIFETIME_JITTER_PERCENT"), "APP_CONN_LIFETIME_JITTER_PERCENT", 20, 0, 90)?;
        let cfg = Config {
            secret_id,
            listen_addr,
            admin_listen_addr,
            db_ca_bundle,
            db_tls,
            db_endpoints,
            pool_max_connections,
            pool_min_connections,
            pool_acquire_timeout: duration(
                get("APP_POOL_ACQUIRE_TIMEOUT"),
                "APP_POOL_ACQUIRE_TIMEOUT",
                Duration::from_secs(5),
            )?,
            conn_max_lifetime: duration(
                get("APP_CONN_MAX_LIFETIME"),
                "APP_CONN_MAX_LIFETIME",
                Duration::from_secs(300),
            )?,
            conn_lifetime_jitter: f64::from(jitter_percent) / 100.0,
            secret_check_interval: duration(
                get("APP_SECRET_CHECK_INTERVAL"),
                "APP_SECRET_CHECK_INTERVAL",
                Duration::from_secs(60),
            )?,
            secret_backoff_max: duration(
                get("APP_SECRET_BACKOFF_MAX"),
                "APP_SECRET_BACKOFF_MAX",
                Duration::from_secs(300),
            )?,
            request_timeout: duration(get("APP_REQUEST_TIMEOUT"), "APP_REQUEST_TIMEOUT", Duration::from_secs(10))?,
            shutdown_grace: duration(get("APP_SHUTDOWN_GRACE"), "APP_SHUTDOWN_GRACE", Duration::from_secs(20))?,
            schema_wait: duration(get("APP_SCHEMA_WAIT"), "APP_SCHEMA_WAIT", Duration::from_secs(30))?,
        };
        if cfg.secret_backoff_max < cfg.secret_check_interval {
            return Err(ConfigError::Invalid {
                var: "APP_SECRET_BACKOFF_MAX",
                value: get("APP_SECRET_BACKOFF_MAX").unwrap_or("300s").to_owned(),
                reason: "must be at least APP_SECRET_CHECK_INTERVAL",
            });
        }
        Ok(cfg)
    }
}

impl MigrateConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// The same variables as serving (one environment can serve both), of which
    /// `APP_OWNER_SECRET_ID` is required and the serving-only ones are ignored.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let vars = app_vars(vars)?;
        let get = |name: &str| get(&vars, name);
        Ok(Self {
            owner_secret_id: get("APP_OWNER_SECRET_ID").ok_or(ConfigError::MissingOwnerSecretId)?.to_owned(),
            db_ca_bundle: get("APP_DB_CA_BUNDLE").map(PathBuf::from),
            db_tls: tls_floor(get("APP_DB_TLS"))?,
            db_endpoints: Endpoints::from_setting("APP_DB_ENDPOINTS", get("APP_DB_ENDPOINTS"))?,
        })
    }
}

/// The `APP_*` variables, every one of them known.
fn app_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Vec<(String, String)>, ConfigError> {
    let vars: Vec<(String, String)> = vars.into_iter().filter(|(k, _)| k.starts_with("APP_")).collect();
    for (k, _) in &vars {
        if !KNOWN_VARS.contains(&k.as_str()) {
            let upper = k.to_ascii_uppercase();
            // Name the variable only; its value may be a password.
            if ["PASSWORD", "PASSWD", "SECRET_VALUE", "DATABASE_URL", "DB_URL"].iter().any(|w| upper.contains(w)) {
                return Err(ConfigError::CredentialInEnvironment(k.clone()));
            }
            return Err(ConfigError::Unknown(k.clone()));
        }
    }
    Ok(vars)
}

fn get<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
    vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
}

fn address(raw: Option<&str>, var: &'static str, default: ([u8; 4], u16)) -> Result<SocketAddr, ConfigError> {
    match raw {
        None => Ok(SocketAddr::from(default)),
        Some(v) => v.parse().map_err(|_| ConfigError::Invalid {
            var,
            value: v.to_owned(),
            reason: "expected IP:PORT, e.g. 0.0.0.0:8080",
        }),
    }
}

fn tls_floor(raw: Option<&str>) -> Result<TlsFloor, ConfigError> {
    TlsFloor::from_setting("APP_DB_TLS", raw).map_err(|_| ConfigError::Invalid {
        var: "APP_DB_TLS",
        value: raw.unwrap_or_default().to_owned(),
        reason: "expected `verify-full` (the default), `allow-plaintext` (a secret's \"ssl\": false is honoured) \
                 or `disable` (plain text everywhere, local development only)",
    })
}

fn number(raw: Option<&str>, var: &'static str, default: u32, min: u32, max: u32) -> Result<u32, ConfigError> {
    let Some(raw) = raw else { return Ok(default) };
    match raw.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError::Invalid {
            var,
            value: raw.to_owned(),
            reason: "expected a whole number in the documented range",
        }),
    }
}

fn duration(raw: Option<&str>, var: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    let Some(raw) = raw else { return Ok(default) };
    match parse_duration(raw) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(ConfigError::Invalid {
            var,
            value: raw.to_owned(),
            reason: "expected a positive duration such as 250ms, 30s, 5m or 1h",
        }),
    }
}

/// `250ms`, `30s`, `5m`, `1h`. A bare number is refused: units are not guessable.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_with_only_the_secret_id() {
        let c = Config::from_vars(vars(&[("APP_SECRET_ID", "prod/db"), ("HOME", "/root")])).unwrap();
        assert_eq!(c.secret_id, "prod/db");
        assert_eq!(c.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(c.admin_listen_addr.to_string(), "127.0.0.1:9090", "metrics stay off the public port");
        assert_eq!(c.schema_wait, Duration::from_secs(30));
        assert_eq!(c.db_tls, TlsFloor::verify_full("APP_DB_TLS"));
        assert_eq!(c.secret_check_interval, Duration::from_secs(60));
        assert_eq!(c.pool_max_connections, 10);
    }

    #[test]
    fn missing_secret_id_is_named() {
        let err = Config::from_vars(vars(&[("APP_LISTEN_ADDR", "127.0.0.1:1")])).unwrap_err();
        assert_eq!(err, ConfigError::MissingSecretId);
        assert!(err.to_string().contains("APP_SECRET_ID"));
        let err = Config::from_vars(vars(&[("APP_SECRET_ID", "  ")])).unwrap_err();
        assert_eq!(err, ConfigError::MissingSecretId);
    }

    #[test]
    fn typos_and_credentials_in_env_are_refused_without_echoing_values() {
        let err = Config::from_vars(vars(&[("APP_SECRET_ID", "x"), ("APP_POOL_SIZE", "3")])).unwrap_err();
        assert_eq!(err, ConfigError::Unknown("APP_POOL_SIZE".into()));
        let err = Config::from_vars(vars(&[("APP_SECRET_ID", "x"), ("APP_DB_PASSWORD", "hunter2")])).unwrap_err();
        assert_eq!(err, ConfigError::CredentialInEnvironment("APP_DB_PASSWORD".into()));
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn migrate_needs_the_owner_secret_and_accepts_the_serving_environment() {
        let err = MigrateConfig::from_vars(vars(&[("APP_SECRET_ID", "prod/db")])).unwrap_err();
        assert_eq!(err, ConfigError::MissingOwnerSecretId);
        assert!(err.to_string().contains("APP_OWNER_SECRET_ID"));
        let m = MigrateConfig::from_vars(vars(&[
            ("APP_SECRET_ID", "prod/db"),
            ("APP_OWNER_SECRET_ID", "prod/db-owner"),
            ("APP_DB_TLS", "disable"),
            ("APP_POOL_MAX_CONNECTIONS", "4"),
        ]))
        .unwrap();
        assert_eq!(m.owner_secret_id, "prod/db-owner");
        assert!(m.db_tls.disables_tls());
        let err = MigrateConfig::from_vars(vars(&[("APP_OWNER_SECRET_ID", "o"), ("APP_OWNER_PASSWORD", "x")]));
        assert_eq!(err.unwrap_err(), ConfigError::CredentialInEnvironment("APP_OWNER_PASSWORD".into()));
    }

    #[test]
    fn the_endpoint_pin_is_optional_and_checked() {
        let c = Config::from_vars(vars(&[("APP_SECRET_ID", "x")])).unwrap();
        assert_eq!(c.db_endpoints, None, "unset: no pin (local development)");
        let c =
            Config::from_vars(vars(&[("APP_SECRET_ID", "x"), ("APP_DB_ENDPOINTS", "db.internal:5432, 10.0.0.5:6432")]))
                .unwrap();
        let pin = c.db_endpoints.unwrap();
        assert!(pin.allows("db.internal", 5432) && pin.allows("10.0.0.5", 6432));
        assert!(!pin.allows("db.internal", 6432));
        let err = Config::from_vars(vars(&[("APP_SECRET_ID", "x"), ("APP_DB_ENDPOINTS", "db.internal")])).unwrap_err();
        assert!(err.to_string().starts_with("APP_DB_ENDPOINTS: \"db.internal\""), "{err}");
        let m =
            MigrateConfig::from_vars(vars(&[("APP_OWNER_SECRET_ID", "o"), ("APP_DB_ENDPOINTS", "db:5432")])).unwrap();
        assert!(m.db_endpoints.unwrap().allows("db", 5432));
    }

    #[test]
    fn tls_floor_values_are_checked() {
        let c = Config::from_vars(vars(&[("APP_SECRET_ID", "x"), ("APP_DB_TLS", "disable")])).unwrap();
        assert!(c.db_tls.disables_tls());
        let err = Config::from_vars(vars(&[("APP_SECRET_ID", "x"), ("APP_DB_TLS", "prefer")])).unwrap_err();
        assert!(err.to_string().contains("APP_DB_TLS"));
    }

    #[test]
    fn durations_need_units_and_ranges_are_checked() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("30"), None);
        assert_eq!(parse_duration("s"), None);
        let err = Config::from_vars(vars(&[("APP_SECRET_ID", "x"), ("APP_REQUEST_TIMEOUT", "10")])).unwrap_err();
        assert!(err.to_string().contains("APP_REQUEST_TIMEOUT"));
        let err = Config::from_vars(vars(&[("APP_SECRET_ID", "x"), ("APP_POOL_MIN_CONNECTIONS", "20")])).unwrap_err();
        assert!(err.to_string().contains("APP_POOL_MIN_CONNECTIONS"));
        let err = Config::from_vars(vars(&[
            ("APP_SECRET_ID", "x"),
            ("APP_SECRET_CHECK_INTERVAL", "10m"),
            ("APP_SECRET_BACKOFF_MAX", "1m"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("APP_SECRET_BACKOFF_MAX"));
    }
}
