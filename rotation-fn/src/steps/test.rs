//! testSecret: prove the AWSPENDING credentials log in and can run a query.
//!
//! Secrets Manager also calls this step alone (RotateImmediately=false), so it
//! relies on nothing earlier steps did beyond the pending version existing.

use db_secret::DbFailure;
use tracing::instrument;

use super::{Outcome, StepContext};
use crate::error::{Credential, RotationError};

#[instrument(skip_all)]
pub(crate) async fn run(ctx: &StepContext<'_>) -> Result<Outcome, RotationError> {
    let pending = ctx.pending().await?;
    let mut session = ctx.login(&pending, Credential::Pending).await?;
    let user = session
        .run("the test query", &ctx.deadline, async |conn| {
            sqlx::query_scalar::<_, String>("SELECT current_user::text").fetch_one(conn).await
        })
        .await?;
    if user != pending.username {
        return Err(session.error(DbFailure::Other(format!("logged in as {user:?}, expected {:?}", pending.username))));
    }
    session.close().await;
    Ok(Outcome::Tested)
}
