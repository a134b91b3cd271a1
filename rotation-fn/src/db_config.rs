//! How to reach databases: the TLS floor, the trust roots and the endpoint
//! pin, read once at start. What rotating and provisioning both need, and
//! what every login is checked against before it is tried.

use db_secret::{DbSecret, Endpoints, EndpointsError, SecretError, TlsFloor, TlsSettingError, Trust, TrustError};

/// How to reach databases: what rotating and provisioning both need.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// `DB_TLS`: verified TLS unless the operator allows plain text.
    pub tls: TlsFloor,
    /// `DB_CA_BUNDLE` alone when set, else the platform's roots.
    pub trust: Trust,
    /// `DB_ENDPOINTS`: the `host:port` servers logins may go to. With it set
    /// a secret naming another server is refused before any login, and a
    /// master secret without a server (RDS-managed) logs in there; without
    /// it, such a master secret is refused.
    pub endpoints: Option<Endpoints>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbConfigError {
    #[error("DB_CA_BUNDLE {0} is not readable")]
    CaBundleUnreadable(String),
    #[error("DB_CA_BUNDLE {0}")]
    CaBundle(#[from] TrustError),
    #[error(transparent)]
    Tls(#[from] TlsSettingError),
    #[error(transparent)]
    Endpoints(#[from] EndpointsError),
}

impl DbConfig {
    /// Whether the operator's configuration lets a login go where `secret`
    /// says, as it says: the TLS floor, then the endpoint pin. The refusal
    /// names the setting.
    pub fn admit(&self, secret: &DbSecret) -> Result<(), String> {
        self.tls.mode_for(secret).map_err(|refused| refused.to_string())?;
        match &self.endpoints {
            Some(pinned) => pinned.check(secret).map_err(|refused| refused.to_string()),
            None => Ok(()),
        }
    }

    /// Parses a login secret (a master's, an owner's) used beside `app`: its
    /// own server, or `app`'s when the secret names none and `DB_ENDPOINTS`
    /// lists `app`'s server; never `app`'s on `app`'s word alone.
    pub(crate) fn parse_login_beside(&self, secret_string: &str, app: &DbSecret) -> Result<DbSecret, SecretError> {
        let pinned = self.endpoints.as_ref().filter(|e| e.allows(&app.host, app.port));
        DbSecret::parse_login_for(secret_string, pinned.map(|_| (app.host.as_str(), app.port)), &app.dbname)
    }

    pub fn from_env() -> Result<Self, DbConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, DbConfigError> {
        let set = |key: &str| var(key).filter(|v| !v.trim().is_empty());
        let tls = TlsFloor::from_setting("DB_TLS", set("DB_TLS").as_deref())?;
        let trust = match set("DB_CA_BUNDLE") {
            None => Trust::platform(),
            Some(path) => {
                let pem = std::fs::read(&path).map_err(|_| DbConfigError::CaBundleUnreadable(path.clone()))?;
                Trust::with_bundle(&path, &pem)?
            }
        };
        let endpoints = Endpoints::from_setting("DB_ENDPOINTS", set("DB_ENDPOINTS").as_deref())?;
        Ok(Self { tls, trust, endpoints })
    }
}
