//! What a step works with: the invocation's event, the stage guard's view of
//! the secret, the clients, the operator's database settings, and the reads
//! and logins every step shares (a version read and validated, the master
//! secret resolved, a login under the deadline). The bottom of the rotation's
//! house: steps and strategies build on it, it builds on neither.

use db_secret::{Connector, DbSecret, SecretError};
use secrecy::ExposeSecret as _;

use crate::db_config::DbConfig;
use crate::deadline::Deadline;
use crate::error::{Credential, RotationError};
use crate::event::RotationEvent;
use crate::evidence::{Evidence, InUsePolicy};
use crate::guard::{CURRENT, PENDING, PREVIOUS, SecretState};
use crate::password::PasswordPolicy;
use crate::session::{self, Session};
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
    /// How to reach databases (the TLS floor, the roots, the endpoint pin).
    pub db: &'a DbConfig,
    /// How createSecret makes passwords.
    pub password: &'a PasswordPolicy,
    pub event: &'a RotationEvent,
    /// What the guard's DescribeSecret said (the ARN, every version's labels).
    pub state: SecretState,
    /// The version that holds AWSCURRENT when the step starts.
    pub current_version: String,
    pub deadline: Deadline,
    pub in_use: InUsePolicy,
    /// Who was connected as the login whose password setSecret changed.
    pub evidence: std::sync::OnceLock<Evidence>,
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
    /// password (an RDS-managed master secret). The master's server is its
    /// own, or the operator's (`DB_ENDPOINTS`, which `app` must match),
    /// never taken from the application secret, whose writer would otherwise
    /// choose where the master logs in.
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
        let master = match self.db.parse_login_beside(text.expose_secret(), app) {
            Err(SecretError::Missing("host")) => {
                return Err(RotationError::Refused {
                    arn: master_arn.to_owned(),
                    credential: Credential::Master,
                    version: version.id.clone(),
                    detail: "the master secret names no server (as an RDS-managed secret does) and DB_ENDPOINTS \
                             is not set: the master's server comes from the operator's configuration, never from \
                             the application secret; set DB_ENDPOINTS=host:port"
                        .into(),
                });
            }
            parsed => parsed.map_err(invalid)?,
        };
        self.allowed(master_arn, Credential::Master, &version.id, master)
    }

    pub async fn login(&self, secret: &DbSecret, credential: Credential) -> Result<Session, RotationError> {
        session::login(self.connector, secret, credential, &self.deadline).await
    }

    /// Right before `login`'s password changes: who is still connected as it
    /// (logged, and kept for the step's result). A login being `retiring`
    /// (alternating users: the one AWSPREVIOUS held) that is still in use stops
    /// the step under `RETIRING_LOGIN_IN_USE=fail`.
    pub async fn witness(&self, session: &mut Session, login: &str, retiring: bool) -> Result<(), RotationError> {
        let evidence = Evidence::gather(session, login, &self.deadline).await?;
        evidence.log(if retiring { "retiring" } else { "current" });
        let in_use = !evidence.sessions.is_empty();
        let stop = retiring && in_use && self.in_use == InUsePolicy::Fail;
        let error = stop.then(|| RotationError::LoginInUse {
            user: login.to_owned(),
            sessions: evidence.sessions.len(),
            clients: evidence.summary(),
        });
        let _ = self.evidence.set(evidence);
        error.map_or(Ok(()), Err)
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
    /// written or any login is tried, unless the operator allows it; so is a
    /// secret naming a server outside `DB_ENDPOINTS`.
    fn allowed(
        &self,
        arn: &str,
        credential: Credential,
        version: &str,
        secret: DbSecret,
    ) -> Result<DbSecret, RotationError> {
        self.db.admit(&secret).map_err(|detail| RotationError::Refused {
            arn: arn.to_owned(),
            credential,
            version: version.to_owned(),
            detail,
        })?;
        Ok(secret)
    }
}
