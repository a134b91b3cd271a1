//! Client-side SCRAM-SHA-256 verifiers (RFC 5802, RFC 7677), in PostgreSQL's
//! format: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
//!
//! `ALTER ROLE … PASSWORD 'plaintext'` sends the password to the server, where
//! `log_statement`, `pg_stat_statements`, replication and audit extensions can
//! all record it. PostgreSQL stores a string already in its verifier format
//! as-is, so the verifier is computed here and the password never leaves the
//! function.
//!
//! The primitives come from maintained crates: SASLprep from `stringprep`
//! (the one sqlx's and tokio-postgres's SCRAM clients use), PBKDF2 from
//! RustCrypto's `pbkdf2`. The password is prepared exactly as the server's own
//! login does (and libpq's `PQencryptPasswordConn`): SASLprep when the password
//! is valid UTF-8 and SASLprep accepts it, the raw bytes otherwise. Only this
//! file assembles the verifier, and a test checks it against tokio-postgres's
//! `postgres-protocol` byte for byte.

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use hmac::{Hmac, KeyInit as _, Mac as _};
use rand::RngExt as _;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest as _, Sha256};

use crate::deadline::Deadline;
use crate::error::RotationError;

/// PostgreSQL's default `scram_iterations` (and its only value before 16).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// The range of iteration counts verifiers get: never fewer than
/// PostgreSQL's default, never more than a login may cost (the login guard's
/// ceiling, so the function can always log in with what it set).
pub const MIN_ITERATIONS: u32 = DEFAULT_ITERATIONS;
pub const MAX_ITERATIONS: u32 = db_secret::MAX_SCRAM_ITERATIONS;
const SALT_LEN: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// A verifier for `password` with a fresh random salt and `iterations`
/// rounds (the server's `scram_iterations`, where it has one).
pub fn verifier(password: &SecretString, iterations: u32) -> String {
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill(&mut salt[..]);
    verifier_with(password.expose_secret().as_bytes(), &salt, iterations)
}

/// [`verifier`] on the blocking thread pool, within the deadline: key
/// derivation is CPU work that must neither stall the runtime nor outlive
/// the step.
pub async fn verifier_off_runtime(
    password: SecretString,
    iterations: u32,
    deadline: &Deadline,
) -> Result<String, RotationError> {
    let iterations = iterations.clamp(MIN_ITERATIONS, MAX_ITERATIONS);
    let task = tokio::task::spawn_blocking(move || verifier(&password, iterations));
    let what = || format!("computing a SCRAM verifier ({iterations} iterations)");
    let verifier = deadline
        .run(what, task)
        .await?
        .map_err(|e| RotationError::Internal(format!("SCRAM verifier task failed: {e}")))?;
    db_secret::redact::remember(&verifier);
    Ok(verifier)
}

/// The verifier for a given salt and iteration count (deterministic).
pub fn verifier_with(password: &[u8], salt: &[u8], iterations: u32) -> String {
    let keys = Keys::derive(&prepare(password), salt, iterations);
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        B64.encode(salt),
        B64.encode(keys.stored_key),
        B64.encode(keys.server_key)
    )
}

/// SASLprep (RFC 4013) where it applies, as PostgreSQL's server does.
fn prepare(password: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(password).map(stringprep::saslprep) {
        Ok(Ok(prepared)) => prepared.into_owned().into_bytes(),
        _ => password.to_vec(),
    }
}

struct Keys {
    #[cfg_attr(not(test), expect(dead_code, reason = "only the RFC 7677 test needs it after derivation"))]
    client_key: [u8; 32],
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl Keys {
    fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let server_key = hmac(&salted, b"Server Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        Self { client_key, stored_key, server_key }
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 §3: user "user", password "pencil".
    const SALT_B64: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const AUTH_MESSAGE: &str = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
        r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
        c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

    #[test]
    fn matches_rfc7677_test_vector() {
        let salt = B64.decode(SALT_B64).expect("salt");
        let keys = Keys::derive(b"pencil", &salt, 4096);
        // ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage)
        let signature = hmac(&keys.stored_key, AUTH_MESSAGE.as_bytes());
        let proof: Vec<u8> = keys.client_key.iter().zip(signature).map(|(k, s)| k ^ s).collect();
        assert_eq!(B64.encode(proof), "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        // ServerSignature = HMAC(ServerKey, AuthMessage)
        let server = hmac(&keys.server_key, AUTH_MESSAGE.as_bytes());
        assert_eq!(B64.encode(server), "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    /// postgres-protocol computes the verifier the way libpq does; with its
    /// salt (which the verifier carries), ours must be the same string.
    #[test]
    fn agrees_with_postgres_protocol_including_saslprep() {
        let passwords: [&[u8]; 5] = [
            b"correct horse battery staple",
            "I\u{00AD}X".as_bytes(), // soft hyphen: SASLprep maps it to nothing
            "a\u{00A0}b".as_bytes(), // no-break space: SASLprep maps it to a space
            "\u{2168}".as_bytes(),   // ROMAN NUMERAL NINE: NFKC makes it "IX"
            b"\xff\xfe not utf-8",   // not UTF-8: used as is
        ];
        for password in passwords {
            let theirs = postgres_protocol::password::scram_sha_256(password);
            let rest = theirs.strip_prefix("SCRAM-SHA-256$4096:").expect("their format");
            let salt = B64.decode(rest.split('$').next().expect("salt")).expect("base64 salt");
            assert_eq!(verifier_with(password, &salt, 4096), theirs, "{password:?}");
        }
        assert_ne!(prepare("I\u{00AD}X".as_bytes()), "I\u{00AD}X".as_bytes(), "SASLprep ran");
    }

    #[test]
    fn verifier_has_postgres_format_fresh_salt_and_the_iterations_asked_for() {
        let password = SecretString::from("correct horse");
        let a = verifier(&password, DEFAULT_ITERATIONS);
        let b = verifier(&password, DEFAULT_ITERATIONS);
        assert_ne!(a, b, "each verifier gets its own salt");
        let rest = a.strip_prefix("SCRAM-SHA-256$4096:").expect("prefix");
        let (salt, keys) = rest.split_once('$').expect("salt$keys");
        assert_eq!(B64.decode(salt).expect("b64").len(), SALT_LEN);
        let (stored, server) = keys.split_once(':').expect("stored:server");
        assert_eq!(B64.decode(stored).expect("b64").len(), 32);
        assert_eq!(B64.decode(server).expect("b64").len(), 32);
        assert!(!a.contains("correct horse"));
        assert!(verifier(&password, 10_000).starts_with("SCRAM-SHA-256$10000:"));
    }
}
