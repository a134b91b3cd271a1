//! Which database credentials new connections use, and when that changes.
//!
//! # The state machine
//!
//! The app holds one *active* secret version: every new physical connection the pool
//! opens uses its login. Existing connections are never cut mid-request (PostgreSQL keeps
//! a session alive after `ALTER ROLE … PASSWORD`): each retires when its bounded, jittered
//! lifetime is up, or, once the pool has switched to another login, when it is next
//! released (see `pool/build.rs`), so the database soon sees this instance only on the
//! login it switched to. Three events move the active version:
//!
//! 1. **Change check** (every `APP_SECRET_CHECK_INTERVAL`, one `DescribeSecret`, made
//!    outside the refresh lock so a hanging Secrets Manager never holds up event 2): if the
//!    version carrying AWSCURRENT is not the one seen last time, load it (cache first,
//!    else one `GetSecretValue` naming the *VersionId* DescribeSecret reported), open *one*
//!    connection with it, and only if that works switch the pool
//!    (`Pool::set_connect_options`). If the database refuses it, keep the working login and
//!    remember that version as seen, so the next check does not retry it (a broken
//!    AWSCURRENT is an operator's problem; if our login stops working too, event 2 takes
//!    over).
//! 2. **Authentication failure** of a new connection (SQLSTATE 28P01/28000): the database
//!    refuses the active login. Single-user rotation does this between `setSecret` and
//!    `finishSecret`, and so does a rotation that failed after `setSecret`; so do things
//!    that fix themselves (a pg_hba mistake that is reverted, a proxy with a stale secret).
//!    One refresh runs per process (a mutex plus a generation number: a request that
//!    failed under generation *g* and finds the generation moved on just retries). The
//!    refresh calls `DescribeSecret` and tries AWSCURRENT, AWSPENDING, AWSPREVIOUS (each by
//!    VersionId), then **the active login itself, last**: the first that opens a connection
//!    becomes active (the active one "again" bumps the generation too, so requests stop
//!    treating it as refused). When nothing works, the next refresh waits a *database*
//!    backoff (250 ms doubling to 5 s: probing logins is cheap and the outage may be
//!    short); its DescribeSecret waits a separate, longer backoff (1 s doubling to
//!    `APP_SECRET_BACKOFF_MAX`), and meanwhile the versions described last time are
//!    probed again from the cache, so a long refusal costs logins, not Secrets Manager
//!    calls.
//! 3. **Startup**: AWSCURRENT, falling back to AWSPENDING then AWSPREVIOUS if refused.
//!
//! Versions are cached by VersionId (a version's value never changes) once they are
//! known to be real: they verified, or they carried AWSCURRENT/AWSPREVIOUS. An
//! AWSPENDING value that did not verify is not cached: a rotation may still be writing it.
//!
//! # Cost bound
//!
//! Steady state: one `DescribeSecret` per interval, whatever the pool size or request
//! rate. Per rotation: at most one `GetSecretValue` for the new AWSCURRENT, plus, if the
//! old login stops working before the change check notices, one refresh (one
//! `DescribeSecret` and at most one `GetSecretValue` per version not cached). Failures
//! back off exponentially with jitter; nothing here can loop on Secrets Manager.
//!
//! # Rooms
//!
//! `startup.rs` finds the first login (event 3), `change_check.rs` runs event 1,
//! `refresh.rs` event 2, `recover.rs` is the request path's side (the refusal state and
//! the way to start a refresh), and `pin.rs` keeps every login on the servers the
//! operator allows.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::metrics::Metrics;
use crate::secret_source::{SecretSource, SecretVersion, SourceError, Stage, Stages};
use db_secret::{DbSecret, EndpointRefused};

mod change_check;
mod pin;
mod recover;
mod refresh;
mod startup;

/// The `target` of the `switched…` lines the CDK's metric filter and dashboard read: the
/// module they came from before it was split in rooms, so those lines stay as they were.
const SWITCH_TARGET: &str = "web_app::credentials";

pub use change_check::CheckOutcome;
pub use pin::Pinned;
pub use recover::{Recover, Refusal};
pub use refresh::{Recovered, RefreshPolicy};
pub use startup::initial_login;

/// Opens one throwaway connection with a login to see whether the database accepts it.
pub trait Verify: Send + Sync + 'static {
    fn verify(&self, secret: &DbSecret) -> impl Future<Output = Result<(), VerifyError>> + Send;
}

