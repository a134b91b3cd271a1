//! setSecret: make the database accept the AWSPENDING credentials.
//!
//! The password reaches the server only as a SCRAM-SHA-256 verifier.
//! Secrets Manager may call this step again after a crash or a failed later
//! step, so it first checks whether the work is already done.

use tracing::{info, instrument};

use super::{Outcome, StepContext};
use crate::db::Session;
use crate::error::{Credential, DbFailure, RotationError};
use crate::secret::{CLONE_SUFFIX, DbSecret, base_username};
use crate::strategy::Strategy;
use crate::{scram, sql};

#[instrument(skip_all)]
pub async fn run(ctx: &StepContext<'_>) -> Result<Outcome, RotationError> {
    let pending = ctx.pending().await?;
    let strategy = Strategy::resolve(ctx.config.strategy, &pending).map_err(|source| RotationError::InvalidSecret {
        arn: ctx.arn.clone(),
        credential: Credential::Pending,
        version: ctx.event.token.clone(),
        source,
    })?;
    match strategy {
        Strategy::SingleUser => single_user(ctx, &pending).await,
        Strategy::AlternatingUsers { master_arn } => alternating_users(ctx, &pending, &master_arn).await,
    }
}

async fn single_user(ctx: &StepContext<'_>, pending: &DbSecret) -> Result<Outcome, RotationError> {
    // A retry after a successful set: the old password no longer works, so
    // the only way to know is to try the new one.
    match ctx.connector.login(pending, Credential::Pending, &ctx.deadline).await {
        Ok(session) => {
            session.close().await;
            return Ok(Outcome::AlreadySet);
        }
        Err(RotationError::Database { failure, .. }) if failure.is_auth() => {}
        Err(other) => return Err(other),
    }

    let current = ctx.current().await?;
    if !current.same_login(pending) {
        return Err(ctx.inconsistent(format!(
            "AWSPENDING is user {:?} on {}:{} but AWSCURRENT is user {:?} on {}:{}",
            pending.username, pending.host, pending.port, current.username, current.host, current.port
        )));
    }
    let mut session = match ctx.connector.login(&current, Credential::Current, &ctx.deadline).await {
        Ok(session) => session,
        Err(RotationError::Database { failure: current_failure, .. }) if current_failure.is_auth() => {
            // AWSCURRENT can be stale when an earlier rotation set the database
            // but failed before finishSecret and was abandoned: AWSPREVIOUS
            // then holds what the database has. Same user and host only.
            login_previous(ctx, pending, current_failure).await?
        }
        Err(other) => return Err(other),
    };
    set_password(&mut session, pending, ctx).await?;
    session.close().await;
    Ok(Outcome::PasswordSet)
}

async fn login_previous(
    ctx: &StepContext<'_>,
    pending: &DbSecret,
    current: DbFailure,
) -> Result<Session, RotationError> {
    let no_login = |previous: String| RotationError::NoWorkingLogin {
        user: pending.username.clone(),
        host: pending.host.clone(),
        port: pending.port,
        current: current.clone(),
        previous,
    };
    let previous = match ctx.previous().await? {
        None => return Err(no_login("no such version".into())),
        Some(p) if !p.same_login(pending) => return Err(no_login("a different user or server, not tried".into())),
        Some(p) => p,
    };
    match ctx.connector.login(&previous, Credential::Previous, &ctx.deadline).await {
        Ok(session) => {
            info!("AWSCURRENT was rejected; logged in with AWSPREVIOUS");
            Ok(session)
        }
        Err(RotationError::Database { failure, .. }) => Err(no_login(failure.to_string())),
        Err(other) => Err(other),
    }
}

async fn alternating_users(
    ctx: &StepContext<'_>,
    pending: &DbSecret,
    master_arn: &str,
) -> Result<Outcome, RotationError> {
    let master = ctx.master(master_arn).await?;
    if !master.same_server(pending) {
        return Err(ctx.inconsistent(format!(
            "the master secret points at {}:{}, AWSPENDING at {}:{}",
            master.host, master.port, pending.host, pending.port
        )));
    }
    if master.username == pending.username {
        return Err(ctx.inconsistent("the master user cannot be one of the alternating users".into()));
    }
    let mut session = ctx.connector.login(&master, Credential::Master, &ctx.deadline).await?;
    let base = base_username(&pending.username).to_owned();
    let clone = format!("{base}{CLONE_SUFFIX}");
    if !role_exists(&mut session, &clone, ctx).await? {
        if pending.username != clone {
            return Err(ctx.inconsistent(format!("role {clone:?} does not exist, yet AWSCURRENT names it")));
        }
        session.execute(&sql::create_login_role(&clone), &ctx.deadline).await?;
        info!(role = %clone, "created the alternate user");
    }
    sync_memberships(&mut session, &base, &clone, ctx).await?;
    // Setting it again on a retry is harmless: same password, fresh salt.
    set_password(&mut session, pending, ctx).await?;
    session.close().await;
    Ok(Outcome::PasswordSet)
}

async fn set_password(session: &mut Session, pending: &DbSecret, ctx: &StepContext<'_>) -> Result<(), RotationError> {
    let verifier = scram::verifier(pending.password());
    session.execute(&sql::set_password(&pending.username, &verifier), &ctx.deadline).await
}

async fn role_exists(session: &mut Session, role: &str, ctx: &StepContext<'_>) -> Result<bool, RotationError> {
    let query = sqlx::query_scalar::<_, bool>(sql::ROLE_EXISTS).bind(role).fetch_one(&mut session.conn);
    let found = ctx.deadline.run(|| "checking whether a role exists".into(), query).await?;
    found.map_err(|e| session.error(crate::db::classify(&e)))
}

/// The clone must be able to do what the original does: it is a member of
/// the original (so it reaches objects the original owns or was granted) and
/// of every role the original is a member of. Checked on every rotation, so
/// grants added to or removed from the original later do not drift apart.
async fn sync_memberships(
    session: &mut Session,
    base: &str,
    clone: &str,
    ctx: &StepContext<'_>,
) -> Result<(), RotationError> {
    let mut wanted = memberships(session, base, ctx).await?;
    wanted.push(base.to_owned());
    wanted.retain(|role| role != clone);
    let have = memberships(session, clone, ctx).await?;
    for role in wanted.iter().filter(|r| !have.contains(r)) {
        session.execute(&sql::grant_membership(role, clone), &ctx.deadline).await?;
        info!(role = %role, member = %clone, "granted membership");
    }
    for role in have.iter().filter(|r| !wanted.contains(r)) {
        session.execute(&sql::revoke_membership(role, clone), &ctx.deadline).await?;
        info!(role = %role, member = %clone, "revoked membership the original does not have");
    }
    Ok(())
}

async fn memberships(session: &mut Session, role: &str, ctx: &StepContext<'_>) -> Result<Vec<String>, RotationError> {
    let query = sqlx::query_scalar::<_, String>(sql::MEMBERSHIPS).bind(role).fetch_all(&mut session.conn);
    let found = ctx.deadline.run(|| "reading role memberships".into(), query).await?;
    found.map_err(|e| session.error(crate::db::classify(&e)))
}
