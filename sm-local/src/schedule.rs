//! Rotation rules: how often the endpoint rotates a secret by itself.
//!
//! Secrets Manager takes either `AutomaticallyAfterDays` (1–1000) or a
//! `ScheduleExpression`, never both, plus an optional rotation window
//! `Duration`. AWS's shortest schedule is `rate(4 hours)`; here any `rate()`
//! down to one second is allowed, so that a test or a demo can watch a
//! schedule fire. `cron()` expressions (the stack's staggered schedules,
//! cdk/lib/schedules.ts) are evaluated by `crate::cron`, in UTC.
//!
//! A `rate()` or days rotation is due one interval after the previous one
//! started (the schedule's *anchor*); a `cron()` rotation at the first
//! matching minute after the anchor. Secrets Manager rotates at a random
//! moment inside the window (`Duration`); here the window's start is the
//! moment, so a test knows when to look. The window is stored and echoed.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use crate::cron::Cron;

const DAY: u64 = 86_400;

/// A validated `RotationRules` structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationRules {
    automatically_after_days: Option<u64>,
    schedule_expression: Option<String>,
    duration: Option<String>,
    schedule: Schedule,
}

/// When rotations fall due.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Schedule {
    /// `AutomaticallyAfterDays` or `rate()`: a fixed interval after the anchor.
    Every(Duration),
    /// `cron()`: the next matching minute after the anchor.
    Cron(Box<Cron>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    #[error("RotationRules must be a JSON object.")]
    NotObject,
    #[error("You can't set both AutomaticallyAfterDays and ScheduleExpression in RotationRules.")]
    Both,
    #[error("RotationRules needs AutomaticallyAfterDays or ScheduleExpression.")]
    Neither,
    #[error("RotationRules.AutomaticallyAfterDays must be within 1-1000.")]
    Days,
    #[error("RotationRules.ScheduleExpression {0:?} is not rate(N seconds|minutes|hours|days) with N >= 1.")]
    Expression(String),
    #[error("RotationRules.ScheduleExpression {0:?} is not a valid cron expression: {1}.")]
    Cron(String, String),
    #[error("RotationRules.Duration {0:?} must be a whole number of hours from 1h to 24h.")]
    Duration(String),
}

impl RotationRules {
    /// Parses the `RotationRules` member of a RotateSecret request.
    pub fn from_json(value: &Value) -> Result<Self, RulesError> {
        let rules = value.as_object().ok_or(RulesError::NotObject)?;
        let member = |key: &str| rules.get(key).filter(|v| !v.is_null());
        let days = match member("AutomaticallyAfterDays") {
            None => None,
            Some(v) => Some(v.as_u64().filter(|d| (1..=1000).contains(d)).ok_or(RulesError::Days)?),
        };
        let expression = match member("ScheduleExpression") {
            None => None,
            Some(v) => Some(v.as_str().ok_or_else(|| RulesError::Expression(v.to_string()))?.trim().to_owned()),
        };
        let duration = match member("Duration") {
            None => None,
            Some(v) => {
                let text = v.as_str().ok_or_else(|| RulesError::Duration(v.to_string()))?;
                validate_window(text)?;
                Some(text.to_owned())
            }
        };
        let schedule = match (days, &expression) {
            (Some(_), Some(_)) => return Err(RulesError::Both),
            (None, None) => return Err(RulesError::Neither),
            (Some(days), None) => Schedule::Every(Duration::from_secs(days * DAY)),
            (None, Some(expression)) if expression.starts_with("cron(") => Schedule::Cron(Box::new(
                Cron::parse(expression).map_err(|e| RulesError::Cron(expression.clone(), e.to_string()))?,
            )),
            (None, Some(expression)) => Schedule::Every(parse_rate(expression)?),
        };
        Ok(Self { automatically_after_days: days, schedule_expression: expression, duration, schedule })
    }

    /// Time between two scheduled rotations; `None` for a `cron()` schedule.
    pub fn interval(&self) -> Option<Duration> {
        match &self.schedule {
            Schedule::Every(interval) => Some(*interval),
            Schedule::Cron(_) => None,
        }
    }

