//! finishSecret: move AWSCURRENT to the pending version. Secrets Manager
//! labels the old version AWSPREVIOUS and, after we return, removes
//! AWSPENDING. The guard already turned "token is AWSCURRENT" into a no-op,
//! so a retry after a crash between the move and the return succeeds.

use tracing::{info, instrument};

use super::{Outcome, StepContext};
use crate::error::RotationError;

#[instrument(skip_all)]
pub async fn run(ctx: &StepContext<'_>) -> Result<Outcome, RotationError> {
    ctx.store.promote(&ctx.arn, &ctx.event.token, &ctx.current_version, &ctx.deadline).await?;
    info!(from = %ctx.current_version, to = %ctx.event.token, "AWSCURRENT moved");
    Ok(Outcome::Finished)
}
