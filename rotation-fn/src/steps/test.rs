//! testSecret: prove the AWSPENDING credentials log in and can run a query.
//!
//! Secrets Manager also calls this step alone (RotateImmediately=false), so it
//! relies on nothing earlier steps did beyond the pending version existing.

use tracing::instrument;

use super::{Outcome, StepContext};
use crate::error::{Credential, DbFailure, RotationError};

#[instrument(skip_all)]
pub async fn run(ctx: &StepContext<'_>) -> Result<Outcome, RotationError> {
    let pending = ctx.pending().await?;
    let mut session = ctx.connector.login(&pending, Credential::Pending, &ctx.deadline).await?;
    let query = sqlx::query_scalar::<_, String>("SELECT current_user::text").fetch_one(&mut session.conn);
    let user = ctx
        .deadline
        .run(|| "the test query".into(), query)
        .await?
        .map_err(|e| session.error(crate::db::classify(&e)))?;
    if user != pending.username {
        return Err(session.error(DbFailure::Other(format!("logged in as {user:?}, expected {:?}", pending.username))));
    }
    session.close().await;
    Ok(Outcome::Tested)
}
