//! What the rotation function and the web app both know about the database:
//!
//! - [`secret`]: the secret's JSON format (parse, validate, redact, keep unknown
//!   keys, serialise back in one place);
//! - [`endpoints`]: the database servers the operator allows (`host:port`);
//! - [`tls`]: the operator's TLS floor and the trust roots, loaded once per
//!   process;
//! - [`connect`]: how to open a PostgreSQL session with a secret's credentials
//!   (`TCP_NODELAY`, verified TLS done here, sqlx on top) — one login, or a
//!   pool's endpoint;
//! - the login guard: only SCRAM-SHA-256 (or no password) is answered, with a
//!   bounded iteration count, on every session either binary opens;
//! - [`redact`]: every secret this process knows, scrubbed out of server text;
//! - [`error`]: what a PostgreSQL or connection error means to an operator
//!   (authentication, TLS, unreachable, a session the server closed);
//! - [`aws_error`]: what a Secrets Manager error code means (which ones a
//!   retry cures);
//! - [`stages`]: Secrets Manager's staging labels.
//!
//! One definition per concept: neither binary parses the secret or classifies
//! a database error on its own.

pub mod aws_error;
pub mod connect;
pub mod endpoints;
pub mod error;
mod guard;
pub mod redact;
pub mod secret;
pub mod stages;
pub mod tls;

pub use aws_error::AwsErrorKind;
pub use connect::{Connector, Target};
pub use endpoints::{EndpointRefused, Endpoints, EndpointsError};
pub use error::DbFailure;
pub use guard::{GUARD_SQLSTATE, MAX_SCRAM_ITERATIONS};
pub use secret::{DbSecret, MAX_IDENTIFIER_BYTES, SecretError};
pub use tls::{PlaintextRefused, TlsFloor, TlsMode, TlsSettingError, Trust, TrustError};
