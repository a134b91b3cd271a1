//! What the function is asked to do.
//!
//! - The event Secrets Manager sends: `{"Step", "SecretId", "ClientRequestToken"}`
//!   and, on newer accounts, `"RotationToken"`. Unknown fields are ignored.
//! - An operator's request, `{"Operation", "SecretId", …}`: a direct invocation
//!   (`aws lambda invoke`), which only a principal allowed `lambda:InvokeFunction`
//!   on this function can make. Secrets Manager's events never carry
//!   `Operation`, and nothing in a secret's value can turn a rotation into one,
//!   so whoever may write a secret cannot start an operator's request.

use std::fmt;
use std::time::Duration;

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
    #[error("unknown Operation {0:?}: expected preflight or emergency-rotation")]
    UnknownOperation(String),
    #[error("the event has both `Step` (a rotation) and `Operation` (an operator's request)")]
    Ambiguous,
    #[error("FleetWaitSeconds must be a whole number of seconds from 0 to 600")]
    FleetWait,
    #[error("unknown RequestType {0:?}: expected Create, Update or Delete")]
    UnknownRequest(String),
}

/// One invocation's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    Rotation(RotationEvent),
    Operator(OperatorRequest),
    /// The deployment's pre-flight, sent by CloudFormation's custom resource
    /// framework (`{"RequestType", "ResourceProperties": {"Operation":
    /// "preflight", "SecretId"}}`): the CDK app runs it once per deployment.
    /// `Delete` checks nothing.
    Deployment {
        secret_id: String,
        delete: bool,
        physical_id: Option<String>,
    },
}

/// What an operator may ask for by invoking the function directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OperatorRequest {
    /// `{"Operation": "preflight", "SecretId"}`: would a rotation succeed now?
    /// Writes nothing.
    Preflight { secret_id: String },
    /// `{"Operation": "emergency-rotation", "SecretId", "FleetWaitSeconds"?}`:
    /// rotate now, leave no earlier password working, end the sessions that
    /// still use one once the fleet has moved (or the wait is over).
    Emergency { secret_id: String, fleet_wait: Duration },
}

/// How long an emergency rotation waits for clients to move before it ends
/// the sessions still on an old credential, unless the request says.
pub(crate) const DEFAULT_FLEET_WAIT: Duration = Duration::from_secs(10);
/// The longest wait a request may ask for (the invocation's own timeout
/// bounds it further).
pub(crate) const MAX_FLEET_WAIT: Duration = Duration::from_secs(600);

impl Request {
    pub(crate) fn parse(value: &Value) -> Result<Self, EventError> {
        let object = value.as_object().ok_or(EventError::NotObject)?;
        if let Some(kind) = object.get("RequestType") {
            return Self::deployment(object, kind);
        }
        let Some(operation) = object.get("Operation") else { return RotationEvent::parse(value).map(Self::Rotation) };
        if object.contains_key("Step") {
            return Err(EventError::Ambiguous);
        }
        let secret_id = object
            .get("SecretId")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(EventError::Missing("SecretId"))?
            .to_owned();
        match operation.as_str() {
            Some("preflight") => Ok(Self::Operator(OperatorRequest::Preflight { secret_id })),
            Some("emergency-rotation") => {
                let fleet_wait = match object.get("FleetWaitSeconds") {
                    None => DEFAULT_FLEET_WAIT,
                    Some(v) => v
                        .as_u64()
                        .map(Duration::from_secs)
                        .filter(|w| *w <= MAX_FLEET_WAIT)
                        .ok_or(EventError::FleetWait)?,
                };
                Ok(Self::Operator(OperatorRequest::Emergency { secret_id, fleet_wait }))
            }
            other => Err(EventError::UnknownOperation(
                other.map_or_else(|| operation.to_string(), str::to_owned).chars().take(40).collect(),
            )),
        }
    }
}

