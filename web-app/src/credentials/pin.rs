//! The operator's endpoint pin (`APP_DB_ENDPOINTS`) in front of every login check.

use std::sync::Arc;

use super::{CredentialTarget, Verify, VerifyError};
use crate::metrics::{Metrics, VersionRefusal};
use db_secret::{DbSecret, Endpoints};

/// The operator's endpoint pin (`APP_DB_ENDPOINTS`) in front of a verifier: a version
/// naming another server is refused like one that does not log in, before anything is
/// dialled, so whoever can write the secret cannot point the app at a server of theirs.
/// Every login the app installs passes through here first (startup, change check,
/// refresh), so the pool only ever connects where the operator said.
#[derive(Debug)]
pub struct Pinned<V> {
    pin: Option<Endpoints>,
    inner: V,
    metrics: Arc<Metrics>,
}

impl<V> Pinned<V> {
    /// `pin: None` (the setting unset): every server a version names is allowed.
    pub fn new(pin: Option<Endpoints>, inner: V, metrics: Arc<Metrics>) -> Self {
        Self { pin, inner, metrics }
    }

    pub fn inner(&self) -> &V {
        &self.inner
    }
}

impl<V: Verify> Verify for Pinned<V> {
    async fn verify(&self, secret: &DbSecret) -> Result<(), VerifyError> {
        if let Some(pin) = &self.pin
            && let Err(refused) = pin.check(secret)
        {
            self.metrics.record_version_refused(VersionRefusal::endpoint_not_allowed);
            tracing::warn!(host = %refused.host, port = refused.port, setting = refused.setting, allowed = %refused.allowed, "a secret version names a database endpoint the operator does not allow; refused without connecting");
            return Err(refused.into());
        }
        let verified = self.inner.verify(secret).await;
        if let Err(VerifyError::Rejected { .. }) = &verified {
            self.metrics.record_version_refused(VersionRefusal::login_refused);
        }
        verified
    }
}

impl<T: CredentialTarget> CredentialTarget for Pinned<T> {
    fn switch_to(&self, secret: &DbSecret) {
        // Only verified logins are switched to, and verifying checked the pin.
        self.inner.switch_to(secret);
    }
}
