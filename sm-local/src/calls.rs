//! The call log: every Secrets Manager call the endpoint answered, who made
//! it, and how it ended, so that a test can enumerate what the rotation
//! function did.
//!
//! Only identifiers are kept (operation, secret id, version ids and stages,
//! status, error code). Values never are: the log is built from an explicit
//! list of request members, so a `SecretString` cannot slip in.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

/// How many calls the log keeps; older ones are dropped first.
const CAPACITY: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    /// Increases by one per call, from 1.
    pub seq: u64,
    /// When the call arrived, in milliseconds since the epoch.
    pub at_ms: u64,
    pub operation: String,
    /// The configured function that made the call (by its credentials), or
    /// `None` for any other client.
    pub function: Option<String>,
    #[serde(flatten)]
    pub ids: CallIds,
    pub status: u16,
    /// The error code of a failed call.
    pub error: Option<String>,
    /// `error` or `hang` when a fault rule applied.
    pub fault: Option<&'static str>,
    pub duration_ms: f64,
}

/// The identifying members of a request; nothing else is ever read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallIds {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_request_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub move_to_version_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remove_from_version_id: Option<String>,
}

impl CallIds {
    pub fn from_input(input: &Value) -> Self {
        let member = |key: &str| input.get(key).and_then(Value::as_str).map(str::to_owned);
        Self {
            secret_id: member("SecretId").or_else(|| member("Name")),
            version_id: member("VersionId"),
            version_stage: member("VersionStage"),
            client_request_token: member("ClientRequestToken"),
            move_to_version_id: member("MoveToVersionId"),
            remove_from_version_id: member("RemoveFromVersionId"),
        }
    }
}

#[derive(Debug, Default)]
pub struct CallLog {
    inner: Mutex<(u64, VecDeque<CallRecord>)>,
}

impl CallLog {
    /// Appends a call; `record.seq` is assigned here.
    pub fn push(&self, mut record: CallRecord) {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.0 += 1;
        record.seq = inner.0;
        if inner.1.len() == CAPACITY {
            inner.1.pop_front();
        }
        inner.1.push_back(record);
    }

    pub fn list(&self) -> Vec<CallRecord> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1.iter().cloned().collect()
    }

    pub fn clear(&self) {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1.clear();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_identifiers_are_read_from_a_request() {
        let input = json!({
            "SecretId": "db", "ClientRequestToken": "t", "SecretString": "Hunter2-password",
            "VersionStages": ["AWSPENDING"], "RotationToken": "private",
        });
        let ids = CallIds::from_input(&input);
        assert_eq!(ids.secret_id.as_deref(), Some("db"));
        assert_eq!(ids.client_request_token.as_deref(), Some("t"));
        let record = CallRecord {
            seq: 0,
            at_ms: 0,
            operation: "PutSecretValue".into(),
            function: None,
            ids,
            status: 200,
            error: None,
            fault: None,
            duration_ms: 1.0,
        };
        let text = serde_json::to_string(&record).expect("serialises");
        assert!(!text.contains("Hunter2") && !text.contains("private"), "{text}");
    }

    #[test]
    fn sequence_numbers_and_capacity() {
        let log = CallLog::default();
        let record = CallRecord {
            seq: 0,
            at_ms: 0,
            operation: "GetSecretValue".into(),
            function: None,
            ids: CallIds::default(),
            status: 200,
            error: None,
            fault: None,
            duration_ms: 0.0,
        };
        for _ in 0..CAPACITY + 2 {
            log.push(record.clone());
        }
        let calls = log.list();
        assert_eq!(calls.len(), CAPACITY);
        assert_eq!(calls[0].seq, 3);
        assert_eq!(calls[CAPACITY - 1].seq, CAPACITY as u64 + 2);
        log.clear();
        assert!(log.list().is_empty());
    }
}
