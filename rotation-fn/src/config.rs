//! The function's configuration: environment variables, read and validated
//! once at start. Secrets are never configuration; the strategy and the TLS
//! floor are, because whoever can write a secret must not be able to choose
//! them.

use crate::db_config::{DbConfig, DbConfigError};
use crate::evidence::InUsePolicy;
use crate::password::{DEFAULT_EXCLUDE, DEFAULT_LENGTH, PasswordPolicy, PolicyError};
use crate::strategy::Strategy;

/// The rotation function's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `ROTATION_STRATEGY`, required.
    pub strategy: Strategy,
    /// `PASSWORD_LENGTH`, `EXCLUDE_CHARACTERS`.
    pub password: PasswordPolicy,
    pub db: DbConfig,
    /// `RETIRING_LOGIN_IN_USE`: `proceed` (default) or `fail`.
    pub in_use: InUsePolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "ROTATION_STRATEGY must be set to `single-user` or `alternating-users`: the operator chooses the strategy, \
         the secret's contents never do"
    )]
    Strategy,
    #[error("RETIRING_LOGIN_IN_USE must be `proceed` (the default) or `fail`")]
    InUse,
    #[error(transparent)]
    Password(#[from] PolicyError),
    #[error(transparent)]
    Db(#[from] DbConfigError),
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let set = |key: &str| var(key).filter(|v| !v.trim().is_empty());
        let strategy = match set("ROTATION_STRATEGY").as_deref().map(str::trim) {
            Some("single-user") => Strategy::SingleUser,
            Some("alternating-users") => Strategy::AlternatingUsers,
            _ => return Err(ConfigError::Strategy),
        };
        let length = match set("PASSWORD_LENGTH") {
            None => DEFAULT_LENGTH,
            Some(v) => v.trim().parse().map_err(|_| PolicyError::Length)?,
        };
        // An empty EXCLUDE_CHARACTERS means "exclude nothing", so read it raw.
        let exclude = var("EXCLUDE_CHARACTERS").unwrap_or_else(|| DEFAULT_EXCLUDE.to_owned());
        let password = PasswordPolicy::new(length, &exclude)?;
        let in_use = match set("RETIRING_LOGIN_IN_USE") {
            None => InUsePolicy::default(),
            Some(v) => InUsePolicy::parse(&v).ok_or(ConfigError::InUse)?,
        };
        Ok(Self { strategy, password, db: DbConfig::from_lookup(var)?, in_use })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use db_secret::{EndpointsError, TlsFloor, TlsSettingError};

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        Config::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn the_strategy_is_required() {
        assert_eq!(config(&[]).err(), Some(ConfigError::Strategy));
        assert_eq!(config(&[("ROTATION_STRATEGY", "multi")]).err(), Some(ConfigError::Strategy));
        assert!(ConfigError::Strategy.to_string().contains("ROTATION_STRATEGY"));
    }

    #[test]
    fn defaults() {
        let c = config(&[("ROTATION_STRATEGY", "single-user")]).expect("valid");
        assert_eq!(c.strategy, Strategy::SingleUser);
        assert_eq!(c.password, PasswordPolicy::default());
        assert_eq!(c.db.tls, TlsFloor::verify_full("DB_TLS"));
        assert_eq!(c.in_use, InUsePolicy::Proceed);
    }

    #[test]
    fn explicit_values() {
        let c = config(&[
            ("ROTATION_STRATEGY", "alternating-users"),
            ("PASSWORD_LENGTH", "48"),
            ("DB_TLS", "allow-plaintext"),
            ("RETIRING_LOGIN_IN_USE", "fail"),
        ])
        .expect("valid");
        assert_eq!(c.strategy, Strategy::AlternatingUsers);
        assert_eq!(c.password.length(), 48);
        assert_eq!(c.db.tls.to_string(), "DB_TLS=allow-plaintext");
        assert_eq!(c.in_use, InUsePolicy::Fail);
    }

    #[test]
    fn invalid_values_are_named() {
        let single = ("ROTATION_STRATEGY", "single-user");
        assert_eq!(
            config(&[single, ("PASSWORD_LENGTH", "abc")]).err(),
            Some(ConfigError::Password(PolicyError::Length))
        );
        assert_eq!(config(&[single, ("RETIRING_LOGIN_IN_USE", "wait")]).err(), Some(ConfigError::InUse));
        assert_eq!(
            config(&[single, ("DB_TLS", "prefer")]).err(),
            Some(ConfigError::Db(DbConfigError::Tls(TlsSettingError { setting: "DB_TLS" })))
        );
        assert!(matches!(
            config(&[single, ("DB_ENDPOINTS", "db.example.com")]).err(),
            Some(ConfigError::Db(DbConfigError::Endpoints(EndpointsError { setting: "DB_ENDPOINTS", .. })))
        ));
        assert_eq!(
            config(&[single, ("DB_CA_BUNDLE", "/nonexistent/ca.pem")]).err(),
            Some(ConfigError::Db(DbConfigError::CaBundleUnreadable("/nonexistent/ca.pem".into())))
        );
    }
}
