//! Client-side SCRAM-SHA-256 verifiers (RFC 5802, RFC 7677).
//!
//! `ALTER ROLE … PASSWORD 'plaintext'` sends the password to the server, where
//! `log_statement`, `pg_stat_statements`, replication and audit extensions can
//! all record it. PostgreSQL stores a string already in its verifier format
//! as-is, so we compute the verifier here and the password never leaves the
//! function. The format is PostgreSQL's own:
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64).

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use hmac::{Hmac, KeyInit as _, Mac as _};
use rand::RngExt as _;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest as _, Sha256};

/// PostgreSQL's default `scram_iterations`.
pub const ITERATIONS: u32 = 4096;
const SALT_LEN: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// Computes a verifier for `password` with a fresh random salt.
pub fn verifier(password: &SecretString) -> String {
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill(&mut salt[..]);
    verifier_with(password.expose_secret().as_bytes(), &salt, ITERATIONS)
}

/// The verifier for a given salt and iteration count (deterministic; tested
/// against RFC 7677's vector).
pub fn verifier_with(password: &[u8], salt: &[u8], iterations: u32) -> String {
    let keys = Keys::derive(password, salt, iterations);
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        B64.encode(salt),
        B64.encode(keys.stored_key),
        B64.encode(keys.server_key)
    )
}

struct Keys {
    #[cfg_attr(not(test), expect(dead_code, reason = "only the RFC 7677 test needs it after derivation"))]
    client_key: [u8; 32],
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl Keys {
    fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let salted = pbkdf2_sha256(password, salt, iterations);
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

/// PBKDF2-HMAC-SHA-256 for a 32-byte output, which is exactly one block
/// (RFC 8018 §5.2 with dkLen = hLen): U1 = PRF(P, S || INT(1)),
/// Ui = PRF(P, Ui-1), result = U1 ^ … ^ Uc.
fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let prf = HmacSha256::new_from_slice(password).unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    let mut first = prf.clone();
    first.update(salt);
    first.update(&1u32.to_be_bytes());
    let mut u: [u8; 32] = first.finalize().into_bytes().into();
    let mut out = u;
    for _ in 1..iterations {
        let mut next = prf.clone();
        next.update(&u);
        u = next.finalize().into_bytes().into();
        out.iter_mut().zip(u).for_each(|(o, x)| *o ^= x);
    }
    out
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

    #[test]
    fn verifier_has_postgres_format_and_fresh_salt() {
        let password = SecretString::from("correct horse");
        let a = verifier(&password);
        let b = verifier(&password);
        assert_ne!(a, b, "each verifier gets its own salt");
        let rest = a.strip_prefix("SCRAM-SHA-256$4096:").expect("prefix");
        let (salt, keys) = rest.split_once('$').expect("salt$keys");
        assert_eq!(B64.decode(salt).expect("b64").len(), SALT_LEN);
        let (stored, server) = keys.split_once(':').expect("stored:server");
        assert_eq!(B64.decode(stored).expect("b64").len(), 32);
        assert_eq!(B64.decode(server).expect("b64").len(), 32);
        assert!(!a.contains("correct horse"));
    }
}
