//! Event 3: the first login, before there is a pool.

use super::{CredentialsError, Verify, VerifyError};
use crate::secret_source::{SecretSource, SecretVersion, SourceError, Stage};

/// The first working login: AWSCURRENT, else AWSPENDING, else AWSPREVIOUS.
/// Returns it with the AWSCURRENT version id seen.
#[tracing::instrument(skip_all, fields(secret_id = source.secret_id()))]
pub async fn initial_login<S: SecretSource, V: Verify>(
    source: &S,
    verifier: &V,
) -> Result<(SecretVersion, String), CredentialsError> {
    let current = source.get(Stage::Current).await?;
    let current_id = current.version_id.clone();
    let mut tried = Vec::new();
    match verifier.verify(&current.secret).await {
        Ok(()) => return Ok((current, current_id)),
        Err(VerifyError::Unreachable(d)) => return Err(CredentialsError::DatabaseUnreachable(d)),
        Err(refused) => {
            tracing::warn!(version_id = %current_id, reason = %refused, "AWSCURRENT refused at startup; trying AWSPENDING, AWSPREVIOUS");
            tried.push(format!("AWSCURRENT {current_id}: {refused}"));
        }
    }
    let stages = source.describe().await?;
    for stage in [Stage::Pending, Stage::Previous] {
        let Some(id) = stages.version_with(stage) else { continue };
        if id == current_id {
            continue;
        }
        let version = match source.get_version(id).await {
            Ok(v) => v,
            Err(SourceError::NoSuchVersion { .. } | SourceError::Format { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        match verifier.verify(&version.secret).await {
            Ok(()) => return Ok((version, stages.version_with(Stage::Current).unwrap_or(&current_id).to_owned())),
            Err(VerifyError::Unreachable(d)) => return Err(CredentialsError::DatabaseUnreachable(d)),
            Err(refused) => tried.push(format!("{} {}: {refused}", stage.label(), version.version_id)),
        }
    }
    Err(CredentialsError::NoWorkingVersion { secret_id: source.secret_id().to_owned(), tried: tried.join(", ") })
}
