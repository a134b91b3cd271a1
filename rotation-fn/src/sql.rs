//! The SQL this function sends. Role names cannot be bind parameters in
//! utility statements (`ALTER ROLE`, `CREATE ROLE`, `GRANT`), so they are
//! quoted here, and only here.

/// Quotes an identifier: `App-User` → `"App-User"`, `a"b` → `"a""b"`.
/// Quoting also keeps case: an unquoted `App` would address role `app`.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal with standard_conforming_strings semantics (the
/// default since 9.1): only `'` needs doubling. Used for SCRAM verifiers,
/// whose base64 alphabet and `$:` never contain a quote; quoting anyway keeps
/// the function correct should that ever change.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

pub fn set_password(role: &str, verifier: &str) -> String {
    format!("ALTER ROLE {} PASSWORD {}", quote_ident(role), quote_literal(verifier))
}

pub fn create_login_role_with_password(role: &str, verifier: &str) -> String {
    format!("CREATE ROLE {} WITH LOGIN PASSWORD {}", quote_ident(role), quote_literal(verifier))
}

pub fn create_login_role(role: &str) -> String {
    format!("CREATE ROLE {} WITH LOGIN", quote_ident(role))
}

/// Membership options as PostgreSQL 16 records them per grant (earlier
/// versions know only ADMIN; INHERIT comes from the member and SET is implied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemberOptions {
    pub admin: bool,
    pub inherit: bool,
    pub set: bool,
}

/// `GRANT group TO member`, with the options spelled out on servers that
/// have them (16+) so the grant says exactly what it gives.
pub fn grant_membership(group: &str, member: &str, options: MemberOptions, with_options: bool) -> String {
    let (g, m) = (quote_ident(group), quote_ident(member));
    if with_options {
        let MemberOptions { admin, inherit, set } = options;
        format!("GRANT {g} TO {m} WITH ADMIN {admin}, INHERIT {inherit}, SET {set}")
    } else if options.admin {
        format!("GRANT {g} TO {m} WITH ADMIN OPTION")
    } else {
        format!("GRANT {g} TO {m}")
    }
}

/// `REVOKE group FROM member`; on 16+ one grant per grantor, named, because a
/// plain REVOKE only removes the grant the current user made.
pub fn revoke_membership(group: &str, member: &str, grantor: Option<&str>) -> String {
    match grantor {
        Some(g) => format!("REVOKE {} FROM {} GRANTED BY {}", quote_ident(group), quote_ident(member), quote_ident(g)),
        None => format!("REVOKE {} FROM {}", quote_ident(group), quote_ident(member)),
    }
}

/// The server's version number and, on 16+, its `scram_iterations` with
/// where the value comes from (`configuration file`, `default`, … or `user`,
/// `database`: an override the rotated role may have made itself).
pub const SERVER_SETTINGS: &str = "SELECT current_setting('server_version_num')::int, \
     (SELECT setting FROM pg_catalog.pg_settings WHERE name = 'scram_iterations'), \
     (SELECT source FROM pg_catalog.pg_settings WHERE name = 'scram_iterations')";

/// Direct memberships of `$1`, one row per grant: group, grantor, ADMIN,
/// INHERIT, SET (PostgreSQL 16+, where a membership can be granted several
/// times by different grantors, each with its own options).
pub const MEMBERSHIP_GRANTS_16: &str = "SELECT g.rolname::text, gr.rolname::text, m.admin_option, \
     m.inherit_option, m.set_option FROM pg_auth_members m \
     JOIN pg_roles g ON g.oid = m.roleid \
     JOIN pg_roles r ON r.oid = m.member \
     LEFT JOIN pg_roles gr ON gr.oid = m.grantor \
     WHERE r.rolname = $1";

/// The same before 16: one grant per membership; INHERIT is the member's
/// attribute and SET always allowed.
pub const MEMBERSHIP_GRANTS_15: &str = "SELECT g.rolname::text, gr.rolname::text, m.admin_option, \
     r.rolinherit, true FROM pg_auth_members m \
     JOIN pg_roles g ON g.oid = m.roleid \
     JOIN pg_roles r ON r.oid = m.member \
     LEFT JOIN pg_roles gr ON gr.oid = m.grantor \
     WHERE r.rolname = $1";

/// Roles `$1` is a direct member of (distinct, for tests and tools).
pub const MEMBERSHIPS: &str = "SELECT DISTINCT g.rolname::text FROM pg_auth_members m \
     JOIN pg_roles g ON g.oid = m.roleid \
     JOIN pg_roles r ON r.oid = m.member \
     WHERE r.rolname = $1 ORDER BY 1";

/// How many objects `$1` owns, in any database: ownership is recorded as a
/// shared dependency (deptype 'o').
pub const OWNED_OBJECTS: &str = "SELECT count(*) FROM pg_catalog.pg_shdepend d \
     JOIN pg_catalog.pg_roles r ON r.oid = d.refobjid \
     WHERE d.refclassid = 'pg_catalog.pg_authid'::regclass AND d.deptype = 'o' AND r.rolname = $1";

