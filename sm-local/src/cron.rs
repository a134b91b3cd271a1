//! `cron()` schedule expressions as Secrets Manager takes them (the
//! EventBridge dialect): six fields, `minutes hours day-of-month month
//! day-of-week year`, UTC.
//!
//! Each field takes `*`, a value, a range `a-b`, a step `a/n` or `*/n`, or a
//! comma-separated list of those. Months may be `JAN`–`DEC`, weekdays
//! `SUN`–`SAT` or `1`–`7` (1 is Sunday). One of day-of-month and day-of-week
//! must be `?` (AWS refuses both or neither). Day-of-week also takes `D#n`,
//! the n-th such weekday of the month (`TUE#1`: the first Tuesday), which is
//! how a monthly schedule on a fixed weekday is written. `L` and `W` are not
//! supported here and are refused by name rather than ignored.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MINUTE: u64 = 60;
const DAY: u64 = 86_400;
/// How far ahead a match is searched for: a schedule with none (a past year) never fires.
const SEARCH_DAYS: i64 = 366 * 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

/// A parsed `cron(...)` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: Vec<u32>,
    hours: Vec<u32>,
    days: Days,
    months: Vec<u32>,
    years: Option<Vec<u32>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Days {
    /// Day-of-month values (day-of-week is `?`).
    OfMonth(Vec<u32>),
    /// Weekdays, 0 = Sunday (day-of-month is `?`).
    OfWeek(Vec<u32>),
    /// The `nth` (1–5) `weekday` (0 = Sunday) of the month.
    NthWeekday { weekday: u32, nth: u32 },
}

const MONTHS: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Cron {
    /// Parses `cron(m h dom mon dow y)`; the error says which field is wrong.
    pub fn parse(expression: &str) -> Result<Self, CronError> {
        let inner = expression
            .trim()
            .strip_prefix("cron(")
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| CronError("not cron(...)".into()))?;
        let fields: Vec<&str> = inner.split_whitespace().collect();
        let [minutes, hours, dom, month, dow, year] = fields[..] else {
            return Err(CronError(format!(
                "{} fields, expected 6 (minutes hours day-of-month month day-of-week year)",
                fields.len()
            )));
        };
        if (dom == "?") == (dow == "?") {
            return Err(CronError("exactly one of day-of-month and day-of-week must be ?".into()));
        }
        let days = match (dom, dow) {
            ("?", dow) => match dow.split_once('#') {
                Some((weekday, nth)) => Days::NthWeekday {
                    weekday: value(weekday, "day-of-week", 1, 7, &WEEKDAYS)? - 1,
                    nth: nth.parse().ok().filter(|n| (1..=5).contains(n)).ok_or_else(|| invalid("day-of-week", dow))?,
                },
                None => Days::OfWeek(field(dow, "day-of-week", 1, 7, &WEEKDAYS)?.into_iter().map(|d| d - 1).collect()),
            },
            (dom, _) => Days::OfMonth(field(dom, "day-of-month", 1, 31, &[])?),
        };
        Ok(Self {
            minutes: field(minutes, "minutes", 0, 59, &[])?,
            hours: field(hours, "hours", 0, 23, &[])?,
            days,
            months: field(month, "month", 1, 12, &MONTHS)?,
            years: if year == "*" { None } else { Some(field(year, "year", 1970, 2199, &[])?) },
        })
    }

    /// The first matching minute strictly after `after`; `None` when there is
    /// none within five years.
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        let secs = after.duration_since(UNIX_EPOCH).ok()?.as_secs();
        // The next whole minute after `after`.
        let start = (secs / MINUTE + 1) * MINUTE;
        let first_day = (start / DAY) as i64;
        for day in first_day..first_day + SEARCH_DAYS {
            let (y, m, d) = civil_from_days(day);
            if !self.months.contains(&m) || self.years.as_ref().is_some_and(|ys| !ys.contains(&(y as u32))) {
                continue;
            }
            if !self.day_matches(d, day) {
                continue;
            }
            for &h in &self.hours {
                for &min in &self.minutes {
                    let t = day as u64 * DAY + u64::from(h) * 3_600 + u64::from(min) * MINUTE;
                    if t >= start {
                        return Some(UNIX_EPOCH + Duration::from_secs(t));
                    }
                }
            }
        }
        None
    }

    fn day_matches(&self, d: u32, day: i64) -> bool {
        // 1970-01-01 was a Thursday (4).
        let weekday = (day + 4).rem_euclid(7) as u32;
        match &self.days {
            Days::OfMonth(days) => days.contains(&d),
            Days::OfWeek(days) => days.contains(&weekday),
            Days::NthWeekday { weekday: w, nth } => weekday == *w && (d - 1) / 7 + 1 == *nth,
        }
    }
}

fn invalid(name: &str, text: &str) -> CronError {
    CronError(format!("{name} field {text:?} is not valid"))
}

