//! The database, as a rotation will meet it: the network path, the server's
//! certificate, the logins, the server's settings and, for alternating
//! users, the master's powers over the pair and the pair's state.
//!
//! Nothing is written: every session is opened with `session::login` (the
//! rotation's own login, with its guard and timeouts) and every query runs
//! inside `BEGIN READ ONLY … ROLLBACK`. The login pins
//! `default_transaction_read_only=off` (a role must not be able to make the
//! rotation's sessions read-only), so the pre-flight does not rely on the
//! session default either way: the transaction it opens is read-only by its
//! own statement, which PostgreSQL enforces whatever the role's settings,
//! and the queries are SELECTs from the catalogs besides.

use std::time::{Duration, SystemTime};

use db_secret::{DbFailure, DbSecret, TlsMode};

use super::report::Report;
use crate::context::StepContext;
use crate::deadline::Deadline;
use crate::error::{Credential, RotationError};
use crate::roles;
use crate::scram;
use crate::session::Session;
use crate::sql;
use crate::strategy::ServerFacts;
use crate::strategy::alternating::{CLONE_SUFFIX, base_username, grants};
use crate::strategy::memberships::{Change, plan};

/// A certificate that expires sooner than this is a warning.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// The network path and the certificate, before any login: one TCP
/// connection and a TLS handshake verified as every login's is. Returns
/// whether logins can be tried.
pub(super) async fn reach(report: &mut Report, ctx: &StepContext<'_>, secret: &DbSecret) -> bool {
    let (host, port) = (secret.host.as_str(), secret.port);
    let deadline = &ctx.deadline;
    let expiry = deadline.run_for(
        deadline.connect_budget(),
        || format!("connecting to {host}:{port}"),
        ctx.connector.certificate_expiry(secret),
    );
    let unreachable_fix = format!(
        "open TCP {port} from the function to {host}: an inbound rule on the database's security group for port \
         {port} from the rotation function's security group, the function in subnets that route to the database \
         (and {host} resolving there); a DROP shows as a timeout, a REJECT or a closed port as refused"
    );
    match expiry.await {
        Err(timed_out) => {
            report.fail("network", format!("no answer from {host}:{port}: {timed_out}"), unreachable_fix);
            report.skip("TLS certificate", "the server was not reached");
            false
        }
        Ok(Err(DbFailure::Unreachable(detail))) => {
            report.fail("network", format!("cannot reach {host}:{port}: {detail}"), unreachable_fix);
            report.skip("TLS certificate", "the server was not reached");
            false
        }
        Ok(Err(DbFailure::Tls(detail))) => {
            report.pass("network", format!("{host}:{port} answers"));
            let fix = if ctx.db.tls.mode_for(secret) == Ok(TlsMode::VerifyFull) {
                format!(
                    "the server's certificate must chain to the roots the function trusts (DB_CA_BUNDLE: the RDS CA \
                     bundle of the region) and name {host}; use the instance's endpoint as the secret's host, and \
                     the CA the instance uses (RDS: its certificate authority setting)"
                )
            } else {
                "see the detail".to_owned()
            };
            report.fail("TLS certificate", format!("{host}:{port}: {detail}"), fix);
            false
        }
        Ok(Err(other)) => {
            report.fail("network", format!("{host}:{port}: {other}"), unreachable_fix);
            report.skip("TLS certificate", "the server was not reached");
            false
        }
        Ok(Ok(None)) => {
            report.pass("network", format!("{host}:{port} answers"));
            report.warn(
                "TLS certificate",
                format!("{}: sessions to {host}:{port} are plain text, nothing is verified", ctx.db.tls),
                "set \"ssl\": true in the secret and DB_TLS=verify-full once the server has a certificate",
            );
            true
        }
        Ok(Ok(Some(not_after))) => {
            report.pass("network", format!("{host}:{port} answers"));
            let left = not_after.duration_since(SystemTime::now()).unwrap_or_default();
            let days = left.as_secs() / 86_400;
            let when = date(not_after);
            let detail = format!("verified ({}): the chain for {host} expires {when}, in {days} day(s)", ctx.db.tls,);
            if left < EXPIRY_WARNING {
                report.warn(
                    "TLS certificate",
                    detail,
                    format!(
                        "renew the server's certificate before {when} (RDS: rotate the instance's certificate \
                         authority); once it expires every verified login fails"
                    ),
                );
            } else {
                report.pass("TLS certificate", detail);
            }
            true
        }
    }
}

