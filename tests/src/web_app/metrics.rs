//! The app's `/metrics`, parsed.

use std::collections::BTreeMap;

/// The app's `/metrics`, parsed: `name{labels}` → value.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub samples: BTreeMap<String, f64>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (key, value) = l.rsplit_once(' ')?;
                Some((key.to_owned(), value.parse().ok()?))
            })
            .collect();
        Metrics { samples, text: text.to_owned() }
    }

    /// Sum of every sample of `name` whose labels contain all of `labels` (`k="v"`).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
            .filter(|(k, _)| labels.iter().all(|l| k.contains(l)))
            .map(|(_, v)| v)
            .sum()
    }

    pub fn secretsmanager_calls(&self) -> u64 {
        self.sum("web_app_secretsmanager_calls_total", &[]) as u64
    }

    pub fn secretsmanager(&self, operation: &str) -> u64 {
        self.sum("web_app_secretsmanager_calls_total", &[&format!("operation=\"{operation}\"")]) as u64
    }
}
