//! Where secret versions come from: Secrets Manager in production, a fake in unit tests.
//!
//! Two operations only, the two the CDK grants on this one secret:
//! - `DescribeSecret`: the cheap change check. Its `VersionIdsToStages` says which
//!   version carries AWSCURRENT / AWSPENDING / AWSPREVIOUS, without any secret value.
//! - `GetSecretValue` naming a `VersionId` (what `DescribeSecret` just described: a label
//!   may move between the two calls, an id never does) or, at startup, a `VersionStage`
//!   (never neither: moto can answer a stale version without one). The answer carries its
//!   `VersionId`; a version's value never changes, so callers cache by that id.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

use crate::metrics::Metrics;
use db_secret::{AwsErrorKind, DbSecret, SecretError, stages};

/// The staging labels the app cares about, in the order it trusts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Current,
    Pending,
    Previous,
}

impl Stage {
    pub const FALLBACK_ORDER: [Stage; 3] = [Stage::Current, Stage::Pending, Stage::Previous];

    pub fn label(self) -> &'static str {
        match self {
            Stage::Current => stages::CURRENT,
            Stage::Pending => stages::PENDING,
            Stage::Previous => stages::PREVIOUS,
        }
    }
}

/// `VersionIdsToStages` from DescribeSecret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stages {
    versions: HashMap<String, Vec<String>>,
}

impl Stages {
    pub fn new(versions: HashMap<String, Vec<String>>) -> Self {
        Self { versions }
    }

    /// The version that carries `stage`, if any.
    pub fn version_with(&self, stage: Stage) -> Option<&str> {
        self.versions.iter().find(|(_, stages)| stages.iter().any(|s| s == stage.label())).map(|(id, _)| id.as_str())
    }

    pub fn contains_version(&self, version_id: &str) -> bool {
        self.versions.contains_key(version_id)
    }
}

/// One secret version: its id and its parsed value.
#[derive(Debug, Clone)]
pub struct SecretVersion {
    pub version_id: String,
    pub secret: Arc<DbSecret>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    #[error("secret {secret_id} not found (ResourceNotFoundException)")]
    NotFound { secret_id: String },
    #[error("access denied calling {operation} on secret {secret_id}; the role needs secretsmanager:{operation} on it")]
    AccessDenied { operation: &'static str, secret_id: String },
    #[error("Secrets Manager throttled {operation}")]
    Throttled { operation: &'static str },
    #[error("Secrets Manager unreachable during {operation}: {detail}")]
    Unavailable { operation: &'static str, detail: String },
    #[error("secret {secret_id} has no version labelled {stage}")]
    NoSuchStage { secret_id: String, stage: &'static str },
    #[error("secret {secret_id} has no version {version_id}")]
    NoSuchVersion { secret_id: String, version_id: String },
    #[error("secret {secret_id} version {version_id}: {source}")]
    Format { secret_id: String, version_id: String, source: SecretError },
    #[error("{operation} on secret {secret_id} failed: {code}")]
    Other { operation: &'static str, secret_id: String, code: String },
}

impl SourceError {
    /// Worth retrying later without any change on our side. The single place that
    /// decides this for Secrets Manager errors.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Throttled { .. } | Self::Unavailable { .. })
    }
}

/// A read-only view of one secret.
pub trait SecretSource: Send + Sync + 'static {
    fn describe(&self) -> impl Future<Output = Result<Stages, SourceError>> + Send;
    fn get(&self, stage: Stage) -> impl Future<Output = Result<SecretVersion, SourceError>> + Send;
    /// The version `version_id`; `NoSuchVersion` when it is gone (or still a value-less
    /// placeholder).
    fn get_version(&self, version_id: &str) -> impl Future<Output = Result<SecretVersion, SourceError>> + Send;
    fn secret_id(&self) -> &str;
}

/// Secrets Manager through the AWS SDK. Every call is counted in the metrics.
#[derive(Debug, Clone)]
pub struct AwsSecretSource {
    client: Client,
    secret_id: String,
    metrics: Arc<Metrics>,
}

impl AwsSecretSource {
    pub fn new(client: Client, secret_id: String, metrics: Arc<Metrics>) -> Self {
        Self { client, secret_id, metrics }
    }

    fn map_err<E, R>(&self, operation: &'static str, err: SdkError<E, R>) -> SourceError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + HttpStatus,
    {
        let status = err.raw_response().map(HttpStatus::status_code);
        match &err {
            SdkError::ServiceError(service) => {
                let code = service.err().code().unwrap_or_default();
                let shown =
                    || if code.is_empty() { format!("HTTP {}", status.unwrap_or_default()) } else { code.to_owned() };
                match AwsErrorKind::of(code, status) {
                    AwsErrorKind::NotFound => SourceError::NotFound { secret_id: self.secret_id.clone() },
                    AwsErrorKind::AccessDenied => {
                        SourceError::AccessDenied { operation, secret_id: self.secret_id.clone() }
                    }
                    AwsErrorKind::Throttled => SourceError::Throttled { operation },
                    AwsErrorKind::Unavailable => SourceError::Unavailable { operation, detail: shown() },
                    AwsErrorKind::Other => {
                        SourceError::Other { operation, secret_id: self.secret_id.clone(), code: shown() }
                    }
                }
            }
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
                SourceError::Unavailable { operation, detail: error_chain(&err) }
            }
            _ => SourceError::Other { operation, secret_id: self.secret_id.clone(), code: error_chain(&err) },
        }
    }
}

impl AwsSecretSource {
    async fn fetch(
        &self,
        request: aws_sdk_secretsmanager::operation::get_secret_value::builders::GetSecretValueFluentBuilder,
    ) -> Result<SecretVersion, SourceError> {
        const OP: &str = "GetSecretValue";
        let result = request.send().await;
        self.metrics.record_secretsmanager_call(OP, result.is_ok());
        let out = result.map_err(|e| self.map_err(OP, e))?;
        let version_id = out.version_id().unwrap_or_default().to_owned();
        let format_err =
            |source| SourceError::Format { secret_id: self.secret_id.clone(), version_id: version_id.clone(), source };
        let text = out.secret_string().ok_or_else(|| format_err(SecretError::NoSecretString))?;
        let secret = DbSecret::parse(text).map_err(format_err)?;
        Ok(SecretVersion { version_id, secret: Arc::new(secret) })
    }
}

/// `SdkError`'s `Display` is terse ("dispatch failure"); the cause chain says what
/// actually happened (connection refused, timeout, TLS). It never holds a secret value:
/// request bodies are not part of SDK error messages.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        s.push_str(": ");
        s.push_str(&e.to_string());
        source = e.source();
    }
    s
}

/// The HTTP status of a raw SDK response (a small seam so `map_err` stays generic).
pub trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_secretsmanager::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

impl SecretSource for AwsSecretSource {
    #[tracing::instrument(skip_all, fields(secret_id = %self.secret_id))]
    async fn describe(&self) -> Result<Stages, SourceError> {
        const OP: &str = "DescribeSecret";
        let result = self.client.describe_secret().secret_id(&self.secret_id).send().await;
        self.metrics.record_secretsmanager_call(OP, result.is_ok());
        let out = result.map_err(|e| self.map_err(OP, e))?;
        Ok(Stages::new(out.version_ids_to_stages().cloned().unwrap_or_default()))
    }

