//! createSecret: store the next credentials as the AWSPENDING version.
//!
//! Idempotent: a retry finds the value the first attempt stored and keeps it
//! (setSecret of that attempt may already have put it in the database).
//! Everything is validated before the one write, so a malformed secret leaves
//! no version behind.

use tracing::instrument;

use super::{Outcome, StepContext};
use crate::error::{Credential, RotationError};
use crate::stages::PENDING;
use crate::store::PutOutcome;
use crate::strategy::Strategy;

#[instrument(skip_all)]
pub async fn run(ctx: &StepContext<'_>) -> Result<Outcome, RotationError> {
    let existing = ctx.store.get(&ctx.arn, PENDING, Some(&ctx.event.token), &ctx.deadline).await?;
    if existing.is_some_and(|v| v.value.is_some()) {
        // Validate what an earlier attempt wrote, so a bad pending version is
        // reported here rather than as a confusing setSecret failure.
        ctx.pending().await?;
        return Ok(Outcome::AlreadyCreated);
    }

    let current = ctx.current().await?;
    let invalid_current = |source| RotationError::InvalidSecret {
        arn: ctx.arn.clone(),
        credential: Credential::Current,
        version: ctx.current_version.clone(),
        source,
    };
    let strategy = Strategy::resolve(ctx.config.strategy, &current).map_err(invalid_current)?;
    let username = strategy.next_username(&current).map_err(invalid_current)?;
    if let Strategy::AlternatingUsers { master_arn } = &strategy {
        // setSecret will need it; finding a broken master secret now costs one
        // read and saves a rotation stuck after createSecret.
        let master = ctx.master(master_arn).await?;
        if !master.same_server(&current) {
            return Err(ctx.inconsistent(format!(
                "the master secret points at {}:{}, the secret at {}:{}",
                master.host, master.port, current.host, current.port
            )));
        }
    }

    let pending = current.with_credentials(username, ctx.config.password.generate());
    let value = pending.to_secret_string();
    let put =
        ctx.store.put_pending(&ctx.arn, &ctx.event.token, &value, ctx.event.rotation_token.as_deref(), &ctx.deadline);
    match put.await? {
        PutOutcome::Written => Ok(Outcome::Created),
        PutOutcome::AlreadyExists => Ok(Outcome::AlreadyCreated),
    }
}
