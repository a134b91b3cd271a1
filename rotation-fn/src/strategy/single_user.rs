//! Single user: the user logs in and changes its own password.
//!
//! setSecret logs in with AWSCURRENT first: on a fresh rotation that is the
//! password the database has, so the step costs one login. If the database
//! refuses it, either this step already ran (the database has the pending
//! password: a retry) or AWSCURRENT is stale — an earlier rotation set the
//! database and then failed, or was abandoned. The pending login tells the
//! first case; for the second, the function looks for the password the
//! database has among the versions Secrets Manager still holds: AWSPREVIOUS,
//! then every unlabelled version of the same user and server, newest first,
//! for as long as the invocation's deadline allows (a count would let whoever
//! writes the secret push the real one out of reach with a few puts; the
//! error says how many were left untried). Whatever
//! logs in then sets the pending password, so the database ends on a password
//! AWSPENDING holds, never on one no version holds.

use db_secret::DbSecret;
use tracing::{info, warn};

use super::{ServerFacts, set_password};
use crate::context::{Outcome, StepContext};
use crate::error::{Credential, DbFailure, RotationError};
use crate::session::Session;

/// Time kept back from the recovery search for setting the password once a
/// login is found.
const RECOVERY_RESERVE: std::time::Duration = std::time::Duration::from_secs(3);

pub(crate) fn next_username(current: &DbSecret) -> String {
    current.username.clone()
}

pub(crate) async fn set(ctx: &StepContext<'_>, pending: &DbSecret) -> Result<Outcome, RotationError> {
    let current = ctx.current().await?;
    if !current.same_login(pending) || current.dbname != pending.dbname {
        return Err(ctx.inconsistent(format!(
            "AWSPENDING is user {:?} on {}:{} but AWSCURRENT is user {:?} on {}:{}",
            pending.username, pending.host, pending.port, current.username, current.host, current.port
        )));
    }
    let refused = match ctx.login(&current, Credential::Current).await {
        Ok(mut session) => {
            change_own_password(&mut session, pending, ctx).await?;
            session.close().await;
            return Ok(Outcome::PasswordSet);
        }
        Err(RotationError::Database { failure, .. }) if failure.is_auth() => failure,
        Err(other) => return Err(other),
    };
    match ctx.login(pending, Credential::Pending).await {
        Ok(session) => {
            session.close().await;
            return Ok(Outcome::AlreadySet);
        }
        Err(RotationError::Database { failure, .. }) if failure.is_auth() => {}
        Err(other) => return Err(other),
    }
    let mut session = recover_login(ctx, pending, refused).await?;
    change_own_password(&mut session, pending, ctx).await?;
    session.close().await;
    Ok(Outcome::PasswordSet)
}

async fn change_own_password(
    session: &mut Session,
    pending: &DbSecret,
    ctx: &StepContext<'_>,
) -> Result<(), RotationError> {
    let facts = ServerFacts::read(session, &ctx.deadline).await?;
    ctx.witness(session, &pending.username, false).await?;
    set_password(session, facts, pending, &ctx.deadline).await
}

/// AWSCURRENT and AWSPENDING were refused: find the login the database has.
async fn recover_login(
    ctx: &StepContext<'_>,
    pending: &DbSecret,
    current: DbFailure,
) -> Result<Session, RotationError> {
    let mut tried = Vec::new();
    match ctx.previous().await? {
        None => tried.push("AWSPREVIOUS: no such version".to_owned()),
        Some(p) if !p.same_login(pending) => tried.push("AWSPREVIOUS: a different user or server, not tried".into()),
        Some(previous) => match try_login(ctx, &previous, Credential::Previous).await? {
            Ok(session) => {
                info!("AWSCURRENT was refused; logged in with AWSPREVIOUS");
                return Ok(session);
            }
            Err(failure) => tried.push(format!("AWSPREVIOUS: {failure}")),
        },
    }
    match unlabelled_versions(ctx).await {
        Ok(ids) => {
            if ids.is_empty() {
                tried.push("no unlabelled versions".into());
            }
            let total = ids.len();
            for (checked, id) in ids.into_iter().enumerate() {
                if ctx.deadline.remaining() < RECOVERY_RESERVE {
                    tried.push(format!(
                        "{} of {total} unlabelled versions left untried: the invocation's deadline came first \
                         (the retry tries them again)",
                        total - checked
                    ));
                    break;
                }
                let candidate = match ctx.unlabelled(&id).await {
                    Ok(Some(secret)) if secret.same_login(pending) => secret,
                    Ok(_) => continue,
                    Err(e @ (RotationError::InvalidSecret { .. } | RotationError::Refused { .. })) => {
                        info!(version = %id, reason = %e, "unlabelled version skipped");
                        continue;
                    }
                    Err(other) => return Err(other),
                };
                match try_login(ctx, &candidate, Credential::Unlabelled).await? {
                    Ok(session) => {
                        warn!(
                            version = %id,
                            "AWSCURRENT and AWSPREVIOUS were refused; logged in with unlabelled version {id}, \
                             which an abandoned rotation left in the database"
                        );
                        return Ok(session);
                    }
                    Err(failure) => tried.push(format!("unlabelled version {id}: {failure}")),
                }
            }
        }
        Err(RotationError::Aws(aws)) if !aws.transient => tried.push(format!(
            "unlabelled versions not searched ({aws}; recovering from an abandoned rotation needs \
             secretsmanager:ListSecretVersionIds on the secret)"
        )),
        Err(other) => return Err(other),
    }
    Err(RotationError::NoWorkingLogin {
        user: pending.username.clone(),
        host: pending.host.clone(),
        port: pending.port,
        current,
        others: tried.join("; "),
    })
}

/// Logs in; an authentication failure is an answer (`Ok(Err)`), anything
/// else (unreachable, TLS, deadline) stops the search.
async fn try_login(
    ctx: &StepContext<'_>,
    secret: &DbSecret,
    credential: Credential,
) -> Result<Result<Session, DbFailure>, RotationError> {
    match ctx.login(secret, credential).await {
        Ok(session) => Ok(Ok(session)),
        Err(RotationError::Database { failure, .. }) if failure.is_auth() => Ok(Err(failure)),
        Err(other) => Err(other),
    }
}

/// The ids of the versions without a label, newest first.
async fn unlabelled_versions(ctx: &StepContext<'_>) -> Result<Vec<String>, RotationError> {
    let mut versions = ctx.store.list_versions(ctx.arn(), &ctx.deadline).await?;
    versions.retain(|v| v.stages.is_empty() && v.id != ctx.event.token && v.id != ctx.current_version);
    versions.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    Ok(versions.into_iter().map(|v| v.id).collect())
}
