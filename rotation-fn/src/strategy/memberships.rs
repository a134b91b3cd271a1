//! What the alternate user must be a member of, and the statements that get
//! it there: a pure plan, so the rules are unit-tested without a server.
//!
//! The clone must be able to do what the original does: it is a member of the
//! original (so it reaches objects the original owns or was granted) and of
//! every role the original is a member of, with the same options. Checked on
//! every rotation, so grants added to or removed from the original later do
//! not drift apart.
//!
//! PostgreSQL 16 changed two things the plan accounts for: a membership can be
//! granted several times by different grantors (one `pg_auth_members` row each;
//! a plain `REVOKE` removes only the current user's grant), and each grant
//! carries its own ADMIN, INHERIT and SET options.

use std::collections::BTreeMap;

use crate::sql::MemberOptions;

/// One row of `pg_auth_members` for a member: the group, who granted it, how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GrantRow {
    pub group: String,
    pub grantor: Option<String>,
    pub options: MemberOptions,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Grant {
        group: String,
        options: MemberOptions,
    },
    /// One grant; `grantor` is named on servers that record several.
    Revoke {
        group: String,
        grantor: Option<String>,
    },
}

/// The options of a membership, whatever its grants: any grant's option counts.
fn effective(rows: &[GrantRow], per_grant_options: bool) -> BTreeMap<&str, MemberOptions> {
    let mut map: BTreeMap<&str, MemberOptions> = BTreeMap::new();
    for row in rows {
        let o = map.entry(row.group.as_str()).or_default();
        o.admin |= row.options.admin;
        // Before 16, INHERIT is the member's attribute and SET is implied: only
        // ADMIN is the grant's own, so only ADMIN is compared.
        o.inherit |= row.options.inherit || !per_grant_options;
        o.set |= row.options.set || !per_grant_options;
    }
    map
}

/// The changes that give `clone` exactly the memberships of `base` plus
/// membership in `base` itself, with no grant made twice and none left over.
pub(crate) fn plan(
    base_rows: &[GrantRow],
    clone_rows: &[GrantRow],
    base: &str,
    clone: &str,
    per_grant_options: bool,
) -> Vec<Change> {
    let mut wanted = effective(base_rows, per_grant_options);
    wanted.remove(clone);
    wanted.insert(base, MemberOptions { admin: false, inherit: true, set: true });
    let have = effective(clone_rows, per_grant_options);
    let revoke_all = |group: &str| -> Vec<Change> {
        let grants = clone_rows.iter().filter(|r| r.group == group);
        grants
            .map(|r| Change::Revoke {
                group: group.to_owned(),
                grantor: if per_grant_options { r.grantor.clone() } else { None },
            })
            .collect()
    };
    let mut changes = Vec::new();
    for (group, options) in &wanted {
        match have.get(group) {
            Some(current) if current == options => {}
            Some(_) => {
                // Options differ: replace every grant with one that says exactly what the original has.
                changes.extend(revoke_all(group));
                changes.push(Change::Grant { group: (*group).to_owned(), options: *options });
            }
            None => changes.push(Change::Grant { group: (*group).to_owned(), options: *options }),
        }
    }
    for group in have.keys().filter(|g| !wanted.contains_key(*g)) {
        changes.extend(revoke_all(group));
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: MemberOptions = MemberOptions { admin: false, inherit: true, set: true };

    fn row(group: &str, grantor: &str, options: MemberOptions) -> GrantRow {
        GrantRow { group: group.into(), grantor: Some(grantor.into()), options }
    }

    fn grant(group: &str, options: MemberOptions) -> Change {
        Change::Grant { group: group.into(), options }
    }

    fn revoke(group: &str, grantor: Option<&str>) -> Change {
        Change::Revoke { group: group.into(), grantor: grantor.map(Into::into) }
    }

    #[test]
    fn a_new_clone_gets_the_original_and_its_groups() {
        let base = [row("readers", "postgres", PLAIN), row("writers", "postgres", PLAIN)];
        let changes = plan(&base, &[], "app", "app_clone", false);
        assert_eq!(changes, [grant("app", PLAIN), grant("readers", PLAIN), grant("writers", PLAIN)]);
    }

    #[test]
    fn in_sync_means_no_statement() {
        let base = [row("readers", "postgres", PLAIN)];
        let clone = [row("app", "postgres", PLAIN), row("readers", "postgres", PLAIN)];
        assert_eq!(plan(&base, &clone, "app", "app_clone", true), []);
        assert_eq!(plan(&base, &clone, "app", "app_clone", false), []);
    }

    #[test]
    fn several_grantors_are_one_membership_granted_once_and_revoked_grant_by_grant() {
        // 16+: the original holds `readers` twice (two grantors); the clone must get it once.
        let base = [row("readers", "postgres", PLAIN), row("readers", "dba", PLAIN)];
        assert_eq!(plan(&base, &[], "app", "app_clone", true), [grant("app", PLAIN), grant("readers", PLAIN)]);
        // The clone holds `old` from two grantors: both grants go, each named.
        let clone = [row("app", "postgres", PLAIN), row("old", "postgres", PLAIN), row("old", "dba", PLAIN)];
        assert_eq!(
            plan(&[], &clone, "app", "app_clone", true),
            [revoke("old", Some("postgres")), revoke("old", Some("dba"))]
        );
        // Before 16 a membership has one grant, and REVOKE takes no grantor.
        let clone = [row("app", "postgres", PLAIN), row("old", "postgres", PLAIN)];
        assert_eq!(plan(&[], &clone, "app", "app_clone", false), [revoke("old", None)]);
    }

    #[test]
    fn grant_options_follow_the_original() {
        let no_inherit = MemberOptions { admin: false, inherit: false, set: true };
        let base = [row("pg_read_all_data", "postgres", no_inherit)];
        let clone = [row("app", "postgres", PLAIN), row("pg_read_all_data", "postgres", PLAIN)];
        assert_eq!(
            plan(&base, &clone, "app", "app_clone", true),
            [revoke("pg_read_all_data", Some("postgres")), grant("pg_read_all_data", no_inherit)]
        );
        // Before 16 INHERIT is not a grant option: nothing to change.
        assert_eq!(plan(&base, &clone, "app", "app_clone", false), []);
        // ADMIN is a grant option everywhere.
        let admin = MemberOptions { admin: true, ..PLAIN };
        let base = [row("readers", "postgres", admin)];
        let clone = [row("app", "postgres", PLAIN), row("readers", "postgres", PLAIN)];
        assert_eq!(plan(&base, &clone, "app", "app_clone", false), [revoke("readers", None), grant("readers", admin)]);
    }

    #[test]
    fn the_clone_is_never_its_own_member() {
        let base = [row("app_clone", "postgres", PLAIN)];
        assert_eq!(plan(&base, &[], "app", "app_clone", true), [grant("app", PLAIN)]);
    }
}
