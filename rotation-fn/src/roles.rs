//! Questions about roles, asked in a session: does it exist, what powers
//! does it have beyond another's, what does it own. One module for the
//! rotation's strategies and the provisioner alike.

use crate::deadline::Deadline;
use crate::error::RotationError;
use crate::session::Session;
use crate::sql;

pub(crate) async fn exists(session: &mut Session, role: &str, deadline: &Deadline) -> Result<bool, RotationError> {
    session
        .run("checking whether a role exists", deadline, async |conn| {
            sqlx::query_scalar::<_, bool>(sql::ROLE_EXISTS).bind(role).fetch_one(conn).await
        })
        .await
}

/// The role attributes `clone` has and `base` does not.
pub(crate) async fn extra_powers(
    session: &mut Session,
    base: &str,
    clone: &str,
    deadline: &Deadline,
) -> Result<Vec<String>, RotationError> {
    type Powers = (bool, bool, bool, bool, bool);
    let mut read = async |role: &str| {
        session
            .run("reading role attributes", deadline, async |conn| {
                sqlx::query_as::<_, Powers>(sql::ROLE_POWERS).bind(role).fetch_optional(conn).await
            })
            .await
    };
    let base = read(base).await?.unwrap_or_default();
    let clone = read(clone).await?.unwrap_or_default();
    let names = ["SUPERUSER", "CREATEROLE", "CREATEDB", "REPLICATION", "BYPASSRLS"];
    let pairs = [(base.0, clone.0), (base.1, clone.1), (base.2, clone.2), (base.3, clone.3), (base.4, clone.4)];
    Ok(names.into_iter().zip(pairs).filter(|(_, (b, c))| *c && !*b).map(|(n, _)| n.to_owned()).collect())
}

/// How many objects `role` owns, in any database (shared dependencies).
pub(crate) async fn owned_objects(
    session: &mut Session,
    role: &str,
    deadline: &Deadline,
) -> Result<i64, RotationError> {
    session
        .run("reading what a role owns", deadline, async |conn| {
            sqlx::query_scalar::<_, i64>(sql::OWNED_OBJECTS).bind(role).fetch_one(conn).await
        })
        .await
}
