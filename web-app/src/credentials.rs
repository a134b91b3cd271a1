//! Which database credentials new connections use, and when that changes.
//!
//! # The state machine
//!
//! The app holds one *active* secret version: every new physical connection the pool
//! opens uses its login. Existing connections are never touched (PostgreSQL keeps a
//! session alive after `ALTER ROLE … PASSWORD`); they retire on their own because each
//! has a bounded, jittered lifetime (see `pool.rs`). Three events move the active version:
//!
//! 1. **Change check** (every `APP_SECRET_CHECK_INTERVAL`, one `DescribeSecret`): if the
//!    version carrying AWSCURRENT is not the one seen last time, load it (cache first,
//!    else one `GetSecretValue` with `VersionStage=AWSCURRENT`), open *one* connection with
//!    it, and only if that works switch the pool (`Pool::set_connect_options`). If the
//!    database refuses it, keep the working login and remember that version as seen, so
//!    the next check does not retry it (a broken AWSCURRENT is an operator's problem; if
//!    our login stops working too, event 2 takes over).
//! 2. **Authentication failure** of a new connection (SQLSTATE 28P01/28000): the database
//!    no longer accepts the active login. Single-user rotation does this between
//!    `setSecret` and `finishSecret`, and so does a rotation that failed after
//!    `setSecret`. One refresh runs per process (a mutex plus a generation number: a
//!    request that failed under generation *g* and finds the generation moved on just
//!    retries). The refresh calls `DescribeSecret` once and tries, in order, AWSCURRENT,
//!    AWSPENDING, AWSPREVIOUS, skipping the active version that just failed; the first
//!    that opens a connection becomes active.
//! 3. **Startup**: AWSCURRENT, falling back exactly like event 2 if it is refused.
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
//! `DescribeSecret` and at most one `GetSecretValue` per stage not cached). Failures back
//! off exponentially with jitter; nothing here can loop on Secrets Manager.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::{Backoff, jitter};
use crate::metrics::{Metrics, RefreshOutcome, RefreshTrigger};
use crate::secret_source::{SecretSource, SecretVersion, SourceError, Stage, Stages};
use db_secret::DbSecret;

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
    #[error("the database refused the login (SQLSTATE {sqlstate})")]
    Rejected { sqlstate: String },
    #[error("the database could not be reached: {0}")]
    Unreachable(String),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialsError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("no version of secret {secret_id} is accepted by the database (tried: {tried})")]
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

/// What a change check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    Unchanged,
    Switched,
    /// AWSCURRENT moved but the database refused it; the working login is kept.
    NewVersionRejected,
    /// AWSCURRENT moved but the database was unreachable; tried again next interval.
    DatabaseUnreachable,
}

#[derive(Debug)]
struct RefreshState {
    last_seen_current: Option<String>,
    cache: HashMap<String, Arc<DbSecret>>,
    recover_backoff: Backoff,
    recover_not_before: Option<Instant>,
}

#[derive(Debug)]
pub struct Credentials<S, T> {
    source: S,
    target: T,
    metrics: Arc<Metrics>,
    active: RwLock<Arc<Active>>,
    generation: AtomicU64,
    /// Held for the whole of a change check or a refresh: one at a time per process.
    refresh: tokio::sync::Mutex<RefreshState>,
}

