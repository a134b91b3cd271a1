//! Following what happens without being told: the endpoint's rotation
//! records (every rotation of the demo's secret, whoever started it) and the
//! web app's log lines that say it switched logins.

use std::collections::{HashMap, HashSet};

use aws_sdk_secretsmanager::primitives::{DateTime, DateTimeFormat};
use sm_local::{RotationStatus, SmLocal};

use crate::timeline::{Clock, RotationMark, StepMark, Switch};

/// Something a poll found out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Rotation number `n` (index `n - 1` of [`RotationWatch::rotations`]) began.
    Started(usize),
    /// Step `step` of rotation index `r` ended.
    StepEnded {
        r: usize,
        step: usize,
    },
    Finished(usize),
}

/// Every rotation of one secret, as the endpoint records it. Polled every
/// few milliseconds; a step's start is when a poll first saw it running
/// (else when the step before it ended), its length the endpoint's own.
#[derive(Debug)]
pub struct RotationWatch {
    secret: String,
    by_demo: HashSet<String>,
    index: HashMap<String, usize>,
    attempts: Vec<u32>,
    pub rotations: Vec<RotationMark>,
}

impl RotationWatch {
    pub fn new(secret: &str) -> RotationWatch {
        RotationWatch {
            secret: secret.to_owned(),
            by_demo: HashSet::new(),
            index: HashMap::new(),
            attempts: Vec::new(),
            rotations: Vec::new(),
        }
    }

    /// The demo started rotation `token` (RotateSecret answered with it).
    pub fn started_by_demo(&mut self, token: &str) {
        self.by_demo.insert(token.to_owned());
    }

    /// The rotation that has not ended yet, if one runs.
    pub fn running(&self) -> Option<usize> {
        self.rotations.iter().position(|r| r.status.is_none())
    }

    pub fn poll(&mut self, endpoint: &SmLocal, clock: &Clock) -> Vec<Event> {
        let mut events = Vec::new();
        let now = clock.now();
        for record in endpoint.rotations(Some(&self.secret)) {
            let r = match self.index.get(&record.token) {
                Some(r) => *r,
                None => {
                    let r = self.rotations.len();
                    self.index.insert(record.token.clone(), r);
                    self.attempts.push(record.attempts);
                    self.rotations.push(RotationMark {
                        number: r + 1,
                        by_demo: self.by_demo.contains(&record.token),
                        token: record.token.clone(),
                        started: clock.at_epoch_ms(record.started_at_ms as f64).min(now),
                        steps: Vec::new(),
                        finished: None,
                        status: None,
                        error: None,
                    });
                    events.push(Event::Started(r));
                    r
                }
            };
            let mark = &mut self.rotations[r];
            if self.attempts[r] != record.attempts {
                // Secrets Manager retried the rotation with its token: every step again.
                self.attempts[r] = record.attempts;
                mark.steps.clear();
                mark.finished = None;
                mark.status = None;
                mark.error = None;
            }
            for (i, step) in record.steps.iter().enumerate() {
                if i == mark.steps.len() {
                    let after = mark.steps.last().and_then(|s| s.end).unwrap_or(mark.started);
                    let start = if step.status == "running" { now } else { after };
                    mark.steps.push(StepMark { name: step.step.clone(), start, end: None, ok: None });
                }
                let seen = &mut mark.steps[i];
                if seen.end.is_none() && step.status != "running" {
                    seen.end = Some(seen.start + step.duration_ms.unwrap_or(0.0) / 1e3);
                    seen.ok = Some(step.status == "succeeded");
                    events.push(Event::StepEnded { r, step: i });
                }
            }
            if mark.status.is_none() && record.status != RotationStatus::InProgress {
                let finished = record.finished_at_ms.map_or(now, |ms| clock.at_epoch_ms(ms as f64));
                let last_step = mark.steps.last().and_then(|s| s.end).unwrap_or(mark.started);
                mark.finished = Some(finished.max(last_step));
                mark.status = Some(record.status);
                mark.error = record.error.map(|e| format!("{}: {}: {}", e.step, e.error_type, e.error_message));
                events.push(Event::Finished(r));
            }
        }
        events
    }
}