/// What is read of each session of a login (alias `a`, `pg_stat_activity`):
/// pid, application name, client address (`local` for a Unix socket),
/// backend start (RFC 3339, UTC) and its epoch seconds. What a session may see
/// of others' sessions is PostgreSQL's rule: the pid and application name
/// always; address and start only for its own role's sessions or with
/// `pg_read_all_stats` (the NULLs then say "hidden").
macro_rules! session_columns {
    () => {
        "a.pid, a.application_name, \
         CASE WHEN a.backend_start IS NULL THEN NULL \
              ELSE coalesce(pg_catalog.host(a.client_addr), 'local') END, \
         pg_catalog.to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
         extract(epoch FROM a.backend_start)::float8"
    };
}

/// Which sessions belong to login `$1`: its client backends (not background
/// workers) other than the asking session.
macro_rules! sessions_of_login {
    () => {
        "FROM pg_catalog.pg_stat_activity a \
         WHERE a.usename = $1 AND a.pid <> pg_catalog.pg_backend_pid() \
           AND coalesce(a.backend_type, 'client backend') = 'client backend'"
    };
}

/// The sessions of login `$1` other than the asking one, oldest first
/// (the columns of `session_columns!`).
pub const SESSIONS_OF: &str =
    concat!("SELECT ", session_columns!(), " ", sessions_of_login!(), " ORDER BY a.backend_start NULLS LAST, a.pid");

/// The server's clock, in epoch seconds: the moment sessions are compared to.
pub const SERVER_CLOCK: &str = "SELECT extract(epoch FROM pg_catalog.clock_timestamp())::float8";

/// Ends the sessions of login `$1` (other than the asking one) that started
/// before `$2` (epoch seconds); returns those whose end was signalled, with
/// the columns of [`SESSIONS_OF`], as they were when ended. A login may end
/// its own sessions without any privilege.
pub const END_SESSIONS_BEFORE: &str = concat!(
    "WITH old AS MATERIALIZED (SELECT ",
    session_columns!(),
    " ",
    sessions_of_login!(),
    " AND a.backend_start < pg_catalog.to_timestamp($2)) \
     SELECT * FROM old WHERE pg_catalog.pg_terminate_backend(pid) ORDER BY 5, 1"
);

pub const ROLE_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)";

/// The attributes that give a role power beyond its grants.
pub const ROLE_POWERS: &str = "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls \
     FROM pg_roles WHERE rolname = $1";

/// How the server stores passwords set in clear text (`scram-sha-256` or
/// `md5`). The rotation sends verifiers, never clear text; the pre-flight
/// reports the setting for everything else that sets passwords.
pub const PASSWORD_ENCRYPTION: &str = "SELECT current_setting('password_encryption')";

/// Whether the current user may administer role `$1` (ALTER its password,
/// GRANT it): a superuser may; on PostgreSQL 16+ a CREATEROLE role needs
/// ADMIN OPTION on it; before 16, CREATEROLE suffices for any role that is
/// not a superuser.
pub const MAY_ADMINISTER: &str = "SELECT r.rolsuper, me.rolsuper, me.rolcreaterole,      pg_catalog.pg_has_role(current_user, r.oid, 'USAGE WITH ADMIN OPTION')      FROM pg_catalog.pg_roles r, pg_catalog.pg_roles me      WHERE r.rolname = $1 AND me.rolname = current_user";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_keep_case() {
        assert_eq!(quote_ident("app"), r#""app""#);
        assert_eq!(quote_ident("App-User"), r#""App-User""#);
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(quote_ident(r#"x"; DROP ROLE y; --"#), r#""x""; DROP ROLE y; --""#);
    }

    #[test]
    fn literals_double_single_quotes() {
        assert_eq!(quote_literal("abc"), "'abc'");
        assert_eq!(quote_literal("a'b"), "'a''b'");
        assert_eq!(quote_literal(r"a\b"), r"'a\b'");
    }

    #[test]
    fn statements_are_built_from_quoted_parts() {
        assert_eq!(
            set_password("App-User", "SCRAM-SHA-256$4096:c2FsdA==$a:b"),
            r#"ALTER ROLE "App-User" PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a:b'"#
        );
        let plain = MemberOptions { admin: false, inherit: true, set: true };
        assert_eq!(grant_membership("app", "app_clone", plain, false), r#"GRANT "app" TO "app_clone""#);
        assert_eq!(
            grant_membership("app", "app_clone", MemberOptions { admin: true, ..plain }, false),
            r#"GRANT "app" TO "app_clone" WITH ADMIN OPTION"#
        );
        assert_eq!(
            grant_membership("r", "c", MemberOptions { admin: false, inherit: false, set: true }, true),
            r#"GRANT "r" TO "c" WITH ADMIN false, INHERIT false, SET true"#
        );
        assert_eq!(revoke_membership("r", "app_clone", None), r#"REVOKE "r" FROM "app_clone""#);
        assert_eq!(revoke_membership("r", "c", Some("dba")), r#"REVOKE "r" FROM "c" GRANTED BY "dba""#);
        assert_eq!(create_login_role("a b"), r#"CREATE ROLE "a b" WITH LOGIN"#);
    }
}
