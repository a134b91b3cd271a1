//! Who changes whose password. The operator chooses (`ROTATION_STRATEGY`);
//! the secret's contents never switch it.
//!
//! - [`single_user`]: the user changes its own password. Simple, but between
//!   setSecret and finishSecret the database already has the new password
//!   while AWSCURRENT still holds the old one; clients must try AWSPENDING.
//! - [`alternating`]: a master user sets the password of whichever of `name` /
//!   `name_clone` is *not* current, so the credentials clients use keep
//!   working throughout, and old sessions are never cut off.
//!
//! Each owns its create-time checks (what AWSCURRENT must hold, which user the
//! pending version names) and its setSecret; the steps only dispatch here.

pub(crate) mod alternating;
pub(crate) mod memberships;
pub(crate) mod single_user;

use db_secret::DbSecret;

use crate::context::{Outcome, StepContext};
use crate::deadline::Deadline;
use crate::error::RotationError;
use crate::scram;
use crate::session::Session;
use crate::sql;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    SingleUser,
    AlternatingUsers,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::SingleUser => "single-user",
            Strategy::AlternatingUsers => "alternating-users",
        }
    }

    /// createSecret: checks that AWSCURRENT fits this strategy and returns the
    /// user the pending version names. Nothing is written before this passes.
    pub async fn next_username(self, ctx: &StepContext<'_>, current: &DbSecret) -> Result<String, RotationError> {
        match self {
            Strategy::SingleUser => Ok(single_user::next_username(current)),
            Strategy::AlternatingUsers => alternating::next_username(ctx, current).await,
        }
    }

    /// setSecret: makes the database accept `pending`.
    pub async fn set(self, ctx: &StepContext<'_>, pending: &DbSecret) -> Result<Outcome, RotationError> {
        match self {
            Strategy::SingleUser => single_user::set(ctx, pending).await,
            Strategy::AlternatingUsers => alternating::set(ctx, pending).await,
        }
    }
}

/// Server facts a password change depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerFacts {
    /// `server_version_num`, e.g. 150008.
    pub version: i32,
    /// The iteration count for new verifiers: the server's system-wide
    /// `scram_iterations` (PostgreSQL 16+) within
    /// [`scram::MIN_ITERATIONS`]..=[`scram::MAX_ITERATIONS`], else 4096.
    pub scram_iterations: u32,
}

impl ServerFacts {
    pub(crate) async fn read(session: &mut Session, deadline: &Deadline) -> Result<Self, RotationError> {
        let (version, iterations, source) = session
            .run("reading server settings", deadline, async |conn| {
                sqlx::query_as::<_, (i32, Option<String>, Option<String>)>(sql::SERVER_SETTINGS).fetch_one(conn).await
            })
            .await?;
        let scram_iterations = iterations_from(iterations.as_deref(), source.as_deref());
        if iterations.as_deref().is_some_and(|i| i.trim() != scram_iterations.to_string()) {
            tracing::warn!(
                setting = iterations.as_deref().unwrap_or_default(),
                source = source.as_deref().unwrap_or_default(),
                used = scram_iterations,
                "scram_iterations is outside the range this function uses, or a role or database overrides it; \
                 verifiers get the count shown as `used`"
            );
        }
        Ok(Self { version, scram_iterations })
    }

    /// PostgreSQL 16 records ADMIN, INHERIT and SET per membership grant.
    pub(crate) fn per_grant_options(self) -> bool {
        self.version >= 160_000
    }
}

/// Where a setting may come from for this function to follow it: the
/// server's own configuration. A role or database override (`ALTER ROLE …
/// SET`) is the rotated role's own doing (a role may configure its own
/// sessions) and is not followed.
const SYSTEM_SOURCES: [&str; 6] =
    ["default", "configuration file", "command line", "environment variable", "global", "override"];

/// `scram_iterations` as the server reports it (absent before 16), clamped.
fn iterations_from(setting: Option<&str>, source: Option<&str>) -> u32 {
    if !source.is_some_and(|s| SYSTEM_SOURCES.contains(&s)) {
        return scram::DEFAULT_ITERATIONS;
    }
    let Some(i) = setting.and_then(|i| i.trim().parse::<u64>().ok()) else { return scram::DEFAULT_ITERATIONS };
    u32::try_from(i).unwrap_or(u32::MAX).clamp(scram::MIN_ITERATIONS, scram::MAX_ITERATIONS)
}

/// Sets `pending`'s password as a SCRAM verifier computed here, with the
/// iteration count the server uses for its own verifiers.
pub(crate) async fn set_password(
    session: &mut Session,
    facts: ServerFacts,
    secret: &DbSecret,
    deadline: &Deadline,
) -> Result<(), RotationError> {
    let verifier = scram::verifier_off_runtime(secret.password().clone(), facts.scram_iterations, deadline).await?;
    session.execute(&sql::set_password(&secret.username, &verifier), deadline).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_iteration_count_is_used_where_it_has_one() {
        let file = Some("configuration file");
        assert_eq!(iterations_from(None, None), 4096, "PostgreSQL 15 and older");
        assert_eq!(iterations_from(Some("10000"), file), 10_000, "scram_iterations on 16+");
        assert_eq!(iterations_from(Some("4096"), Some("default")), 4096);
        assert_eq!(iterations_from(Some("1"), file), 4096, "clamped up");
        assert_eq!(iterations_from(Some("2147483647"), file), scram::MAX_ITERATIONS, "clamped down");
        for own in ["user", "database", "database user", "session", "client"] {
            assert_eq!(iterations_from(Some("2147483647"), Some(own)), 4096, "{own} override ignored");
            assert_eq!(iterations_from(Some("10000"), Some(own)), 4096, "{own} override ignored");
        }
        let facts = |version| ServerFacts { version, scram_iterations: 4096 };
        assert!(!facts(150_008).per_grant_options() && facts(160_000).per_grant_options());
    }
}
