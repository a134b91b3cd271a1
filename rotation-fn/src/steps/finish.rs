//! finishSecret: move AWSCURRENT to the pending version. Secrets Manager
//! labels the old version AWSPREVIOUS and, after we return, removes
//! AWSPENDING. The guard already turned "token is AWSCURRENT" into a no-op,
//! so a retry after a crash between the move and the return succeeds.
//!
//! The move names the version AWSCURRENT left (`RemoveFromVersionId`), so if
//! someone moved AWSCURRENT between the guard's DescribeSecret and the move,
//! Secrets Manager refuses it. That lost race is transient: the retry reads
//! the stages again and either finds the rotation finished or acts on the
//! new state.

use tracing::{info, instrument, warn};

use super::{Outcome, StepContext};
use crate::error::RotationError;
use crate::guard::CURRENT;

#[instrument(skip_all)]
pub(crate) async fn run(ctx: &StepContext<'_>) -> Result<Outcome, RotationError> {
    let moved = ctx.store.move_current(ctx.arn(), &ctx.event.token, &ctx.current_version, &ctx.deadline).await;
    if let Err(error) = moved {
        let RotationError::Aws(_) = &error else { return Err(error) };
        let now = ctx.store.describe(ctx.arn(), &ctx.deadline).await?;
        return match now.version_with(CURRENT) {
            Some(current) if current == ctx.event.token => Ok(Outcome::AlreadyCurrent),
            Some(current) if current != ctx.current_version => {
                warn!(error = %error, expected = %ctx.current_version, found = %current, "AWSCURRENT moved under finishSecret");
                Err(RotationError::CurrentMoved {
                    arn: ctx.arn().to_owned(),
                    expected: ctx.current_version.clone(),
                    found: current.to_owned(),
                })
            }
            _ => Err(error),
        };
    }
    info!(from = %ctx.current_version, to = %ctx.event.token, "AWSCURRENT moved");
    Ok(Outcome::Finished)
}
