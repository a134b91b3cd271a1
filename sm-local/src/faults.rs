//! Fault injection: rules that make the next N matching Secrets Manager
//! calls fail with a chosen error, or hang before they proceed.
//!
//! Rules apply to every call that reaches the endpoint's Secrets Manager API
//! (from clients and from the rotation function alike), before the call is
//! handled; never to the endpoint's own calls to moto while it runs a
//! rotation (those are the service's internals). The first matching rule
//! with uses left wins and loses one use.

use serde::{Deserialize, Serialize};

/// What a test posts to `POST /_sm-local/faults`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// A Secrets Manager operation (`PutSecretValue`), or `*` for every one.
    pub operation: String,
    /// Only calls naming this secret (name or ARN, either matches the other).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub action: Action,
    /// How many matching calls the rule affects.
    #[serde(default = "one")]
    pub times: u32,
    /// How many matching calls pass untouched first (to reach the n-th call
    /// of an operation).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skip: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Answer with this error instead of handling the call.
    Error {
        code: String,
        #[serde(default = "bad_request")]
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Wait this long, then handle the call normally.
    Hang { ms: u64 },
}

fn bad_request() -> u16 {
    400
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Error { .. } => "error",
            Action::Hang { .. } => "hang",
        }
    }

    /// The message of an injected error: the one given, or what AWS says.
    pub fn message(code: &str, given: Option<&str>) -> String {
        given.map(str::to_owned).unwrap_or_else(|| {
            match code {
                "ThrottlingException" => "Rate exceeded",
                "InternalServiceError" => "An error occurred on the server side.",
                "ServiceUnavailable" | "ServiceUnavailableException" => "Service Unavailable",
                _ => "Injected by sm-local",
            }
            .to_owned()
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    #[error("operation must be a Secrets Manager operation name or `*`")]
    Operation,
    #[error("times must be at least 1")]
    Times,
    #[error("an error's code must not be empty and its status must be 400-599")]
    Error,
}

/// A rule with its id and the uses it has left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FaultRule {
    pub id: u64,
    #[serde(flatten)]
    pub spec: FaultSpec,
    pub remaining: u32,
    /// Matching calls still to let through before the rule applies.
    pub to_skip: u32,
}

#[derive(Debug, Default)]
pub struct Faults {
    next_id: u64,
    rules: Vec<FaultRule>,
}

impl Faults {
    pub fn add(&mut self, spec: FaultSpec) -> Result<u64, FaultError> {
        let name_ok = spec.operation == "*"
            || (!spec.operation.is_empty() && spec.operation.chars().all(|c| c.is_ascii_alphanumeric()));
        if !name_ok {
            return Err(FaultError::Operation);
        }
        if spec.times == 0 {
            return Err(FaultError::Times);
        }
        if let Action::Error { code, status, .. } = &spec.action
            && (code.trim().is_empty() || !(400..=599).contains(status))
        {
            return Err(FaultError::Error);
        }
        self.next_id += 1;
        self.rules.push(FaultRule { id: self.next_id, remaining: spec.times, to_skip: spec.skip, spec });
        Ok(self.next_id)
    }

    /// The action for a call, using up one of its rule's uses.
    pub fn take(&mut self, operation: &str, secret_id: Option<&str>) -> Option<Action> {
        let rule = self.rules.iter_mut().find(|r| {
            r.remaining > 0
                && (r.spec.operation == "*" || r.spec.operation == operation)
                && match (&r.spec.secret, secret_id) {
                    (None, _) => true,
                    (Some(wanted), Some(given)) => same_secret(wanted, given),
                    (Some(_), None) => false,
                }
        })?;
        if rule.to_skip > 0 {
            rule.to_skip -= 1;
            return None;
        }
        rule.remaining -= 1;
        Some(rule.spec.action.clone())
    }

    pub fn list(&self) -> Vec<FaultRule> {
        self.rules.clone()
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }
}

/// Whether two secret ids (names, full or partial ARNs) name the same secret.
/// A full ARN ends in the name plus `-` and six random characters.
pub fn same_secret(a: &str, b: &str) -> bool {
    a == b || secret_name(a) == secret_name(b)
}

fn secret_name(id: &str) -> &str {
    let Some((_, name)) = id.split_once(":secret:") else { return id };
    match name.rsplit_once('-') {
        Some((base, suffix)) if suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_alphanumeric()) => base,
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(operation: &str, secret: Option<&str>, times: u32) -> FaultSpec {
        FaultSpec {
            operation: operation.into(),
            secret: secret.map(str::to_owned),
            action: Action::Error { code: "ThrottlingException".into(), status: 400, message: None },
            times,
            skip: 0,
        }
    }

    #[test]
    fn skip_reaches_the_nth_matching_call() {
        let mut faults = Faults::default();
        faults.add(FaultSpec { skip: 2, ..throttle("DescribeSecret", None, 1) }).expect("valid");
        assert_eq!(faults.take("DescribeSecret", None), None);
        assert_eq!(faults.take("GetSecretValue", None), None, "other operations do not count");
        assert_eq!(faults.take("DescribeSecret", None), None);
        assert!(faults.take("DescribeSecret", None).is_some(), "the third DescribeSecret");
        assert_eq!(faults.take("DescribeSecret", None), None);
    }

    #[test]
    fn a_rule_applies_as_many_times_as_asked() {
        let mut faults = Faults::default();
        faults.add(throttle("PutSecretValue", None, 2)).expect("valid");
        assert_eq!(faults.take("GetSecretValue", Some("s")), None);
        assert!(faults.take("PutSecretValue", Some("s")).is_some());
        assert!(faults.take("PutSecretValue", None).is_some());
        assert_eq!(faults.take("PutSecretValue", Some("s")), None);
        assert_eq!(faults.list()[0].remaining, 0);
    }

    #[test]
    fn rules_for_a_secret_match_its_name_or_arn() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:app-db-AbC123";
        assert!(same_secret("app-db", arn));
        assert!(same_secret(arn, "app-db"));
        assert!(same_secret(arn, arn));
        assert!(!same_secret("app", arn));
        assert!(!same_secret("app-db", "app-db-2"));

        let mut faults = Faults::default();
        faults.add(throttle("*", Some("app-db"), 5)).expect("valid");
        assert_eq!(faults.take("DescribeSecret", Some("other")), None);
        assert_eq!(faults.take("DescribeSecret", None), None, "a call naming no secret does not match");
        assert!(faults.take("DescribeSecret", Some(arn)).is_some());
    }

    #[test]
    fn the_first_matching_rule_with_uses_left_wins() {
        let mut faults = Faults::default();
        faults
            .add(FaultSpec { action: Action::Hang { ms: 10 }, ..throttle("GetSecretValue", None, 1) })
            .expect("valid");
        faults.add(throttle("GetSecretValue", None, 1)).expect("valid");
        assert_eq!(faults.take("GetSecretValue", None), Some(Action::Hang { ms: 10 }));
        assert!(matches!(faults.take("GetSecretValue", None), Some(Action::Error { .. })));
        assert_eq!(faults.take("GetSecretValue", None), None);
    }

    #[test]
    fn invalid_rules_are_refused() {
        let mut faults = Faults::default();
        assert_eq!(faults.add(throttle("", None, 1)), Err(FaultError::Operation));
        assert_eq!(faults.add(throttle("secretsmanager.Get", None, 1)), Err(FaultError::Operation));
        assert_eq!(faults.add(throttle("GetSecretValue", None, 0)), Err(FaultError::Times));
        let bad_status = FaultSpec {
            action: Action::Error { code: "X".into(), status: 200, message: None },
            ..throttle("GetSecretValue", None, 1)
        };
        assert_eq!(faults.add(bad_status), Err(FaultError::Error));
        assert!(faults.list().is_empty());
    }

    #[test]
    fn the_json_shape() {
        let spec: FaultSpec = serde_json::from_str(
            r#"{"operation":"PutSecretValue","secret":"db","action":{"type":"error","code":"ServiceUnavailable","status":503},"times":3}"#,
        )
        .expect("parses");
        assert_eq!(spec.times, 3);
        assert_eq!(spec.action, Action::Error { code: "ServiceUnavailable".into(), status: 503, message: None });
        let hang: FaultSpec =
            serde_json::from_str(r#"{"operation":"GetSecretValue","action":{"type":"hang","ms":1500}}"#)
                .expect("parses");
        assert_eq!((hang.times, hang.action), (1, Action::Hang { ms: 1500 }));
        assert!(
            serde_json::from_str::<FaultSpec>(r#"{"operation":"X","action":{"type":"hang","ms":1},"tims":2}"#).is_err()
        );
    }
}
