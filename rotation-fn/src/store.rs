//! Secrets Manager, as the steps see it: five calls behind a seam
//! ([`SecretsApi`], the AWS SDK in production, an in-memory fake in unit
//! tests), each bounded by the invocation's deadline, plus a cache of version
//! values.
//!
//! The cache is what makes a warm rotation cheap. A version's value never
//! changes once written (Secrets Manager refuses a second, different value
//! under the same VersionId), so a value this process read stays true for as
//! long as the version exists: the pending value setSecret reads serves
//! testSecret, and, once that version is AWSCURRENT, the next rotation. Which version carries which label
//! does change: the guard's DescribeSecret is never cached, and every step
//! resolves labels to version ids from it. A cold process simply finds the
//! cache empty and reads everything.
//!
//! Reads always name the version or the stage: moto (and caches in front of
//! Secrets Manager) can answer a stage-less read with a stale version.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use secrecy::SecretString;
use tracing::instrument;

use crate::deadline::Deadline;
use crate::error::{AwsFailure, RotationError};
use crate::guard::SecretState;

pub(crate) type ApiFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, AwsFailure>> + Send + 'a>>;

/// One version's value. The string is secret; only the id is printable.
#[derive(Debug, Clone)]
pub struct Version {
    pub id: String,
    pub value: Option<SecretString>,
}

/// A version as ListSecretVersionIds describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub id: String,
    pub stages: Vec<String>,
    /// Seconds since the epoch; 0 when unknown.
    pub created: i64,
}

/// What DescribeSecret says about the rotation's schedule (the pre-flight
/// reports it; the steps never need it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationSchedule {
    /// `RotationEnabled` as DescribeSecret reports it: absent on a secret
    /// whose rotation was never configured (the guard reads absent as "go
    /// on"; the pre-flight reports it as "not enabled").
    pub enabled: Option<bool>,
    /// `NextRotationDate`, seconds since the epoch.
    pub next_rotation: Option<i64>,
    /// `RotationRules`: the schedule expression, or every N days.
    pub rules: Option<String>,
    /// `RotationLambdaARN`.
    pub lambda_arn: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Written,
    /// The version already holds a value: a concurrent or earlier createSecret
    /// with the same token won the race. Its value stands.
    AlreadyExists,
}

/// The Secrets Manager operations the function uses. `get` answers `Ok(None)`
/// when the version (or its value) does not exist.
pub trait SecretsApi: Send + Sync + std::fmt::Debug {
    fn describe<'a>(&'a self, secret_id: &'a str) -> ApiFuture<'a, SecretState>;
    /// DescribeSecret with the rotation's schedule. Implementations without
    /// one (unit tests' fakes) report none.
    fn describe_schedule<'a>(&'a self, secret_id: &'a str) -> ApiFuture<'a, (SecretState, RotationSchedule)> {
        Box::pin(async move { Ok((self.describe(secret_id).await?, RotationSchedule::default())) })
    }
    fn get<'a>(
        &'a self,
        secret_id: &'a str,
        stage: Option<&'a str>,
        version_id: Option<&'a str>,
    ) -> ApiFuture<'a, Option<Version>>;
    fn put_pending<'a>(
        &'a self,
        secret_id: &'a str,
        token: &'a str,
        value: &'a SecretString,
        rotation_token: Option<&'a str>,
    ) -> ApiFuture<'a, PutOutcome>;
    /// Moves AWSCURRENT from `from` to `to`; Secrets Manager then labels
    /// `from` AWSPREVIOUS.
    fn move_current<'a>(&'a self, secret_id: &'a str, to: &'a str, from: &'a str) -> ApiFuture<'a, ()>;
    fn list_versions<'a>(&'a self, secret_id: &'a str) -> ApiFuture<'a, Vec<VersionInfo>>;
    /// Removes AWSPENDING from `version`: what Secrets Manager does after
    /// finishSecret, done by the function only for its own emergency rotation.
    fn remove_pending<'a>(&'a self, secret_id: &'a str, version: &'a str) -> ApiFuture<'a, ()>;
}

/// The steps' handle on Secrets Manager: deadlines, fault points, the cache.
#[derive(Debug, Clone)]
pub struct SecretStore {
    api: Arc<dyn SecretsApi>,
    /// Secret ARN → version id → value.
    cache: Arc<Mutex<HashMap<String, HashMap<String, SecretString>>>>,
}

impl SecretStore {
    pub fn new(api: Arc<dyn SecretsApi>) -> Self {
        Self { api, cache: Arc::default() }
    }

    fn cached(&self, arn: &str, version_id: &str) -> Option<SecretString> {
        let cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.get(arn).and_then(|versions| versions.get(version_id)).cloned()
    }

    fn remember(&self, arn: &str, version_id: &str, value: &SecretString) {
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.entry(arn.to_owned()).or_default().insert(version_id.to_owned(), value.clone());
    }