/// AWSCURRENT logs in; the server's version and password settings; for a
/// single user, whether it may change its own password.
pub(super) async fn current_login(report: &mut Report, ctx: &StepContext<'_>, current: &DbSecret, single: bool) {
    let mut session = match ctx.login(current, Credential::Current).await {
        Ok(session) => session,
        Err(e) => {
            report.fail("AWSCURRENT login", e.to_string(), login_fix(current, &e, ctx.arn(), single));
            report.skip("server settings", "needs a session");
            if single {
                report.skip("own password change", "needs a session");
            }
            return;
        }
    };
    report.pass("AWSCURRENT login", format!("user {:?} logged in (SCRAM-SHA-256)", current.username));
    match read_only(&mut session, &ctx.deadline, async |session, deadline| server(session, deadline).await).await {
        Ok(Server { facts, iterations, source, password_encryption }) => {
            server_row(report, facts, iterations.as_deref(), source.as_deref(), &password_encryption);
        }
        Err(e) => report.fail("server settings", e.to_string(), "see the error"),
    }
    if single {
        // PostgreSQL lets any role change its own password (ALTER ROLE
        // CURRENT_USER PASSWORD), with no privilege to grant or lose.
        report.pass(
            "own password change",
            format!(
                "user {:?} may set its own password: PostgreSQL allows every role to, no privilege needed",
                current.username
            ),
        );
    }
    session.close().await;
}

/// The master's checks, for alternating users: its login, its powers over the
/// pair, the alternate user's state and the pair's memberships.
pub(super) async fn master(report: &mut Report, ctx: &StepContext<'_>, master: &DbSecret, current: &DbSecret) {
    let mut session = match ctx.login(master, Credential::Master).await {
        Ok(session) => session,
        Err(e) => {
            report.fail(
                "master login",
                e.to_string(),
                format!(
                    "the master secret's AWSCURRENT must log in as {:?}: put the password the database has \
                     (an RDS-managed master secret: point masterarn at the instance's current master secret)",
                    master.username
                ),
            );
            for check in ["master privileges", "alternate user", "memberships"] {
                report.skip(check, "needs the master's session");
            }
            return;
        }
    };
    report.pass("master login", format!("user {:?} logged in", master.username));
    let base = base_username(&current.username).to_owned();
    let clone = format!("{base}{CLONE_SUFFIX}");
    let pair = read_only(&mut session, &ctx.deadline, async |session, deadline| {
        pair_state(session, &master.username, &base, &clone, deadline).await
    });
    match pair.await {
        Ok(state) => pair_rows(report, &master.username, &base, &clone, &state),
        Err(e) => {
            report.fail("master privileges", e.to_string(), "see the error");
            report.skip("alternate user", "the master's queries failed");
            report.skip("memberships", "the master's queries failed");
        }
    }
    session.close().await;
}

/// Runs `body` in a read-only transaction and rolls it back.
async fn read_only<T>(
    session: &mut Session,
    deadline: &Deadline,
    body: impl AsyncFnOnce(&mut Session, &Deadline) -> Result<T, RotationError>,
) -> Result<T, RotationError> {
    session.execute("BEGIN READ ONLY", deadline).await?;
    let result = body(session, deadline).await;
    let rollback = session.execute("ROLLBACK", deadline).await;
    let value = result?;
    rollback?;
    Ok(value)
}

struct Server {
    facts: ServerFacts,
    iterations: Option<String>,
    source: Option<String>,
    password_encryption: String,
}

