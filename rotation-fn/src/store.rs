//! The four Secrets Manager calls the function makes, each bounded by the
//! deadline and each failure turned into an [`AwsFailure`] with its code.
//!
//! Reads always name the version or stage: moto (and caches in front of
//! Secrets Manager) can answer a stage-less read with a stale version.

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use secrecy::{ExposeSecret, SecretString};
use tracing::instrument;

use crate::deadline::Deadline;
use crate::error::{AwsFailure, RotationError};
use crate::stages::SecretState;

#[derive(Debug, Clone)]
pub struct SecretStore {
    client: Client,
}

/// One version's value. The string is secret; only the id is printable.
#[derive(Debug)]
pub struct Version {
    pub id: String,
    pub value: Option<SecretString>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Written,
    /// The version already holds a value: a concurrent or earlier createSecret
    /// with the same token won the race. Its value stands.
    AlreadyExists,
}

impl SecretStore {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    #[instrument(skip_all, fields(secret = secret_id))]
    pub async fn describe(&self, secret_id: &str, deadline: &Deadline) -> Result<SecretState, RotationError> {
        let call = self.client.describe_secret().secret_id(secret_id).send();
        let out = deadline
            .run(|| "Secrets Manager DescribeSecret".into(), call)
            .await?
            .map_err(|e| failure("DescribeSecret", e))?;
        Ok(SecretState {
            arn: out.arn().unwrap_or(secret_id).to_owned(),
            rotation_enabled: out.rotation_enabled().unwrap_or(false),
            versions: out.version_ids_to_stages().cloned().unwrap_or_default(),
        })
    }

    /// Reads a version by stage (and id, when given). `Ok(None)` when no such
    /// version exists or it has no value yet (the placeholder Secrets Manager
    /// creates for a rotation).
    #[instrument(skip_all, fields(secret = secret_id, stage, version = version_id))]
    pub async fn get(
        &self,
        secret_id: &str,
        stage: &str,
        version_id: Option<&str>,
        deadline: &Deadline,
    ) -> Result<Option<Version>, RotationError> {
        let call = self
            .client
            .get_secret_value()
            .secret_id(secret_id)
            .version_stage(stage)
            .set_version_id(version_id.map(str::to_owned))
            .send();
        match deadline.run(|| format!("Secrets Manager GetSecretValue {stage}"), call).await? {
            Ok(out) => Ok(Some(Version {
                id: out.version_id().unwrap_or_default().to_owned(),
                value: out.secret_string().map(|s| SecretString::from(s.to_owned())),
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
            Err(e) => Err(failure("GetSecretValue", e).into()),
        }
    }

    /// Writes the pending version: id = the rotation's token, label AWSPENDING.
    #[instrument(skip_all, fields(secret = secret_id, version = token))]
    pub async fn put_pending(
        &self,
        secret_id: &str,
        token: &str,
        value: &SecretString,
        rotation_token: Option<&str>,
        deadline: &Deadline,
    ) -> Result<PutOutcome, RotationError> {
        let call = self
            .client
            .put_secret_value()
            .secret_id(secret_id)
            .client_request_token(token)
            .secret_string(value.expose_secret())
            .version_stages(crate::stages::PENDING)
            .set_rotation_token(rotation_token.map(str::to_owned))
            .send();
        match deadline.run(|| "Secrets Manager PutSecretValue".into(), call).await? {
            Ok(_) => Ok(PutOutcome::Written),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_exists_exception()) => {
                Ok(PutOutcome::AlreadyExists)
            }
            Err(e) => Err(failure("PutSecretValue", e).into()),
        }
    }

    /// Moves AWSCURRENT from `from` to `to`; Secrets Manager then labels
    /// `from` AWSPREVIOUS.
    #[instrument(skip_all, fields(secret = secret_id, from, to))]
    pub async fn promote(
        &self,
        secret_id: &str,
        to: &str,
        from: &str,
        deadline: &Deadline,
    ) -> Result<(), RotationError> {
        let call = self
            .client
            .update_secret_version_stage()
            .secret_id(secret_id)
            .version_stage(crate::stages::CURRENT)
            .move_to_version_id(to)
            .remove_from_version_id(from)
            .send();
        deadline
            .run(|| "Secrets Manager UpdateSecretVersionStage".into(), call)
            .await?
            .map(drop)
            .map_err(|e| failure("UpdateSecretVersionStage", e).into())
    }
}

/// Turns an SDK error into a code and message an operator can act on.
/// Secrets Manager's messages name secrets and versions, never values.
fn failure<E>(operation: &'static str, error: SdkError<E, HttpResponse>) -> AwsFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    let (code, message) = match &error {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().map(str::to_owned).unwrap_or_else(|| match status {
                Some(403) => "AccessDenied (HTTP 403)".to_owned(),
                Some(s) => format!("HTTP {s}"),
                None => "unknown".to_owned(),
            });
            (code, e.message().unwrap_or("no message").to_owned())
        }
        SdkError::TimeoutError(_) => ("Timeout".to_owned(), "the request timed out".to_owned()),
        SdkError::DispatchFailure(d) => {
            let kind = if d.is_timeout() { "Timeout" } else { "NetworkError" };
            (kind.to_owned(), aws_smithy_types::error::display::DisplayErrorContext(&error).to_string())
        }
        _ => ("ClientError".to_owned(), aws_smithy_types::error::display::DisplayErrorContext(&error).to_string()),
    };
    let transient = is_transient_aws(&code, status);
    AwsFailure { operation, code, message, transient }
}

/// The one place that decides which AWS failures a retry can cure.
pub fn is_transient_aws(code: &str, status: Option<u16>) -> bool {
    matches!(code, "Timeout" | "NetworkError" | "InternalServiceError" | "RequestTimeout" | "ServiceUnavailable")
        || code.starts_with("Throttling")
        || code == "TooManyRequestsException"
        || status.is_some_and(|s| s >= 500 || s == 429)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes() {
        assert!(is_transient_aws("ThrottlingException", Some(400)));
        assert!(is_transient_aws("NetworkError", None));
        assert!(is_transient_aws("HTTP 503", Some(503)));
        assert!(!is_transient_aws("AccessDeniedException", Some(400)));
        assert!(!is_transient_aws("ResourceNotFoundException", Some(400)));
        assert!(!is_transient_aws("AccessDenied (HTTP 403)", Some(403)));
    }
}