    /// DescribeSecret, never cached. Forgets cached versions the secret no
    /// longer has, so the cache stays as small as the secret.
    #[instrument(skip_all, fields(secret = secret_id))]
    pub async fn describe(&self, secret_id: &str, deadline: &Deadline) -> Result<SecretState, RotationError> {
        let state = deadline.run(|| "Secrets Manager DescribeSecret".into(), self.api.describe(secret_id)).await??;
        crate::fault::point("DescribeSecret");
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(versions) = cache.get_mut(&state.arn) {
            versions.retain(|id, _| state.versions.contains_key(id));
        }
        Ok(state)
    }

    /// DescribeSecret with the rotation's schedule (the pre-flight's). Not
    /// cached, and the value cache is left alone.
    #[instrument(skip_all, fields(secret = secret_id))]
    pub async fn describe_schedule(
        &self,
        secret_id: &str,
        deadline: &Deadline,
    ) -> Result<(SecretState, RotationSchedule), RotationError> {
        let call = self.api.describe_schedule(secret_id);
        Ok(deadline.run(|| "Secrets Manager DescribeSecret".into(), call).await??)
    }

    /// The value of version `version_id` of secret `arn`, which carries
    /// `stage` (if any) per the DescribeSecret this step made: from the cache,
    /// else one GetSecretValue. `Ok(None)` when it has no value (the placeholder Secrets
    /// Manager creates for a rotation) or is gone.
    #[instrument(skip_all, fields(secret = arn, stage, version = version_id))]
    pub async fn version(
        &self,
        arn: &str,
        stage: Option<&str>,
        version_id: &str,
        deadline: &Deadline,
    ) -> Result<Option<Version>, RotationError> {
        if let Some(value) = self.cached(arn, version_id) {
            return Ok(Some(Version { id: version_id.to_owned(), value: Some(value) }));
        }
        let read = self.api.get(arn, stage, Some(version_id));
        let what = || format!("Secrets Manager GetSecretValue {}", stage.unwrap_or(version_id));
        let version = deadline.run(what, read).await??;
        crate::fault::point("GetSecretValue");
        if let Some(Version { id, value: Some(value) }) = &version {
            self.remember(arn, id, value);
        }
        Ok(version)
    }

    /// The version of another secret that carries `stage` right now (the
    /// master secret's AWSCURRENT). Not cached: labels move.
    #[instrument(skip_all, fields(secret = secret_id, stage))]
    pub async fn by_stage(
        &self,
        secret_id: &str,
        stage: &str,
        deadline: &Deadline,
    ) -> Result<Option<Version>, RotationError> {
        let read = self.api.get(secret_id, Some(stage), None);
        let version = deadline.run(|| format!("Secrets Manager GetSecretValue {stage}"), read).await??;
        crate::fault::point("GetSecretValue");
        Ok(version)
    }

    /// Writes the pending version: id = the rotation's token, label AWSPENDING.
    #[instrument(skip_all, fields(secret = arn, version = token))]
    pub async fn put_pending(
        &self,
        arn: &str,
        token: &str,
        value: &SecretString,
        rotation_token: Option<&str>,
        deadline: &Deadline,
    ) -> Result<PutOutcome, RotationError> {
        let put = self.api.put_pending(arn, token, value, rotation_token);
        let outcome = deadline.run(|| "Secrets Manager PutSecretValue".into(), put).await??;
        crate::fault::point("PutSecretValue");
        // Not cached: the value to set is the one Secrets Manager holds, read
        // back by setSecret. On AWS a second, different value under the same
        // token is refused, but moto (and so a local test of two racing
        // createSecrets) keeps the last write, and a process that trusted its
        // own write would then set a password no version holds.
        Ok(outcome)
    }

    #[instrument(skip_all, fields(secret = arn, from, to))]
    pub async fn move_current(
        &self,
        arn: &str,
        to: &str,
        from: &str,
        deadline: &Deadline,
    ) -> Result<(), RotationError> {
        let call = self.api.move_current(arn, to, from);
        deadline.run(|| "Secrets Manager UpdateSecretVersionStage".into(), call).await??;
        crate::fault::point("UpdateSecretVersionStage");
        Ok(())
    }

    #[instrument(skip_all, fields(secret = arn, version))]
    pub async fn remove_pending(&self, arn: &str, version: &str, deadline: &Deadline) -> Result<(), RotationError> {
        let call = self.api.remove_pending(arn, version);
        deadline.run(|| "Secrets Manager UpdateSecretVersionStage".into(), call).await??;
        Ok(())
    }

    #[instrument(skip_all, fields(secret = arn))]
    pub async fn list_versions(&self, arn: &str, deadline: &Deadline) -> Result<Vec<VersionInfo>, RotationError> {
        let call = self.api.list_versions(arn);
        let versions = deadline.run(|| "Secrets Manager ListSecretVersionIds".into(), call).await??;
        crate::fault::point("ListSecretVersionIds");
        Ok(versions)
    }
}

/// Whether a retry can cure an AWS failure: the service's own error classes
/// (`db_secret::AwsErrorKind`, shared with the web app), plus the SDK's
/// transport failures.
pub(crate) fn is_transient_aws(code: &str, status: Option<u16>) -> bool {
    matches!(code, "Timeout" | "NetworkError") || db_secret::AwsErrorKind::of(code, status).is_transient()
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