    /// When the next rotation is due, given when the previous one started. A
    /// cron schedule with no match within five years (a past year) never is.
    pub fn next_due(&self, anchor: SystemTime) -> SystemTime {
        match &self.schedule {
            Schedule::Every(interval) => anchor + *interval,
            Schedule::Cron(cron) => cron.next_after(anchor).unwrap_or(anchor + Duration::from_secs(1_000 * 366 * DAY)),
        }
    }

    /// The rules as DescribeSecret reports them. Like Secrets Manager, a
    /// schedule in whole days also reports `AutomaticallyAfterDays`.
    pub fn to_json(&self) -> Value {
        let mut rules = Map::new();
        let whole_days = self.interval().filter(|i| i.as_secs().is_multiple_of(DAY)).map(|i| i.as_secs() / DAY);
        if let Some(days) = self.automatically_after_days.or(whole_days) {
            rules.insert("AutomaticallyAfterDays".into(), json!(days));
        }
        if let Some(expression) = &self.schedule_expression {
            rules.insert("ScheduleExpression".into(), json!(expression));
        }
        if let Some(duration) = &self.duration {
            rules.insert("Duration".into(), json!(duration));
        }
        Value::Object(rules)
    }
}

/// `rate(N unit)` → the interval. Singular and plural units are both
/// accepted (`rate(1 minutes)` too): being stricter than AWS here buys nothing.
pub fn parse_rate(expression: &str) -> Result<Duration, RulesError> {
    let expression = expression.trim();
    let invalid = || RulesError::Expression(expression.to_owned());
    let inner = expression.strip_prefix("rate(").and_then(|r| r.strip_suffix(')')).ok_or_else(invalid)?;
    let mut words = inner.split_whitespace();
    let (Some(count), Some(unit), None) = (words.next(), words.next(), words.next()) else {
        return Err(invalid());
    };
    let count: u64 = count.parse().ok().filter(|n| *n >= 1).ok_or_else(invalid)?;
    let unit_seconds = match unit {
        "second" | "seconds" => 1,
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3_600,
        "day" | "days" => DAY,
        _ => return Err(invalid()),
    };
    count.checked_mul(unit_seconds).map(Duration::from_secs).ok_or_else(invalid)
}

