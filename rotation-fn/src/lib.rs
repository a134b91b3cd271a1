//! Secrets Manager rotation for PostgreSQL.
//!
//! # The protocol, as this function sees it
//!
//! An operator's `rotate-secret`, or the schedule, makes Secrets Manager:
//!
//! 1. add a version whose id is a fresh ClientRequestToken `T`, labelled
//!    AWSPENDING, with no value;
//! 2. invoke this function four times with `T`, in order, each after the
//!    previous one returned successfully:
//!    - **createSecret** stores the next credentials as the value of `T`;
//!    - **setSecret** makes the database accept them;
//!    - **testSecret** logs in with them;
//!    - **finishSecret** moves AWSCURRENT to `T` (the old version becomes
//!      AWSPREVIOUS);
//! 3. remove AWSPENDING from `T`.
//!
//! When a step fails, Secrets Manager stops and later retries the *whole*
//! sequence with the same `T`, possibly hours later and from a fresh process.
//! So each step is idempotent and reads everything it needs from Secrets
//! Manager and the database, never from memory: a retry may find any state a
//! crash left behind (a value stored but not set; set but not current).
//! With `RotateImmediately=false` only testSecret runs.
//!
//! Before any step, the guard in [`stages`] checks that rotation is enabled
//! and `T` is AWSPENDING; if `T` is already AWSCURRENT the step does nothing.
//! The guard's DescribeSecret is made on every step; version *values* may come
//! from this process's cache (see [`store`]), because a value never changes
//! under its VersionId.
//!
//! The database never holds a password that no version of the secret holds:
//! setSecret only ever sets the value createSecret stored in `T` beforehand.
//! The operator's configuration, not the secret, decides the strategy
//! ([`strategy`]) and whether plain text is allowed ([`config`]).

pub mod aws;
pub mod config;
pub mod db;
pub mod deadline;
pub mod error;
pub mod event;
pub mod fault;
pub mod password;
pub mod provision;
pub mod scram;
pub mod sql;
pub mod stages;
pub mod steps;
pub mod store;
pub mod strategy;

use std::time::Instant;

use serde_json::{Value, json};
use tracing::{Instrument as _, error, info, info_span};

use std::sync::Arc;

use db_secret::Connector;

use crate::config::Config;
use crate::deadline::Deadline;
use crate::error::RotationError;
use crate::event::{RotationEvent, Step};
use crate::stages::Verdict;
use crate::steps::{Outcome, StepContext};
use crate::store::{SecretStore, SecretsApi};

/// The function: clients built once at start, shared by every invocation.
#[derive(Debug)]
pub struct Rotator {
    store: SecretStore,
    connector: Connector,
    config: Config,
}

impl Rotator {
    pub fn new(api: Arc<dyn SecretsApi>, config: Config) -> Self {
        let connector = Connector::new(config.db.tls, config.db.trust.clone(), "rotation-fn");
        Self { store: SecretStore::new(api), connector, config }
    }

    /// Handles one invocation. The result names the step and what it did.
    pub async fn handle(&self, payload: &Value, deadline: Deadline) -> Result<Value, RotationError> {
        let event = RotationEvent::parse(payload).inspect_err(|e| error!(error = %e, "invalid event"))?;
        let span = info_span!(
            "rotation",
            step = %event.step,
            secret = %event.secret_id,
            token = %event.token,
            strategy = self.config.strategy.as_str()
        );
        async {
            let started = Instant::now();
            let result = self.run_step(&event, deadline).await;
            let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            match &result {
                Ok(outcome) => info!(?outcome, duration_ms, "step succeeded"),
                Err(e) => error!(
                    error = %e.report(),
                    kind = e.kind(),
                    transient = e.is_transient(),
                    duration_ms,
                    "step failed"
                ),
            }
            result.map(|outcome| json!({ "step": event.step.as_str(), "outcome": outcome }))
        }
        .instrument(span)
        .await
    }

    async fn run_step(&self, event: &RotationEvent, deadline: Deadline) -> Result<Outcome, RotationError> {
        let state = self.store.describe(&event.secret_id, &deadline).await?;
        let current_version = match state.check(&event.token) {
            Ok(Verdict::AlreadyCurrent) => return Ok(Outcome::AlreadyCurrent),
            Ok(Verdict::Proceed { current }) => current,
            Err(source) => return Err(RotationError::Stage { arn: state.arn.clone(), source }),
        };
        let ctx = StepContext {
            store: &self.store,
            connector: &self.connector,
            config: &self.config,
            event,
            state,
            current_version,
            deadline,
        };
        match event.step {
            Step::Create => steps::create::run(&ctx).await,
            Step::Set => steps::set::run(&ctx).await,
            Step::Test => steps::test::run(&ctx).await,
            Step::Finish => steps::finish::run(&ctx).await,
        }
    }
}