/// The first working login: AWSCURRENT, else the same fallback as an auth failure.
/// Returns it with the AWSCURRENT version id seen.
#[tracing::instrument(skip_all, fields(secret_id = source.secret_id()))]
pub async fn initial_login<S: SecretSource, V: Verify>(
    source: &S,
    verifier: &V,
) -> Result<(SecretVersion, String), CredentialsError> {
    let current = source.get(Stage::Current).await?;
    let current_id = current.version_id.clone();
    match verifier.verify(&current.secret).await {
        Ok(()) => return Ok((current, current_id)),
        Err(VerifyError::Unreachable(d)) => return Err(CredentialsError::DatabaseUnreachable(d)),
        Err(VerifyError::Rejected { sqlstate }) => {
            tracing::warn!(version_id = %current_id, %sqlstate, "AWSCURRENT refused at startup; trying AWSPENDING, AWSPREVIOUS");
        }
    }
    let stages = source.describe().await?;
    let mut tried = vec![format!("AWSCURRENT {current_id}")];
    for stage in [Stage::Pending, Stage::Previous] {
        let Some(id) = stages.version_with(stage) else { continue };
        if id == current_id {
            continue;
        }
        let version = match source.get(stage).await {
            Ok(v) => v,
            Err(SourceError::NoSuchStage { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        match verifier.verify(&version.secret).await {
            Ok(()) => return Ok((version, stages.version_with(Stage::Current).unwrap_or(&current_id).to_owned())),
            Err(VerifyError::Rejected { .. }) => tried.push(format!("{} {}", stage.label(), version.version_id)),
            Err(VerifyError::Unreachable(d)) => return Err(CredentialsError::DatabaseUnreachable(d)),
        }
    }
    Err(CredentialsError::NoWorkingVersion { secret_id: source.secret_id().to_owned(), tried: tried.join(", ") })
}

impl<S: SecretSource, T: CredentialTarget> Credentials<S, T> {
    /// `initial` must already be verified and installed in `target`.
    pub fn new(
        source: S,
        target: T,
        metrics: Arc<Metrics>,
        initial: SecretVersion,
        current_seen: String,
        recover_backoff_max: Duration,
    ) -> Self {
        metrics.set_secret_version(&initial.version_id);
        let cache = HashMap::from([(initial.version_id.clone(), initial.secret.clone())]);
        Self {
            source,
            target,
            metrics,
            active: RwLock::new(Arc::new(Active { version_id: initial.version_id, secret: initial.secret })),
            generation: AtomicU64::new(0),
            refresh: tokio::sync::Mutex::new(RefreshState {
                last_seen_current: Some(current_seen),
                cache,
                recover_backoff: Backoff::new(Duration::from_millis(500), recover_backoff_max),
                recover_not_before: None,
            }),
        }
    }

    pub fn active(&self) -> Arc<Active> {
        self.active.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Bumped every time the active login changes. Read it *before* opening a
    /// connection; hand it to [`Self::recover`] if that connection is refused.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn switch(&self, version: &SecretVersion) {
        // Pool first, generation last: whoever sees the new generation also gets
        // connections with the new login.
        self.target.switch_to(&version.secret);
        *self.active.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Arc::new(Active { version_id: version.version_id.clone(), secret: version.secret.clone() });
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.metrics.set_secret_version(&version.version_id);
    }

    /// The version carrying `stage` per `stages`: from the cache when known, else one
    /// `GetSecretValue(VersionStage=stage)`.
    async fn load(
        &self,
        st: &RefreshState,
        stages: &Stages,
        stage: Stage,
    ) -> Result<Option<SecretVersion>, SourceError> {
        let Some(id) = stages.version_with(stage) else {
            return Ok(None);
        };
        if let Some(secret) = st.cache.get(id) {
            return Ok(Some(SecretVersion { version_id: id.to_owned(), secret: secret.clone() }));
        }
        match self.source.get(stage).await {
            Ok(v) => Ok(Some(v)),
            Err(SourceError::NoSuchStage { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn prune_cache(st: &mut RefreshState, stages: &Stages, active_id: &str) {
        st.cache.retain(|id, _| id == active_id || stages.contains_version(id));
    }

    /// One change check: `DescribeSecret`, and only if AWSCURRENT moved, load + verify +
    /// switch. Errors are Secrets Manager errors; the caller backs off.
    #[tracing::instrument(skip_all, fields(secret_id = self.source.secret_id()))]
    pub async fn check_for_change(&self) -> Result<CheckOutcome, SourceError> {
        let mut st = self.refresh.lock().await;
        let stages = self.source.describe().await?;
        let active = self.active();
        Self::prune_cache(&mut st, &stages, &active.version_id);
        let Some(current_id) = stages.version_with(Stage::Current) else {
            tracing::warn!("no version carries AWSCURRENT; keeping the working login");
            return Ok(CheckOutcome::Unchanged);
        };
        if st.last_seen_current.as_deref() == Some(current_id) {
            return Ok(CheckOutcome::Unchanged);
        }
        if current_id == active.version_id {
            // We got here first through an auth-failure refresh (AWSPENDING became AWSCURRENT).
            tracing::info!(version_id = %current_id, "AWSCURRENT moved onto the version already in use");
            st.last_seen_current = Some(current_id.to_owned());
            return Ok(CheckOutcome::Unchanged);
        }
        let Some(version) = self.load(&st, &stages, Stage::Current).await? else {
            return Ok(CheckOutcome::Unchanged);
        };
        match self.target.verify(&version.secret).await {
            Ok(()) => {
                self.switch(&version);
                st.cache.insert(version.version_id.clone(), version.secret.clone());
                st.last_seen_current = Some(version.version_id.clone());
                self.metrics.record_refresh(RefreshTrigger::ChangeCheck, RefreshOutcome::Switched);
                tracing::info!(from = %active.version_id, to = %version.version_id, user = %version.secret.username, "switched to the new AWSCURRENT");
                Ok(CheckOutcome::Switched)
            }
            Err(VerifyError::Rejected { sqlstate }) => {
                st.last_seen_current = Some(version.version_id.clone());
                self.metrics.record_refresh(RefreshTrigger::ChangeCheck, RefreshOutcome::Kept);
                tracing::warn!(version_id = %version.version_id, %sqlstate, kept = %active.version_id, "the database refuses the new AWSCURRENT; keeping the working login");
                Ok(CheckOutcome::NewVersionRejected)
            }
            Err(VerifyError::Unreachable(detail)) => {
                self.metrics.record_refresh(RefreshTrigger::ChangeCheck, RefreshOutcome::Failed);
                tracing::warn!(version_id = %version.version_id, %detail, "could not verify the new AWSCURRENT; will retry");
                Ok(CheckOutcome::DatabaseUnreachable)
            }
        }
    }

    /// A new connection opened under `failed_generation` was refused. Find a login that
    /// works; returns `Ok` when the caller should simply try again.
    #[tracing::instrument(skip_all, fields(secret_id = self.source.secret_id(), failed_generation))]
    pub async fn recover(&self, failed_generation: u64) -> Result<(), CredentialsError> {
        let waited = Instant::now();
        let mut st = self.refresh.lock().await;
        if self.generation() != failed_generation {
            return Ok(()); // Another request's refresh already switched.
        }
        tracing::debug!(waited_ms = waited.elapsed().as_millis() as u64, "refresh starts");
        if st.recover_not_before.is_some_and(|t| Instant::now() < t) {
            return Err(CredentialsError::BackingOff);
        }
        let started = Instant::now();
        let result = self.recover_locked(&mut st).await;
        tracing::debug!(took_ms = started.elapsed().as_millis() as u64, ok = result.is_ok(), "refresh done");
        match &result {
            Ok(()) => {
                st.recover_backoff.reset();
                st.recover_not_before = None;
                self.metrics.record_refresh(RefreshTrigger::AuthFailure, RefreshOutcome::Switched);
            }
            Err(e) => {
                let delay = st.recover_backoff.next_delay();
                st.recover_not_before = Some(Instant::now() + delay);
                self.metrics.record_refresh(RefreshTrigger::AuthFailure, RefreshOutcome::Failed);
                tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "credential refresh after an authentication failure failed");
            }
        }
        result
    }

    async fn recover_locked(&self, st: &mut RefreshState) -> Result<(), CredentialsError> {
        let stages = self.source.describe().await?;
        let active = self.active();
        Self::prune_cache(st, &stages, &active.version_id);
        let mut tried = vec![format!("active {}", active.version_id)];
        for stage in Stage::FALLBACK_ORDER {
            if stages.version_with(stage) == Some(active.version_id.as_str()) {
                continue; // That is the login that was just refused.
            }
            let Some(version) = self.load(st, &stages, stage).await? else {
                continue;
            };
            if version.version_id == active.version_id || version.secret.same_credentials(&active.secret) {
                continue;
            }
            match self.target.verify(&version.secret).await {
                Ok(()) => {
                    self.switch(&version);
                    st.cache.insert(version.version_id.clone(), version.secret.clone());
                    st.last_seen_current = stages.version_with(Stage::Current).map(str::to_owned);
                    tracing::info!(from = %active.version_id, to = %version.version_id, stage = stage.label(), user = %version.secret.username, "switched after an authentication failure");
                    return Ok(());
                }
                Err(VerifyError::Rejected { sqlstate }) => {
                    if stage != Stage::Pending {
                        st.cache.insert(version.version_id.clone(), version.secret.clone());
                    }
                    tracing::warn!(version_id = %version.version_id, stage = stage.label(), %sqlstate, "refused too");
                    tried.push(format!("{} {}", stage.label(), version.version_id));
                }
                Err(VerifyError::Unreachable(d)) => return Err(CredentialsError::DatabaseUnreachable(d)),
            }
        }
        Err(CredentialsError::NoWorkingVersion {
            secret_id: self.source.secret_id().to_owned(),
            tried: tried.join(", "),
        })
    }

    /// Runs change checks forever: every `interval` (±10 %), and after a failure with
    /// exponential backoff (never more often than `interval`, at most `backoff_max`).
    pub async fn run_change_checks(self: Arc<Self>, interval: Duration, backoff_max: Duration) {
        let mut backoff = Backoff::new(interval.saturating_mul(2), backoff_max);
        let mut delay = jitter(interval, 0.1);
        loop {
            tokio::time::sleep(delay).await;
            match self.check_for_change().await {
                Ok(_) => {
                    if backoff.failures() > 0 {
                        tracing::info!(failures = backoff.failures(), "Secrets Manager reachable again");
                    }
                    backoff.reset();
                    self.metrics.set_change_check_failures_in_a_row(0);
                    delay = jitter(interval, 0.1);
                }
                Err(e) => {
                    delay = backoff.next_delay().max(interval);
                    self.metrics.set_change_check_failures_in_a_row(u64::from(backoff.failures()));
                    tracing::warn!(error = %e, transient = e.is_transient(), failures = backoff.failures(), retry_in_ms = delay.as_millis() as u64, "change check failed; serving with the current login");
                }
            }
        }
    }
}

/// The request path's view of the credentials, object-safe so routes need not be generic.
pub trait Recover: Send + Sync + std::fmt::Debug {
    fn generation(&self) -> u64;
    /// Runs [`Credentials::recover`] on its own task: a request that times out must not
    /// cancel a refresh other requests are waiting for.
    fn recover(&self, failed_generation: u64) -> Pin<Box<dyn Future<Output = Result<(), CredentialsError>> + Send>>;
    fn active(&self) -> Arc<Active>;
}

impl<S: SecretSource + std::fmt::Debug, T: CredentialTarget + std::fmt::Debug> Recover for Arc<Credentials<S, T>> {
    fn generation(&self) -> u64 {
        Credentials::generation(self)
    }

    fn recover(&self, failed_generation: u64) -> Pin<Box<dyn Future<Output = Result<(), CredentialsError>> + Send>> {
        let this = self.clone();
        let task = tokio::spawn(async move { Credentials::recover(&this, failed_generation).await });
        Box::pin(async move {
            task.await.unwrap_or_else(|_| Err(CredentialsError::DatabaseUnreachable("refresh task panicked".into())))
        })
    }

    fn active(&self) -> Arc<Active> {
        Credentials::active(self)
    }
}

#[cfg(test)]
mod tests;
