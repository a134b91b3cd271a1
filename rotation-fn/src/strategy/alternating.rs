//! Alternating users: the master (the user of the secret `masterarn` names)
//! sets the password of whichever of `name` / `name_clone` AWSCURRENT does not
//! hold, creating the clone on the first rotation.
//!
//! The master can change any role's password, so the function must not be a
//! confused deputy for whoever can write the application secret. Before the
//! master is used for anything:
//! 1. the pending user is the alternate of AWSCURRENT's user, on the same
//!    server and database, under the same master (createSecret made it so; a
//!    value written by someone else is refused);
//! 2. AWSCURRENT logs in (as AWS's own multi-user template insists): the
//!    rotation acts on behalf of a login that works, not of a name someone
//!    typed;
//! 3. the pair is anchored in the database, not only in the secret: an
//!    existing clone must already be a member of the original (which only the
//!    clone's creation or a DBA's grant makes it) and hold no power (superuser,
//!    createrole, …) the original lacks. Otherwise a login `x_clone` someone
//!    controls could have the master reset the password of a role `x` it was
//!    never paired with.

use db_secret::{DbSecret, MAX_IDENTIFIER_BYTES, SecretError};
use tracing::info;

use super::memberships::{Change, GrantRow, plan};
use super::{ServerFacts, set_password};
use crate::context::{Outcome, StepContext};
use crate::deadline::Deadline;
use crate::error::{Credential, RotationError};
use crate::roles;
use crate::session::Session;
use crate::sql::{self, MemberOptions};

/// Suffix of the second user (the one AWS's templates use, so existing
/// secrets keep working).
pub(crate) const CLONE_SUFFIX: &str = "_clone";

/// The user the next version carries: `name` ↔ `name_clone`.
pub(crate) fn alternate_username(current: &str) -> Result<String, SecretError> {
    match current.strip_suffix(CLONE_SUFFIX) {
        Some(base) if !base.is_empty() => Ok(base.to_owned()),
        _ => {
            let clone = format!("{current}{CLONE_SUFFIX}");
            if clone.len() > MAX_IDENTIFIER_BYTES {
                return Err(SecretError::IdentifierTooLong {
                    key: "username",
                    detail: " once `_clone` is appended for alternating users",
                });
            }
            Ok(clone)
        }
    }
}

/// The original user of a pair, whichever of the two `name` is.
pub(crate) fn base_username(name: &str) -> &str {
    match name.strip_suffix(CLONE_SUFFIX) {
        Some(base) if !base.is_empty() => base,
        _ => name,
    }
}

pub(crate) async fn next_username(ctx: &StepContext<'_>, current: &DbSecret) -> Result<String, RotationError> {
    let master_arn = master_arn(ctx, current)?;
    same_pair_as_before(ctx, current).await?;
    let username = alternate_username(&current.username).map_err(|source| RotationError::InvalidSecret {
        arn: ctx.arn().to_owned(),
        credential: Credential::Current,
        version: ctx.current_version.clone(),
        source,
    })?;
    // setSecret will need it; finding a broken master secret now costs one
    // read and saves a rotation stuck after createSecret.
    let master = ctx.master(master_arn, current).await?;
    check_master(ctx, &master, current)?;
    Ok(username)
}

