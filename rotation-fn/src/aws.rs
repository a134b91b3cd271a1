//! [`SecretsApi`] on the AWS SDK: each call, and each failure turned into an
//! [`AwsFailure`] with its code. Secrets Manager's error messages name secrets
//! and versions, never values.

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use secrecy::{ExposeSecret, SecretString};

use crate::error::AwsFailure;
use crate::guard::{CURRENT, PENDING, SecretState};
use crate::store::{ApiFuture, PutOutcome, RotationSchedule, SecretsApi, Version, VersionInfo, is_transient_aws};

#[derive(Debug, Clone)]
pub struct AwsSecrets {
    client: Client,
}

impl AwsSecrets {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl SecretsApi for AwsSecrets {
    fn describe<'a>(&'a self, secret_id: &'a str) -> ApiFuture<'a, SecretState> {
        Box::pin(async move { Ok(self.describe_schedule(secret_id).await?.0) })
    }

    fn describe_schedule<'a>(&'a self, secret_id: &'a str) -> ApiFuture<'a, (SecretState, RotationSchedule)> {
        Box::pin(async move {
            let out = self.client.describe_secret().secret_id(secret_id).send().await;
            let out = out.map_err(|e| failure("DescribeSecret", e))?;
            let state = SecretState {
                arn: out.arn().unwrap_or(secret_id).to_owned(),
                // AWS's own templates proceed when the field is absent: only an
                // explicit `false` means rotation was turned off.
                rotation_enabled: out.rotation_enabled().unwrap_or(true),
                versions: out.version_ids_to_stages().cloned().unwrap_or_default(),
            };
            let rules = out.rotation_rules().and_then(|r| {
                r.schedule_expression()
                    .map(str::to_owned)
                    .or_else(|| r.automatically_after_days().map(|d| format!("every {d} days")))
            });
            let schedule = RotationSchedule {
                enabled: out.rotation_enabled(),
                next_rotation: out.next_rotation_date().map(|d| d.secs()),
                rules,
                lambda_arn: out.rotation_lambda_arn().map(str::to_owned),
            };
            Ok((state, schedule))
        })
    }

    fn get<'a>(
        &'a self,
        secret_id: &'a str,
        stage: Option<&'a str>,
        version_id: Option<&'a str>,
    ) -> ApiFuture<'a, Option<Version>> {
        Box::pin(async move {
            let call = self
                .client
                .get_secret_value()
                .secret_id(secret_id)
                .set_version_stage(stage.map(str::to_owned))
                .set_version_id(version_id.map(str::to_owned))
                .send();
            match call.await {
                Ok(out) => Ok(Some(Version {
                    id: out.version_id().unwrap_or_default().to_owned(),
                    value: out.secret_string().map(|s| SecretString::from(s.to_owned())),
                })),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
                Err(e) => Err(failure("GetSecretValue", e)),
            }
        })
    }

    fn put_pending<'a>(
        &'a self,
        secret_id: &'a str,
        token: &'a str,
        value: &'a SecretString,
        rotation_token: Option<&'a str>,
    ) -> ApiFuture<'a, PutOutcome> {
        Box::pin(async move {
            let call = self
                .client
                .put_secret_value()
                .secret_id(secret_id)
                .client_request_token(token)
                .secret_string(value.expose_secret())
                .version_stages(PENDING)
                .set_rotation_token(rotation_token.map(str::to_owned))
                .send();
            match call.await {
                Ok(_) => Ok(PutOutcome::Written),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_exists_exception()) => {
                    Ok(PutOutcome::AlreadyExists)
                }
                Err(e) => Err(failure("PutSecretValue", e)),
            }
        })
    }

    fn move_current<'a>(&'a self, secret_id: &'a str, to: &'a str, from: &'a str) -> ApiFuture<'a, ()> {
        Box::pin(async move {
            let call = self
                .client
                .update_secret_version_stage()
                .secret_id(secret_id)
                .version_stage(CURRENT)
                .move_to_version_id(to)
                .remove_from_version_id(from)
                .send();
            call.await.map(drop).map_err(|e| failure("UpdateSecretVersionStage", e))
        })
    }

    fn remove_pending<'a>(&'a self, secret_id: &'a str, version: &'a str) -> ApiFuture<'a, ()> {
        Box::pin(async move {
            let call = self
                .client
                .update_secret_version_stage()
                .secret_id(secret_id)
                .version_stage(PENDING)
                .remove_from_version_id(version)
                .send();
            call.await.map(drop).map_err(|e| failure("UpdateSecretVersionStage", e))
        })
    }

    fn list_versions<'a>(&'a self, secret_id: &'a str) -> ApiFuture<'a, Vec<VersionInfo>> {
        Box::pin(async move {
            let mut versions = Vec::new();
            let mut next: Option<String> = None;
            loop {
                let call = self
                    .client
                    .list_secret_version_ids()
                    .secret_id(secret_id)
                    .include_deprecated(true)
                    .set_next_token(next.take())
                    .send();
                let out = call.await.map_err(|e| failure("ListSecretVersionIds", e))?;
                versions.extend(out.versions().iter().map(|v| VersionInfo {
                    id: v.version_id().unwrap_or_default().to_owned(),
                    stages: v.version_stages().to_vec(),
                    created: v.created_date().map_or(0, |d| d.secs()),
                }));
                match out.next_token() {
                    Some(token) if !token.is_empty() => next = Some(token.to_owned()),
                    _ => return Ok(versions),
                }
            }
        })
    }
}

/// Turns an SDK error into a code and message an operator can act on.
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