impl Request {
    fn deployment(object: &serde_json::Map<String, Value>, kind: &Value) -> Result<Self, EventError> {
        let delete = match kind.as_str() {
            Some("Create" | "Update") => false,
            Some("Delete") => true,
            _ => return Err(EventError::UnknownRequest(kind.to_string().chars().take(20).collect())),
        };
        let properties = object.get("ResourceProperties").ok_or(EventError::Missing("ResourceProperties"))?;
        let property = |name| properties.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
        match property("Operation") {
            Some("preflight") => {}
            Some(other) => return Err(EventError::UnknownOperation(other.chars().take(40).collect())),
            None => return Err(EventError::Missing("ResourceProperties.Operation")),
        }
        Ok(Self::Deployment {
            secret_id: property("SecretId").ok_or(EventError::Missing("ResourceProperties.SecretId"))?.to_owned(),
            delete,
            physical_id: object.get("PhysicalResourceId").and_then(Value::as_str).map(str::to_owned),
        })
    }
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
    fn operator_requests_are_told_apart_from_rotations() {
        assert_eq!(
            Request::parse(&json!({"Operation": "preflight", "SecretId": "s"})),
            Ok(Request::Operator(OperatorRequest::Preflight { secret_id: "s".into() }))
        );
        assert_eq!(
            Request::parse(&json!({"Operation": "emergency-rotation", "SecretId": "s"})),
            Ok(Request::Operator(OperatorRequest::Emergency { secret_id: "s".into(), fleet_wait: DEFAULT_FLEET_WAIT }))
        );
        assert_eq!(
            Request::parse(&json!({"Operation": "emergency-rotation", "SecretId": "s", "FleetWaitSeconds": 3})),
            Ok(Request::Operator(OperatorRequest::Emergency {
                secret_id: "s".into(),
                fleet_wait: Duration::from_secs(3)
            }))
        );
        let rotation = json!({"Step": "setSecret", "SecretId": "s", "ClientRequestToken": "t"});
        assert!(matches!(Request::parse(&rotation), Ok(Request::Rotation(_))));
        for (bad, error) in [
            (json!({"Operation": "preflight"}), EventError::Missing("SecretId")),
            (json!({"Operation": "drop", "SecretId": "s"}), EventError::UnknownOperation("drop".into())),
            (json!({"Operation": 1, "SecretId": "s"}), EventError::UnknownOperation("1".into())),
            (
                json!({"Operation": "emergency-rotation", "SecretId": "s", "FleetWaitSeconds": 601}),
                EventError::FleetWait,
            ),
            (
                json!({"Operation": "emergency-rotation", "SecretId": "s", "FleetWaitSeconds": -1}),
                EventError::FleetWait,
            ),
            (
                json!({"Operation": "emergency-rotation", "Step": "setSecret", "SecretId": "s", "ClientRequestToken": "t"}),
                EventError::Ambiguous,
            ),
        ] {
            assert_eq!(Request::parse(&bad), Err(error), "{bad}");
        }
    }

    #[test]
    fn the_deployments_preflight_comes_as_a_custom_resource_event() {
        let event = |kind: &str| {
            json!({"RequestType": kind, "PhysicalResourceId": "preflight:s",
                   "ResourceProperties": {"ServiceToken": "arn:t", "Operation": "preflight", "SecretId": "s", "Trigger": "h"}})
        };
        for (kind, delete) in [("Create", false), ("Update", false), ("Delete", true)] {
            assert_eq!(
                Request::parse(&event(kind)),
                Ok(Request::Deployment { secret_id: "s".into(), delete, physical_id: Some("preflight:s".into()) })
            );
        }
        assert_eq!(Request::parse(&event("Replace")), Err(EventError::UnknownRequest("\"Replace\"".into())));
        let other = json!({"RequestType": "Create", "ResourceProperties": {"Operation": "emergency-rotation", "SecretId": "s"}});
        assert_eq!(
            Request::parse(&other),
            Err(EventError::UnknownOperation("emergency-rotation".into())),
            "never an emergency"
        );
        let bare = json!({"RequestType": "Create", "ResourceProperties": {"SecretId": "s"}});
        assert_eq!(Request::parse(&bare), Err(EventError::Missing("ResourceProperties.Operation")));
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
