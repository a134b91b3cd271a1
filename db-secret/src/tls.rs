//! TLS to PostgreSQL: the operator's floor, and the roots certificates are
//! verified against.
//!
//! The floor belongs to the operator's configuration (`DB_TLS` for the
//! function, `APP_DB_TLS` for the web app). A secret can ask for plain text
//! (`"ssl": false`), but only a floor of `allow-plaintext` (or `disable`, for
//! local development) grants it; otherwise the request is refused with an error
//! naming the setting. Whoever can write the secret cannot turn TLS off.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, RootCertStore};

use crate::secret::DbSecret;

/// How far ahead [`Trust::chain_expiry`] first asks the verifier.
const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The least protection the operator accepts for database connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsFloor {
    level: Level,
    /// The configuration variable it came from, named in errors.
    setting: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    VerifyFull,
    AllowPlaintext,
    Disable,
}

/// How one connection is made, after the floor has ruled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// TLS, certificate chain and host name verified.
    VerifyFull,
    Plaintext,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} must be `verify-full`, `allow-plaintext` or `disable`")]
pub struct TlsSettingError {
    pub setting: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the secret asks for plain text (\"ssl\": false) but {setting}=verify-full requires verified TLS; \
     set {setting}=allow-plaintext to permit it"
)]
pub struct PlaintextRefused {
    pub setting: &'static str,
}

impl TlsFloor {
    /// Parses `setting`'s value; unset means `verify-full`.
    pub fn from_setting(setting: &'static str, value: Option<&str>) -> Result<Self, TlsSettingError> {
        let level = match value.map(str::trim) {
            None | Some("") | Some("verify-full") => Level::VerifyFull,
            Some("allow-plaintext") => Level::AllowPlaintext,
            Some("disable") => Level::Disable,
            Some(_) => return Err(TlsSettingError { setting }),
        };
        Ok(Self { level, setting })
    }

    pub fn verify_full(setting: &'static str) -> Self {
        Self { level: Level::VerifyFull, setting }
    }

    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// `disable`: every connection in plain text (local development only).
    pub fn disables_tls(&self) -> bool {
        self.level == Level::Disable
    }

    /// How to connect to the server `secret` describes.
    pub fn mode_for(&self, secret: &DbSecret) -> Result<TlsMode, PlaintextRefused> {
        match (self.level, secret.ssl) {
            (Level::Disable, _) => Ok(TlsMode::Plaintext),
            (_, true) => Ok(TlsMode::VerifyFull),
            (Level::AllowPlaintext, false) => Ok(TlsMode::Plaintext),
            (Level::VerifyFull, false) => Err(PlaintextRefused { setting: self.setting }),
        }
    }
}

impl fmt::Display for TlsFloor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = match self.level {
            Level::VerifyFull => "verify-full",
            Level::AllowPlaintext => "allow-plaintext",
            Level::Disable => "disable",
        };
        write!(f, "{}={value}", self.setting)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("{0} holds no PEM certificate")]
    NoCertificate(String),
    #[error("{path}: {detail}")]
    Invalid { path: String, detail: String },
}

/// The certificates a server may chain to: the CA bundle the operator names
/// (the RDS bundle) and nothing else, as libpq's `sslrootcert` — a public CA
/// that issued a certificate for the database's name to someone else must not
/// be enough; without a bundle, the platform's roots. Loaded once per process, not
/// on every connection: the platform's store is read the first time a TLS
/// connection is made, and the client configuration (with its session cache,
/// so later handshakes can resume) is shared by every connection after that.
#[derive(Clone)]
pub struct Trust {
    bundle: Arc<Vec<CertificateDer<'static>>>,
    config: Arc<OnceLock<Arc<ClientConfig>>>,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trust").field("bundle_certificates", &self.bundle.len()).finish_non_exhaustive()
    }
}

impl Trust {
    /// The platform's roots only.
    pub fn platform() -> Self {
        Self { bundle: Arc::new(Vec::new()), config: Arc::default() }
    }

