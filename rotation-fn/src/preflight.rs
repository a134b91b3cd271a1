//! Pre-flight: would a rotation of this secret succeed right now? An
//! operator's request (`{"Operation": "preflight", "SecretId"}`, see
//! [`crate::event`]) that checks everything a rotation will need, in the
//! order a rotation needs it, and writes nothing, to Secrets Manager or the
//! database.
//!
//! The answer is a table: one row per check, `pass`, `fail`, `warn` or
//! `skip`, and for every failure or warning the exact fix (the IAM action and
//! resource, the security-group rule, the GRANT, the variable). The
//! invocation succeeds whatever the checks find: a failed check is an answer,
//! not an error. One log line (`"pre-flight"`, with `ready`, `failed`,
//! `warnings`) is what a CloudWatch metric filter counts.
//!
//! - [`secrets`]: each Secrets Manager operation the rotation uses, called
//!   for real where it reads, probed without writing where it writes;
//! - [`database`]: network, certificate, logins, server settings, and for
//!   alternating users the master's powers and the pair's state.
//!
//! It reuses the rotation's own parts, so it cannot disagree with it: the
//! secret's parser and the operator's admission rule (`DbConfig::admit`),
//! the step context's master-secret resolution and logins, the strategy's
//! server facts and membership plan, the SQL in `sql.rs`.

mod database;
mod report;
mod secrets;

use db_secret::DbSecret;
use secrecy::ExposeSecret as _;
use serde_json::Value;
use tracing::{Instrument as _, info, info_span};

use self::report::Report;
use crate::context::StepContext;
use crate::error::{Credential, RotationError};
use crate::event::{RotationEvent, Step};
use crate::guard::{CURRENT, PENDING, PREVIOUS, SecretState};
use crate::store::RotationSchedule;
use crate::strategy::Strategy;
use crate::strategy::alternating::{CLONE_SUFFIX, alternate_username, base_username};
use crate::{Deadline, RotationError as Error, Rotator};

/// The rows after the Secrets Manager checks, per strategy, in order.
const SINGLE_ROWS: &[&str] = &[
    "secret",
    "DB_TLS and DB_ENDPOINTS",
    "network",
    "TLS certificate",
    "AWSCURRENT login",
    "server settings",
    "own password change",
];
const ALTERNATING_ROWS: &[&str] = &[
    "secret",
    "DB_TLS and DB_ENDPOINTS",
    "master secretsmanager:GetSecretValue",
    "master secret",
    "network",
    "TLS certificate",
    "AWSCURRENT login",
    "server settings",
    "master login",
    "master privileges",
    "alternate user",
    "memberships",
];

pub(crate) async fn run(rotator: &Rotator, secret_id: &str, deadline: Deadline) -> Result<Value, Error> {
    let strategy = rotator.config.strategy;
    let span = info_span!("preflight", secret = %secret_id, strategy = strategy.as_str());
    async {
        let mut report = Report::default();
        let arn = checks(rotator, secret_id, deadline, &mut report).await;
        // The line a metric filter reads: `failed` > 0 means a rotation now would fail.
        info!(secret = %arn, ready = report.ready(), failed = report.failed(), warnings = report.warned(), "pre-flight");
        Ok(report.into_json(&arn, strategy.as_str()))
    }
    .instrument(span)
    .await
}

/// Most of a custom resource's answer CloudFormation keeps (it takes 4 KB in
/// all) goes to the summary of what failed.
const SUMMARY_CHARS: usize = 1000;

