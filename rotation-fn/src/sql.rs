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

pub fn create_login_role(role: &str) -> String {
    format!("CREATE ROLE {} WITH LOGIN", quote_ident(role))
}

pub fn grant_membership(group: &str, member: &str) -> String {
    format!("GRANT {} TO {}", quote_ident(group), quote_ident(member))
}

pub fn revoke_membership(group: &str, member: &str) -> String {
    format!("REVOKE {} FROM {}", quote_ident(group), quote_ident(member))
}

/// Roles `$1` is a direct member of.
pub const MEMBERSHIPS: &str = "SELECT g.rolname FROM pg_auth_members m \
     JOIN pg_roles g ON g.oid = m.roleid \
     JOIN pg_roles r ON r.oid = m.member \
     WHERE r.rolname = $1 ORDER BY 1";

pub const ROLE_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)";

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
        assert_eq!(grant_membership("app", "app_clone"), r#"GRANT "app" TO "app_clone""#);
        assert_eq!(revoke_membership("r", "app_clone"), r#"REVOKE "r" FROM "app_clone""#);
        assert_eq!(create_login_role("a b"), r#"CREATE ROLE "a b" WITH LOGIN"#);
    }
}