async fn server(session: &mut Session, deadline: &Deadline) -> Result<Server, RotationError> {
    // The clamp and the rule on overrides are the rotation's own
    // (`ServerFacts`); the raw setting and its source are what to show.
    let facts = ServerFacts::read(session, deadline).await?;
    let (_, iterations, source) = session
        .run("reading server settings", deadline, async |conn| {
            sqlx::query_as::<_, (i32, Option<String>, Option<String>)>(sql::SERVER_SETTINGS).fetch_one(conn).await
        })
        .await?;
    let password_encryption = session
        .run("reading password_encryption", deadline, async |conn| {
            sqlx::query_scalar::<_, String>(sql::PASSWORD_ENCRYPTION).fetch_one(conn).await
        })
        .await?;
    Ok(Server { facts, iterations, source, password_encryption })
}

fn server_row(
    report: &mut Report,
    facts: ServerFacts,
    iterations: Option<&str>,
    source: Option<&str>,
    password_encryption: &str,
) {
    let version = format!("PostgreSQL {}.{}", facts.version / 10_000, facts.version % 10_000);
    let scram = match iterations {
        Some(i) => format!("scram_iterations {i} (source: {})", source.unwrap_or("unknown")),
        None => "no scram_iterations setting (before 16: 4096)".to_owned(),
    };
    let used = facts.scram_iterations;
    let detail = format!(
        "{version}; password_encryption = {password_encryption}; {scram}; new verifiers get {used} iterations \
         (the function follows the server's own setting within {}..={}, never a role's or database's override)",
        scram::MIN_ITERATIONS,
        scram::MAX_ITERATIONS
    );
    if password_encryption != "scram-sha-256" {
        report.warn(
            "server settings",
            detail,
            "the rotation sets SCRAM verifiers itself, but anything else that sets a password stores MD5: \
             SET password_encryption = 'scram-sha-256' in the server's configuration (RDS: the parameter group)",
        );
    } else if iterations.is_some_and(|i| i.trim() != used.to_string()) {
        report.warn(
            "server settings",
            detail,
            format!(
                "scram_iterations is overridden (source {}) or outside {}..={}: the function uses {used}; set the \
                 value in the server's configuration (RDS: the parameter group) within that range, and remove \
                 per-role overrides (ALTER ROLE … RESET scram_iterations)",
                source.unwrap_or("unknown"),
                scram::MIN_ITERATIONS,
                scram::MAX_ITERATIONS
            ),
        );
    } else {
        report.pass("server settings", detail);
    }
}

/// The master's powers over one role: (role is superuser, master is
/// superuser, master has CREATEROLE, master holds ADMIN on it).
type Administer = (bool, bool, bool, bool);

struct PairState {
    facts: ServerFacts,
    master_super: bool,
    master_createrole: bool,
    /// Per role the master must administer: the pair, then the groups the
    /// clone must be granted (present roles only).
    administer: Vec<(String, Administer)>,
    clone_exists: bool,
    clone_member_of_base: bool,
    extra_powers: Vec<String>,
    clone_owns: i64,
    changes: Vec<Change>,
}

async fn pair_state(
    session: &mut Session,
    master: &str,
    base: &str,
    clone: &str,
    deadline: &Deadline,
) -> Result<PairState, RotationError> {
    let facts = ServerFacts::read(session, deadline).await?;
    let (master_super, master_createrole) = session
        .run("reading the master's attributes", deadline, async |conn| {
            sqlx::query_as::<_, (bool, bool, bool, bool, bool)>(sql::ROLE_POWERS)
                .bind(master)
                .fetch_one(conn)
                .await
                .map(|(superuser, createrole, ..)| (superuser, createrole))
        })
        .await?;
    let clone_exists = roles::exists(session, clone, deadline).await?;
    let base_rows = grants(session, base, facts, deadline).await?;
    let clone_rows = if clone_exists { grants(session, clone, facts, deadline).await? } else { Vec::new() };
    let changes = plan(&base_rows, &clone_rows, base, clone, facts.per_grant_options());
    let mut administer = Vec::new();
    let mut roles_to_check = vec![base.to_owned()];
    if clone_exists {
        roles_to_check.push(clone.to_owned());
    }
    roles_to_check.extend(changes.iter().filter_map(|c| match c {
        Change::Grant { group, .. } if group != base => Some(group.clone()),
        _ => None,
    }));
    for role in roles_to_check {
        let row = session
            .run("reading the master's powers over a role", deadline, async |conn| {
                sqlx::query_as::<_, Administer>(sql::MAY_ADMINISTER).bind(&role).fetch_optional(conn).await
            })
            .await?;
        if let Some(row) = row {
            administer.push((role, row));
        }
    }
    let (extra_powers, clone_owns) = if clone_exists {
        (
            roles::extra_powers(session, base, clone, deadline).await?,
            roles::owned_objects(session, clone, deadline).await?,
        )
    } else {
        (Vec::new(), 0)
    };
    let clone_member_of_base = clone_rows.iter().any(|r| r.group == base && (r.options.inherit || r.options.set));
    Ok(PairState {
        facts,
        master_super,
        master_createrole,
        administer,
        clone_exists,
        clone_member_of_base,
        extra_powers,
        clone_owns,
        changes,
    })
}

