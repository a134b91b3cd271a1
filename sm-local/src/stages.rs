//! Stage bookkeeping: what a secret's version labels say about rotation.
//!
//! Secrets Manager treats a rotation as unfinished while AWSPENDING sits on a
//! version that is not AWSCURRENT. While one is unfinished, RotateSecret with
//! any other token is refused ("A previous rotation isn't complete"); with
//! that rotation's own token it runs the steps again, which is how a failed
//! rotation is retried. AWSPENDING on the AWSCURRENT version means a rotation
//! finished and nobody removed the label: that does not block anything.
//! (moto's own check is the inverse of this, which is why the endpoint
//! decides here and only asks moto to add the placeholder version.)

use std::collections::BTreeMap;

use serde_json::Value;

pub const CURRENT: &str = "AWSCURRENT";
pub const PENDING: &str = "AWSPENDING";
pub const PREVIOUS: &str = "AWSPREVIOUS";

/// Version id → staging labels, as DescribeSecret's `VersionIdsToStages`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Versions(BTreeMap<String, Vec<String>>);

/// What RotateSecret may do with a token, given the secret's labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// No rotation is unfinished and the token is new: add the placeholder.
    Start,
    /// The token is the unfinished rotation: run its steps again.
    Resume,
    /// The token is AWSCURRENT already: that rotation finished.
    AlreadyDone,
    /// Another version carries AWSPENDING without AWSCURRENT.
    PreviousIncomplete { version: String },
    /// The token is a version that is not part of a rotation.
    TokenInUse { labels: Vec<String> },
}

impl Versions {
    /// Reads `VersionIdsToStages` (absent when the secret has no versions).
    pub fn from_describe(describe: &Value) -> Self {
        let map = describe
            .get("VersionIdsToStages")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(id, labels)| {
                        let labels = labels
                            .as_array()
                            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                            .unwrap_or_default();
                        (id.clone(), labels)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self(map)
    }

    pub fn labels(&self, version: &str) -> Option<&[String]> {
        self.0.get(version).map(Vec::as_slice)
    }

    fn has(&self, version: &str, label: &str) -> bool {
        self.labels(version).is_some_and(|l| l.iter().any(|s| s == label))
    }

    /// The version carrying `label`, if any (labels are unique per secret).
    pub fn with_label(&self, label: &str) -> Option<&str> {
        self.0.iter().find(|(_, labels)| labels.iter().any(|l| l == label)).map(|(id, _)| id.as_str())
    }

    /// The version of an unfinished rotation: AWSPENDING, not AWSCURRENT.
    pub fn unfinished(&self) -> Option<&str> {
        self.with_label(PENDING).filter(|id| !self.has(id, CURRENT))
    }

    /// A version carrying both AWSCURRENT and AWSPENDING: a finished
    /// rotation whose AWSPENDING label was never removed.
    pub fn pending_on_current(&self) -> Option<&str> {
        self.with_label(PENDING).filter(|id| self.has(id, CURRENT))
    }

    pub fn admit(&self, token: &str) -> Admission {
        if let Some(version) = self.unfinished() {
            return if version == token {
                Admission::Resume
            } else {
                Admission::PreviousIncomplete { version: version.to_owned() }
            };
        }
        match self.labels(token) {
            None => Admission::Start,
            Some(_) if self.has(token, CURRENT) => Admission::AlreadyDone,
            Some(labels) => Admission::TokenInUse { labels: labels.to_vec() },
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn versions(value: Value) -> Versions {
        Versions::from_describe(&json!({ "VersionIdsToStages": value }))
    }

    #[test]
    fn a_fresh_token_starts_when_nothing_is_pending() {
        let v = versions(json!({"v1": [CURRENT], "v0": [PREVIOUS]}));
        assert_eq!(v.admit("t"), Admission::Start);
        assert_eq!(v.unfinished(), None);
        assert_eq!(v.with_label(CURRENT), Some("v1"));
    }

    #[test]
    fn an_unfinished_rotation_blocks_other_tokens_and_resumes_its_own() {
        let v = versions(json!({"v1": [CURRENT], "t": [PENDING]}));
        assert_eq!(v.unfinished(), Some("t"));
        assert_eq!(v.admit("t"), Admission::Resume);
        assert_eq!(v.admit("other"), Admission::PreviousIncomplete { version: "t".into() });
    }

    #[test]
    fn pending_on_the_current_version_is_a_finished_rotation() {
        let v = versions(json!({"t": [CURRENT, PENDING], "v1": [PREVIOUS]}));
        assert_eq!(v.unfinished(), None);
        assert_eq!(v.pending_on_current(), Some("t"));
        assert_eq!(v.admit("new"), Admission::Start, "moto refuses this; Secrets Manager does not");
        assert_eq!(v.admit("t"), Admission::AlreadyDone);
    }

    #[test]
    fn a_token_that_names_an_old_version_is_refused() {
        let v = versions(json!({"v1": [CURRENT], "v0": [PREVIOUS], "gone": []}));
        assert_eq!(v.admit("v0"), Admission::TokenInUse { labels: vec![PREVIOUS.into()] });
        assert_eq!(v.admit("gone"), Admission::TokenInUse { labels: vec![] });
        assert_eq!(v.admit("v1"), Admission::AlreadyDone);
    }

    #[test]
    fn a_secret_without_versions_has_no_labels() {
        let v = Versions::from_describe(&json!({"ARN": "arn"}));
        assert_eq!(v, Versions::default());
        assert_eq!(v.admit("t"), Admission::Start);
    }
}
