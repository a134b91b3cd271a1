//! Typed, actionable errors. An error's Display text is public: it reaches
//! CloudWatch and Secrets Manager's rotation failure event, so it names the
//! credential, the host, the SQLSTATE or AWS error code and whether a retry
//! can help, and never carries a password or a secret value.

use std::fmt;

pub(crate) use db_secret::DbFailure;
use db_secret::SecretError;

use crate::deadline::TimedOut;
use crate::event::EventError;
use crate::guard::{self, StageError};

/// Which secret version's credentials were in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Pending,
    Current,
    Previous,
    /// The AWSCURRENT version of the secret named by `masterarn`.
    Master,
    /// A version without a label, left by an abandoned rotation.
    Unlabelled,
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Credential::Pending => guard::PENDING,
            Credential::Current => guard::CURRENT,
            Credential::Previous => guard::PREVIOUS,
            Credential::Master => "master (masterarn AWSCURRENT)",
            Credential::Unlabelled => "unlabelled",
        })
    }
}

/// A failed AWS call: the operation, the error code, whether retrying helps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Secrets Manager {operation} failed: {code}: {message}")]
pub struct AwsFailure {
    pub operation: &'static str,
    pub code: String,
    pub message: String,
    pub transient: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("invalid rotation event: {0}")]
    Event(#[from] EventError),
    #[error("secret {arn}: {source}")]
    Stage { arn: String, source: StageError },
    #[error("secret {arn}, {credential} version {version}: {source}")]
    InvalidSecret { arn: String, credential: Credential, version: String, source: SecretError },
    #[error("secret {arn} has no {credential} version{hint}")]
    MissingVersion { arn: String, credential: Credential, hint: &'static str },
    #[error("secret {arn}, {credential} version {version}: {detail}")]
    Refused { arn: String, credential: Credential, version: String, detail: String },
    #[error("secret {arn}: {detail}")]
    Inconsistent { arn: String, detail: String },
    #[error(
        "secret {arn}: AWSCURRENT moved from version {expected} to {found} while finishSecret ran \
         (another rotation or an operator); the retry re-reads the stages"
    )]
    CurrentMoved { arn: String, expected: String, found: String },
    #[error(
        "AWSCURRENT user {user:?} on {host}:{port} does not log in ({failure}); the master secret is only used on \
         behalf of a login that works, so nothing was changed"
    )]
    UnverifiedCurrent { user: String, host: String, port: u16, failure: DbFailure },
    #[error("{credential} user {user:?} on {host}:{port}: {failure}")]
    Database { credential: Credential, user: String, host: String, port: u16, failure: DbFailure },
    #[error(
        "no stored credential can log in as {user:?} on {host}:{port} to set the new password: \
         AWSCURRENT: {current}; {others}"
    )]
    NoWorkingLogin { user: String, host: String, port: u16, current: DbFailure, others: String },
    #[error(
        "user {user:?} still has {sessions} session(s) and RETIRING_LOGIN_IN_USE=fail: {clients}; its password was \
         not changed (Secrets Manager retries the rotation; move those clients to AWSCURRENT, end their sessions, \
         or set RETIRING_LOGIN_IN_USE=proceed)"
    )]
    LoginInUse { user: String, sessions: usize, clients: String },
    #[error(
        "emergency rotation stopped in rotation {rotation} (version {version}): {source}; the version stays \
         AWSPENDING: resume it with aws secretsmanager rotate-secret --secret-id <secret> --client-request-token \
         {version}, then invoke the emergency rotation again"
    )]
    EmergencyStopped { rotation: usize, version: String, source: Box<RotationError> },
    #[error(transparent)]
    Aws(#[from] AwsFailure),
    #[error(transparent)]
    Timeout(#[from] TimedOut),
    #[error("internal error: {0}")]
    Internal(String),
}

impl RotationError {
    /// Whether Secrets Manager's retry of the rotation (same token, later) can
    /// succeed without an operator fixing something first.
    pub fn is_transient(&self) -> bool {
        match self {
            RotationError::Database { failure, .. } => failure.is_transient(),
            RotationError::NoWorkingLogin { current, .. } => current.is_transient(),
            RotationError::UnverifiedCurrent { failure, .. } => failure.is_transient(),
            RotationError::CurrentMoved { .. } | RotationError::LoginInUse { .. } => true,
            RotationError::EmergencyStopped { source, .. } => source.is_transient(),
            RotationError::Aws(aws) => aws.transient,
            RotationError::Timeout(_) => true,
            _ => false,
        }
    }

    /// A stable name for the kind of failure: Lambda's `errorType`.
    pub fn kind(&self) -> &'static str {
        match self {
            RotationError::Event(_) => "InvalidEvent",
            RotationError::Stage { source: StageError::RotationDisabled, .. } => "RotationDisabled",
            RotationError::Stage { source: StageError::RotationInProgress(_), .. } => "RotationInProgress",
            RotationError::EmergencyStopped { source, .. } => source.kind(),
            RotationError::Stage { .. } | RotationError::CurrentMoved { .. } => "VersionStageMismatch",
            RotationError::InvalidSecret { .. } | RotationError::Refused { .. } => "InvalidSecret",
            RotationError::MissingVersion { .. } => "MissingSecretVersion",
            RotationError::LoginInUse { .. } => "LoginStillInUse",
            RotationError::Inconsistent { .. } => "InconsistentSecret",
            RotationError::Database { failure: DbFailure::Auth(_), .. }
            | RotationError::NoWorkingLogin { .. }
            | RotationError::UnverifiedCurrent { failure: DbFailure::Auth(_), .. } => "DatabaseAuthenticationFailed",
            RotationError::Database { failure: DbFailure::AuthMethodRefused(_), .. }
            | RotationError::UnverifiedCurrent { failure: DbFailure::AuthMethodRefused(_), .. } => {
                "DatabaseAuthMethodRefused"
            }
            RotationError::UnverifiedCurrent { failure: DbFailure::Tls(_), .. } => "DatabaseTlsFailed",
            RotationError::UnverifiedCurrent { failure: DbFailure::Unreachable(_), .. } => "DatabaseUnreachable",
            RotationError::UnverifiedCurrent { .. } => "DatabaseError",
            RotationError::Database { failure: DbFailure::Tls(_), .. } => "DatabaseTlsFailed",
            RotationError::Database { failure: DbFailure::Unreachable(_), .. } => "DatabaseUnreachable",
            RotationError::Database { .. } => "DatabaseError",
            RotationError::Aws(AwsFailure { code, .. }) if code.contains("AccessDenied") => {
                "SecretsManagerAccessDenied"
            }
            RotationError::Aws(_) => "SecretsManagerError",
            RotationError::Timeout(_) => "DeadlineExceeded",
            RotationError::Internal(_) => "InternalError",
        }
    }

    /// The text reported to Lambda and logged: the error and what to do.
    pub fn report(&self) -> String {
        let advice = if self.is_transient() {
            "transient: Secrets Manager's retry of this rotation can succeed"
        } else {
            "permanent: retrying will fail the same way until the cause is fixed"
        };
        format!("{self} ({advice})")
    }
}