fn pair_rows(report: &mut Report, master: &str, base: &str, clone: &str, s: &PairState) {
    let m = sql::quote_ident(master);
    let v16 = s.facts.per_grant_options();
    // The master's powers: CREATEROLE (or superuser), and on 16+ ADMIN on
    // every role it alters or grants.
    let mut missing = Vec::new();
    if !s.master_super && !s.master_createrole {
        missing.push((
            format!("{master:?} has neither CREATEROLE nor SUPERUSER: it cannot create {clone:?} or set passwords"),
            format!("as a superuser (RDS: the instance's master user): ALTER ROLE {m} CREATEROLE"),
        ));
    }
    if !s.administer.iter().any(|(role, _)| role == base) {
        missing.push((
            format!("role {base:?} (AWSCURRENT's pair) does not exist"),
            format!(
                "create it (the provisioner does), or fix the secret's username; {base:?} and {clone:?} are the pair"
            ),
        ));
    }
    for (role, (role_super, _, _, admin)) in &s.administer {
        if s.master_super {
            break;
        }
        let r = sql::quote_ident(role);
        if *role_super {
            missing.push((
                format!("role {role:?} is a superuser: only a superuser may alter or grant it"),
                format!("do not pair a superuser; or, as a superuser: ALTER ROLE {r} NOSUPERUSER"),
            ));
        } else if v16 && !admin {
            let what = if role == base || role == clone { "alter or grant" } else { "grant it to the alternate user" };
            missing.push((
                format!("{master:?} has no ADMIN OPTION on {role:?} (PostgreSQL 16+ needs it to {what})"),
                format!("as a superuser or a role with ADMIN on it: GRANT {r} TO {m} WITH ADMIN OPTION"),
            ));
        }
    }
    if missing.is_empty() {
        let how = if s.master_super {
            "is a superuser".to_owned()
        } else if v16 {
            format!("has CREATEROLE and ADMIN OPTION on {}", list(s.administer.iter().map(|(r, _)| r.as_str())))
        } else {
            "has CREATEROLE (before 16 it covers every role that is not a superuser)".to_owned()
        };
        report.pass("master privileges", format!("{master:?} {how}"));
    } else {
        let (details, fixes): (Vec<_>, Vec<_>) = missing.into_iter().unzip();
        report.fail("master privileges", details.join("; "), fixes.join("; "));
    }

    // The alternate user, as setSecret will prove it.
    let b = sql::quote_ident(base);
    let c = sql::quote_ident(clone);
    if !s.clone_exists {
        if s.master_super || s.master_createrole {
            report.pass(
                "alternate user",
                format!("{clone:?} does not exist yet: the first rotation creates it as {master:?}"),
            );
        } else {
            report.fail(
                "alternate user",
                format!("{clone:?} does not exist and {master:?} cannot create it"),
                format!(
                    "ALTER ROLE {m} CREATEROLE (as a superuser), or create it: CREATE ROLE {c} LOGIN; GRANT {b} TO {c}"
                ),
            );
        }
    } else if !s.clone_member_of_base {
        report.fail(
            "alternate user",
            format!(
                "{clone:?} exists but is not a member of {base:?} that inherits or may SET its privileges, so \
                 setSecret will not treat it as {base:?}'s alternate"
            ),
            format!("if it is the alternate user, a DBA says so: GRANT {b} TO {c}; otherwise drop or rename it"),
        );
    } else if !s.extra_powers.is_empty() || s.clone_owns > 0 {
        let mut what = s.extra_powers.join(", ");
        let mut fix =
            format!("ALTER ROLE {c} {}", s.extra_powers.iter().map(|p| format!("NO{p}")).collect::<Vec<_>>().join(" "));
        if s.clone_owns > 0 {
            what = format!("{what}{}owns {} object(s)", if what.is_empty() { "" } else { "; " }, s.clone_owns);
            fix = if s.extra_powers.is_empty() {
                format!("REASSIGN OWNED BY {c} TO {b}")
            } else {
                format!("{fix}; REASSIGN OWNED BY {c} TO {b}")
            };
        }
        report.fail(
            "alternate user",
            format!("{clone:?} has powers {base:?} lacks ({what}): the rotation will not hand out its password"),
            fix,
        );
    } else {
        report
            .pass("alternate user", format!("{clone:?} exists, is {base:?}'s member, and has no power {base:?} lacks"));
    }

    // Memberships: what setSecret will change so the clone matches the original.
    let statements: Vec<String> = s
        .changes
        .iter()
        .map(|change| match change {
            Change::Grant { group, options } => sql::grant_membership(group, clone, *options, v16),
            Change::Revoke { group, grantor } => sql::revoke_membership(group, clone, grantor.as_deref()),
        })
        .collect();
    if statements.is_empty() {
        report.pass("memberships", format!("{clone:?} holds exactly {base:?}'s memberships, and {base:?}"));
    } else if !s.clone_exists {
        report.pass("memberships", format!("the first rotation grants: {}", statements.join("; ")));
    } else if s.changes.iter().any(|c| matches!(c, Change::Revoke { .. })) {
        report.warn(
            "memberships",
            format!("out of sync; the next rotation runs: {}", statements.join("; ")),
            format!(
                "nothing to do if {master:?} made those grants; a REVOKE of another grantor's grant fails and stops \
                 the rotation before {clone:?}'s password is set: have that grantor (or a superuser) revoke it first"
            ),
        );
    } else {
        report.pass("memberships", format!("out of sync; the next rotation grants: {}", statements.join("; ")));
    }
}

