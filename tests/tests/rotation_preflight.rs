//! Pre-flight, end to end: the real function, asked `{"Operation":
//! "preflight"}` through the local Lambda Invoke API, against the real
//! PostgreSQL and Secrets Manager endpoint. A healthy secret is ready; each
//! broken deployment is named with its fix; and nothing is ever written:
//! the secret's versions and labels, every role and its password, are the
//! same before and after, and the function's Secrets Manager calls are reads
//! plus the two probes, which Secrets Manager refused.

use std::collections::BTreeMap;

use e2e::{ALTERNATING, SINGLE, TestEnv};
use serde_json::{Value, json};
use sm_local::Action;

const PASSWORD: &str = "Initial-Passw0rd-for-app";

async fn preflight(env: &mut TestEnv, secret: &str) -> Value {
    let table = env.invoke(&json!({"Operation": "preflight", "SecretId": secret})).await;
    let table = table.expect("the pre-flight answers with its table, whatever it finds");
    eprintln!("{}", serde_json::to_string_pretty(&table).expect("json"));
    table
}

fn row<'a>(table: &'a Value, check: &str) -> &'a Value {
    let rows = table["checks"].as_array().expect("checks");
    rows.iter().find(|r| r["check"] == check).unwrap_or_else(|| panic!("no row {check:?} in {table:#}"))
}

fn status<'a>(table: &'a Value, check: &str) -> &'a str {
    row(table, check)["status"].as_str().expect("status")
}

fn fix<'a>(table: &'a Value, check: &str) -> &'a str {
    row(table, check)["fix"].as_str().unwrap_or_else(|| panic!("row {check:?} has no fix"))
}

/// Asserts `check` failed with a fix that says `wanted`, and the table is not ready.
fn failed_with(table: &Value, check: &str, wanted: &[&str]) {
    assert_eq!(status(table, check), "fail", "{check}: {table:#}");
    for w in wanted {
        assert!(fix(table, check).contains(w), "{check}: fix {:?} does not say {w:?}", fix(table, check));
    }
    assert_eq!(table["ready"], false);
    assert!(table["failed"].as_u64().expect("failed") >= 1);
}

/// Everything a write would change: every version of the secret with its
/// labels, and every role with its password verifier.
#[derive(Debug, PartialEq)]
struct Snapshot {
    versions: BTreeMap<String, Vec<String>>,
    roles: Vec<(String, Option<String>)>,
}

async fn snapshot(env: &TestEnv, secrets: &[&str]) -> Snapshot {
    let mut versions = BTreeMap::new();
    for secret in secrets {
        let out = env.sm.list_secret_version_ids().secret_id(*secret).include_deprecated(true).send().await;
        for v in out.expect("ListSecretVersionIds").versions() {
            let mut stages = v.version_stages().to_vec();
            stages.sort();
            versions.insert(format!("{secret} {}", v.version_id().unwrap_or_default()), stages);
        }
    }
    let mut conn = env.pg.superuser().await;
    let roles = sqlx::query_as("SELECT rolname::text, rolpassword FROM pg_authid ORDER BY 1")
        .fetch_all(&mut conn)
        .await
        .expect("roles");
    Snapshot { versions, roles }
}

/// The function's Secrets Manager calls since `after` (a call-log sequence
/// number): reads, and the two write probes refused.
fn assert_only_reads_and_refused_probes(env: &TestEnv, function: &str, after: u64) {
    let calls: Vec<_> = env.function_calls(function).into_iter().filter(|c| c.seq > after).collect();
    assert!(!calls.is_empty());
    for call in &calls {
        match call.operation.as_str() {
            "DescribeSecret" | "GetSecretValue" | "ListSecretVersionIds" => {}
            "PutSecretValue" | "UpdateSecretVersionStage" => {
                assert!(call.status >= 400, "a write probe was accepted: {call:?}");
            }
            other => panic!("the pre-flight called {other}: {call:?}"),
        }
    }
}

fn last_seq(env: &TestEnv) -> u64 {
    env.endpoint.calls().last().map_or(0, |c| c.seq)
}