    #[tracing::instrument(skip_all, fields(secret_id = %self.secret_id, stage = stage.label()))]
    async fn get(&self, stage: Stage) -> Result<SecretVersion, SourceError> {
        let request = self.client.get_secret_value().secret_id(&self.secret_id).version_stage(stage.label());
        self.fetch(request).await.map_err(|err| match err {
            // Asking for a stage nobody carries is answered with ResourceNotFound.
            SourceError::NotFound { .. } if stage != Stage::Current => {
                SourceError::NoSuchStage { secret_id: self.secret_id.clone(), stage: stage.label() }
            }
            other => other,
        })
    }

    #[tracing::instrument(skip_all, fields(secret_id = %self.secret_id, version_id))]
    async fn get_version(&self, version_id: &str) -> Result<SecretVersion, SourceError> {
        let request = self.client.get_secret_value().secret_id(&self.secret_id).version_id(version_id);
        self.fetch(request).await.map_err(|err| match err {
            SourceError::NotFound { .. } => {
                SourceError::NoSuchVersion { secret_id: self.secret_id.clone(), version_id: version_id.to_owned() }
            }
            other => other,
        })
    }

    fn secret_id(&self) -> &str {
        &self.secret_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_version_carrying_a_stage() {
        let stages = Stages::new(HashMap::from([
            ("v1".to_owned(), vec!["AWSPREVIOUS".to_owned()]),
            ("v2".to_owned(), vec!["AWSCURRENT".to_owned(), "custom".to_owned()]),
            ("v3".to_owned(), vec!["AWSPENDING".to_owned()]),
        ]));
        assert_eq!(stages.version_with(Stage::Current), Some("v2"));
        assert_eq!(stages.version_with(Stage::Pending), Some("v3"));
        assert_eq!(stages.version_with(Stage::Previous), Some("v1"));
        assert!(Stages::default().version_with(Stage::Current).is_none());
    }

    #[test]
    fn only_throttling_and_outages_are_transient() {
        assert!(SourceError::Throttled { operation: "DescribeSecret" }.is_transient());
        assert!(SourceError::Unavailable { operation: "DescribeSecret", detail: "x".into() }.is_transient());
        assert!(!SourceError::NotFound { secret_id: "s".into() }.is_transient());
        assert!(!SourceError::AccessDenied { operation: "GetSecretValue", secret_id: "s".into() }.is_transient());
    }
}