fn list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.map(|r| format!("{r:?}")).collect::<Vec<_>>().join(", ")
}

/// What to do when AWSCURRENT does not log in.
fn login_fix(current: &DbSecret, error: &RotationError, arn: &str, single: bool) -> String {
    let user = &current.username;
    match error {
        RotationError::Database { failure: DbFailure::Auth(state), .. } if state == "28P01" => {
            let recovery = if single {
                " (setSecret would look for the database's password among AWSPREVIOUS and unlabelled versions, \
                 but every client reading AWSCURRENT fails today)"
            } else {
                ""
            };
            format!(
                "the database's password for {user:?} is not AWSCURRENT's{recovery}: if a rotation did not finish, \
                 finish it; otherwise put the password the database has: aws secretsmanager put-secret-value \
                 --secret-id {arn} --secret-string file://secret.json, or set AWSCURRENT's as the master: \
                 ALTER ROLE {} PASSWORD '…'",
                sql::quote_ident(user)
            )
        }
        RotationError::Database { failure: DbFailure::Auth(_), .. } => format!(
            "the server refuses {user:?} (SQLSTATE 28000): the role must exist and have LOGIN, and pg_hba.conf must \
             allow it from the function's address with scram-sha-256 (RDS: rds.force_ssl and the parameter group)"
        ),
        RotationError::Database { failure: DbFailure::AuthMethodRefused(_), .. } => {
            "the server asked for a cleartext or MD5 password, which the function never sends: store the role's \
             password as a SCRAM verifier (password_encryption = scram-sha-256, then set it again) and make \
             pg_hba.conf use scram-sha-256"
                .to_owned()
        }
        _ => "see the error".to_owned(),
    }
}

/// `2027-01-31T12:00:00Z`.
pub(super) fn date(at: SystemTime) -> String {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    epoch_date(i64::try_from(secs).unwrap_or(i64::MAX))
}

pub(super) fn epoch_date(secs: i64) -> String {
    aws_smithy_types::DateTime::from_secs(secs)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_else(|_| format!("{secs} s after the epoch"))
}
