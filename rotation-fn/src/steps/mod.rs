//! The four steps, and what they share: reading and validating versions,
//! logging in.

pub mod create;
pub mod finish;
pub mod set;
pub mod test;

use db_secret::{Connector, DbSecret, SecretError};
use secrecy::ExposeSecret as _;

use crate::config::Config;
use crate::db::{self, Session};
use crate::deadline::Deadline;
use crate::error::{Credential, RotationError};
use crate::event::RotationEvent;
use crate::stages::{CURRENT, PENDING, PREVIOUS, SecretState};
use crate::store::{SecretStore, Version};

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
    /// What the guard's DescribeSecret said (the ARN, every version's labels).
    pub state: SecretState,
    /// The version that holds AWSCURRENT when the step starts.
    pub current_version: String,
    pub deadline: Deadline,
}

impl StepContext<'_> {
    /// The secret's full ARN (the event may name it by ARN or name).
    pub fn arn(&self) -> &str {
        &self.state.arn
    }

    /// AWSCURRENT, validated. It always exists on a secret being rotated.
    pub async fn current(&self) -> Result<DbSecret, RotationError> {
        let version = self.store.version(self.arn(), Some(CURRENT), &self.current_version, &self.deadline).await?;
        let missing =
            || RotationError::MissingVersion { arn: self.arn().to_owned(), credential: Credential::Current, hint: "" };
        self.parse(Credential::Current, version.ok_or_else(missing)?)
    }

    /// The AWSPENDING version's value, if createSecret has written it.
    pub async fn written_pending(&self) -> Result<Option<DbSecret>, RotationError> {
        match self.store.version(self.arn(), Some(PENDING), &self.event.token, &self.deadline).await? {
            Some(version @ Version { value: Some(_), .. }) => self.parse(Credential::Pending, version).map(Some),
            _ => Ok(None),
        }
    }

    /// The AWSPENDING version this rotation wrote in createSecret.
    pub async fn pending(&self) -> Result<DbSecret, RotationError> {
        self.written_pending().await?.ok_or_else(|| RotationError::MissingVersion {
            arn: self.arn().to_owned(),
            credential: Credential::Pending,
            hint: " with a value for this token: createSecret has not completed",
        })
    }

    /// AWSPREVIOUS, if the secret has been rotated before.
    pub async fn previous(&self) -> Result<Option<DbSecret>, RotationError> {
        let Some(id) = self.state.version_with(PREVIOUS) else { return Ok(None) };
        match self.store.version(self.arn(), Some(PREVIOUS), id, &self.deadline).await? {
            Some(version) => self.parse(Credential::Previous, version).map(Some),
            None => Ok(None),
        }
    }

    /// An unlabelled version of this secret, by id (abandoned-rotation recovery).
    pub async fn unlabelled(&self, version_id: &str) -> Result<Option<DbSecret>, RotationError> {
        let read = self.store.version(self.arn(), None, version_id, &self.deadline);
        match read.await? {
            Some(version) => self.parse(Credential::Unlabelled, version).map(Some),
            None => Ok(None),
        }
    }

    /// The master secret's AWSCURRENT: a full secret, or only a username and
    /// password (an RDS-managed master secret), for the server of `app`.
    pub async fn master(&self, master_arn: &str, app: &DbSecret) -> Result<DbSecret, RotationError> {
        let version = self.store.by_stage(master_arn, CURRENT, &self.deadline).await?.ok_or_else(|| {
            RotationError::MissingVersion { arn: master_arn.to_owned(), credential: Credential::Master, hint: "" }
        })?;
        let invalid = |source| RotationError::InvalidSecret {
            arn: master_arn.to_owned(),
            credential: Credential::Master,
            version: version.id.clone(),
            source,
        };
        let text = version.value.as_ref().ok_or_else(|| invalid(SecretError::NoSecretString))?;
        let master = DbSecret::parse_login_for(text.expose_secret(), app).map_err(invalid)?;
        self.allowed(master_arn, Credential::Master, &version.id, master)
    }

    pub async fn login(&self, secret: &DbSecret, credential: Credential) -> Result<Session, RotationError> {
        db::login(self.connector, secret, credential, &self.deadline).await
    }

    pub fn inconsistent(&self, detail: String) -> RotationError {
        RotationError::Inconsistent { arn: self.arn().to_owned(), detail }
    }

    /// Parses a version of this secret and applies the operator's TLS floor.
    fn parse(&self, credential: Credential, version: Version) -> Result<DbSecret, RotationError> {
        let invalid = |source| RotationError::InvalidSecret {
            arn: self.arn().to_owned(),
            credential,
            version: version.id.clone(),
            source,
        };
        let text = version.value.as_ref().ok_or_else(|| invalid(SecretError::NoSecretString))?;
        let secret = DbSecret::parse(text.expose_secret()).map_err(invalid)?;
        self.allowed(self.arn(), credential, &version.id, secret)
    }

    /// A secret that asks for plain text is refused here, before anything is
    /// written or any login is tried, unless the operator allows it.
    fn allowed(
        &self,
        arn: &str,
        credential: Credential,
        version: &str,
        secret: DbSecret,
    ) -> Result<DbSecret, RotationError> {
        match self.config.db.tls.mode_for(&secret) {
            Ok(_) => Ok(secret),
            Err(refused) => Err(RotationError::Refused {
                arn: arn.to_owned(),
                credential,
                version: version.to_owned(),
                detail: refused.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
