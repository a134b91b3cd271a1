//! Event 2: the refresh after a refused login: which versions it tries, in which order,
//! and how it backs off.

use std::time::Duration;

use tokio::time::Instant;

use super::{CredentialTarget, Credentials, CredentialsError, RefreshState, SWITCH_TARGET, VerifyError};
use crate::metrics::{RefreshOutcome, RefreshTrigger};
use crate::secret_source::{SecretSource, SourceError, Stage};

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

impl<S: SecretSource, T: CredentialTarget> Credentials<S, T> {
    /// Whether a refresh may probe the database now (not backing off after a fruitless one).
    pub fn may_probe(&self) -> bool {
        self.refusal.may_probe()
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
        match &result {
            Ok(outcome) => {
                st.probe_backoff.reset();
                st.describe_backoff.reset();
                st.describe_not_before = None;
                self.refusal.probe_not_before(None);
                let label =
                    if *outcome == Recovered::Switched { RefreshOutcome::switched } else { RefreshOutcome::kept };
                self.metrics.record_refresh(RefreshTrigger::auth_failure, label, took);
            }
            Err(e) => {
                let delay = st.probe_backoff.next_delay();
                self.refusal.probe_not_before(Some(Instant::now() + delay));
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
                    tracing::info!(target: SWITCH_TARGET, from = %active.version_id, to = %version.version_id, stage = stage.label(), user = %version.secret.username, "switched after an authentication failure");
                    return Ok(Recovered::Switched);
                }
                Err(VerifyError::Unreachable(d)) => return Err(CredentialsError::DatabaseUnreachable(d)),
                Err(refused) => {
                    if *stage != Stage::Pending {
                        st.cache.insert(version.version_id.clone(), version.secret.clone());
                    }
                    tracing::warn!(version_id = %version.version_id, stage = stage.label(), reason = %refused, "refused too");
                    tried.push(format!("{} {}: {refused}", stage.label(), version.version_id));
                }
            }
        }
        // Last, the login that was refused: the refusal may have been brief.
        match self.target.verify(&active.secret).await {
            Ok(()) => {
                self.bump_generation();
                tracing::info!(version_id = %active.version_id, "the refused login works again; keeping it");
                return Ok(Recovered::ActiveWorksAgain);
            }
            Err(VerifyError::Unreachable(d)) => return Err(CredentialsError::DatabaseUnreachable(d)),
            Err(refused) => tried.push(format!("active {}: {refused}", active.version_id)),
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
}
