//! Which database credentials new connections use, and when that changes.
//!
//! # The state machine
//!
//! The app holds one *active* secret version: every new physical connection the pool
//! opens uses its login. Existing connections are never touched (PostgreSQL keeps a
//! session alive after `ALTER ROLE … PASSWORD`); they retire on their own because each
//! has a bounded, jittered lifetime (see `pool.rs`). Three events move the active version:
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

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;
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

/// A refresh waits this long for each Secrets Manager call (the SDK's own deadline is
/// longer) before it probes the logins it already knows: requests are waiting.
const REFRESH_CALL_TIMEOUT: Duration = Duration::from_secs(2);

fn timed_out(operation: &'static str) -> SourceError {
    SourceError::Unavailable { operation, detail: format!("no answer within {REFRESH_CALL_TIMEOUT:?}") }
}

/// How a refresh after an authentication failure ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovered {
    /// Another version works; new connections use it.
    Switched,
    /// The refused login works again (a transient refusal); it stays.
    ActiveWorksAgain,
    /// Someone else's refresh already moved the generation on.
    AlreadyDone,
}

/// Backoffs of the refresh after an authentication failure.
#[derive(Debug, Clone, Copy)]
pub struct RefreshPolicy {
    /// Between refreshes that found no working login (they probe the database).
    pub probe_base: Duration,
    pub probe_max: Duration,
    /// Between the DescribeSecret calls of fruitless refreshes.
    pub describe_base: Duration,
    pub describe_max: Duration,
}

impl RefreshPolicy {
    /// Database probes from 250 ms to 5 s; Secrets Manager from 1 s to `sm_backoff_max`.
    pub fn new(sm_backoff_max: Duration) -> Self {
        Self {
            probe_base: Duration::from_millis(250),
            probe_max: Duration::from_secs(5),
            describe_base: Duration::from_secs(1),
            describe_max: sm_backoff_max.max(Duration::from_secs(1)),
        }
    }
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
    /// No refresh after an authentication failure before this instant (database backoff).
    /// Outside the async mutex so requests can read it without queueing behind a refresh.
    probe_not_before: Mutex<Option<Instant>>,
    /// A refresh task is running or queued (see [`Recover::kick`]).
    refreshing: AtomicBool,
}

