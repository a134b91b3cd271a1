//! The database secret's JSON payload as a domain type, shared by the rotation
//! function and the web app: one parser, one set of defaults, one redaction.
//!
//! A secret is validated completely when it is read, before anything is written,
//! so a malformed secret fails with a precise message and leaves no half-written
//! state behind. Error messages name keys and expected types, never values: a
//! value in the wrong key may well be a password.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

/// PostgreSQL truncates identifiers at NAMEDATALEN - 1 = 63 bytes; a longer
/// name would silently address a different role.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

const DEFAULT_PORT: u16 = 5432;
const DEFAULT_DBNAME: &str = "postgres";

/// What is wrong with a secret's payload. Display names keys, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the secret value is not a JSON object")]
    NotJsonObject,
    #[error("the secret has no SecretString (binary secrets are not supported)")]
    NoSecretString,
    #[error("key `{0}` is missing")]
    Missing(&'static str),
    #[error("key `{key}` must be {expected}")]
    WrongType { key: &'static str, expected: &'static str },
    #[error("key `engine` must be `postgres` or `aurora-postgresql`")]
    UnsupportedEngine,
    #[error("key `{key}` is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES}-byte identifier limit{detail}")]
    IdentifierTooLong { key: &'static str, detail: &'static str },
    #[error("key `{key}` must not be empty or contain a NUL character")]
    InvalidIdentifier { key: &'static str },
}

/// The credentials and connection details held by one secret version.
#[derive(Clone)]
pub struct DbSecret {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub dbname: String,
    pub master_arn: Option<String>,
    /// The secret's `ssl` key: `false` asks for plain text. Whether that is
    /// allowed is the operator's decision ([`crate::TlsFloor`]), never the
    /// secret's alone.
    pub ssl: bool,
    password: SecretString,
    /// Every key of the original JSON except `password`, with its value exactly
    /// as it was (a port given as a string stays a string). Serialising writes
    /// these back, so keys this function does not know survive a rotation.
    rest: Map<String, Value>,
}

impl DbSecret {
    /// Parses and validates a SecretString.
    pub fn parse(secret_string: &str) -> Result<Self, SecretError> {
        // serde_json's error text can quote the input; drop it.
        let value: Value = serde_json::from_str(secret_string).map_err(|_| SecretError::NotJsonObject)?;
        let Value::Object(mut rest) = value else {
            return Err(SecretError::NotJsonObject);
        };
        let password = match rest.remove("password") {
            Some(Value::String(p)) if !p.is_empty() => {
                crate::redact::remember(&p);
                SecretString::from(p)
            }
            Some(Value::String(_)) => {
                return Err(SecretError::WrongType { key: "password", expected: "a non-empty string" });
            }
            Some(_) => return Err(SecretError::WrongType { key: "password", expected: "a string" }),
            None => return Err(SecretError::Missing("password")),
        };
        engine(required_str(&rest, "engine")?)?;
        let host = host(required_str(&rest, "host")?)?;
        let username = identifier(&rest, "username")?;
        let dbname = match rest.get("dbname") {
            None | Some(Value::Null) => DEFAULT_DBNAME.to_owned(),
            Some(_) => identifier(&rest, "dbname")?,
        };
        let port = port(rest.get("port"))?;
        let master_arn = match rest.get("masterarn") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => return Err(SecretError::WrongType { key: "masterarn", expected: "a non-empty string" }),
        };
        let ssl = ssl(rest.get("ssl"))?;
        Ok(Self { host, port, username, dbname, master_arn, ssl, password, rest })
    }

    /// Parses a secret that holds a login (a master's): a full secret, or
    /// only `username` and `password` (what RDS writes for a master user with
    /// `ManageMasterUserPassword`).
    ///
    /// The server is the secret's own `host` (and `port`, 5432 when absent);
    /// a secret without a host is for `server`, which the caller takes from
    /// the operator's configuration, never from another secret: whoever can
    /// write an application secret must not choose where the master logs in.
    /// Without a host and without `server` the secret is refused (`host`
    /// missing). `engine` defaults to `postgres` and `dbname` to `dbname`;
    /// `ssl` is the secret's own (true when absent), never inherited.
    pub fn parse_login_for(
        secret_string: &str,
        server: Option<(&str, u16)>,
        dbname: &str,
    ) -> Result<Self, SecretError> {
        let value: Value = serde_json::from_str(secret_string).map_err(|_| SecretError::NotJsonObject)?;
        let Value::Object(mut map) = value else {
            return Err(SecretError::NotJsonObject);
        };
        let absent = |map: &Map<String, Value>, key: &str| matches!(map.get(key), None | Some(Value::Null));
        if absent(&map, "host") {
            let Some((host, port)) = server else { return Err(SecretError::Missing("host")) };
            if !absent(&map, "port") {
                // A port without a host says nothing about where to go.
                return Err(SecretError::WrongType { key: "port", expected: "absent when `host` is absent" });
            }
            map.insert("host".to_owned(), Value::String(host.to_owned()));
            map.insert("port".to_owned(), Value::from(port));
        }
        for (key, value) in [("engine", Value::String("postgres".into())), ("dbname", Value::String(dbname.into()))] {
            if absent(&map, key) {
                map.insert(key.to_owned(), value);
            }
        }
        Self::parse(&Value::Object(map).to_string())
    }

    pub fn password(&self) -> &SecretString {
        &self.password
    }

    /// The same secret with another username and password: the pending version
    /// built from the current one. Every other key is kept as it was.
    pub fn with_credentials(&self, username: String, password: SecretString) -> Self {
        crate::redact::remember(password.expose_secret());
        let mut next = self.clone();
        next.rest.insert("username".to_owned(), Value::String(username.clone()));
        next.username = username;
        next.password = password;
        next
    }

    /// The single place a secret is turned back into JSON (for PutSecretValue).
    pub fn to_secret_string(&self) -> SecretString {
        let mut map = self.rest.clone();
        map.insert("password".to_owned(), Value::String(self.password.expose_secret().to_owned()));
        SecretString::from(Value::Object(map).to_string())
    }

    /// Whether two versions address the same login on the same server.
    pub fn same_login(&self, other: &Self) -> bool {
        self.username == other.username && self.same_server(other)
    }

    pub fn same_server(&self, other: &Self) -> bool {
        self.host == other.host && self.port == other.port
    }

    /// Whether two versions hold the same user *and* password.
    pub fn same_credentials(&self, other: &Self) -> bool {
        self.username == other.username && self.password.expose_secret() == other.password.expose_secret()
    }
}

