//! The request path's side: the refusal state (one type owns it) and the object-safe
//! [`Recover`] handle the pool holds.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::{Active, CredentialTarget, Credentials};
use crate::secret_source::SecretSource;

/// The refusal state, in one place: which generation's login the database refused (no
/// connection attempt uses it again until the refresh has decided), until when a refresh
/// may not probe the database (its backoff), and whether a refresh is running.
#[derive(Debug)]
pub struct Refusal {
    /// The credentials generation whose login was refused (`u64::MAX`: none).
    refused: AtomicU64,
    probe_not_before: Mutex<Option<Instant>>,
    refreshing: AtomicBool,
}

impl Default for Refusal {
    fn default() -> Self {
        Self {
            refused: AtomicU64::new(u64::MAX),
            probe_not_before: Mutex::new(None),
            refreshing: AtomicBool::new(false),
        }
    }
}

impl Refusal {
    /// Whether the database refused the login of `generation`.
    pub fn is_refused(&self, generation: u64) -> bool {
        self.refused.load(Ordering::Acquire) == generation
    }

    /// The database refused the login of `generation`.
    pub fn mark_refused(&self, generation: u64) {
        self.refused.store(generation, Ordering::Release);
    }

    /// Whether a refresh may probe the database now (not backing off after a fruitless one).
    pub fn may_probe(&self) -> bool {
        let not_before = *self.probe_not_before.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        not_before.is_none_or(|t| Instant::now() >= t)
    }

    pub(super) fn probe_not_before(&self, at: Option<Instant>) {
        *self.probe_not_before.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = at;
    }

    /// Claims the one refresh slot; `false`: a refresh is already running.
    pub(super) fn start_refresh(&self) -> bool {
        !self.refreshing.swap(true, Ordering::AcqRel)
    }

    pub(super) fn refresh_done(&self) {
        self.refreshing.store(false, Ordering::Release);
    }
}

/// The request path's view of the credentials, object-safe so routes need not be generic.
pub trait Recover: Send + Sync + std::fmt::Debug {
    fn generation(&self) -> u64;
    /// Whether the database refused the login of `generation`: no new connection may
    /// use it until the refresh has decided (the generation moves on).
    fn refused(&self, generation: u64) -> bool;
    /// A new connection opened under `generation` was refused: remember it and start a
    /// refresh (see [`Self::kick`]).
    fn report_refused(&self, generation: u64);
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

    fn refused(&self, generation: u64) -> bool {
        self.refusal.is_refused(generation)
    }

    fn report_refused(&self, generation: u64) {
        self.refusal.mark_refused(generation);
        self.kick(generation);
    }

    fn kick(&self, failed_generation: u64) {
        if Credentials::generation(self) != failed_generation || !self.refusal.may_probe() {
            return;
        }
        if !self.refusal.start_refresh() {
            return;
        }
        // Its own task: a request that times out must not cancel a refresh others need.
        let this = self.clone();
        tokio::spawn(async move {
            let _ = this.recover(failed_generation).await;
            this.refusal.refresh_done();
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
