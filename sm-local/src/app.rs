//! What every handler shares: moto, the functions, the rotations, the fault
//! rules and the call log. Built once when the endpoint starts.

use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::task::JoinSet;

use crate::calls::CallLog;
use crate::config::Config;
use crate::faults::Faults;
use crate::lambda::Functions;
use crate::rotation::Rotations;
use crate::upstream::Upstream;

#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub upstream: Upstream,
    pub functions: Functions,
    pub rotations: Rotations,
    pub calls: CallLog,
    faults: Mutex<Faults>,
    /// Rotations running in the background; aborted at shutdown.
    tasks: Mutex<JoinSet<()>>,
}

impl App {
    /// `endpoint` is the endpoint's own URL, given to the functions.
    pub fn new(config: Config, endpoint: &str) -> Self {
        Self {
            upstream: Upstream::new(&config.moto),
            functions: Functions::new(&config, endpoint),
            rotations: Rotations::default(),
            calls: CallLog::default(),
            faults: Mutex::default(),
            tasks: Mutex::default(),
            config,
        }
    }

    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    /// Forgets rotations, fault rules and calls (moto was reset under us).
    pub fn reset(&self) {
        self.rotations.clear();
        self.faults().clear();
        self.calls.clear();
    }

    /// Stops background rotations and kills every function process.
    pub fn shutdown(&self) {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner).abort_all();
        self.functions.shutdown();
    }

    /// As [`App::shutdown`], and waits until every process is gone.
    pub async fn stop(&self) {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner).abort_all();
        self.functions.stop().await;
    }
}
