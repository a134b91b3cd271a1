//! The secret's JSON payload as a domain type.
//!
//! A secret is validated completely when it is read, before anything is written,
//! so a malformed secret fails the step with a precise message and leaves no
//! half-written version behind. Error messages name keys and expected types,
//! never values: a value in the wrong key may well be a password.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

/// PostgreSQL truncates identifiers at NAMEDATALEN - 1 = 63 bytes; a longer
/// name would silently address a different role.
pub const MAX_IDENTIFIER_BYTES: usize = 63;
/// Suffix of the second user in the alternating-users strategy (the same one
/// AWS's templates use, so existing secrets keep working).
pub const CLONE_SUFFIX: &str = "_clone";

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

/// Whether connections to this database use verified TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// Verify the server certificate and host name (the default).
    VerifyFull,
    /// Plain text, only because the secret says `"ssl": false`.
    Disabled,
}

/// The credentials and connection details held by one secret version.
#[derive(Clone)]
pub struct DbSecret {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub dbname: String,
    pub master_arn: Option<String>,
    pub tls: Tls,
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
            Some(Value::String(p)) if !p.is_empty() => SecretString::from(p),
            Some(Value::String(_)) => {
                return Err(SecretError::WrongType { key: "password", expected: "a non-empty string" });
            }
            Some(_) => return Err(SecretError::WrongType { key: "password", expected: "a string" }),
            None => return Err(SecretError::Missing("password")),
        };
        match required_str(&rest, "engine")? {
            "postgres" | "aurora-postgresql" => {}
            _ => return Err(SecretError::UnsupportedEngine),
        }
        let host = required_str(&rest, "host")?.to_owned();
        if host.trim().is_empty() {
            return Err(SecretError::WrongType { key: "host", expected: "a non-empty string" });
        }
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
        let tls = match rest.get("ssl") {
            None | Some(Value::Null) | Some(Value::Bool(true)) => Tls::VerifyFull,
            Some(Value::Bool(false)) => Tls::Disabled,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Tls::VerifyFull,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Tls::Disabled,
            Some(_) => return Err(SecretError::WrongType { key: "ssl", expected: "true or false" }),
        };
        Ok(Self { host, port, username, dbname, master_arn, tls, password, rest })
    }

    pub fn password(&self) -> &SecretString {
        &self.password
    }

    /// The same secret with another username and password: the pending version
    /// built from the current one. Every other key is kept as it was.
    pub fn with_credentials(&self, username: String, password: SecretString) -> Self {
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
}

impl fmt::Debug for DbSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbSecret")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("dbname", &self.dbname)
            .field("master_arn", &self.master_arn)
            .field("tls", &self.tls)
            .field("password", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// The username the next version of an alternating-users secret carries:
/// `name` becomes `name_clone`, `name_clone` becomes `name`.
pub fn alternate_username(current: &str) -> Result<String, SecretError> {
    match current.strip_suffix(CLONE_SUFFIX) {
        Some(base) if !base.is_empty() => Ok(base.to_owned()),
        _ => {
            let clone = format!("{current}{CLONE_SUFFIX}");
            if clone.len() > MAX_IDENTIFIER_BYTES {
                return Err(SecretError::IdentifierTooLong {
                    key: "username",
                    detail: " once `_clone` is appended for alternating users",
                });
            }
            Ok(clone)
        }
    }
}

/// The original user of an alternating pair, whichever of the two `name` is.
pub fn base_username(name: &str) -> &str {
    match name.strip_suffix(CLONE_SUFFIX) {
        Some(base) if !base.is_empty() => base,
        _ => name,
    }
}

fn required_str<'a>(map: &'a Map<String, Value>, key: &'static str) -> Result<&'a str, SecretError> {
    match map.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(Value::Null) | None => Err(SecretError::Missing(key)),
        Some(_) => Err(SecretError::WrongType { key, expected: "a string" }),
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
        assert_eq!(s.tls, Tls::VerifyFull);
        assert_eq!(s.master_arn, None);
        assert_eq!(s.password().expose_secret(), PASSWORD);
    }

    #[test]
    fn accepts_port_as_string_and_ssl_false() {
        let s = DbSecret::parse(&json(r#","port":"6543","ssl":false"#)).expect("valid");
        assert_eq!(s.port, 6543);
        assert_eq!(s.tls, Tls::Disabled);
        let s = DbSecret::parse(&json(r#","ssl":"true""#)).expect("valid");
        assert_eq!(s.tls, Tls::VerifyFull);
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
    fn alternates_between_name_and_clone() {
        assert_eq!(alternate_username("app").expect("ok"), "app_clone");
        assert_eq!(alternate_username("app_clone").expect("ok"), "app");
        assert_eq!(alternate_username("_clone").expect("ok"), "_clone_clone");
        assert_eq!(base_username("app_clone"), "app");
        assert_eq!(base_username("app"), "app");
        assert!(alternate_username(&"u".repeat(57)).is_ok());
        assert!(matches!(alternate_username(&"u".repeat(58)), Err(SecretError::IdentifierTooLong { .. })));
    }
}