/// Where the active login is installed: the pool's options for future connections.
pub trait CredentialTarget: Verify {
    fn switch_to(&self, secret: &DbSecret);
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The login does not work: refused (SQLSTATE 28P01/28000), or failed for a reason
    /// that waiting will not cure (the label says which).
    #[error("the database refused the login ({sqlstate})")]
    Rejected { sqlstate: String },
    /// The version names a server the operator did not allow; nothing was dialled.
    #[error("refused without connecting: {0}")]
    EndpointNotAllowed(#[from] EndpointRefused),
    #[error("the database could not be reached: {0}")]
    Unreachable(String),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialsError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("no version of secret {secret_id} is usable (tried: {tried})")]
    NoWorkingVersion { secret_id: String, tried: String },
    #[error("{0}")]
    DatabaseUnreachable(String),
    #[error("a recent credential refresh failed; retrying after a backoff")]
    BackingOff,
}

impl CredentialsError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Source(e) => e.is_transient(),
            Self::DatabaseUnreachable(_) | Self::BackingOff => true,
            Self::NoWorkingVersion { .. } => false,
        }
    }
}

/// The login new connections use.
#[derive(Debug)]
pub struct Active {
    pub version_id: String,
    pub secret: Arc<DbSecret>,
}

#[derive(Debug)]
struct RefreshState {
    last_seen_current: Option<String>,
    cache: HashMap<String, Arc<DbSecret>>,
    /// The versions (stage, id) the last DescribeSecret of a refresh reported, in the
    /// order they are tried. Probed again from the cache while DescribeSecret backs off.
    described: Vec<(Stage, String)>,
    probe_backoff: Backoff,
    describe_backoff: Backoff,
    describe_not_before: Option<Instant>,
}

#[derive(Debug)]
pub struct Credentials<S, T> {
    source: S,
    target: T,
    metrics: Arc<Metrics>,
    active: RwLock<Arc<Active>>,
    /// Bumped every time the active login changes or is verified again after a refusal.
    generation: watch::Sender<u64>,
    /// Held for the whole of a change check or a refresh: one at a time per process.
    refresh: tokio::sync::Mutex<RefreshState>,
    /// Refused, backing off, refresh running: read by requests without queueing behind
    /// a refresh.
    refusal: Refusal,
}

impl<S: SecretSource, T: CredentialTarget> Credentials<S, T> {
    /// `initial` must already be verified and installed in `target`.
    pub fn new(
        source: S,
        target: T,
        metrics: Arc<Metrics>,
        initial: SecretVersion,
        current_seen: String,
        policy: RefreshPolicy,
    ) -> Self {
        metrics.set_secret_version(&initial.version_id);
        let cache = HashMap::from([(initial.version_id.clone(), initial.secret.clone())]);
        Self {
            source,
            target,
            metrics,
            active: RwLock::new(Arc::new(Active { version_id: initial.version_id, secret: initial.secret })),
            generation: watch::Sender::new(0),
            refresh: tokio::sync::Mutex::new(RefreshState {
                last_seen_current: Some(current_seen),
                cache,
                described: Vec::new(),
                probe_backoff: Backoff::new(policy.probe_base, policy.probe_max),
                describe_backoff: Backoff::new(policy.describe_base, policy.describe_max),
                describe_not_before: None,
            }),
            refusal: Refusal::default(),
        }
    }

    pub fn active(&self) -> Arc<Active> {
        self.active.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Read it *before* opening a connection; hand it to [`Self::recover`] if that
    /// connection is refused.
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    fn bump_generation(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    fn switch(&self, version: &SecretVersion) {
        // Pool first, generation last: whoever sees the new generation also gets
        // connections with the new login.
        self.target.switch_to(&version.secret);
        *self.active.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Arc::new(Active { version_id: version.version_id.clone(), secret: version.secret.clone() });
        self.bump_generation();
        self.metrics.set_secret_version(&version.version_id);
        self.metrics.record_switch();
    }

    /// Version `id`: from the cache when known, else one `GetSecretValue(VersionId=id)`.
    /// `Ok(None)`: it is gone, or holds no usable value (a placeholder mid-rotation).
    async fn load(&self, st: &RefreshState, id: &str) -> Result<Option<SecretVersion>, SourceError> {
        if let Some(secret) = st.cache.get(id) {
            return Ok(Some(SecretVersion { version_id: id.to_owned(), secret: secret.clone() }));
        }
        match self.source.get_version(id).await {
            Ok(v) => Ok(Some(v)),
            Err(SourceError::NoSuchVersion { .. }) => Ok(None),
            Err(e @ SourceError::Format { .. }) => {
                tracing::warn!(version_id = id, error = %e, "skipping a version whose value is not a usable secret");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn prune_cache(st: &mut RefreshState, stages: &Stages, active_id: &str) {
        st.cache.retain(|id, _| id == active_id || stages.contains_version(id));
    }
}

#[cfg(test)]
mod tests;
