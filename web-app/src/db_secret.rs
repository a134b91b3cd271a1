//! The database secret's JSON payload as a domain type.
//!
//! The password is a [`SecretString`]: `Debug` prints `[REDACTED]`, and the only place it
//! is exposed is [`DbSecret::connect_options`], which hands it to the PostgreSQL driver.
//! Parse errors name the offending *key*, never a value (a misplaced password could sit
//! in any key).

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::config::DbTlsOverride;

#[derive(Debug, Clone)]
pub struct DbSecret {
    pub engine: String,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: SecretString,
    pub dbname: String,
    /// The master secret's ARN (alternating-users strategy); the app never reads it.
    pub masterarn: Option<String>,
    /// `false` = plaintext. Absent or `true` = verified TLS; there is no silent fallback.
    pub ssl: bool,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SecretFormatError {
    #[error("the secret value is not JSON (line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    #[error("the secret value is JSON but not an object")]
    NotAnObject,
    #[error("the secret has no `{0}` key")]
    MissingKey(&'static str),
    #[error("the secret's `{key}` key {problem}")]
    BadValue { key: &'static str, problem: &'static str },
    #[error("the secret's engine is not postgres or aurora-postgresql")]
    WrongEngine,
    #[error("the secret has no SecretString (binary secrets are not supported)")]
    NoSecretString,
}

/// How the app reaches PostgreSQL beyond what the secret says.
#[derive(Debug, Clone)]
pub struct TlsPolicy {
    pub override_: DbTlsOverride,
    /// PEM bytes of the CA bundle from `APP_DB_CA_BUNDLE`, read once at startup.
    pub ca_bundle_pem: Option<Vec<u8>>,
}

impl DbSecret {
    pub fn parse(text: &str) -> Result<Self, SecretFormatError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| SecretFormatError::NotJson { line: e.line(), column: e.column() })?;
        let Value::Object(map) = value else {
            return Err(SecretFormatError::NotAnObject);
        };
        let string = |key: &'static str| -> Result<Option<String>, SecretFormatError> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.is_empty() => Err(SecretFormatError::BadValue { key, problem: "is empty" }),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(SecretFormatError::BadValue { key, problem: "is not a string" }),
            }
        };
        let required = |key: &'static str| string(key)?.ok_or(SecretFormatError::MissingKey(key));

        let engine = required("engine")?;
        // Every engine the rotation function rotates (RDS and Aurora PostgreSQL).
        if !matches!(engine.as_str(), "postgres" | "postgresql" | "aurora-postgresql") {
            return Err(SecretFormatError::WrongEngine);
        }
        let port = match map.get("port") {
            None | Some(Value::Null) => 5432,
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or(SecretFormatError::BadValue { key: "port", problem: "is not a TCP port" })?,
            // The AWS console and some templates store the port as a string.
            Some(Value::String(s)) => s
                .parse::<u16>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(SecretFormatError::BadValue { key: "port", problem: "is not a TCP port" })?,
            Some(_) => {
                return Err(SecretFormatError::BadValue { key: "port", problem: "is not a TCP port" });
            }
        };
        let ssl = match map.get("ssl") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) if s == "true" => true,
            Some(Value::String(s)) if s == "false" => false,
            Some(_) => {
                return Err(SecretFormatError::BadValue { key: "ssl", problem: "is neither true nor false" });
            }
        };
        Ok(DbSecret {
            engine,
            host: required("host")?,
            port,
            username: required("username")?,
            password: SecretString::from(required("password")?),
            dbname: string("dbname")?.unwrap_or_else(|| "postgres".to_owned()),
            masterarn: string("masterarn")?,
            ssl,
        })
    }

    /// Whether two versions hold the same login (user and password).
    pub fn same_login(&self, other: &DbSecret) -> bool {
        self.username == other.username && self.password.expose_secret() == other.password.expose_secret()
    }

    /// Connection options for one new physical connection with these credentials.
    pub fn connect_options(&self, tls: &TlsPolicy) -> PgConnectOptions {
        let mut opts = PgConnectOptions::new_without_pgpass()
            .host(&self.host)
            .port(self.port)
            .username(&self.username)
            .password(self.password.expose_secret())
            .database(&self.dbname)
            .application_name("web-app");
        let plaintext = !self.ssl || tls.override_ == DbTlsOverride::Disable;
        if plaintext {
            opts = opts.ssl_mode(PgSslMode::Disable);
        } else {
            opts = opts.ssl_mode(PgSslMode::VerifyFull);
            if let Some(pem) = &tls.ca_bundle_pem {
                opts = opts.ssl_root_cert_from_pem(pem.clone());
            }
        }
        opts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "s3cr3t-Pa55word-xyz";

    fn full() -> String {
        format!(
            r#"{{"engine":"postgres","host":"db.internal","port":6432,"username":"app","password":"{PASSWORD}","dbname":"notes","masterarn":"arn:aws:secretsmanager:eu-west-1:1:secret:m","ssl":false}}"#
        )
    }

    #[test]
    fn parses_all_keys_and_debug_redacts_the_password() {
        let s = DbSecret::parse(&full()).unwrap();
        assert_eq!((s.host.as_str(), s.port, s.username.as_str()), ("db.internal", 6432, "app"));
        assert_eq!(s.dbname, "notes");
        assert!(!s.ssl);
        assert!(s.masterarn.is_some());
        let debug = format!("{s:?}");
        assert!(!debug.contains(PASSWORD), "{debug}");
        assert!(debug.contains("REDACTED"));
    }

    #[test]
    fn defaults_port_dbname_and_tls() {
        let s = DbSecret::parse(r#"{"engine":"postgres","host":"h","username":"u","password":"p"}"#).unwrap();
        assert_eq!((s.port, s.dbname.as_str(), s.ssl), (5432, "postgres", true));
        let s =
            DbSecret::parse(r#"{"engine":"postgres","host":"h","port":"5433","username":"u","password":"p"}"#).unwrap();
        assert_eq!(s.port, 5433);
    }

    #[test]
    fn aurora_secrets_are_postgres_too() {
        let s = DbSecret::parse(r#"{"engine":"aurora-postgresql","host":"h","username":"u","password":"p"}"#).unwrap();
        assert_eq!(s.engine, "aurora-postgresql");
        let mysql = DbSecret::parse(r#"{"engine":"mysql","host":"h","username":"u","password":"p"}"#);
        assert_eq!(mysql.err(), Some(SecretFormatError::WrongEngine));
    }

    #[test]
    fn errors_name_the_key_and_never_the_value() {
        let cases = [
            (format!("{{\"engine\":\"postgres\",\"password\":\"{PASSWORD}\""), "not JSON"),
            (format!("\"{PASSWORD}\""), "not an object"),
            (format!(r#"{{"engine":"postgres","host":"h","password":"{PASSWORD}"}}"#), "`username`"),
            (r#"{"engine":"postgres","host":"h","username":"u"}"#.to_owned(), "`password`"),
            (
                format!(r#"{{"engine":"postgres","host":"h","username":"u","password":"p","port":"{PASSWORD}"}}"#),
                "`port`",
            ),
            (
                format!(r#"{{"engine":"postgres","host":"h","username":"u","password":"p","ssl":"{PASSWORD}"}}"#),
                "`ssl`",
            ),
            (format!(r#"{{"engine":"mysql","host":"h","username":"u","password":"{PASSWORD}"}}"#), "engine"),
        ];
        for (text, expected) in cases {
            let err = DbSecret::parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should mention {expected}");
            assert!(!err.contains(PASSWORD), "{err}");
        }
    }

    #[test]
    fn tls_follows_the_secret_unless_disabled_by_env() {
        let verified = DbSecret::parse(r#"{"engine":"postgres","host":"h","username":"u","password":"p"}"#).unwrap();
        let follow = TlsPolicy { override_: DbTlsOverride::FollowSecret, ca_bundle_pem: None };
        let disable = TlsPolicy { override_: DbTlsOverride::Disable, ca_bundle_pem: None };
        assert!(matches!(verified.connect_options(&follow).get_ssl_mode(), PgSslMode::VerifyFull));
        assert!(matches!(verified.connect_options(&disable).get_ssl_mode(), PgSslMode::Disable));
        let plain =
            DbSecret::parse(r#"{"engine":"postgres","host":"h","username":"u","password":"p","ssl":false}"#).unwrap();
        assert!(matches!(plain.connect_options(&follow).get_ssl_mode(), PgSslMode::Disable));
    }
}
