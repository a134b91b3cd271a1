//! The four steps, and what they share: reading and validating versions.

pub mod create;
pub mod finish;
pub mod set;
pub mod test;

use crate::config::Config;
use crate::db::Connector;
use crate::deadline::Deadline;
use crate::error::{Credential, RotationError};
use crate::event::RotationEvent;
use crate::secret::DbSecret;
use crate::stages::{CURRENT, PENDING, PREVIOUS};
use crate::store::SecretStore;

/// What a step did, for the log line and the invocation's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The token is already AWSCURRENT: the rotation finished earlier.
    AlreadyCurrent,
    Created,
    /// The pending version already had a value (a retry, or a concurrent call).
    AlreadyCreated,
    PasswordSet,
    /// The pending credentials already log in (a retry after setSecret).
    AlreadySet,
    Tested,
    Finished,
}

/// Everything a step needs; built once per invocation after the stage guard.
#[derive(Debug)]
pub struct StepContext<'a> {
    pub store: &'a SecretStore,
    pub connector: &'a Connector,
    pub config: &'a Config,
    pub event: &'a RotationEvent,
    /// The secret's full ARN (the event may name it by ARN or name).
    pub arn: String,
    /// The version that holds AWSCURRENT when the step starts.
    pub current_version: String,
    pub deadline: Deadline,
}

impl StepContext<'_> {
    /// AWSCURRENT, validated. It always exists on a secret being rotated.
    pub async fn current(&self) -> Result<DbSecret, RotationError> {
        let version = self.current_version.clone();
        self.read(&self.arn.clone(), CURRENT, Some(&version), Credential::Current).await?.ok_or_else(|| {
            RotationError::MissingVersion { arn: self.arn.clone(), credential: Credential::Current, hint: "" }
        })
    }

    /// The AWSPENDING version this rotation wrote in createSecret.
    pub async fn pending(&self) -> Result<DbSecret, RotationError> {
        let token = self.event.token.clone();
        self.read(&self.arn.clone(), PENDING, Some(&token), Credential::Pending).await?.ok_or_else(|| {
            RotationError::MissingVersion {
                arn: self.arn.clone(),
                credential: Credential::Pending,
                hint: " with a value for this token: createSecret has not completed",
            }
        })
    }

    /// AWSPREVIOUS, if the secret has been rotated before.
    pub async fn previous(&self) -> Result<Option<DbSecret>, RotationError> {
        self.read(&self.arn.clone(), PREVIOUS, None, Credential::Previous).await
    }

    /// The master secret's AWSCURRENT (alternating users).
    pub async fn master(&self, master_arn: &str) -> Result<DbSecret, RotationError> {
        self.read(master_arn, CURRENT, None, Credential::Master).await?.ok_or_else(|| RotationError::MissingVersion {
            arn: master_arn.to_owned(),
            credential: Credential::Master,
            hint: "",
        })
    }

    async fn read(
        &self,
        secret_id: &str,
        stage: &str,
        version_id: Option<&str>,
        credential: Credential,
    ) -> Result<Option<DbSecret>, RotationError> {
        let Some(version) = self.store.get(secret_id, stage, version_id, &self.deadline).await? else {
            return Ok(None);
        };
        let invalid = |source| RotationError::InvalidSecret {
            arn: secret_id.to_owned(),
            credential,
            version: version.id.clone(),
            source,
        };
        let Some(value) = &version.value else {
            return Err(invalid(crate::secret::SecretError::NoSecretString));
        };
        DbSecret::parse(secrecy::ExposeSecret::expose_secret(value)).map(Some).map_err(invalid)
    }

    pub fn inconsistent(&self, detail: String) -> RotationError {
        RotationError::Inconsistent { arn: self.arn.clone(), detail }
    }
}