/// The app's switches of login, from its JSON log (`"message": "switched …"`,
/// with `to`, `user`, and `stage` when an authentication failure led there).
#[derive(Debug, Default)]
pub struct SwitchWatch {
    read: usize,
    pub switches: Vec<Switch>,
}

impl SwitchWatch {
    /// Reads the complete lines of `output` not read yet; returns how many
    /// switches they held.
    pub fn poll(&mut self, output: &str, clock: &Clock) -> usize {
        let Some(end) = output.get(self.read..).and_then(|rest| rest.rfind('\n')).map(|i| self.read + i + 1) else {
            return 0;
        };
        let before = self.switches.len();
        for line in output[self.read..end].lines() {
            if let Some(switch) = parse_switch(line, clock) {
                self.switches.push(switch);
            }
        }
        self.read = end;
        self.switches.len() - before
    }
}

fn parse_switch(line: &str, clock: &Clock) -> Option<Switch> {
    if !line.contains("\"switched") {
        return None;
    }
    let v = e2e::web_app::switch_line(line)?;
    let at = v["timestamp"].as_str().and_then(epoch_ms).map_or_else(|| clock.now(), |ms| clock.at_epoch_ms(ms));
    let why = match v["stage"].as_str() {
        Some(stage) => format!("login refused, {stage} works"),
        None => "change check".to_owned(),
    };
    Some(Switch { at, version: v["to"].as_str()?.to_owned(), user: v["user"].as_str().unwrap_or("?").to_owned(), why })
}

/// `2026-12-03T04:30:01.123456Z` (tracing's timestamps; `+00:00` too) →
/// milliseconds since the Unix epoch, read by the AWS SDK's RFC 3339 parser.
fn epoch_ms(timestamp: &str) -> Option<f64> {
    // The SDK's parser takes UTC as `Z` only.
    let utc = timestamp.strip_suffix("+00:00").map_or_else(|| timestamp.to_owned(), |t| format!("{t}Z"));
    let parsed = DateTime::from_str(&utc, DateTimeFormat::DateTime).ok()?;
    Some(parsed.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(epoch_ms("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(epoch_ms("2000-03-01T00:00:01.5Z"), Some((11_017.0 * 86_400.0 + 1.5) * 1e3));
        assert_eq!(epoch_ms("2026-12-03T04:30:01.250000+00:00"), Some(1_796_272_201_250.0));
        assert_eq!(epoch_ms("yesterday"), None);
    }

    #[test]
    fn switches_from_the_app_log_and_nothing_else() {
        let clock = Clock::start();
        let log = concat!(
            r#"{"timestamp":"2026-12-03T04:30:01.250000Z","level":"INFO","message":"switched to the new AWSCURRENT","from":"a","to":"b","user":"app"}"#,
            "\n",
            r#"{"timestamp":"2026-12-03T04:30:02Z","level":"INFO","message":"switched after an authentication failure","to":"c","stage":"AWSPENDING","user":"app"}"#,
            "\n",
            r#"{"timestamp":"2026-12-03T04:30:03Z","level":"WARN","message":"pool connection failed"}"#,
            "\n",
            r#"{"timestamp":"2026-12-03T04:30:04Z","message":"switched to the new AWSCURRENT","to":"d"#,
        );
        let mut watch = SwitchWatch::default();
        assert_eq!(watch.poll(log, &clock), 2, "the unfinished last line waits");
        assert_eq!(watch.switches[0].version, "b");
        assert_eq!(watch.switches[1].why, "login refused, AWSPENDING works");
        assert!((watch.switches[1].at - watch.switches[0].at - 0.75).abs() < 1e-6);
        assert_eq!(watch.poll(&format!("{log}\",\"user\":\"app\"}}\n"), &clock), 1);
    }
}