#[tokio::test]
async fn a_healthy_single_user_secret_is_ready_and_nothing_is_written() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("preflight-single", "app", PASSWORD).await;
    let before = snapshot(&env, &[&arn]).await;
    let seq = last_seq(&env);

    let table = preflight(&mut env, "preflight-single").await;
    assert_eq!(table["ready"], true, "{table:#}");
    assert_eq!(table["secret"], arn.as_str());
    assert_eq!(table["failed"], 0);
    for r in table["checks"].as_array().expect("checks") {
        let check = r["check"].as_str().expect("check");
        match check {
            // Nothing has turned rotation on yet.
            "rotation schedule" => assert_eq!(r["status"], "warn", "{r}"),
            // The harness's server certificate lives two days.
            "TLS certificate" => {
                assert_eq!(r["status"], "warn", "{r}");
                assert!(r["detail"].as_str().expect("detail").contains("in 1 day(s)"), "{r}");
            }
            _ => assert_eq!(r["status"], "pass", "{r}"),
        }
    }
    assert!(fix(&table, "rotation schedule").contains("rotate-secret"));
    assert!(
        row(&table, "secretsmanager:PutSecretValue")["detail"]
            .as_str()
            .expect("detail")
            .contains("ResourceExistsException")
    );
    assert!(
        row(&table, "server settings")["detail"]
            .as_str()
            .expect("detail")
            .contains("password_encryption = scram-sha-256")
    );
    assert_eq!(snapshot(&env, &[&arn]).await, before, "the pre-flight wrote something");
    assert_only_reads_and_refused_probes(&env, SINGLE, seq);
    let log = env.function_output();
    assert!(log.contains(r#""message":"pre-flight""#) && log.contains(r#""ready":true"#), "the summary line");

    // Once rotation is on, the schedule says when it is next due.
    env.rotate(&arn).await.expect("rotation");
    let table = preflight(&mut env, &arn).await;
    assert_eq!(table["ready"], true, "{table:#}");
    assert_eq!(status(&table, "rotation schedule"), "pass");
    assert!(row(&table, "rotation schedule")["detail"].as_str().expect("detail").contains("next due"), "{table:#}");
    env.assert_no_leaks().await;
}

/// `app` (member of `readers`), and a master secret for `master_user`.
async fn pair(env: &mut TestEnv, name: &str, master_user: &str) -> (String, String) {
    let master = if master_user == "postgres" {
        env.secret_json("postgres", env.pg.superuser_password())
    } else {
        env.pg.set_password(master_user, "Master-Passw0rd-for-preflight").await;
        env.secret_json(master_user, "Master-Passw0rd-for-preflight")
    };
    let master_arn = env.create_secret(&format!("{name}-master"), &master).await;
    env.pg.set_password("app", PASSWORD).await;
    env.pg.exec("CREATE ROLE readers NOLOGIN; GRANT readers TO app").await;
    let mut value = env.secret_json("app", PASSWORD);
    value["masterarn"] = Value::String(master_arn.clone());
    (env.create_secret(name, &value).await, master_arn)
}

#[tokio::test]
async fn a_healthy_alternating_pair_is_ready_before_and_after_the_first_rotation() {
    let mut env = TestEnv::start_alternating().await;
    let (arn, master_arn) = pair(&mut env, "preflight-pair", "postgres").await;
    let before = snapshot(&env, &[&arn, &master_arn]).await;
    let seq = last_seq(&env);

    let table = preflight(&mut env, &arn).await;
    assert_eq!(table["ready"], true, "{table:#}");
    for check in ["master secretsmanager:GetSecretValue", "master secret", "master login", "master privileges"] {
        assert_eq!(status(&table, check), "pass", "{check}");
    }
    let detail = |t: &Value, c: &str| row(t, c)["detail"].as_str().expect("detail").to_owned();
    assert!(detail(&table, "alternate user").contains("does not exist yet"), "{table:#}");
    assert!(detail(&table, "memberships").contains(r#"GRANT "readers" TO "app_clone""#), "{table:#}");
    assert_eq!(snapshot(&env, &[&arn, &master_arn]).await, before, "the pre-flight wrote something");
    assert!(!env.pg.role_exists("app_clone").await, "the pre-flight created the clone");
    assert_only_reads_and_refused_probes(&env, ALTERNATING, seq);

    env.rotate(&arn).await.expect("first rotation");
    let table = preflight(&mut env, &arn).await;
    assert_eq!(table["ready"], true, "{table:#}");
    assert_eq!(status(&table, "alternate user"), "pass");
    assert!(detail(&table, "alternate user").contains("exists"));
    assert!(detail(&table, "memberships").contains("holds exactly"), "{table:#}");
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn a_master_without_the_power_to_alter_the_pair_is_named_with_the_grant() {
    let mut env = TestEnv::start_alternating().await;
    let (arn, _) = pair(&mut env, "preflight-weak-master", "weak_admin").await;
    let before = snapshot(&env, &[&arn]).await;
    let table = preflight(&mut env, &arn).await;
    failed_with(&table, "master privileges", &[r#"ALTER ROLE "weak_admin" CREATEROLE"#]);
    failed_with(&table, "alternate user", &["CREATEROLE"]);

    // CREATEROLE alone: on PostgreSQL 16+ the master needs ADMIN on the roles it alters and grants.
    env.pg.exec("ALTER ROLE weak_admin CREATEROLE").await;
    let table = preflight(&mut env, &arn).await;
    if env.pg.major_version().await >= 16 {
        failed_with(&table, "master privileges", &[r#"GRANT "app" TO "weak_admin" WITH ADMIN OPTION"#]);
        assert!(fix(&table, "master privileges").contains(r#"GRANT "readers" TO "weak_admin" WITH ADMIN OPTION"#));
        env.pg.exec("GRANT app TO weak_admin WITH ADMIN OPTION; GRANT readers TO weak_admin WITH ADMIN OPTION").await;
        let table = preflight(&mut env, &arn).await;
        assert_eq!(table["ready"], true, "{table:#}");
    } else {
        assert_eq!(table["ready"], true, "before 16 CREATEROLE is enough: {table:#}");
    }
    assert_eq!(snapshot(&env, &[&arn]).await, before);
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn each_broken_deployment_is_named_with_its_fix_and_nothing_is_written() {
    let mut env = TestEnv::start().await;
    env.pg.set_password("app", PASSWORD).await;

    // AWSCURRENT's password is not the database's.
    let wrong = env.secret_json("app", "Not-the-Passw0rd-the-db-has");
    let wrong = env.create_secret("preflight-wrong-password", &wrong).await;
    // A server the operator's DB_ENDPOINTS does not list.
    let mut elsewhere = env.secret_json("app", PASSWORD);
    elsewhere["host"] = json!("db.example.com");
    let elsewhere = env.create_secret("preflight-elsewhere", &elsewhere).await;
    // Plain text asked for under DB_TLS=verify-full.
    let mut plain = env.secret_json("app", PASSWORD);
    plain["ssl"] = json!(false);
    let plain = env.create_secret("preflight-plaintext", &plain).await;
    // A healthy secret whose writes the function's role may not make.
    let healthy = env.create_user_and_secret("preflight-denied", "app", PASSWORD).await;
    let all = [wrong.as_str(), elsewhere.as_str(), plain.as_str(), healthy.as_str()];
    let before = snapshot(&env, &all).await;
    let seq = last_seq(&env);

    let table = preflight(&mut env, &wrong).await;
    failed_with(&table, "AWSCURRENT login", &[r#"the database's password for "app" is not AWSCURRENT's"#, &wrong]);

    let table = preflight(&mut env, &elsewhere).await;
    failed_with(&table, "DB_TLS and DB_ENDPOINTS", &["add it to DB_ENDPOINTS", "db.example.com"]);
    assert_eq!(status(&table, "network"), "skip", "no connection to a server the operator does not allow");

    let table = preflight(&mut env, &plain).await;
    failed_with(&table, "DB_TLS and DB_ENDPOINTS", &[r#"set "ssl": true"#, "DB_TLS=allow-plaintext"]);

    let denied = format!(
        "User: arn:aws:sts::123456789012:assumed-role/rotation/fn is not authorized to perform: \
         secretsmanager:PutSecretValue on resource: {healthy}"
    );
    let deny = Action::Error { code: "AccessDeniedException".into(), status: 400, message: Some(denied) };
    env.inject("PutSecretValue", &healthy, deny, 1);
    let table = preflight(&mut env, &healthy).await;
    failed_with(
        &table,
        "secretsmanager:PutSecretValue",
        &[&format!("`secretsmanager:PutSecretValue` on resource `{healthy}`")],
    );
    assert_eq!(table["failed"], 1, "only the denied operation fails: {table:#}");
    assert_eq!(status(&table, "AWSCURRENT login"), "pass");

    assert_eq!(snapshot(&env, &all).await, before, "the pre-flight wrote something");
    assert_only_reads_and_refused_probes(&env, SINGLE, seq);

    // A port nobody listens on, allowed by the operator: the network row names the rule to open.
    let closed = e2e::postgres::free_port();
    let endpoints = format!("127.0.0.1:{},127.0.0.1:{closed}", env.pg.port());
    env.restart_function(&[("DB_ENDPOINTS", &endpoints)]).await;
    let mut value = env.secret_json("app", PASSWORD);
    value["port"] = json!(closed);
    let unreachable = env.create_secret("preflight-unreachable", &value).await;
    let table = preflight(&mut env, &unreachable).await;
    failed_with(&table, "network", &["security group", &format!("port {closed}")]);
    assert_eq!(status(&table, "AWSCURRENT login"), "skip");
    env.assert_no_leaks().await;
}

/// What the CDK app's custom resource sends once per deployment (CloudFormation's
/// Provider framework): the same checks, answered as small string attributes that become
/// the stack's outputs, and never an error for a failed check (a deployment must not
/// roll back over it). Delete checks nothing.
#[tokio::test]
async fn the_deployments_custom_resource_gets_the_verdict_as_stack_outputs_and_never_fails_the_deployment() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("preflight-deploy", "app", PASSWORD).await;
    let event = |kind: &str, secret: &str| {
        json!({"RequestType": kind, "RequestId": "r1", "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/s/1",
               "ResourceProperties": {"ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:fw",
                                      "Operation": "preflight", "SecretId": secret, "Trigger": "h1"}})
    };
    let answer = env.invoke(&event("Create", &arn)).await.expect("answered");
    assert_eq!(answer["PhysicalResourceId"], format!("preflight:{arn}"));
    assert_eq!(answer["Data"]["Ready"], "true", "{answer:#}");
    assert_eq!((answer["Data"]["Failed"].as_str(), answer["Data"]["Summary"].as_str()), (Some("0"), Some("ready")));
    assert_eq!(answer["Data"]["Warnings"], "2", "rotation not on yet, a certificate that lives two days: {answer:#}");

    // A wrong password in AWSCURRENT: not ready, the summary names the check and its fix.
    let wrong = env.secret_json("app", "Not-The-Passw0rd-1");
    env.put_value(&arn, &wrong, "AWSCURRENT").await;
    let answer = env.invoke(&event("Update", &arn)).await.expect("a failed check is an answer, not an error");
    assert_eq!(answer["Data"]["Ready"], "false", "{answer:#}");
    let summary = answer["Data"]["Summary"].as_str().expect("summary");
    assert!(summary.starts_with("AWSCURRENT login: "), "{summary}");
    assert!(summary.chars().count() <= 1000);

    let seq = last_seq(&env);
    let gone = json!({"RequestType": "Delete", "PhysicalResourceId": format!("preflight:{arn}"),
                      "ResourceProperties": {"Operation": "preflight", "SecretId": arn}});
    let answer = env.invoke(&gone).await.expect("delete");
    assert_eq!(answer, json!({"PhysicalResourceId": format!("preflight:{arn}")}));
    assert_eq!(last_seq(&env), seq, "Delete made no Secrets Manager call");
    env.assert_no_leaks().await;
}
