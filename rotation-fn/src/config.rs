//! The function's configuration: environment variables, read and validated
//! once at start. Secrets are never configuration.

use std::path::PathBuf;

use crate::password::{DEFAULT_EXCLUDE, DEFAULT_LENGTH, PasswordPolicy, PolicyError};
use crate::strategy::StrategyKind;

#[derive(Debug, Clone)]
pub struct Config {
    /// `ROTATION_STRATEGY`; when unset, a secret with `masterarn` rotates
    /// alternating users and one without rotates a single user.
    pub strategy: Option<StrategyKind>,
    /// `PASSWORD_LENGTH`, `EXCLUDE_CHARACTERS`.
    pub password: PasswordPolicy,
    /// `DB_CA_BUNDLE`: PEM file of CAs trusted for the database's certificate,
    /// in addition to the platform's roots.
    pub ca_bundle: Option<PathBuf>,
    /// `DB_TLS=disable`: plain text to every database. Local development only.
    pub tls_disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("ROTATION_STRATEGY must be `single-user` or `alternating-users`")]
    Strategy,
    #[error(transparent)]
    Password(#[from] PolicyError),
    #[error("DB_CA_BUNDLE {0} is not a readable PEM file")]
    CaBundle(String),
    #[error("DB_TLS must be `verify-full` or `disable`")]
    Tls,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let set = |key: &str| var(key).filter(|v| !v.trim().is_empty());
        let strategy = match set("ROTATION_STRATEGY").as_deref().map(str::trim) {
            None => None,
            Some("single-user") => Some(StrategyKind::SingleUser),
            Some("alternating-users") => Some(StrategyKind::AlternatingUsers),
            Some(_) => return Err(ConfigError::Strategy),
        };
        let length = match set("PASSWORD_LENGTH") {
            None => DEFAULT_LENGTH,
            Some(v) => v.trim().parse().map_err(|_| PolicyError::Length)?,
        };
        // An empty EXCLUDE_CHARACTERS means "exclude nothing", so read it raw.
        let exclude = var("EXCLUDE_CHARACTERS").unwrap_or_else(|| DEFAULT_EXCLUDE.to_owned());
        let password = PasswordPolicy::new(length, &exclude)?;
        let ca_bundle = match set("DB_CA_BUNDLE") {
            None => None,
            Some(path) => {
                let pem = std::fs::read_to_string(&path).map_err(|_| ConfigError::CaBundle(path.clone()))?;
                if !pem.contains("-----BEGIN CERTIFICATE-----") {
                    return Err(ConfigError::CaBundle(path));
                }
                Some(PathBuf::from(path))
            }
        };
        let tls_disabled = match set("DB_TLS").as_deref().map(str::trim) {
            None | Some("verify-full") => false,
            Some("disable") => true,
            Some(_) => return Err(ConfigError::Tls),
        };
        Ok(Self { strategy, password, ca_bundle, tls_disabled })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        Config::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = config(&[]).expect("valid");
        assert_eq!(c.strategy, None);
        assert_eq!(c.password, PasswordPolicy::default());
        assert_eq!(c.ca_bundle, None);
        assert!(!c.tls_disabled);
    }

    #[test]
    fn explicit_values() {
        let c = config(&[("ROTATION_STRATEGY", "alternating-users"), ("PASSWORD_LENGTH", "48"), ("DB_TLS", "disable")])
            .expect("valid");
        assert_eq!(c.strategy, Some(StrategyKind::AlternatingUsers));
        assert_eq!(c.password.length(), 48);
        assert!(c.tls_disabled);
    }

    #[test]
    fn invalid_values_are_named() {
        assert_eq!(config(&[("ROTATION_STRATEGY", "multi")]).err(), Some(ConfigError::Strategy));
        assert_eq!(config(&[("PASSWORD_LENGTH", "abc")]).err(), Some(ConfigError::Password(PolicyError::Length)));
        assert_eq!(config(&[("DB_TLS", "prefer")]).err(), Some(ConfigError::Tls));
        assert_eq!(
            config(&[("DB_CA_BUNDLE", "/nonexistent/ca.pem")]).err(),
            Some(ConfigError::CaBundle("/nonexistent/ca.pem".into()))
        );
    }
}
