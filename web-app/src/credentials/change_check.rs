//! Event 1: the periodic change check (one `DescribeSecret` per interval).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{CredentialTarget, Credentials, SWITCH_TARGET, VerifyError};
use crate::backoff::{Backoff, jitter};
use crate::metrics::{RefreshOutcome, RefreshTrigger};
use crate::secret_source::{SecretSource, SourceError, Stage};

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

impl<S: SecretSource, T: CredentialTarget> Credentials<S, T> {
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
                tracing::info!(target: SWITCH_TARGET, from = %active.version_id, to = %version.version_id, user = %version.secret.username, "switched to the new AWSCURRENT");
                Ok(CheckOutcome::Switched)
            }
            Err(VerifyError::Unreachable(detail)) => {
                self.metrics.record_refresh(RefreshTrigger::change_check, RefreshOutcome::failed, started.elapsed());
                tracing::warn!(version_id = %version.version_id, %detail, "could not verify the new AWSCURRENT; will retry");
                Ok(CheckOutcome::DatabaseUnreachable)
            }
            Err(refused) => {
                st.last_seen_current = Some(version.version_id.clone());
                self.metrics.record_refresh(RefreshTrigger::change_check, RefreshOutcome::kept, started.elapsed());
                tracing::warn!(version_id = %version.version_id, reason = %refused, kept = %active.version_id, "the new AWSCURRENT is refused; keeping the working login");
                Ok(CheckOutcome::NewVersionRejected)
            }
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