impl From<RotationError> for lambda_runtime::Diagnostic {
    fn from(error: RotationError) -> Self {
        lambda_runtime::Diagnostic { error_type: error.kind().to_owned(), error_message: error.report() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_errors_name_credential_host_and_sqlstate() {
        let e = RotationError::Database {
            credential: Credential::Current,
            user: "App-User".into(),
            host: "db.example".into(),
            port: 5432,
            failure: DbFailure::Auth("28P01".into()),
        };
        assert_eq!(
            e.report(),
            "AWSCURRENT user \"App-User\" on db.example:5432: authentication failed (SQLSTATE 28P01) \
             (permanent: retrying will fail the same way until the cause is fixed)"
        );
        assert_eq!(e.kind(), "DatabaseAuthenticationFailed");
    }

    #[test]
    fn transient_classification() {
        let unreachable = DbFailure::Unreachable("connection refused".into());
        assert!(unreachable.is_transient());
        assert!(DbFailure::Server { sqlstate: "57P03".into(), message: String::new() }.is_transient());
        assert!(!DbFailure::Server { sqlstate: "42501".into(), message: String::new() }.is_transient());
        assert!(!DbFailure::Auth("28P01".into()).is_transient());
        let throttled = AwsFailure {
            operation: "GetSecretValue",
            code: "ThrottlingException".into(),
            message: String::new(),
            transient: true,
        };
        assert!(RotationError::from(throttled).report().contains("transient"));
    }

    #[test]
    fn lambda_diagnostic_carries_kind_and_report() {
        let e = RotationError::Stage { arn: "arn:s".into(), source: StageError::RotationDisabled };
        let d = lambda_runtime::Diagnostic::from(e);
        assert_eq!(d.error_type, "RotationDisabled");
        assert!(d.error_message.starts_with("secret arn:s: rotation is not enabled on the secret"));
    }
}
