//! Password generation, local and from the operating system's CSPRNG.
//!
//! AWS's templates call `GetRandomPassword`, which needs `Resource: "*"` in the
//! function's policy. Generating locally keeps the role scoped to one secret.

use rand::RngExt as _;
use secrecy::SecretString;

/// The characters AWS's PostgreSQL templates exclude by default: they break
/// connection URIs (`/`, `@`) or SQL and shell quoting (`"`, `'`, `\`).
pub(crate) const DEFAULT_EXCLUDE: &str = "/@\"'\\";
pub(crate) const DEFAULT_LENGTH: usize = 32;
/// Below this, four classes leave too little entropy to call it a rotation.
pub(crate) const MIN_LENGTH: usize = 12;
/// PostgreSQL accepts longer passwords, but client libraries and humans do not.
pub(crate) const MAX_LENGTH: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("PASSWORD_LENGTH must be a whole number from {MIN_LENGTH} to {MAX_LENGTH}")]
    Length,
    #[error("EXCLUDE_CHARACTERS removes every {0} character; each class must stay available")]
    ClassExcluded(&'static str),
}

/// Which characters a password is drawn from, and how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    length: usize,
    classes: [Vec<u8>; 4],
}

const CLASS_NAMES: [&str; 4] = ["uppercase", "lowercase", "digit", "punctuation"];

impl PasswordPolicy {
    pub fn new(length: usize, exclude: &str) -> Result<Self, PolicyError> {
        if !(MIN_LENGTH..=MAX_LENGTH).contains(&length) {
            return Err(PolicyError::Length);
        }
        // Printable ASCII without space: every byte is one character, and
        // SASLprep leaves it unchanged, so the SCRAM verifier we compute is the
        // one the server would compute.
        let allowed = |c: &u8| !exclude.as_bytes().contains(c);
        let classes = [
            (b'A'..=b'Z').filter(allowed).collect::<Vec<u8>>(),
            (b'a'..=b'z').filter(allowed).collect(),
            (b'0'..=b'9').filter(allowed).collect(),
            (b'!'..=b'~').filter(|c| c.is_ascii_punctuation()).filter(allowed).collect(),
        ];
        if let Some(i) = classes.iter().position(Vec::is_empty) {
            return Err(PolicyError::ClassExcluded(CLASS_NAMES[i]));
        }
        Ok(Self { length, classes })
    }

    pub fn length(&self) -> usize {
        self.length
    }

    /// Draws uniformly from the allowed characters and rejects the rare draw
    /// that misses a class: the result is uniform over all valid passwords.
    pub fn generate(&self) -> SecretString {
        let alphabet: Vec<u8> = self.classes.concat();
        // ThreadRng is a CSPRNG (ChaCha12) seeded and periodically reseeded
        // from the operating system.
        let mut rng = rand::rng();
        loop {
            let candidate: String =
                (0..self.length).map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())])).collect();
            if self.satisfied_by(&candidate) {
                return SecretString::from(candidate);
            }
        }
    }

    fn satisfied_by(&self, candidate: &str) -> bool {
        self.classes.iter().all(|class| candidate.bytes().any(|c| class.contains(&c)))
    }
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self::new(DEFAULT_LENGTH, DEFAULT_EXCLUDE).unwrap_or_else(|_| unreachable!("the defaults are valid"))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn default_passwords_have_every_class_and_no_excluded_character() {
        let policy = PasswordPolicy::default();
        for _ in 0..500 {
            let p = policy.generate();
            let p = p.expose_secret();
            assert_eq!(p.len(), DEFAULT_LENGTH);
            assert!(p.bytes().any(|c| c.is_ascii_uppercase()));
            assert!(p.bytes().any(|c| c.is_ascii_lowercase()));
            assert!(p.bytes().any(|c| c.is_ascii_digit()));
            assert!(p.bytes().any(|c| c.is_ascii_punctuation()));
            assert!(!p.contains(|c| DEFAULT_EXCLUDE.contains(c) || c == ' '), "{p}");
        }
    }

    #[test]
    fn passwords_differ() {
        let policy = PasswordPolicy::default();
        let a = policy.generate();
        let b = policy.generate();
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[test]
    fn custom_exclusions_and_length_are_honoured() {
        let policy = PasswordPolicy::new(16, "abcdefghijklmnopqrstuvwxy!#$%&()*+,-.:;<=>?[]^_`{|}~").expect("valid");
        for _ in 0..200 {
            let p = policy.generate();
            let p = p.expose_secret();
            assert_eq!(p.len(), 16);
            assert!(p.contains('z'), "only lowercase left is z: {p}");
            assert!(p.bytes().all(|c| !b"abcdefghijklmnopqrstuvwxy!#$".contains(&c)));
        }
    }

    #[test]
    fn invalid_policies_are_refused() {
        assert_eq!(PasswordPolicy::new(8, ""), Err(PolicyError::Length));
        assert_eq!(PasswordPolicy::new(300, ""), Err(PolicyError::Length));
        assert_eq!(PasswordPolicy::new(32, "0123456789"), Err(PolicyError::ClassExcluded("digit")));
    }
}
