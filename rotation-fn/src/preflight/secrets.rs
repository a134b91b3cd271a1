//! Secrets Manager, as a rotation will use it: each operation called on the
//! secret, for real where it only reads, and as a probe that Secrets Manager
//! authorizes and then refuses where it would write.
//!
//! IAM is evaluated before the service looks at the request's contents, so
//! a refusal for any reason other than access (a version that exists, a
//! version that does not) proves the function may make the call, and the
//! refusal itself proves nothing was written:
//!
//! - **PutSecretValue** names, as its ClientRequestToken, the version that is
//!   AWSCURRENT now, with a value that differs from it. A version's value
//!   never changes: Secrets Manager answers `ResourceExistsException` and
//!   stores nothing (the rule createSecret relies on to notice a concurrent
//!   write; sm-local enforces it in front of moto, which does not).
//! - **UpdateSecretVersionStage** asks to move AWSCURRENT to a version id
//!   that does not exist, from another that does not exist (both made up
//!   here, `preflight-…`). There is no version to label or unlabel: AWS
//!   answers `ResourceNotFoundException` or `InvalidParameterException`,
//!   moto `InvalidParameterException` ("Not a valid version") before it
//!   touches any label. The real AWSCURRENT version is never named, so
//!   even a service that applied half of the request could not move it.

use secrecy::{ExposeSecret as _, SecretString};

use super::report::Report;
use crate::deadline::Deadline;
use crate::error::RotationError;
use crate::guard::CURRENT;
use crate::store::{PutOutcome, SecretStore, Version};

/// The PutSecretValue probe's value: no secret, and never stored.
const PROBE_VALUE: &str = r#"{"pre-flight":"a probe: Secrets Manager refuses this value, so it is never stored"}"#;

/// How an AWS failure reads in the table: a denial names the action and the
/// resource to allow; anything else is the error itself.
pub(super) fn aws_failure(report: &mut Report, check: &'static str, action: &str, arn: &str, error: &RotationError) {
    match error {
        RotationError::Aws(aws) if is_denied(&aws.code, &aws.message) => {
            report.fail(check, format!("{}: {}", aws.code, aws.message), denied_fix(action, arn, &aws.message))
        }
        RotationError::Aws(aws) if aws.transient => report.fail(
            check,
            aws.to_string(),
            "a transient failure (throttling, the service or the network to it): run the pre-flight again; if it \
             persists, check the function's route to Secrets Manager (a VPC endpoint or NAT)",
        ),
        RotationError::Timeout(t) => report.fail(
            check,
            t.to_string(),
            "Secrets Manager did not answer: the function needs a route to it (the VPC endpoint \
             com.amazonaws.<region>.secretsmanager with private DNS, and its security group open to the function \
             on 443)",
        ),
        other => report.fail(check, other.to_string(), format!("see the error; the rotation calls {action} on {arn}")),
    }
}

fn is_denied(code: &str, message: &str) -> bool {
    matches!(db_secret::AwsErrorKind::of(code, None), db_secret::AwsErrorKind::AccessDenied)
        || code.starts_with("AccessDenied")
        || message.contains("not authorized")
}

pub(super) fn denied_fix(action: &str, arn: &str, message: &str) -> String {
    let kms = if message.to_ascii_lowercase().contains("kms") {
        "; the message names KMS: also allow kms:Decrypt (and kms:GenerateDataKey for PutSecretValue) on the \
         secret's key with the condition kms:ViaService = secretsmanager.<region>.amazonaws.com"
    } else {
        ""
    };
    format!(
        "allow `{action}` on resource `{arn}` in the function's execution role (the CDK app's RotateTheSecret / \
         ReadTheMasterSecret statements), and check that no resource policy or SCP denies it{kms}"
    )
}

/// GetSecretValue AWSCURRENT, uncached: the permission is what is checked,
/// and a warm process's cache would answer without asking.
pub(super) async fn read_current(
    report: &mut Report,
    store: &SecretStore,
    arn: &str,
    deadline: &Deadline,
) -> Option<Version> {
    const CHECK: &str = "secretsmanager:GetSecretValue";
    match store.by_stage(arn, CURRENT, deadline).await {
        Ok(Some(version @ Version { value: Some(_), .. })) => {
            report.pass(CHECK, format!("read AWSCURRENT (version {})", version.id));
            Some(version)
        }
        Ok(_) => {
            report.fail(
                CHECK,
                "AWSCURRENT has no SecretString",
                format!("put the credentials: aws secretsmanager put-secret-value --secret-id {arn} --secret-string file://secret.json"),
            );
            None
        }
        Err(e) => {
            aws_failure(report, CHECK, "secretsmanager:GetSecretValue", arn, &e);
            None
        }
    }
}