fn validate_window(text: &str) -> Result<(), RulesError> {
    let hours =
        text.strip_suffix('h').filter(|h| !h.is_empty() && h.len() <= 2 && h.bytes().all(|b| b.is_ascii_digit()));
    match hours.and_then(|h| h.parse::<u8>().ok()) {
        Some(1..=24) => Ok(()),
        _ => Err(RulesError::Duration(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(value: Value) -> Result<RotationRules, RulesError> {
        RotationRules::from_json(&value)
    }

    #[test]
    fn rate_expressions() {
        assert_eq!(parse_rate("rate(10 seconds)"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_rate("rate(1 minute)"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_rate(" rate(4 hours) "), Ok(Duration::from_secs(4 * 3600)));
        assert_eq!(parse_rate("rate(30 days)"), Ok(Duration::from_secs(30 * DAY)));
        assert_eq!(parse_rate("rate( 2  minutes )"), Ok(Duration::from_secs(120)));
        for bad in
            ["rate(0 minutes)", "rate(-1 days)", "rate(ten minutes)", "rate(5 weeks)", "rate(5)", "rate()", "5 minutes"]
        {
            assert_eq!(parse_rate(bad), Err(RulesError::Expression(bad.to_owned())), "{bad}");
        }
        assert!(matches!(parse_rate("cron(0 2 * * ? *)"), Err(RulesError::Expression(_))), "parse_rate is rate() only");
        assert!(parse_rate(&format!("rate({} days)", u64::MAX)).is_err(), "overflow is refused, not wrapped");
    }

    #[test]
    fn days_or_expression_but_not_both() {
        let days = rules(json!({"AutomaticallyAfterDays": 30})).expect("days");
        assert_eq!(days.interval(), Some(Duration::from_secs(30 * DAY)));
        let rate = rules(json!({"ScheduleExpression": "rate(10 seconds)", "Duration": "2h"})).expect("rate");
        assert_eq!(rate.interval(), Some(Duration::from_secs(10)));
        assert_eq!(
            rules(json!({"AutomaticallyAfterDays": 1, "ScheduleExpression": "rate(1 day)"})),
            Err(RulesError::Both)
        );
        assert_eq!(rules(json!({})), Err(RulesError::Neither));
        assert_eq!(rules(json!({"Duration": "3h"})), Err(RulesError::Neither));
        assert_eq!(rules(json!([])), Err(RulesError::NotObject));
    }

    #[test]
    fn out_of_range_values_are_named() {
        assert_eq!(rules(json!({"AutomaticallyAfterDays": 0})), Err(RulesError::Days));
        assert_eq!(rules(json!({"AutomaticallyAfterDays": 1001})), Err(RulesError::Days));
        assert_eq!(rules(json!({"AutomaticallyAfterDays": "30"})), Err(RulesError::Days));
        for window in ["0h", "25h", "3", "h", "3m", "100h"] {
            let got = rules(json!({"ScheduleExpression": "rate(1 day)", "Duration": window}));
            assert_eq!(got, Err(RulesError::Duration(window.to_owned())), "{window}");
        }
    }

    #[test]
    fn next_due_is_one_interval_after_the_anchor() {
        let anchor = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let rate = rules(json!({"ScheduleExpression": "rate(2 minutes)"})).expect("rate");
        assert_eq!(rate.next_due(anchor), anchor + Duration::from_secs(120));
        let days = rules(json!({"AutomaticallyAfterDays": 7})).expect("days");
        assert_eq!(days.next_due(anchor), anchor + Duration::from_secs(7 * DAY));
    }

    #[test]
    fn described_as_secrets_manager_does() {
        let days = rules(json!({"AutomaticallyAfterDays": 30})).expect("days");
        assert_eq!(days.to_json(), json!({"AutomaticallyAfterDays": 30}));
        let whole = rules(json!({"ScheduleExpression": "rate(2 days)", "Duration": "4h"})).expect("rate");
        assert_eq!(
            whole.to_json(),
            json!({"AutomaticallyAfterDays": 2, "ScheduleExpression": "rate(2 days)", "Duration": "4h"})
        );
        let short = rules(json!({"ScheduleExpression": "rate(10 seconds)"})).expect("rate");
        assert_eq!(short.to_json(), json!({"ScheduleExpression": "rate(10 seconds)"}));
    }

    #[test]
    fn the_stacks_cron_schedules_with_a_window_are_accepted_and_fall_due_at_the_window_start() {
        // What cdk/lib/schedules.ts writes into the three RotationSchedule resources.
        // Anchor: Monday 2026-12-07 17:39:11 UTC.
        let anchor = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_665_151);
        for (expression, due) in [
            ("cron(0 4 * * ? *)", 1_796_702_400),      // Tuesday 2026-12-08 04:00
            ("cron(0 8 ? * TUE *)", 1_796_716_800),    // Tuesday 2026-12-08 08:00
            ("cron(0 12 ? * TUE#1 *)", 1_799_150_400), // Tuesday 2027-01-05 12:00
        ] {
            let rules = rules(json!({"ScheduleExpression": expression, "Duration": "2h"})).expect(expression);
            assert_eq!(rules.next_due(anchor), SystemTime::UNIX_EPOCH + Duration::from_secs(due), "{expression}");
            assert_eq!(rules.interval(), None);
            assert_eq!(rules.to_json(), json!({"ScheduleExpression": expression, "Duration": "2h"}), "echoed as given");
        }
    }

    #[test]
    fn an_invalid_cron_expression_is_refused_with_the_reason() {
        let err = rules(json!({"ScheduleExpression": "cron(0 2 * * * *)"})).expect_err("both day fields");
        assert!(
            matches!(&err, RulesError::Cron(e, why) if e == "cron(0 2 * * * *)" && why.contains("day-of-week")),
            "{err}"
        );
        assert!(rules(json!({"ScheduleExpression": "cron(0 25 * * ? *)"})).is_err());
    }
}