pub(crate) async fn set(ctx: &StepContext<'_>, pending: &DbSecret) -> Result<Outcome, RotationError> {
    let current = ctx.current().await?;
    let master_arn = master_arn(ctx, &current)?;
    // 1. The pair is the secret's own.
    let alternate = alternate_username(&current.username).ok();
    if alternate.as_deref() != Some(pending.username.as_str())
        || !pending.same_server(&current)
        || pending.dbname != current.dbname
        || pending.master_arn != current.master_arn
    {
        return Err(ctx.inconsistent(format!(
            "AWSPENDING (user {:?} on {}:{}/{}) is not the alternate of AWSCURRENT (user {:?} on {}:{}/{}) \
             under the same master; only the alternate user is ever changed",
            pending.username,
            pending.host,
            pending.port,
            pending.dbname,
            current.username,
            current.host,
            current.port,
            current.dbname
        )));
    }
    same_pair_as_before(ctx, &current).await?;
    // 2. AWSCURRENT logs in.
    match ctx.login(&current, Credential::Current).await {
        Ok(session) => session.close().await,
        Err(RotationError::Database { failure, .. }) => {
            return Err(RotationError::UnverifiedCurrent {
                user: current.username.clone(),
                host: current.host.clone(),
                port: current.port,
                failure,
            });
        }
        Err(other) => return Err(other),
    }
    let master = ctx.master(master_arn, &current).await?;
    check_master(ctx, &master, &current)?;
    let mut session = ctx.login(&master, Credential::Master).await?;
    let facts = ServerFacts::read(&mut session, &ctx.deadline).await?;
    ctx.witness(&mut session, &pending.username, true).await?;
    let base = base_username(&pending.username).to_owned();
    let clone = format!("{base}{CLONE_SUFFIX}");

    // 3. The pair is anchored in the database.
    let clone_rows = grants(&mut session, &clone, facts, &ctx.deadline).await?;
    if roles::exists(&mut session, &clone, &ctx.deadline).await? {
        // Proof is a membership that gives the clone the original's
        // privileges (INHERIT or SET); on 16+ a grant WITH INHERIT FALSE,
        // SET FALSE gives nothing and anyone with ADMIN on the role can make it.
        if !clone_rows.iter().any(|r| r.group == base && (r.options.inherit || r.options.set)) {
            return Err(ctx.inconsistent(format!(
                "role {clone:?} exists but is not a member of {base:?} that inherits or may SET its privileges, \
                 so it is not {base:?}'s alternate user (a clone this function creates always is); if it is, a DBA \
                 can say so with GRANT {} TO {}",
                sql::quote_ident(&base),
                sql::quote_ident(&clone)
            )));
        }
        let mut extra = roles::extra_powers(&mut session, &base, &clone, &ctx.deadline).await?;
        let owned = roles::owned_objects(&mut session, &clone, &ctx.deadline).await?;
        if owned > 0 {
            extra.push(format!(
                "owns {owned} object(s): REASSIGN OWNED BY {} TO {}",
                sql::quote_ident(&clone),
                sql::quote_ident(&base)
            ));
        }
        if !extra.is_empty() {
            return Err(ctx.inconsistent(format!(
                "role {clone:?} has powers {base:?} lacks ({}); the rotation will not hand out its password",
                extra.join(", ")
            )));
        }
    } else {
        if pending.username != clone {
            return Err(ctx.inconsistent(format!("role {clone:?} does not exist, yet AWSCURRENT names it")));
        }
        session.execute(&sql::create_login_role(&clone), &ctx.deadline).await?;
        info!(role = %clone, "created the alternate user");
    }
    sync_memberships(&mut session, &base, &clone, clone_rows, facts, ctx).await?;
    // Setting it again on a retry is harmless: same password, fresh salt.
    set_password(&mut session, facts, pending, &ctx.deadline).await?;
    session.close().await;
    Ok(Outcome::PasswordSet)
}

/// The pair is derived from AWSCURRENT's user, and it is the secret's own:
/// AWSPREVIOUS (the version AWSCURRENT replaced) names a user of the same
/// pair. A writer who puts a new AWSCURRENT naming another role moves the
/// real one to AWSPREVIOUS, and is refused here. A previous version that does
/// not parse is no evidence either way.
async fn same_pair_as_before(ctx: &StepContext<'_>, current: &DbSecret) -> Result<(), RotationError> {
    let Ok(Some(previous)) = ctx.previous().await else { return Ok(()) };
    if base_username(&previous.username) == base_username(&current.username) && previous.same_server(current) {
        return Ok(());
    }
    Err(ctx.inconsistent(format!(
        "AWSCURRENT names user {:?} on {}:{} but AWSPREVIOUS names {:?} on {}:{}, not the same pair: only the secret's \
         own pair is rotated; if the change is intended, remove the AWSPREVIOUS label from the old version first",
        current.username, current.host, current.port, previous.username, previous.host, previous.port
    )))
}

fn master_arn<'s>(ctx: &StepContext<'_>, current: &'s DbSecret) -> Result<&'s str, RotationError> {
    current.master_arn.as_deref().ok_or_else(|| RotationError::Refused {
        arn: ctx.arn().to_owned(),
        credential: Credential::Current,
        version: ctx.current_version.clone(),
        detail: "ROTATION_STRATEGY=alternating-users needs key `masterarn`: the ARN of the secret whose user \
                 creates the alternate user and sets its password"
            .into(),
    })
}