/// ListSecretVersionIds: setSecret's search for the password an abandoned
/// rotation left in the database.
pub(super) async fn list_versions(report: &mut Report, store: &SecretStore, arn: &str, deadline: &Deadline) {
    const CHECK: &str = "secretsmanager:ListSecretVersionIds";
    match store.list_versions(arn, deadline).await {
        Ok(versions) => report.pass(CHECK, format!("{} version(s), labelled or not", versions.len())),
        Err(e) => aws_failure(report, CHECK, CHECK, arn, &e),
    }
}

/// PutSecretValue, refused for an existing version id (see the module's
/// comment for why this writes nothing).
pub(super) async fn probe_put(
    report: &mut Report,
    store: &SecretStore,
    arn: &str,
    current: &Version,
    deadline: &Deadline,
) {
    const CHECK: &str = "secretsmanager:PutSecretValue";
    if current.value.as_ref().is_some_and(|v| v.expose_secret() == PROBE_VALUE) {
        report.skip(CHECK, "AWSCURRENT holds the probe's own value, so the probe could not be refused; not tried");
        return;
    }
    let probe = SecretString::from(PROBE_VALUE);
    match store.put_pending(arn, &current.id, &probe, None, deadline).await {
        Ok(PutOutcome::AlreadyExists) => report.pass(
            CHECK,
            format!(
                "authorized: a different value under the existing version {} was refused with \
                 ResourceExistsException, nothing written",
                current.id
            ),
        ),
        Ok(PutOutcome::Written) => report.fail(
            CHECK,
            format!("Secrets Manager accepted a second value for version {}: it should refuse it", current.id),
            "this endpoint does not behave as Secrets Manager; do not rotate through it",
        ),
        Err(RotationError::Aws(aws)) if !aws.transient && !is_denied(&aws.code, &aws.message) => {
            report.pass(CHECK, format!("authorized: the probe was refused with {}, nothing written", aws.code))
        }
        Err(e) => aws_failure(report, CHECK, CHECK, arn, &e),
    }
}

/// UpdateSecretVersionStage between two version ids that do not exist.
pub(super) async fn probe_stage(report: &mut Report, store: &SecretStore, arn: &str, deadline: &Deadline) {
    const CHECK: &str = "secretsmanager:UpdateSecretVersionStage";
    let made_up = || format!("preflight-{:032x}", rand::random::<u128>());
    let (to, from) = (made_up(), made_up());
    match store.move_current(arn, &to, &from, deadline).await {
        Err(RotationError::Aws(aws)) if !aws.transient && !is_denied(&aws.code, &aws.message) => report.pass(
            CHECK,
            format!(
                "authorized: moving AWSCURRENT between two versions that do not exist was refused with {}",
                aws.code
            ),
        ),
        Ok(()) => report.warn(
            CHECK,
            "Secrets Manager accepted a stage move between versions that do not exist",
            "nothing could move (neither version exists), but this endpoint does not behave as Secrets Manager",
        ),
        Err(e) => aws_failure(report, CHECK, CHECK, arn, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_are_recognised_in_every_form() {
        assert!(is_denied("AccessDeniedException", "User: x is not authorized to perform: y"));
        assert!(is_denied("AccessDenied (HTTP 403)", ""));
        assert!(!is_denied("ResourceExistsException", "You can't use ClientRequestToken"));
        assert!(!is_denied("InvalidParameterException", "Not a valid version"));
        let fix = denied_fix("secretsmanager:PutSecretValue", "arn:aws:secretsmanager:r:1:secret:db", "");
        assert!(fix.contains("`secretsmanager:PutSecretValue` on resource `arn:aws:secretsmanager:r:1:secret:db`"));
        assert!(denied_fix("a", "b", "access to KMS is not allowed").contains("kms:Decrypt"));
    }
}
