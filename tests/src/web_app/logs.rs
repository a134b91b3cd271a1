//! Reading the app's output: its `switched…` lines, and passwords that must not be there.

/// A line of the app's JSON log that says it switched logins, read as the
/// CDK's metric filter and dashboard read it: `$.message = "switched*"`, the
/// version in `$.to`.
pub fn switch_line(line: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    (v["message"].as_str()?.starts_with("switched") && v["to"].is_string()).then_some(v)
}

/// Every password in `text` that the test knows of (for leak assertions on app output).
pub fn leaked<'a>(text: &str, passwords: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    passwords.into_iter().filter(|p| text.contains(p.as_str())).map(|p| format!("{}…", &p[..4.min(p.len())])).collect()
}