impl fmt::Debug for DbSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbSecret")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("dbname", &self.dbname)
            .field("master_arn", &self.master_arn)
            .field("ssl", &self.ssl)
            .field("password", &"[redacted]")
            .finish_non_exhaustive()
    }
}

fn required_str<'a>(map: &'a Map<String, Value>, key: &'static str) -> Result<&'a str, SecretError> {
    match map.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(Value::Null) | None => Err(SecretError::Missing(key)),
        Some(_) => Err(SecretError::WrongType { key, expected: "a string" }),
    }
}

/// Every engine name AWS gives a PostgreSQL secret (RDS, Aurora), and the
/// spelling some tools write.
fn engine(name: &str) -> Result<(), SecretError> {
    match name {
        "postgres" | "postgresql" | "aurora-postgresql" => Ok(()),
        _ => Err(SecretError::UnsupportedEngine),
    }
}

/// A DNS name (at most 253 bytes of letters, digits, `-`, `_` and `.`), an
/// IPv4 address, or an IPv6 address: what a server certificate can name and
/// what never needs quoting anywhere.
fn host(name: &str) -> Result<String, SecretError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    if name.is_empty() || name.len() > 253 || !name.chars().all(allowed) {
        return Err(SecretError::WrongType { key: "host", expected: "a host name or address" });
    }
    Ok(name.to_owned())
}