/// The pre-flight as the CDK app's custom resource answers CloudFormation:
/// small string attributes, the stack's outputs. Never an error: a failed
/// check must not roll a deployment back (the alarm on the `pre-flight` line
/// reports it).
pub(crate) fn custom_resource_answer(table: &Value, secret_id: &str) -> Value {
    let count = |key: &str| table[key].as_u64().unwrap_or_default().to_string();
    let ready = table["ready"].as_bool().unwrap_or(false);
    let failed: Vec<String> = table["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "fail")
        .map(|c| {
            let (check, fix) = (c["check"].as_str().unwrap_or_default(), c["fix"].as_str().unwrap_or_default());
            format!("{check}: {fix}")
        })
        .collect();
    let summary = if ready { "ready".to_owned() } else { failed.join("; ") };
    let summary: String = if summary.chars().count() > SUMMARY_CHARS {
        summary.chars().take(SUMMARY_CHARS - 1).chain(std::iter::once('…')).collect()
    } else {
        summary
    };
    serde_json::json!({
        "PhysicalResourceId": format!("preflight:{secret_id}"),
        "Data": { "Ready": ready.to_string(), "Failed": count("failed"), "Warnings": count("warnings"), "Summary": summary },
    })
}

/// Fills `report`; returns the secret's ARN (or the id asked about, when
/// DescribeSecret failed).
async fn checks(rotator: &Rotator, secret_id: &str, deadline: Deadline, report: &mut Report) -> String {
    let (store, db, strategy) = (&rotator.store, &rotator.config.db, rotator.config.strategy);
    let rows = if strategy == Strategy::AlternatingUsers { ALTERNATING_ROWS } else { SINGLE_ROWS };
    let sm_rows = [
        "secretsmanager:DescribeSecret",
        "rotation schedule",
        "version stages",
        "secretsmanager:GetSecretValue",
        "secretsmanager:ListSecretVersionIds",
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecretVersionStage",
    ];
    let settings = format!("ROTATION_STRATEGY={}; {}", strategy.as_str(), db.tls);
    match &db.endpoints {
        Some(endpoints) => report.pass("configuration", format!("{settings}; DB_ENDPOINTS={endpoints}")),
        None => report.warn(
            "configuration",
            format!("{settings}; DB_ENDPOINTS is not set: the function logs in wherever the secret says"),
            "set DB_ENDPOINTS=host:port (the database's endpoint) in the function's environment, so that whoever \
             can write the secret cannot send its logins elsewhere",
        ),
    }

    // Secrets Manager.
    let (state, schedule) = match store.describe_schedule(secret_id, &deadline).await {
        Ok(described) => described,
        Err(e) => {
            secrets::aws_failure(report, sm_rows[0], sm_rows[0], secret_id, &e);
            report.skip_rest(&sm_rows, "needs DescribeSecret");
            report.skip_rest(rows, "needs DescribeSecret");
            return secret_id.to_owned();
        }
    };
    let arn = state.arn.clone();
    report.pass(sm_rows[0], format!("{} version(s)", state.versions.len()));
    schedule_row(report, &state, &schedule);
    let current_id = stages_row(report, &state);
    let current = match &current_id {
        Some(_) => secrets::read_current(report, store, &arn, &deadline).await,
        None => {
            report.skip(sm_rows[3], "no AWSCURRENT version to read");
            None
        }
    };
    secrets::list_versions(report, store, &arn, &deadline).await;
    match &current {
        Some(version) => secrets::probe_put(report, store, &arn, version, &deadline).await,
        None => report.skip(sm_rows[5], "the probe names the AWSCURRENT version, which could not be read"),
    }
    secrets::probe_stage(report, store, &arn, &deadline).await;
    let Some(version) = current else {
        report.skip_rest(rows, "needs AWSCURRENT's value");
        return arn;
    };

    // The secret: the rotation's own parser and the operator's admission rule.
    let parsed = version.value.as_ref().map(|v| DbSecret::parse(v.expose_secret()));
    let secret = match parsed {
        Some(Ok(secret)) => secret,
        Some(Err(source)) => {
            let e = RotationError::InvalidSecret {
                arn: arn.clone(),
                credential: Credential::Current,
                version: version.id.clone(),
                source,
            };
            report.fail(
                "secret",
                e.to_string(),
                "AWSCURRENT must be a JSON object with engine \"postgres\", host, port, username, password (and dbname, \
                 ssl; masterarn for alternating users): put a corrected value with aws secretsmanager put-secret-value",
            );
            report.skip_rest(rows, "AWSCURRENT does not parse");
            return arn;
        }
        None => {
            report.skip_rest(rows, "AWSCURRENT has no value");
            return arn;
        }
    };
    let event =
        RotationEvent { step: Step::Test, secret_id: arn.clone(), token: "preflight".to_owned(), rotation_token: None };
    let ctx = rotator.context(&event, state, version.id.clone(), deadline);
    if !fits_strategy(report, &ctx, &secret, strategy).await {
        report.skip_rest(rows, "the secret does not fit ROTATION_STRATEGY");
        return arn;
    }
    if let Err(refused) = db.admit(&secret) {
        let fix = if db.tls.mode_for(&secret).is_err() {
            format!(
                "set \"ssl\": true in the secret (the server must accept TLS); only if plain text is intended, set \
                 {}=allow-plaintext in the function's environment",
                db.tls.setting()
            )
        } else {
            format!(
                "if {}:{} is the database, add it to DB_ENDPOINTS in the function's environment (the CDK app sets the \
                 instance's endpoint); otherwise the secret names the wrong server: correct its host and port",
                secret.host, secret.port
            )
        };
        report.fail("DB_TLS and DB_ENDPOINTS", refused, fix);
        report.skip_rest(rows, "no login goes to a server the operator's settings refuse");
        return arn;
    }
    let allowed = match &db.endpoints {
        Some(endpoints) => format!("{}:{} is in DB_ENDPOINTS ({endpoints})", secret.host, secret.port),
        None => format!("{}:{} (DB_ENDPOINTS is not set)", secret.host, secret.port),
    };
    let tls = if secret.ssl { "TLS, verified" } else { "plain text, allowed" };
    report.pass("DB_TLS and DB_ENDPOINTS", format!("{}: {tls}; {allowed}", db.tls));

    let master = match strategy {
        Strategy::SingleUser => None,
        Strategy::AlternatingUsers => match master_secret(report, &ctx, &secret).await {
            Some(master) => Some(master),
            None => {
                report.skip_rest(rows, "needs the master secret");
                return arn;
            }
        },
    };

    // The database.
    if !database::reach(report, &ctx, &secret).await {
        report.skip_rest(rows, "the server was not reached, or its certificate does not verify");
        return arn;
    }
    database::current_login(report, &ctx, &secret, strategy == Strategy::SingleUser).await;
    if let Some(master) = master {
        database::master(report, &ctx, &master, &secret).await;
    }
    arn
}

/// Whether rotation is on, by which function, and when it is next due.
fn schedule_row(report: &mut Report, state: &SecretState, schedule: &RotationSchedule) {
    const CHECK: &str = "rotation schedule";
    if !state.rotation_enabled || schedule.enabled != Some(true) {
        report.warn(
            CHECK,
            "rotation is not enabled on the secret: nothing rotates it",
            format!(
                "turn it on: aws secretsmanager rotate-secret --secret-id {} --rotation-lambda-arn <this function's \
                 ARN> --rotation-rules '{{\"ScheduleExpression\": \"rate(30 days)\"}}' (the CDK app's schedule does this)",
                state.arn
            ),
        );
        return;
    }
    let by = schedule.lambda_arn.as_deref().map_or_else(String::new, |f| format!(" by {f}"));
    let rules = schedule.rules.as_deref().map_or_else(String::new, |r| format!(", {r}"));
    let next = match schedule.next_rotation {
        Some(at) => {
            let now = i64::try_from(
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            )
            .unwrap_or(0);
            let days = (at - now).max(0) / 86_400;
            format!("; next due {} (in {days} day(s))", database::epoch_date(at))
        }
        None => "; next due: not reported".to_owned(),
    };
    report.pass(CHECK, format!("enabled{by}{rules}{next}"));
}

/// AWSCURRENT exists, and no other rotation holds AWSPENDING: RotateSecret
/// refuses to start while a version other than AWSCURRENT carries it.
/// Returns AWSCURRENT's version id.
fn stages_row(report: &mut Report, state: &SecretState) -> Option<String> {
    const CHECK: &str = "version stages";
    let Some(current) = state.version_with(CURRENT).map(str::to_owned) else {
        report.fail(
            CHECK,
            "no version is AWSCURRENT",
            format!("put the credentials: aws secretsmanager put-secret-value --secret-id {} --secret-string file://secret.json", state.arn),
        );
        return None;
    };
    let pending = state.versions.iter().find(|(id, stages)| {
        **id != current && stages.iter().any(|s| s == PENDING) && !stages.iter().any(|s| s == CURRENT)
    });
    if let Some((id, _)) = pending {
        report.fail(
            CHECK,
            format!("version {id} carries AWSPENDING: a rotation is running or did not finish, and RotateSecret refuses to start another"),
            format!(
                "let it finish, or resume it: aws secretsmanager rotate-secret --secret-id {arn} \
                 --client-request-token {id}; to abandon it: aws secretsmanager update-secret-version-stage \
                 --secret-id {arn} --version-stage AWSPENDING --remove-from-version-id {id}",
                arn = state.arn
            ),
        );
    } else {
        let previous =
            state.version_with(PREVIOUS).map_or_else(|| "no AWSPREVIOUS".to_owned(), |p| format!("AWSPREVIOUS {p}"));
        report.pass(CHECK, format!("AWSCURRENT {current}, {previous}, no rotation in progress"));
    }
    Some(current)
}

/// The secret fits the operator's strategy: for alternating users, a master
/// secret is named, the alternate's name fits, and AWSPREVIOUS names the same
/// pair (the rotation's own rules, `strategy/alternating.rs`).
async fn fits_strategy(report: &mut Report, ctx: &StepContext<'_>, secret: &DbSecret, strategy: Strategy) -> bool {
    let who = format!(
        "AWSCURRENT (version {}): user {:?} on {}:{}/{}",
        ctx.current_version, secret.username, secret.host, secret.port, secret.dbname
    );
    if strategy == Strategy::SingleUser {
        report.pass("secret", format!("{who}; single-user: the user changes its own password"));
        return true;
    }
    if secret.master_arn.is_none() {
        report.fail(
            "secret",
            format!("{who}; ROTATION_STRATEGY=alternating-users needs key `masterarn`"),
            "add \"masterarn\": the ARN of the secret whose user creates the alternate user and sets its password",
        );
        return false;
    }
    if let Err(e) = alternate_username(&secret.username) {
        report.fail("secret", format!("{who}: {e}"), "use a username short enough to take the `_clone` suffix");
        return false;
    }
    if let Ok(Some(previous)) = ctx.previous().await
        && (base_username(&previous.username) != base_username(&secret.username) || !previous.same_server(secret))
    {
        report.fail(
            "secret",
            format!(
                "{who}, but AWSPREVIOUS names {:?} on {}:{}: not the same pair, so the rotation refuses",
                previous.username, previous.host, previous.port
            ),
            format!(
                "if the change is intended, remove the AWSPREVIOUS label from the old version: aws secretsmanager \
                 update-secret-version-stage --secret-id {} --version-stage AWSPREVIOUS --remove-from-version-id <id>",
                ctx.arn()
            ),
        );
        return false;
    }
    let base = base_username(&secret.username);
    report.pass("secret", format!("{who}; alternating-users: the pair {base:?} / \"{base}{CLONE_SUFFIX}\""));
    true
}

/// The master secret: readable, parsed as setSecret parses it (its own
/// server, or DB_ENDPOINTS' when it names none), on the same server, not one
/// of the pair.
async fn master_secret(report: &mut Report, ctx: &StepContext<'_>, app: &DbSecret) -> Option<DbSecret> {
    const READ: &str = "master secretsmanager:GetSecretValue";
    let master_arn = app.master_arn.as_deref().unwrap_or_default();
    let master = match ctx.master(master_arn, app).await {
        Ok(master) => master,
        Err(e @ RotationError::Aws(_)) | Err(e @ RotationError::Timeout(_)) => {
            secrets::aws_failure(report, READ, "secretsmanager:GetSecretValue", master_arn, &e);
            return None;
        }
        Err(e @ RotationError::MissingVersion { .. }) => {
            report.pass(READ, format!("allowed on {master_arn}"));
            report.fail(
                "master secret",
                e.to_string(),
                format!("masterarn must name an existing secret with an AWSCURRENT version; {master_arn} has none"),
            );
            return None;
        }
        Err(e) => {
            report.pass(READ, format!("read {master_arn} AWSCURRENT"));
            report.fail(
                "master secret",
                e.to_string(),
                "the master secret must hold username and password, and name the same server as the secret (or \
                 none, with DB_ENDPOINTS set), allowed by DB_TLS and DB_ENDPOINTS",
            );
            return None;
        }
    };
    report.pass(READ, format!("read {master_arn} AWSCURRENT"));
    let base = base_username(&app.username);
    if !master.same_server(app) {
        report.fail(
            "master secret",
            format!(
                "the master secret points at {}:{}, the secret at {}:{}",
                master.host, master.port, app.host, app.port
            ),
            "masterarn must name the master secret of the secret's own database server",
        );
        return None;
    }
    if master.username == base || master.username == format!("{base}{CLONE_SUFFIX}") {
        report.fail(
            "master secret",
            format!("the master user {:?} is one of the alternating users", master.username),
            "masterarn must name a different user's secret (the instance's master user, or a CREATEROLE admin)",
        );
        return None;
    }
    report.pass("master secret", format!("user {:?} on {}:{}", master.username, master.host, master.port));
    Some(master)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_custom_resource_answer_is_small_strings_and_names_what_failed() {
        let ready = json!({"ready": true, "failed": 0, "warnings": 1, "checks": [{"check": "a", "status": "warn", "fix": "x"}]});
        let answer = custom_resource_answer(&ready, "s");
        assert_eq!(answer["PhysicalResourceId"], "preflight:s");
        assert_eq!(answer["Data"], json!({"Ready": "true", "Failed": "0", "Warnings": "1", "Summary": "ready"}));

        let long = "f".repeat(2000);
        let broken = json!({"ready": false, "failed": 2, "warnings": 0, "checks": [
            {"check": "a", "status": "pass", "fix": null},
            {"check": "AWSCURRENT login", "status": "fail", "fix": "set the password"},
            {"check": "b", "status": "fail", "fix": long},
        ]});
        let answer = custom_resource_answer(&broken, "s");
        let summary = answer["Data"]["Summary"].as_str().unwrap_or_default();
        assert!(summary.starts_with("AWSCURRENT login: set the password; b: fff"), "{summary}");
        assert_eq!(summary.chars().count(), SUMMARY_CHARS);
        assert!(summary.ends_with('…'));
        assert_eq!((answer["Data"]["Ready"].as_str(), answer["Data"]["Failed"].as_str()), (Some("false"), Some("2")));
    }
}