/// The first working login: AWSCURRENT, else AWSPENDING, else AWSPREVIOUS.
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
        let version = match source.get_version(id).await {
            Ok(v) => v,
            Err(SourceError::NoSuchVersion { .. } | SourceError::Format { .. }) => continue,
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
            probe_not_before: Mutex::new(None),
            refreshing: AtomicBool::new(false),
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

    /// One change check: `DescribeSecret`, and only if AWSCURRENT moved, load + verify +
    /// switch. Errors are Secrets Manager errors; the caller backs off.
    #[tracing::instrument(skip_all, fields(secret_id = self.source.secret_id()))]
    pub async fn check_for_change(&self) -> Result<CheckOutcome, SourceError> {
        // DescribeSecret outside the lock: a slow or unreachable Secrets Manager must not
        // hold up a refresh that a refused login is waiting for.
        let generation = self.generation();
        let stages = self.source.describe().await?;
        let mut st = self.refresh.lock().await;
        if self.generation() != generation {
            // A refresh switched meanwhile, possibly to a newer version than `stages`
            // knows: judge again at the next check rather than move back.
            return Ok(CheckOutcome::Unchanged);
        }
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
        let started = Instant::now();
        let Some(version) = self.load(&st, current_id).await? else {
            return Ok(CheckOutcome::Unchanged);
        };
        match self.target.verify(&version.secret).await {
            Ok(()) => {
                self.switch(&version);
                st.cache.insert(version.version_id.clone(), version.secret.clone());
                st.last_seen_current = Some(version.version_id.clone());
                self.metrics.record_refresh(RefreshTrigger::change_check, RefreshOutcome::switched, started.elapsed());
                tracing::info!(from = %active.version_id, to = %version.version_id, user = %version.secret.username, "switched to the new AWSCURRENT");
                Ok(CheckOutcome::Switched)
            }
            Err(VerifyError::Rejected { sqlstate }) => {
                st.last_seen_current = Some(version.version_id.clone());
                self.metrics.record_refresh(RefreshTrigger::change_check, RefreshOutcome::kept, started.elapsed());
                tracing::warn!(version_id = %version.version_id, %sqlstate, kept = %active.version_id, "the database refuses the new AWSCURRENT; keeping the working login");
                Ok(CheckOutcome::NewVersionRejected)
            }
            Err(VerifyError::Unreachable(detail)) => {
                self.metrics.record_refresh(RefreshTrigger::change_check, RefreshOutcome::failed, started.elapsed());
                tracing::warn!(version_id = %version.version_id, %detail, "could not verify the new AWSCURRENT; will retry");
                Ok(CheckOutcome::DatabaseUnreachable)
            }
        }
    }

    /// Whether a refresh may probe the database now (not backing off after a fruitless one).
    pub fn may_probe(&self) -> bool {
        let not_before = *self.probe_not_before.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        not_before.is_none_or(|t| Instant::now() >= t)
    }

    /// A new connection opened under `failed_generation` was refused. Find a login that
    /// works (see the module comment for the order and the backoffs).
    #[tracing::instrument(skip_all, fields(secret_id = self.source.secret_id(), failed_generation))]
    pub async fn recover(&self, failed_generation: u64) -> Result<Recovered, CredentialsError> {
        let waited = Instant::now();
        let mut st = self.refresh.lock().await;
        if self.generation() != failed_generation {
            return Ok(Recovered::AlreadyDone);
        }
        if !self.may_probe() {
            return Err(CredentialsError::BackingOff);
        }
        tracing::debug!(waited_ms = waited.elapsed().as_millis() as u64, "refresh starts");
        let started = Instant::now();
        let result = self.recover_locked(&mut st).await;
        let took = started.elapsed();
        let mut not_before = self.probe_not_before.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &result {
            Ok(outcome) => {
                st.probe_backoff.reset();
                st.describe_backoff.reset();
                st.describe_not_before = None;
                *not_before = None;
                let label =
                    if *outcome == Recovered::Switched { RefreshOutcome::switched } else { RefreshOutcome::kept };
                self.metrics.record_refresh(RefreshTrigger::auth_failure, label, took);
            }
            Err(e) => {
                let delay = st.probe_backoff.next_delay();
                *not_before = Some(Instant::now() + delay);
                self.metrics.record_refresh(RefreshTrigger::auth_failure, RefreshOutcome::failed, took);
                tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "credential refresh after an authentication failure failed");
            }
        }
        result
    }

    async fn recover_locked(&self, st: &mut RefreshState) -> Result<Recovered, CredentialsError> {
        let active = self.active();
        // Which versions exist now. While an earlier fruitless DescribeSecret backs off,
        // probe what it described from the cache instead.
        let mut described_now = false;
        let mut sm_error = None;
        if st.describe_not_before.is_none_or(|t| Instant::now() >= t) {
            let described = tokio::time::timeout(REFRESH_CALL_TIMEOUT, self.source.describe()).await;
            match described.unwrap_or_else(|_| Err(timed_out("DescribeSecret"))) {
                Ok(stages) => {
                    described_now = true;
                    Self::prune_cache(st, &stages, &active.version_id);
                    st.described = Stage::FALLBACK_ORDER
                        .iter()
                        .filter_map(|&stage| stages.version_with(stage).map(|id| (stage, id.to_owned())))
                        .collect();
                }
                Err(e) => {
                    let delay = st.describe_backoff.next_delay();
                    st.describe_not_before = Some(Instant::now() + delay);
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "refresh: DescribeSecret failed; probing known logins only");
                    sm_error = Some(e);
                }
            }
        }
        let mut tried = Vec::new();
        let candidates = st.described.clone();
        for (stage, id) in &candidates {
            if *id == active.version_id {
                continue; // Tried last, below.
            }
            let loaded = tokio::time::timeout(REFRESH_CALL_TIMEOUT, self.load(st, id)).await;
            let version = match loaded.unwrap_or_else(|_| Err(timed_out("GetSecretValue"))) {
                Ok(Some(v)) => v,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(version_id = %id, error = %e, "refresh: cannot load a version; trying the others");
                    sm_error.get_or_insert(e);
                    continue;
                }
            };
            if version.secret.same_credentials(&active.secret) {
                continue;
            }
            match self.target.verify(&version.secret).await {
                Ok(()) => {
                    self.switch(&version);
                    st.cache.insert(version.version_id.clone(), version.secret.clone());
                    // AWSCURRENT was judged here (tried first, or it is the login that
                    // was refused): the next change check need not load it again.
                    if let Some((_, current)) = candidates.iter().find(|(s, _)| *s == Stage::Current) {
                        st.last_seen_current = Some(current.clone());
                    }
                    tracing::info!(from = %active.version_id, to = %version.version_id, stage = stage.label(), user = %version.secret.username, "switched after an authentication failure");
                    return Ok(Recovered::Switched);
                }
                Err(VerifyError::Rejected { sqlstate }) => {
                    if *stage != Stage::Pending {
                        st.cache.insert(version.version_id.clone(), version.secret.clone());
                    }
                    tracing::warn!(version_id = %version.version_id, stage = stage.label(), %sqlstate, "refused too");
                    tried.push(format!("{} {}", stage.label(), version.version_id));
                }
                Err(VerifyError::Unreachable(d)) => return Err(CredentialsError::DatabaseUnreachable(d)),
            }
        }
        // Last, the login that was refused: the refusal may have been brief.
        match self.target.verify(&active.secret).await {
            Ok(()) => {
                self.bump_generation();
                tracing::info!(version_id = %active.version_id, "the refused login works again; keeping it");
                return Ok(Recovered::ActiveWorksAgain);
            }
            Err(VerifyError::Rejected { .. }) => tried.push(format!("active {}", active.version_id)),
            Err(VerifyError::Unreachable(d)) => return Err(CredentialsError::DatabaseUnreachable(d)),
        }
        if described_now {
            // It told us nothing that works: ask again later, not on every probe.
            let delay = st.describe_backoff.next_delay();
            st.describe_not_before = Some(Instant::now() + delay);
        }
        match sm_error {
            Some(e) if tried.len() <= 1 => Err(e.into()),
            _ => Err(CredentialsError::NoWorkingVersion {
                secret_id: self.source.secret_id().to_owned(),
                tried: tried.join(", "),
            }),
        }
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
    /// Starts a refresh for `failed_generation` on its own task unless one is running,
    /// the generation already moved on, or the database backoff says not yet. Never waits:
    /// requests wait for a released connection or for the generation to change.
    fn kick(&self, failed_generation: u64);
    /// Resolves once the generation is no longer `generation`.
    fn changed(&self, generation: u64) -> Pin<Box<dyn Future<Output = ()> + Send>>;
    fn active(&self) -> Arc<Active>;
}

impl<S: SecretSource + std::fmt::Debug, T: CredentialTarget + std::fmt::Debug> Recover for Arc<Credentials<S, T>> {
    fn generation(&self) -> u64 {
        Credentials::generation(self)
    }

    fn kick(&self, failed_generation: u64) {
        if Credentials::generation(self) != failed_generation || !self.may_probe() {
            return;
        }
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        // Its own task: a request that times out must not cancel a refresh others need.
        let this = self.clone();
        tokio::spawn(async move {
            let _ = this.recover(failed_generation).await;
            this.refreshing.store(false, Ordering::Release);
        });
    }

    fn changed(&self, generation: u64) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let mut rx = self.generation.subscribe();
        Box::pin(async move {
            let _ = rx.wait_for(|g| *g != generation).await;
        })
    }

    fn active(&self) -> Arc<Active> {
        Credentials::active(self)
    }
}

#[cfg(test)]
mod tests;