fn check_master(ctx: &StepContext<'_>, master: &DbSecret, app: &DbSecret) -> Result<(), RotationError> {
    if !master.same_server(app) {
        return Err(ctx.inconsistent(format!(
            "the master secret points at {}:{}, the secret at {}:{}",
            master.host, master.port, app.host, app.port
        )));
    }
    let base = base_username(&app.username);
    if master.username == base || master.username == format!("{base}{CLONE_SUFFIX}") {
        return Err(ctx.inconsistent("the master user cannot be one of the alternating users".into()));
    }
    Ok(())
}

/// One row per membership grant of `role` (also what the pre-flight reads).
pub(crate) async fn grants(
    session: &mut Session,
    role: &str,
    facts: ServerFacts,
    deadline: &Deadline,
) -> Result<Vec<GrantRow>, RotationError> {
    let query = if facts.per_grant_options() { sql::MEMBERSHIP_GRANTS_16 } else { sql::MEMBERSHIP_GRANTS_15 };
    let rows = session
        .run("reading role memberships", deadline, async |conn| {
            sqlx::query_as::<_, (String, Option<String>, bool, bool, bool)>(query).bind(role).fetch_all(conn).await
        })
        .await?;
    Ok(rows
        .into_iter()
        .map(|(group, grantor, admin, inherit, set)| GrantRow {
            group,
            grantor,
            options: MemberOptions { admin, inherit, set },
        })
        .collect())
}

/// Makes the clone's memberships equal the original's (see `memberships.rs`),
/// and logs only what really changed.
async fn sync_memberships(
    session: &mut Session,
    base: &str,
    clone: &str,
    clone_rows: Vec<GrantRow>,
    facts: ServerFacts,
    ctx: &StepContext<'_>,
) -> Result<(), RotationError> {
    let base_rows = grants(session, base, facts, &ctx.deadline).await?;
    let changes = plan(&base_rows, &clone_rows, base, clone, facts.per_grant_options());
    if changes.is_empty() {
        return Ok(());
    }
    let mut revoked = Vec::new();
    let mut kept = Vec::new();
    for change in &changes {
        match change {
            Change::Grant { group, options } => {
                let statement = sql::grant_membership(group, clone, *options, facts.per_grant_options());
                session.execute(&statement, &ctx.deadline).await?;
                info!(role = %group, member = %clone, "granted membership");
            }
            Change::Revoke { group, grantor } => {
                let statement = sql::revoke_membership(group, clone, grantor.as_deref());
                match session.execute(&statement, &ctx.deadline).await {
                    Ok(()) => revoked.push(group.as_str()),
                    Err(RotationError::Database { failure, .. }) if failure.sqlstate() == Some("42501") => {
                        kept.push(format!("{group} (granted by {})", grantor.as_deref().unwrap_or("unknown")));
                    }
                    Err(other) => return Err(other),
                }
            }
        }
    }
    if !revoked.is_empty() {
        // A REVOKE of a grant the current user did not make only warns; say
        // "revoked" only of memberships that are really gone.
        let after = grants(session, clone, facts, &ctx.deadline).await?;
        revoked.sort_unstable();
        revoked.dedup();
        for group in revoked {
            // Still there, and not because the original has it (a grant
            // replaced with other options is revoked, then granted again).
            if after.iter().any(|r| r.group == group) && !base_rows.iter().any(|r| r.group == group) {
                kept.push(format!("{group} (by another grantor)"));
            } else if after.iter().any(|r| r.group == group) {
                info!(role = %group, member = %clone, "replaced a membership with the original's options");
            } else {
                info!(role = %group, member = %clone, "revoked membership the original does not have");
            }
        }
    }
    if !kept.is_empty() {
        // The clone would get powers the original lacks (pg_read_all_data,
        // say) with the password this rotation hands out: stop before it is set.
        return Err(ctx.inconsistent(format!(
            "role {clone:?} holds memberships {base:?} lacks that the master cannot revoke: {}; a DBA with the \
             grantor's rights must revoke them before the rotation hands out {clone:?}'s password",
            kept.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternates_between_name_and_clone() {
        assert_eq!(alternate_username("app").expect("ok"), "app_clone");
        assert_eq!(alternate_username("app_clone").expect("ok"), "app");
        assert_eq!(alternate_username("_clone").expect("ok"), "_clone_clone");
        assert_eq!(base_username("app_clone"), "app");
        assert_eq!(base_username("app"), "app");
        assert!(alternate_username(&"u".repeat(57)).is_ok());
        assert!(matches!(alternate_username(&"u".repeat(58)), Err(SecretError::IdentifierTooLong { .. })));
    }
}
