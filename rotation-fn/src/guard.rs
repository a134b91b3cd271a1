//! The guard every step passes first: is this token the rotation in progress?
//!
//! Secrets Manager labels the version it created for this rotation (id = the
//! ClientRequestToken) AWSPENDING before invoking us. Anything else means the
//! call is stale or misdirected, and acting on it could overwrite a rotation
//! that is in flight, so the guard refuses. The one exception is a token that
//! is already AWSCURRENT: the rotation finished (an earlier attempt got through
//! finishSecret), so every step is a successful no-op.

use std::collections::HashMap;

pub(crate) use db_secret::stages::{CURRENT, PENDING, PREVIOUS};

/// What DescribeSecret says about the secret's rotation and versions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretState {
    pub arn: String,
    pub rotation_enabled: bool,
    pub versions: HashMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The token is AWSCURRENT already: nothing left to do.
    AlreadyCurrent,
    /// The token is AWSPENDING; `current` is the version holding AWSCURRENT.
    Proceed { current: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    #[error("rotation is not enabled on the secret")]
    RotationDisabled,
    #[error("version {0} is not a version of the secret")]
    UnknownVersion(String),
    #[error("version {token} is not AWSPENDING (its labels: {labels}); another rotation may have replaced it")]
    NotPending { token: String, labels: String },
    #[error("no version of the secret is AWSCURRENT")]
    NoCurrent,
    #[error(
        "version {0} is AWSPENDING: a rotation is running or did not finish; let it finish or resume it \
         (aws secretsmanager rotate-secret --secret-id <secret> --client-request-token {0}), then ask again"
    )]
    RotationInProgress(String),
}

impl SecretState {
    pub fn check(&self, token: &str) -> Result<Verdict, StageError> {
        if !self.rotation_enabled {
            return Err(StageError::RotationDisabled);
        }
        let stages = self.versions.get(token).ok_or_else(|| StageError::UnknownVersion(token.to_owned()))?;
        if stages.iter().any(|s| s == CURRENT) {
            return Ok(Verdict::AlreadyCurrent);
        }
        if !stages.iter().any(|s| s == PENDING) {
            let labels = if stages.is_empty() { "none".to_owned() } else { stages.join(", ") };
            return Err(StageError::NotPending { token: token.to_owned(), labels });
        }
        let current = self.version_with(CURRENT).ok_or(StageError::NoCurrent)?;
        Ok(Verdict::Proceed { current: current.to_owned() })
    }

    pub fn version_with(&self, stage: &str) -> Option<&str> {
        self.versions.iter().find(|(_, stages)| stages.iter().any(|s| s == stage)).map(|(id, _)| id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(enabled: bool, versions: &[(&str, &[&str])]) -> SecretState {
        SecretState {
            arn: "arn:secret".into(),
            rotation_enabled: enabled,
            versions: versions
                .iter()
                .map(|(id, st)| ((*id).to_owned(), st.iter().map(|s| (*s).to_owned()).collect()))
                .collect(),
        }
    }

    #[test]
    fn pending_token_proceeds_with_current_version() {
        let s = state(true, &[("v1", &[CURRENT]), ("t", &[PENDING]), ("v0", &[PREVIOUS])]);
        assert_eq!(s.check("t"), Ok(Verdict::Proceed { current: "v1".into() }));
    }

    #[test]
    fn token_already_current_is_a_no_op() {
        let s = state(true, &[("t", &[CURRENT, PENDING]), ("v1", &[PREVIOUS])]);
        assert_eq!(s.check("t"), Ok(Verdict::AlreadyCurrent));
        let s = state(true, &[("t", &[CURRENT])]);
        assert_eq!(s.check("t"), Ok(Verdict::AlreadyCurrent));
    }

    #[test]
    fn refusals() {
        let s = state(false, &[("v1", &[CURRENT]), ("t", &[PENDING])]);
        assert_eq!(s.check("t"), Err(StageError::RotationDisabled));
        let s = state(true, &[("v1", &[CURRENT])]);
        assert_eq!(s.check("t"), Err(StageError::UnknownVersion("t".into())));
        let s = state(true, &[("v1", &[CURRENT]), ("t", &[PREVIOUS])]);
        assert!(matches!(s.check("t"), Err(StageError::NotPending { .. })));
        let s = state(true, &[("v1", &[CURRENT]), ("t", &[])]);
        assert_eq!(s.check("t"), Err(StageError::NotPending { token: "t".into(), labels: "none".into() }));
        let s = state(true, &[("t", &[PENDING])]);
        assert_eq!(s.check("t"), Err(StageError::NoCurrent));
    }
}
