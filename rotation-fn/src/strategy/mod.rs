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

pub mod alternating;
pub mod memberships;
pub mod single_user;

use db_secret::DbSecret;

use crate::db::Session;
use crate::deadline::Deadline;
use crate::error::RotationError;
use crate::scram;
use crate::sql;
use crate::steps::{Outcome, StepContext};

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
pub struct ServerFacts {
    /// `server_version_num`, e.g. 150008.
    pub version: i32,
    /// `scram_iterations` (PostgreSQL 16+), else the fixed 4096.
    pub scram_iterations: u32,
}

impl ServerFacts {
    pub async fn read(session: &mut Session, deadline: &Deadline) -> Result<Self, RotationError> {
        let (version, iterations) = session
            .run("reading server settings", deadline, async |conn| {
                sqlx::query_as::<_, (i32, Option<String>)>(sql::SERVER_SETTINGS).fetch_one(conn).await
            })
            .await?;
        Ok(Self { version, scram_iterations: iterations_from(iterations.as_deref()) })
    }

    /// PostgreSQL 16 records ADMIN, INHERIT and SET per membership grant.
    pub fn per_grant_options(self) -> bool {
        self.version >= 160_000
    }
}

/// `scram_iterations` as the server reports it (absent before 16).
fn iterations_from(setting: Option<&str>) -> u32 {
    setting.and_then(|i| i.trim().parse::<u32>().ok()).filter(|&i| i > 0).unwrap_or(scram::DEFAULT_ITERATIONS)
}

/// Sets `pending`'s password as a SCRAM verifier computed here, with the
/// iteration count the server uses for its own verifiers.
pub async fn set_password(
    session: &mut Session,
    facts: ServerFacts,
    secret: &DbSecret,
    deadline: &Deadline,
) -> Result<(), RotationError> {
    let verifier = scram::verifier(secret.password(), facts.scram_iterations);
    session.execute(&sql::set_password(&secret.username, &verifier), deadline).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_iteration_count_is_used_where_it_has_one() {
        assert_eq!(iterations_from(None), 4096, "PostgreSQL 15 and older");
        assert_eq!(iterations_from(Some("10000")), 10_000, "scram_iterations on 16+");
        assert_eq!(iterations_from(Some("0")), 4096);
        let facts = |version| ServerFacts { version, scram_iterations: 4096 };
        assert!(!facts(150_008).per_grant_options() && facts(160_000).per_grant_options());
    }
}