fn ssl(value: Option<&Value>) -> Result<bool, SecretError> {
    match value {
        None | Some(Value::Null) | Some(Value::Bool(true)) => Ok(true),
        Some(Value::Bool(false)) => Ok(false),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(SecretError::WrongType { key: "ssl", expected: "true or false" }),
    }
}

fn identifier(map: &Map<String, Value>, key: &'static str) -> Result<String, SecretError> {
    let s = required_str(map, key)?;
    if s.is_empty() || s.contains('\0') {
        return Err(SecretError::InvalidIdentifier { key });
    }
    if s.len() > MAX_IDENTIFIER_BYTES {
        return Err(SecretError::IdentifierTooLong { key, detail: "" });
    }
    Ok(s.to_owned())
}

fn port(value: Option<&Value>) -> Result<u16, SecretError> {
    const EXPECTED: &str = "a port number from 1 to 65535";
    let number = match value {
        None | Some(Value::Null) => return Ok(DEFAULT_PORT),
        Some(Value::Number(n)) => n.as_u64(),
        // AWS's own templates store the port as a string in some secrets.
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    number
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&n| n != 0)
        .ok_or(SecretError::WrongType { key: "port", expected: EXPECTED })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "s3cr3t-Pa55word!";

    fn json(extra: &str) -> String {
        format!(r#"{{"engine":"postgres","host":"db.local","username":"app","password":"{PASSWORD}"{extra}}}"#)
    }

    #[test]
    fn parses_with_defaults() {
        let s = DbSecret::parse(&json("")).expect("valid");
        assert_eq!((s.host.as_str(), s.port, s.dbname.as_str()), ("db.local", 5432, "postgres"));
        assert!(s.ssl);
        assert_eq!(s.master_arn, None);
        assert_eq!(s.password().expose_secret(), PASSWORD);
    }

    #[test]
    fn accepts_port_as_string_and_ssl_false() {
        let s = DbSecret::parse(&json(r#","port":"6543","ssl":false"#)).expect("valid");
        assert_eq!(s.port, 6543);
        assert!(!s.ssl);
        let s = DbSecret::parse(&json(r#","ssl":"true""#)).expect("valid");
        assert!(s.ssl);
    }

    #[test]
    fn each_missing_key_is_named() {
        for key in ["engine", "host", "username", "password"] {
            let mut v: Value = serde_json::from_str(&json("")).expect("json");
            v.as_object_mut().expect("object").remove(key);
            let err = DbSecret::parse(&v.to_string()).expect_err("must fail");
            assert_eq!(err, SecretError::Missing(key), "{key}");
        }
    }

    #[test]
    fn malformed_values_are_rejected_without_echoing_them() {
        let cases = [
            (r#","port":"not-a-port""#, "port"),
            (r#","port":70000"#, "port"),
            (r#","port":0"#, "port"),
            (r#","ssl":"maybe""#, "ssl"),
            (r#","masterarn":42"#, "masterarn"),
            (r#","dbname":"""#, "dbname"),
        ];
        for (extra, key) in cases {
            let err = DbSecret::parse(&json(extra)).expect_err(extra);
            let text = err.to_string();
            assert!(text.contains(key), "{text}");
            assert!(!text.contains("not-a-port") && !text.contains("maybe"), "{text}");
        }
        let err = DbSecret::parse(&json("").replace("postgres", "mysql")).expect_err("engine");
        assert_eq!(err, SecretError::UnsupportedEngine);
    }

    #[test]
    fn not_json_error_does_not_quote_the_input() {
        let input = format!("{{\"password\": \"{PASSWORD}\"");
        let err = DbSecret::parse(&input).expect_err("truncated json");
        assert!(!err.to_string().contains(PASSWORD));
        assert_eq!(DbSecret::parse("[1,2]").expect_err("array"), SecretError::NotJsonObject);
    }

    #[test]
    fn username_over_63_bytes_is_rejected() {
        let long = "u".repeat(64);
        let err = DbSecret::parse(&json("").replace("\"app\"", &format!("\"{long}\""))).expect_err("long");
        assert!(matches!(err, SecretError::IdentifierTooLong { key: "username", .. }));
        let ok = "u".repeat(63);
        assert!(DbSecret::parse(&json("").replace("\"app\"", &format!("\"{ok}\""))).is_ok());
    }

    #[test]
    fn debug_is_redacted() {
        let s = DbSecret::parse(&json(r#","apikey":"other""#)).expect("valid");
        let text = format!("{s:?} {s:#?}");
        assert!(!text.contains(PASSWORD), "{text}");
        assert!(text.contains("[redacted]"));
    }

    #[test]
    fn round_trip_keeps_unknown_keys_and_their_form() {
        let s = DbSecret::parse(&json(r#","port":"5433","proxy":{"a":[1,2]},"ssl":false"#)).expect("valid");
        let next = s.with_credentials("app_clone".into(), SecretString::from("NewPassword1!"));
        let out: Value = serde_json::from_str(next.to_secret_string().expose_secret()).expect("json");
        assert_eq!(out["port"], Value::String("5433".into()));
        assert_eq!(out["proxy"]["a"][1], 2);
        assert_eq!(out["ssl"], Value::Bool(false));
        assert_eq!(out["username"], "app_clone");
        assert_eq!(out["password"], "NewPassword1!");
        assert_eq!(out["engine"], "postgres");
    }

    #[test]
    fn a_login_without_a_server_takes_the_operators_never_another_secrets() {
        let rds = r#"{"username":"postgres","password":"Master-Passw0rd"}"#;
        // No server of its own and none from the operator: refused.
        assert_eq!(
            DbSecret::parse_login_for(rds, None, "orders").expect_err("no server"),
            SecretError::Missing("host")
        );
        let master = DbSecret::parse_login_for(rds, Some(("db.local", 6543)), "orders").expect("accepted");
        assert_eq!((master.host.as_str(), master.port, master.dbname.as_str()), ("db.local", 6543, "orders"));
        assert_eq!(master.username, "postgres");
        assert!(master.ssl, "TLS unless the master secret itself says otherwise");
        assert_eq!(master.password().expose_secret(), "Master-Passw0rd");
        // Keys it does carry are its own and still validated; a host without a
        // port means 5432, never the port of another secret.
        let own_host = r#"{"username":"postgres","password":"x","host":"other.local"}"#;
        let own = DbSecret::parse_login_for(own_host, Some(("db.local", 6543)), "orders").expect("valid");
        assert_eq!((own.host.as_str(), own.port), ("other.local", 5432));
        let port_only = r#"{"username":"postgres","password":"x","port":6543}"#;
        assert!(matches!(
            DbSecret::parse_login_for(port_only, Some(("db.local", 6543)), "d"),
            Err(SecretError::WrongType { key: "port", .. })
        ));
        let bad_port = r#"{"username":"postgres","password":"x","host":"h","port":"none"}"#;
        assert!(matches!(
            DbSecret::parse_login_for(bad_port, None, "d"),
            Err(SecretError::WrongType { key: "port", .. })
        ));
        assert_eq!(
            DbSecret::parse_login_for(r#"{"username":"postgres","host":"h"}"#, None, "d").expect_err("no password"),
            SecretError::Missing("password")
        );
    }

    #[test]
    fn engines_and_hosts() {
        for engine in ["postgres", "postgresql", "aurora-postgresql"] {
            assert!(DbSecret::parse(&json("").replace("\"postgres\"", &format!("\"{engine}\""))).is_ok(), "{engine}");
        }
        for host in ["", "  ", "db local", "db\\u0000x", "db';DROP", &"h".repeat(254)] {
            let text = json("").replace("db.local", host);
            assert!(matches!(DbSecret::parse(&text), Err(SecretError::WrongType { key: "host", .. })), "{host:?}");
        }
    }

    #[test]
    fn same_credentials_compares_user_and_password() {
        let a = DbSecret::parse(&json("")).expect("valid");
        let b = a.with_credentials("app".into(), SecretString::from("other"));
        assert!(a.same_login(&b) && !a.same_credentials(&b));
        assert!(a.same_credentials(&a.clone()));
    }
}