    /// Only the certificates of the PEM bundle `pem` (read from `path`,
    /// named in errors); the platform's roots are not trusted besides them. Invalid PEM is refused here, at
    /// start, rather than on the first connection.
    pub fn with_bundle(path: &str, pem: &[u8]) -> Result<Self, TrustError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TrustError::Invalid { path: path.to_owned(), detail: e.to_string() })?;
        if certs.is_empty() {
            return Err(TrustError::NoCertificate(path.to_owned()));
        }
        let mut check = RootCertStore::empty();
        let (_, rejected) = check.add_parsable_certificates(certs.iter().cloned());
        if rejected > 0 {
            let detail = format!("{rejected} certificate(s) are not valid trust anchors");
            return Err(TrustError::Invalid { path: path.to_owned(), detail });
        }
        Ok(Self { bundle: Arc::new(certs), config: Arc::default() })
    }

    /// The shared client configuration, built on first use.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.config.get_or_init(|| Arc::new(self.build())).clone()
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        if self.bundle.is_empty() {
            let platform = rustls_native_certs::load_native_certs();
            for error in &platform.errors {
                tracing::warn!(error = %error, "could not read part of the platform's certificate store");
            }
            roots.add_parsable_certificates(platform.certs);
        } else {
            roots.add_parsable_certificates(self.bundle.iter().cloned());
        }
        roots
    }

    fn build(&self) -> ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"))
            .with_root_certificates(self.roots())
            .with_no_client_auth()
    }

    /// When `chain` (a server's certificates, leaf first, as its handshake
    /// sent them) stops verifying for `name` against these roots: the
    /// earliest `notAfter` among the certificates the verification uses.
    ///
    /// No certificate parser is needed: the same verifier a handshake uses
    /// (webpki, through rustls) is asked to verify the chain at a time far in
    /// the future, and its refusal names the `notAfter` of the certificate
    /// that had expired by then (the leaf is checked first). Asking again at
    /// that instant finds an issuer that expires earlier, if one does, until
    /// the chain verifies. Reads the roots again (the platform's store when
    /// no bundle is set): meant for an occasional check, not for every login.
    pub fn chain_expiry(
        &self,
        chain: &[CertificateDer<'_>],
        name: &ServerName<'_>,
    ) -> Result<SystemTime, rustls::Error> {
        let (leaf, intermediates) = chain.split_first().ok_or(rustls::Error::NoCertificatesPresented)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(self.roots()), provider)
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        // A century from now: later than any server certificate's notAfter.
        let mut at = UnixTime::since_unix_epoch(Duration::from_secs(UnixTime::now().as_secs()) + CENTURY);
        let mut earliest = None;
        // Each round moves to a strictly earlier notAfter of a certificate in
        // the chain, so the chain's length (plus one) bounds the rounds.
        for _ in 0..=chain.len() {
            match verifier.verify_server_cert(leaf, intermediates, name, &[], at) {
                Ok(_) => break,
                Err(rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { not_after, .. }))
                    if not_after.as_secs() < at.as_secs() =>
                {
                    earliest = Some(not_after);
                    at = not_after;
                }
                Err(other) => return Err(other),
            }
        }
        let earliest = earliest.ok_or_else(|| rustls::Error::General("no certificate of the chain expires".into()))?;
        Ok(UNIX_EPOCH + Duration::from_secs(earliest.as_secs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(ssl: bool) -> DbSecret {
        let text = format!(r#"{{"engine":"postgres","host":"h","username":"u","password":"p","ssl":{ssl}}}"#);
        DbSecret::parse(&text).expect("valid")
    }

    #[test]
    fn the_floor_decides_and_the_secret_can_only_ask() {
        let verify = TlsFloor::from_setting("DB_TLS", None).expect("default");
        assert_eq!(verify.mode_for(&secret(true)), Ok(TlsMode::VerifyFull));
        let refused = verify.mode_for(&secret(false)).expect_err("refused");
        assert_eq!(refused.setting, "DB_TLS");
        assert!(refused.to_string().contains("DB_TLS=allow-plaintext"), "{refused}");

        let allow = TlsFloor::from_setting("APP_DB_TLS", Some("allow-plaintext")).expect("valid");
        assert_eq!(allow.mode_for(&secret(false)), Ok(TlsMode::Plaintext));
        assert_eq!(allow.mode_for(&secret(true)), Ok(TlsMode::VerifyFull));

        let disable = TlsFloor::from_setting("DB_TLS", Some("disable")).expect("valid");
        assert_eq!(disable.mode_for(&secret(true)), Ok(TlsMode::Plaintext));
        assert!(disable.disables_tls());
    }

    #[test]
    fn unknown_values_name_the_setting() {
        let err = TlsFloor::from_setting("APP_DB_TLS", Some("prefer")).expect_err("refused");
        assert!(err.to_string().starts_with("APP_DB_TLS must be"), "{err}");
        assert_eq!(TlsFloor::from_setting("DB_TLS", Some(" verify-full ")), Ok(TlsFloor::verify_full("DB_TLS")));
        assert_eq!(TlsFloor::verify_full("DB_TLS").to_string(), "DB_TLS=verify-full");
    }

    #[test]
    fn a_bundle_without_certificates_is_refused_at_start() {
        assert_eq!(
            Trust::with_bundle("/ca.pem", b"not a certificate").expect_err("refused"),
            TrustError::NoCertificate("/ca.pem".into())
        );
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(Trust::with_bundle("/ca.pem", garbage), Err(TrustError::Invalid { .. })));
    }
}
