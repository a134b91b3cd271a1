//! setSecret: make the database accept the AWSPENDING credentials.
//!
//! How is the strategy's business (`strategy/`): the user itself changes its
//! password, or the master changes the alternate user's. Either way the
//! password reaches the server only as a SCRAM-SHA-256 verifier, and Secrets
//! Manager may call this step again after a crash or a failed later step, so
//! each strategy first finds out whether the work is already done.

use tracing::instrument;

use super::{Outcome, StepContext};
use crate::error::RotationError;
use crate::strategy::Strategy;

#[instrument(skip_all)]
pub(crate) async fn run(ctx: &StepContext<'_>, strategy: Strategy) -> Result<Outcome, RotationError> {
    let pending = ctx.pending().await?;
    strategy.set(ctx, &pending).await
}
