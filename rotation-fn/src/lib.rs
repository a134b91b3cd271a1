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
//! Before any step, the guard in [`guard`] checks that rotation is enabled
//! and `T` is AWSPENDING; if `T` is already AWSCURRENT the step does nothing.
//! The guard's DescribeSecret is made on every step; version *values* may come
//! from this process's cache (see [`store`]), because a value never changes
//! under its VersionId.
//!
//! The database never holds a password that no version of the secret holds:
//! setSecret only ever sets the value createSecret stored in `T` beforehand.
//! The operator's configuration, not the secret, decides the strategy
//! ([`strategy`]) and whether plain text is allowed and which servers may be
//! logged in at ([`db_config`]).
//!
//! # The house, bottom to top (imports only point down)
//!
//! - [`deadline`], [`mod@error`], [`event`], [`sql`], [`scram`], [`password`],
//!   [`db_config`]: pure parts and settings;
//! - [`store`] (Secrets Manager through the [`store::SecretsApi`] seam, with
//!   [`aws`] its SDK implementation), [`guard`] (the stage guard),
//!   [`session`] (one login), [`roles`] (questions about roles, asked in a
//!   session), [`evidence`] (who is connected as a login);
//! - [`context`]: what a step works with;
//! - [`strategy`]: who changes whose password;
//! - [`steps`]: the four steps, dispatched below;
//! - [`preflight`] and [`emergency`]: the operator's requests, which run
//!   checks or whole rotations through the rooms below;
//! - [`provision`]: the deployment's provisioner, beside the rotation, using
//!   the same bottom rooms.

#![warn(unreachable_pub)]

// The crate's face is the `pub use` list below (and `scram`, `sql`, whose
// functions the end-to-end tests use to build what they compare against);
// every other room is private, and `unreachable_pub` (top of this file)
// names what nobody outside needs.

mod aws;
mod config;
mod context;
mod db_config;
mod deadline;
mod emergency;
mod error;
mod event;
mod evidence;
mod fault;
mod guard;
mod password;
mod preflight;
mod provision;
mod roles;
pub mod scram;
mod session;
pub mod sql;
mod steps;
mod store;
mod strategy;

pub use aws::AwsSecrets;
pub use config::{Config, ConfigError};
pub use db_config::{DbConfig, DbConfigError};
pub use deadline::Deadline;
pub use error::RotationError;
pub use evidence::IN_USE_MESSAGE;
pub use provision::{Anchors, Provisioner};
pub use store::SecretsApi;

use std::time::Instant;

use serde_json::{Value, json};
use tracing::{Instrument as _, error, info, info_span};

use std::sync::Arc;

use db_secret::Connector;

use crate::context::{Outcome, StepContext};
use crate::event::{OperatorRequest, Request, RotationEvent, Step};
use crate::evidence::Evidence;
use crate::guard::{SecretState, Verdict};
use crate::store::SecretStore;

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

    /// Handles one invocation: a rotation step, or an operator's request
    /// ([`event::OperatorRequest`]).
    pub async fn handle(&self, payload: &Value, deadline: Deadline) -> Result<Value, RotationError> {
        match Request::parse(payload).inspect_err(|e| error!(error = %e, "invalid event"))? {
            Request::Rotation(event) => self.rotate(event, deadline).await,
            Request::Operator(OperatorRequest::Preflight { secret_id }) => {
                preflight::run(self, &secret_id, deadline).await
            }
            Request::Operator(OperatorRequest::Emergency { secret_id, fleet_wait }) => {
                emergency::run(self, &secret_id, fleet_wait, deadline).await
            }
            Request::Deployment { delete: true, physical_id, .. } => Ok(json!({ "PhysicalResourceId": physical_id })),
            Request::Deployment { secret_id, .. } => {
                let table = preflight::run(self, &secret_id, deadline).await?;
                Ok(preflight::custom_resource_answer(&table, &secret_id))
            }
        }
    }

    /// One step of a rotation. The result names the step, what it did and,
    /// for setSecret, who was connected as the login it changed.
    async fn rotate(&self, event: RotationEvent, deadline: Deadline) -> Result<Value, RotationError> {
        self.step(&event, deadline, None).await
    }

    /// Runs one step, logged in the rotation's span. `staged`: the secret's
    /// state as RotateSecret would leave it (the token AWSPENDING) and its
    /// AWSCURRENT version, for an emergency rotation's own createSecret;
    /// otherwise the state is described and checked here.
    async fn step(
        &self,
        event: &RotationEvent,
        deadline: Deadline,
        staged: Option<(SecretState, String)>,
    ) -> Result<Value, RotationError> {
        let span = info_span!(
            "rotation",
            step = %event.step,
            secret = %event.secret_id,
            token = %event.token,
            strategy = self.config.strategy.as_str()
        );
        async {
            let started = Instant::now();
            let result = self.run_step(event, deadline, staged).await;
            let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            match &result {
                Ok((outcome, _)) => info!(?outcome, duration_ms, "step succeeded"),
                Err(e) => error!(
                    error = %e.report(),
                    kind = e.kind(),
                    transient = e.is_transient(),
                    duration_ms,
                    "step failed"
                ),
            }
            result.map(|(outcome, evidence)| {
                let mut answer = json!({ "step": event.step.as_str(), "outcome": outcome });
                if let Some(evidence) = evidence {
                    answer["evidence"] = json!(evidence);
                }
                answer
            })
        }
        .instrument(span)
        .await
    }

    async fn run_step(
        &self,
        event: &RotationEvent,
        deadline: Deadline,
        staged: Option<(SecretState, String)>,
    ) -> Result<(Outcome, Option<Evidence>), RotationError> {
        let (state, current_version) = match staged {
            Some(staged) => staged,
            None => {
                let state = self.store.describe(&event.secret_id, &deadline).await?;
                match state.check(&event.token) {
                    Ok(Verdict::AlreadyCurrent) => return Ok((Outcome::AlreadyCurrent, None)),
                    Ok(Verdict::Proceed { current }) => (state, current),
                    Err(source) => return Err(RotationError::Stage { arn: state.arn.clone(), source }),
                }
            }
        };
        let ctx = self.context(event, state, current_version, deadline);
        let outcome = match event.step {
            Step::Create => steps::create::run(&ctx, self.config.strategy).await,
            Step::Set => steps::set::run(&ctx, self.config.strategy).await,
            Step::Test => steps::test::run(&ctx).await,
            Step::Finish => steps::finish::run(&ctx).await,
        }?;
        Ok((outcome, ctx.evidence.into_inner()))
    }

    /// What a step works with: this function's clients and settings, the
    /// secret's `state` and its AWSCURRENT version.
    fn context<'a>(
        &'a self,
        event: &'a RotationEvent,
        state: SecretState,
        current_version: String,
        deadline: Deadline,
    ) -> StepContext<'a> {
        StepContext {
            store: &self.store,
            connector: &self.connector,
            db: &self.config.db,
            password: &self.config.password,
            event,
            state,
            current_version,
            deadline,
            in_use: self.config.in_use,
            evidence: std::sync::OnceLock::new(),
        }
    }
}
