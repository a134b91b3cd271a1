//! The database endpoints the operator allows: `host:port` pairs from the
//! configuration (`DB_ENDPOINTS` for the function, `APP_DB_ENDPOINTS` for the
//! web app).
//!
//! A secret names the server its login is for, and whoever can write the
//! secret can name any server. With the pin set, a version naming another
//! server is refused before a byte is sent there; the function also takes
//! the master's server from here, never from the application secret.

use std::fmt;

use crate::secret::DbSecret;

/// The allow-list. Host names compare case-insensitively, without a
/// trailing dot, as DNS does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    setting: &'static str,
    allowed: Vec<(String, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {entry:?} is not `host:port` (several separated by commas; IPv6 as `[addr]:port`)")]
pub struct EndpointsError {
    pub setting: &'static str,
    pub entry: String,
}

/// A server the operator did not allow. Names the server and the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host}:{port} is not among the database endpoints {setting} allows ({allowed})")]
pub struct EndpointRefused {
    pub host: String,
    pub port: u16,
    pub setting: &'static str,
    pub allowed: String,
}

impl Endpoints {
    /// Parses `setting`'s value; unset or blank means no pin (`None`).
    pub fn from_setting(setting: &'static str, value: Option<&str>) -> Result<Option<Self>, EndpointsError> {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
        let allowed = value
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|entry| parse_entry(entry).ok_or_else(|| EndpointsError { setting, entry: entry.to_owned() }))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Self { setting, allowed }))
    }

    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// The first allowed endpoint (the one a secret without a server uses).
    pub fn primary(&self) -> (&str, u16) {
        let (host, port) = &self.allowed[0];
        (host, *port)
    }

    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = normalise(host);
        self.allowed.iter().any(|(h, p)| *p == port && *h == host)
    }

    /// Whether `secret` names an allowed server.
    pub fn check(&self, secret: &DbSecret) -> Result<(), EndpointRefused> {
        if self.allows(&secret.host, secret.port) {
            return Ok(());
        }
        Err(EndpointRefused {
            host: secret.host.clone(),
            port: secret.port,
            setting: self.setting,
            allowed: self.to_string(),
        })
    }
}

impl fmt::Display for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (host, port)) in self.allowed.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            if host.contains(':') { write!(f, "{sep}[{host}]:{port}")? } else { write!(f, "{sep}{host}:{port}")? }
        }
        Ok(())
    }
}

fn parse_entry(entry: &str) -> Option<(String, u16)> {
    let (host, port) = match entry.strip_prefix('[') {
        Some(rest) => {
            let (host, port) = rest.split_once("]:")?;
            (host, port)
        }
        None => {
            let (host, port) = entry.rsplit_once(':')?;
            if host.contains(':') {
                return None; // bare IPv6 needs brackets
            }
            (host, port)
        }
    };
    let port = port.parse::<u16>().ok().filter(|&p| p > 0)?;
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    if host.is_empty() || host.len() > 253 || !host.chars().all(valid) {
        return None;
    }
    Some((normalise(host), port))
}

fn normalise(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(host: &str, port: u16) -> DbSecret {
        let text = format!(r#"{{"engine":"postgres","host":"{host}","port":{port},"username":"u","password":"p"}}"#);
        DbSecret::parse(&text).expect("valid")
    }

    #[test]
    fn unset_means_no_pin_and_entries_are_host_port() {
        assert_eq!(Endpoints::from_setting("DB_ENDPOINTS", None), Ok(None));
        assert_eq!(Endpoints::from_setting("DB_ENDPOINTS", Some("  ")), Ok(None));
        let e = Endpoints::from_setting("DB_ENDPOINTS", Some("db.example.com:5432, [::1]:6432,10.0.0.5:5432"))
            .expect("valid")
            .expect("set");
        assert!(e.allows("DB.Example.com.", 5432));
        assert!(!e.allows("db.example.com", 5433));
        assert!(e.allows("::1", 6432));
        assert!(!e.allows("evil.example.com", 5432));
        assert_eq!(e.primary(), ("db.example.com", 5432));
        assert_eq!(e.to_string(), "db.example.com:5432,[::1]:6432,10.0.0.5:5432");
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in ["db.example.com", "db:0", "db:99999", ":5432", "::1:5432", "a b:1", "db:5432,x"] {
            let err = Endpoints::from_setting("APP_DB_ENDPOINTS", Some(bad)).expect_err(bad);
            assert_eq!(err.setting, "APP_DB_ENDPOINTS");
            assert!(err.to_string().starts_with("APP_DB_ENDPOINTS: "), "{err}");
        }
    }

    #[test]
    fn a_secret_naming_another_server_is_refused_with_both_named() {
        let e = Endpoints::from_setting("DB_ENDPOINTS", Some("db:5432")).expect("valid").expect("set");
        assert_eq!(e.check(&secret("db", 5432)), Ok(()));
        let refused = e.check(&secret("attacker.example", 5432)).expect_err("refused");
        assert_eq!(
            refused.to_string(),
            "attacker.example:5432 is not among the database endpoints DB_ENDPOINTS allows (db:5432)"
        );
    }
}
