//! createSecret: store the next credentials as the AWSPENDING version.
//!
//! Idempotent: a retry finds the value the first attempt stored and keeps it
//! (setSecret of that attempt may already have put it in the database).
//! Everything is validated before the one write — AWSCURRENT parses, fits the
//! configured strategy and the TLS floor — so a secret that does not leaves no
//! version behind.

use tracing::instrument;

use super::{Outcome, StepContext};
use crate::error::RotationError;
use crate::store::PutOutcome;
use crate::strategy::Strategy;

#[instrument(skip_all)]
pub(crate) async fn run(ctx: &StepContext<'_>, strategy: Strategy) -> Result<Outcome, RotationError> {
    if ctx.written_pending().await?.is_some() {
        return Ok(Outcome::AlreadyCreated);
    }
    let current = ctx.current().await?;
    let username = strategy.next_username(ctx, &current).await?;
    let pending = current.with_credentials(username, ctx.password.generate());
    let value = pending.to_secret_string();
    let put =
        ctx.store.put_pending(ctx.arn(), &ctx.event.token, &value, ctx.event.rotation_token.as_deref(), &ctx.deadline);
    match put.await? {
        PutOutcome::Written => Ok(Outcome::Created),
        PutOutcome::AlreadyExists => Ok(Outcome::AlreadyCreated),
    }
}
