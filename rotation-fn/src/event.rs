//! The event Secrets Manager sends: `{"Step", "SecretId", "ClientRequestToken"}`
//! and, on newer accounts, `"RotationToken"`. Unknown fields are ignored.

use std::fmt;

use serde_json::Value;

/// The four steps of Secrets Manager's rotation protocol, in the order it
/// invokes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    Set,
    Test,
    Finish,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Create => "createSecret",
            Step::Set => "setSecret",
            Step::Test => "testSecret",
            Step::Finish => "finishSecret",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct RotationEvent {
    pub step: Step,
    pub secret_id: String,
    pub token: String,
    /// Proof, for PutSecretValue, that the call comes from the rotation
    /// Secrets Manager started. Passed back verbatim, never logged.
    pub rotation_token: Option<String>,
}

impl fmt::Debug for RotationEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotationEvent")
            .field("step", &self.step)
            .field("secret_id", &self.secret_id)
            .field("token", &self.token)
            .field("rotation_token", &self.rotation_token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the event is not a JSON object")]
    NotObject,
    #[error("the event has no string field `{0}`")]
    Missing(&'static str),
    #[error("unknown Step {0:?}: expected createSecret, setSecret, testSecret or finishSecret")]
    UnknownStep(String),
    #[error("unknown RequestType {0:?}: expected Create, Update or Delete")]
    UnknownRequest(String),
}

impl RotationEvent {
    pub fn parse(value: &Value) -> Result<Self, EventError> {
        let object = value.as_object().ok_or(EventError::NotObject)?;
        let field = |name: &'static str| {
            object.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or(EventError::Missing(name))
        };
        let step = match field("Step")? {
            "createSecret" => Step::Create,
            "setSecret" => Step::Set,
            "testSecret" => Step::Test,
            "finishSecret" => Step::Finish,
            // Step names are protocol words, not secrets: echoing helps.
            other => return Err(EventError::UnknownStep(other.chars().take(40).collect())),
        };
        Ok(Self {
            step,
            secret_id: field("SecretId")?.to_owned(),
            token: field("ClientRequestToken")?.to_owned(),
            rotation_token: field("RotationToken").ok().map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_all_steps_and_ignores_unknown_fields() {
        for (name, step) in [
            ("createSecret", Step::Create),
            ("setSecret", Step::Set),
            ("testSecret", Step::Test),
            ("finishSecret", Step::Finish),
        ] {
            let e = RotationEvent::parse(&json!({
                "Step": name, "SecretId": "arn:x", "ClientRequestToken": "t1", "Extra": {"k": 1}
            }))
            .expect("valid");
            assert_eq!(e.step, step);
            assert_eq!(e.step.as_str(), name);
            assert_eq!((e.secret_id.as_str(), e.token.as_str()), ("arn:x", "t1"));
            assert_eq!(e.rotation_token, None);
        }
    }

    #[test]
    fn rotation_token_is_kept_but_not_printed() {
        let e = RotationEvent::parse(&json!({
            "Step": "createSecret", "SecretId": "arn:x", "ClientRequestToken": "t1", "RotationToken": "rt-secret"
        }))
        .expect("valid");
        assert_eq!(e.rotation_token.as_deref(), Some("rt-secret"));
        assert!(!format!("{e:?}").contains("rt-secret"));
    }

    #[test]
    fn malformed_events_name_the_problem() {
        assert_eq!(RotationEvent::parse(&json!([1])), Err(EventError::NotObject));
        assert_eq!(
            RotationEvent::parse(&json!({"Step": "createSecret", "SecretId": "a"})),
            Err(EventError::Missing("ClientRequestToken"))
        );
        assert_eq!(
            RotationEvent::parse(&json!({"Step": "rotate", "SecretId": "a", "ClientRequestToken": "t"})),
            Err(EventError::UnknownStep("rotate".into()))
        );
    }
}
