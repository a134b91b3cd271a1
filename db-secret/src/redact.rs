//! Secrets this process knows, scrubbed out of text that came from a server.
//!
//! A server's error and notice messages are input from whoever runs it: a
//! server that learned a password (or the verifier the function sent it) can
//! send it back inside a message, which would then land in an error, a log
//! line or the caller's result. Every password this process parses or makes
//! and every verifier it computes is remembered here (the newest
//! [`CAPACITY`]), and [`scrub`] replaces each occurrence with `[redacted]`
//! before a server's text is kept anywhere.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Mutex;

/// How many secrets are remembered; a rotation touches a handful, a web app
/// a few per rotation.
const CAPACITY: usize = 64;
/// Shorter strings are not scrubbed: they would blank ordinary words, and a
/// password that short is no secret anyway.
const MIN_LEN: usize = 4;
const REDACTED: &str = "[redacted]";

static KNOWN: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

/// Remembers `secret` so that [`scrub`] removes it from server text.
pub fn remember(secret: &str) {
    if secret.len() < MIN_LEN {
        return;
    }
    let mut known = KNOWN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if known.iter().any(|k| k == secret) {
        return;
    }
    if known.len() == CAPACITY {
        known.pop_front();
    }
    known.push_back(secret.to_owned());
}

/// `text` with every remembered secret replaced by `[redacted]`.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let known = KNOWN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = Cow::Borrowed(text);
    // Longest first, so a secret that contains another is removed whole.
    let mut by_length: Vec<&String> = known.iter().filter(|k| text.contains(k.as_str())).collect();
    by_length.sort_by_key(|k| std::cmp::Reverse(k.len()));
    for secret in by_length {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_secrets_are_scrubbed_and_others_left_alone() {
        remember("Sup3r-secret-pa55word");
        remember("Sup3r-secret");
        remember("abc"); // too short to scrub
        let text = "password \"Sup3r-secret-pa55word\" is wrong; also Sup3r-secret; abc";
        assert_eq!(scrub(text), "password \"[redacted]\" is wrong; also [redacted]; abc");
        assert!(matches!(scrub("nothing here"), Cow::Borrowed(_)));
    }
}