/// One field: a comma-separated list of `*`, `v`, `a-b`, `a/n`, `*/n`, `a-b/n`; sorted values.
fn field(text: &str, name: &str, min: u32, max: u32, names: &[&str]) -> Result<Vec<u32>, CronError> {
    // Names may hold the letters (JUL, WED); what is left once they are gone may not.
    let without_names = names.iter().fold(text.to_ascii_uppercase(), |t, n| t.replace(n, ""));
    if without_names.contains(['L', 'W']) {
        return Err(CronError(format!("{name} field {text:?}: L and W are not supported by sm-local")));
    }
    let mut out = Vec::new();
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                (range, step.parse::<u32>().ok().filter(|s| *s >= 1).ok_or_else(|| invalid(name, text))?)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, name, min, max, names)?, value(b, name, min, max, names)?)
        } else {
            let v = value(range, name, min, max, names)?;
            // `a/n` runs from a to the field's end; a bare value is itself.
            (v, if part.contains('/') { max } else { v })
        };
        if lo > hi {
            return Err(invalid(name, text));
        }
        out.extend((lo..=hi).step_by(step as usize));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// A number within `min..=max`, or a name (`names[i]` is `min + i`).
fn value(text: &str, name: &str, min: u32, max: u32, names: &[&str]) -> Result<u32, CronError> {
    let upper = text.to_ascii_uppercase();
    if let Some(i) = names.iter().position(|n| *n == upper) {
        return Ok(min + i as u32);
    }
    text.parse::<u32>().ok().filter(|v| (min..=max).contains(v)).ok_or_else(|| invalid(name, text))
}

/// (year, month 1–12, day 1–31) of a day number since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seconds since the epoch of a UTC date and time.
    fn at(y: i64, m: u32, d: u32, h: u64, min: u64) -> SystemTime {
        // Search forward from the epoch for the day (tests only; small ranges).
        let mut day = 0i64;
        while civil_from_days(day) != (y, m, d) {
            day += 1;
        }
        UNIX_EPOCH + Duration::from_secs(day as u64 * DAY + h * 3_600 + min * MINUTE)
    }

    fn next(expr: &str, after: SystemTime) -> SystemTime {
        Cron::parse(expr).expect(expr).next_after(after).expect("a next time")
    }

    #[test]
    fn the_stacks_schedules() {
        // cdk/lib/schedules.ts: daily, weekly (Tuesdays), monthly (the first Tuesday), at 04, 08 and 12 UTC.
        // 2026-12-07 is a Monday.
        let monday = at(2026, 12, 7, 17, 39);
        assert_eq!(next("cron(0 4 * * ? *)", monday), at(2026, 12, 8, 4, 0));
        assert_eq!(next("cron(0 8 ? * TUE *)", monday), at(2026, 12, 8, 8, 0));
        assert_eq!(next("cron(0 12 ? * TUE#1 *)", monday), at(2027, 1, 5, 12, 0), "the first Tuesday of January");
        assert_eq!(next("cron(0 4 ? * TUE#1 *)", at(2026, 12, 1, 3, 0)), at(2026, 12, 1, 4, 0));
        assert_eq!(next("cron(0 4 ? * 3#1 *)", monday), at(2027, 1, 5, 4, 0), "3 is Tuesday");
    }

    #[test]
    fn strictly_after_and_on_the_minute() {
        let t = at(2026, 12, 8, 4, 0);
        assert_eq!(next("cron(0 4 * * ? *)", t), at(2026, 12, 9, 4, 0), "not the same minute again");
        assert_eq!(next("cron(*/15 * * * ? *)", t + Duration::from_secs(1)), at(2026, 12, 8, 4, 15));
        assert_eq!(next("cron(0 0 1 JAN,JUL ? *)", t), at(2027, 1, 1, 0, 0));
        assert_eq!(next("cron(30 22 L-1 * ? *)".replace("L-1", "31").as_str(), t), at(2026, 12, 31, 22, 30));
        assert_eq!(next("cron(0 9 ? * MON-FRI 2027)", t), at(2027, 1, 1, 9, 0), "2027-01-01 is a Friday");
        assert!(Cron::parse("cron(0 9 * * ? 2020)").expect("past year").next_after(t).is_none());
    }

    #[test]
    fn refused_with_the_field_named() {
        for (bad, says) in [
            ("cron(0 4 * * * *)", "exactly one"),
            ("cron(0 4 ? * ? *)", "exactly one"),
            ("cron(0 4 * *)", "4 fields"),
            ("cron(60 4 * * ? *)", "minutes"),
            ("cron(0 24 * * ? *)", "hours"),
            ("cron(0 4 32 * ? *)", "day-of-month"),
            ("cron(0 4 ? * TUE#6 *)", "day-of-week"),
            ("cron(0 4 ? * FUN *)", "day-of-week"),
            ("cron(0 4 L * ? *)", "not supported"),
            ("cron(0 4 ? * 2L *)", "not supported"),
            ("cron(0 5-4 * * ? *)", "hours"),
            ("rate(1 day)", "not cron"),
        ] {
            let err = Cron::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
