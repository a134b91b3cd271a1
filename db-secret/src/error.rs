//! What a PostgreSQL or connection error means to whoever has to act on it.
//!
//! One classification for both binaries: the function turns it into an
//! operator's error message, the web app into retries and metric labels. The
//! texts come from the server or the TLS/IO layer, and a server is input:
//! every text kept here is scrubbed of the secrets this process knows
//! ([`crate::redact`]) first.

use std::io;

use crate::guard::GUARD_SQLSTATE;

fn scrub(text: &str) -> String {
    crate::redact::scrub(text).into_owned()
}

/// SQLSTATEs PostgreSQL uses to refuse a login: `invalid_password` and
/// `invalid_authorization_specification` (unknown role, pg_hba reject).
pub const AUTH_FAILURE_CODES: [&str; 2] = ["28P01", "28000"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbFailure {
    #[error("authentication failed (SQLSTATE {0})")]
    Auth(String),
    /// The login guard would not answer the server's authentication request
    /// (cleartext, MD5, too many SCRAM iterations, …); the text names it.
    #[error("login refused by the client: {0}")]
    AuthMethodRefused(String),
    #[error("server error SQLSTATE {sqlstate}: {message}")]
    Server { sqlstate: String, message: String },
    #[error("TLS failure: {0}")]
    Tls(String),
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Other(String),
}

impl DbFailure {
    /// Sorts a sqlx error.
    pub fn classify(error: &sqlx::Error) -> Self {
        match error {
            sqlx::Error::Database(db) => {
                let sqlstate = db.code().map(|c| c.into_owned()).unwrap_or_else(|| "unknown".to_owned());
                let message = scrub(db.message());
                if AUTH_FAILURE_CODES.contains(&sqlstate.as_str()) {
                    DbFailure::Auth(sqlstate)
                } else if sqlstate == GUARD_SQLSTATE {
                    DbFailure::AuthMethodRefused(message)
                } else {
                    DbFailure::Server { sqlstate, message }
                }
            }
            sqlx::Error::Tls(e) => DbFailure::Tls(scrub(&e.to_string())),
            sqlx::Error::Io(e) => Self::from_io(e),
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => DbFailure::Unreachable(error.to_string()),
            other => DbFailure::Other(scrub(&other.to_string())),
        }
    }

    /// An I/O error while connecting or on a session. rustls reports a failed
    /// handshake (unknown issuer, wrong name, expired) as invalid data on the
    /// stream: that is a TLS failure, not a network one, and not retryable.
    pub fn from_io(error: &io::Error) -> Self {
        let is_tls = error.get_ref().is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
        if is_tls || error.kind() == io::ErrorKind::InvalidData {
            DbFailure::Tls(scrub(&error.to_string()))
        } else {
            DbFailure::Unreachable(scrub(&error.to_string()))
        }
    }

    pub fn is_auth(&self) -> bool {
        matches!(self, DbFailure::Auth(_))
    }

    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            DbFailure::Auth(s) | DbFailure::Server { sqlstate: s, .. } => Some(s),
            _ => None,
        }
    }

    /// Whether the same call could succeed later without anyone changing
    /// anything: network trouble, a server starting up or overloaded.
    pub fn is_transient(&self) -> bool {
        match self {
            DbFailure::Unreachable(_) => true,
            DbFailure::Server { sqlstate, .. } => {
                // 08: connection exception, 53: insufficient resources,
                // 57P01-03: shutdown / cannot connect now, 40001/40P01: retryable.
                sqlstate.starts_with("08")
                    || sqlstate.starts_with("53")
                    || matches!(sqlstate.as_str(), "57P01" | "57P02" | "57P03" | "40001" | "40P01")
            }
            DbFailure::Auth(_) | DbFailure::AuthMethodRefused(_) | DbFailure::Tls(_) | DbFailure::Other(_) => false,
        }
    }

    /// Whether the session this came from is gone: the server terminated it
    /// (an administrator, a restart, a failover: 57P01/57P02), or the
    /// connection broke (reset, broken pipe, closed). A new connection may
    /// well work; this one never will again.
    pub fn is_session_lost(&self) -> bool {
        match self {
            DbFailure::Unreachable(_) => true,
            DbFailure::Server { sqlstate, .. } => {
                sqlstate.starts_with("08") || matches!(sqlstate.as_str(), "57P01" | "57P02" | "57P03")
            }
            _ => false,
        }
    }

    /// A short, bounded label for metrics: the SQLSTATE, or the class.
    pub fn label(&self) -> &str {
        match self {
            DbFailure::Auth(s) | DbFailure::Server { sqlstate: s, .. } => s,
            DbFailure::AuthMethodRefused(_) => "auth-method",
            DbFailure::Tls(_) => "tls",
            DbFailure::Unreachable(_) => "io",
            DbFailure::Other(_) => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_split_into_tls_and_network() {
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer");
        assert_eq!(DbFailure::from_io(&reset), DbFailure::Unreachable("reset by peer".into()));
        let tls = io::Error::other(rustls::Error::General("bad certificate".into()));
        assert!(matches!(DbFailure::from_io(&tls), DbFailure::Tls(_)));
        let invalid = io::Error::new(io::ErrorKind::InvalidData, "invalid peer certificate: UnknownIssuer");
        assert!(matches!(DbFailure::from_io(&invalid), DbFailure::Tls(_)));
        let sqlx_io = sqlx::Error::Io(io::Error::new(io::ErrorKind::BrokenPipe, "broken pipe"));
        assert!(DbFailure::classify(&sqlx_io).is_session_lost());
        assert!(matches!(DbFailure::classify(&sqlx::Error::PoolTimedOut), DbFailure::Unreachable(_)));
    }

    #[test]
    fn transient_and_session_lost() {
        let server = |s: &str| DbFailure::Server { sqlstate: s.into(), message: String::new() };
        assert!(server("57P01").is_session_lost() && server("57P01").is_transient());
        assert!(server("08006").is_session_lost());
        assert!(!server("42501").is_session_lost() && !server("42501").is_transient());
        assert!(!DbFailure::Auth("28P01".into()).is_transient());
        assert!(!DbFailure::Auth("28P01".into()).is_session_lost());
        assert!(!DbFailure::Tls("x".into()).is_transient());
        assert_eq!(server("23505").label(), "23505");
        assert_eq!(DbFailure::Unreachable("x".into()).label(), "io");
        assert_eq!(DbFailure::Auth("28000".into()).sqlstate(), Some("28000"));
    }
}
