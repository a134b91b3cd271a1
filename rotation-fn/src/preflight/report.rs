//! The pre-flight's answer: one row per check, and whether a rotation would
//! succeed. Every text here is public (the invocation's result, CloudWatch):
//! it names users, servers, ARNs, settings and error codes, never a value.

use serde::Serialize;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Status {
    /// What a rotation needs is there.
    Pass,
    /// A rotation would fail (or do harm) until the fix is applied.
    Fail,
    /// A rotation would succeed, but something needs attention.
    Warn,
    /// Not checked: an earlier failure makes the answer meaningless.
    Skip,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Check {
    pub(super) check: &'static str,
    pub(super) status: Status,
    pub(super) detail: String,
    /// What to change, exactly (the permission, the rule, the GRANT, the
    /// variable); present for every failure and warning.
    pub(super) fix: Option<String>,
}

#[derive(Debug, Default)]
pub(super) struct Report {
    checks: Vec<Check>,
}

impl Report {
    pub(super) fn pass(&mut self, check: &'static str, detail: impl Into<String>) {
        self.checks.push(Check { check, status: Status::Pass, detail: detail.into(), fix: None });
    }

    pub(super) fn fail(&mut self, check: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.checks.push(Check { check, status: Status::Fail, detail: detail.into(), fix: Some(fix.into()) });
    }

    pub(super) fn warn(&mut self, check: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.checks.push(Check { check, status: Status::Warn, detail: detail.into(), fix: Some(fix.into()) });
    }

    pub(super) fn skip(&mut self, check: &'static str, why: impl Into<String>) {
        self.checks.push(Check { check, status: Status::Skip, detail: why.into(), fix: None });
    }

    /// Skips every check of `names` the report has no row for yet: the
    /// table keeps the same rows whatever stopped it early.
    pub(super) fn skip_rest(&mut self, names: &[&'static str], why: &str) {
        for name in names {
            if !self.checks.iter().any(|c| c.check == *name) {
                self.skip(name, why);
            }
        }
    }

    fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    pub(super) fn failed(&self) -> usize {
        self.count(Status::Fail)
    }

    pub(super) fn warned(&self) -> usize {
        self.count(Status::Warn)
    }

    /// Ready: nothing failed. Warnings do not stop a rotation; a skipped
    /// check is always the consequence of a failure reported above it.
    pub(super) fn ready(&self) -> bool {
        self.failed() == 0
    }

    pub(super) fn into_json(self, secret: &str, strategy: &str) -> Value {
        json!({
            "operation": "preflight",
            "secret": secret,
            "strategy": strategy,
            "ready": self.ready(),
            "failed": self.failed(),
            "warnings": self.warned(),
            "checks": self.checks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_means_nothing_failed_and_every_failure_has_a_fix() {
        let mut report = Report::default();
        report.pass("a", "fine");
        report.warn("b", "soon", "renew it");
        assert!(report.ready());
        report.fail("c", "broken", "GRANT x TO y");
        report.skip("d", "needs c");
        assert!(!report.ready());
        let json = report.into_json("arn:s", "single-user");
        assert_eq!(json["ready"], false);
        assert_eq!(json["failed"], 1);
        assert_eq!(json["warnings"], 1);
        assert_eq!(
            json["checks"][2],
            json!({"check": "c", "status": "fail", "detail": "broken", "fix": "GRANT x TO y"})
        );
        assert_eq!(json["checks"][3]["fix"], Value::Null);
    }
}
