//! The database provisioner (`bootstrap` with `_HANDLER=provision`), as the
//! CDK's custom resource runs it on a first deploy: logins for the owner and
//! the app, DML-only for the app through default privileges, no manual SQL.

use e2e::{ALTERNATING_USERS, PROVISIONER, TestEnv};
use serde_json::{Value, json};

/// Not what the function would generate: SASLprep maps the soft hyphen to
/// nothing, the no-break space to a space and U+2168 to "IX", as the server's
/// login does; a verifier computed without it would not log in.
const APP: &str = "Provisioned-App-Pass\u{00AD}w\u{00A0}rd-\u{2168}";
const OWNER: &str = "Provisioned-Owner-Passw0rd";

struct Stack {
    master: String,
    app: String,
    owner: String,
}

/// A database `app`, the superuser's secret as the master, and the app and
/// owner secrets the stack would generate; no role exists yet.
async fn stack(env: &mut TestEnv) -> Stack {
    env.pg.exec("CREATE DATABASE app").await;
    let superuser = env.pg.superuser_password().to_owned();
    let mut master = env.secret_json("postgres", &superuser);
    master["dbname"] = json!("postgres");
    let master = env.create_secret("stack/master", &master).await;
    let mut app = env.secret_json("app", APP);
    app["dbname"] = json!("app");
    app["masterarn"] = json!(master);
    let app = env.create_secret("stack/app", &app).await;
    // Owner secret as a stack generates it: only a username and a password.
    let owner = env.create_secret("stack/owner", &json!({"username": "app_owner", "password": OWNER})).await;
    Stack { master, app, owner }
}

fn event(request: &str, s: &Stack) -> Value {
    json!({
        "RequestType": request,
        "ResourceProperties": {
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:provider",
            "MasterSecretArn": s.master, "AppSecretArn": s.app, "OwnerSecretArn": s.owner
        }
    })
}

/// Runs `sql` as `user` in database `app`; `Err` carries the SQLSTATE.
async fn as_user(env: &TestEnv, user: &str, password: &str, sql: &str) -> Result<(), String> {
    use sqlx::Connection as _;
    let mut conn =
        sqlx::PgConnection::connect_with(&env.pg.options(user, password, "app")).await.map_err(|e| e.to_string())?;
    let result = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut conn).await;
    let _ = conn.close().await;
    result.map(drop).map_err(|e| match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()).unwrap_or_default(),
        other => other.to_string(),
    })
}

#[tokio::test]
async fn a_first_deploy_provisions_an_owner_and_a_dml_only_app_login() {
    let mut env = TestEnv::start().await;
    let s = stack(&mut env).await;
    let out = env.invoke_function(PROVISIONER, &event("Create", &s)).await.expect("provisioned");
    assert_eq!(out["PhysicalResourceId"], "db-logins/app/app/app_owner");
    assert_eq!(out["Data"], json!({"AppUsername": "app", "OwnerUsername": "app_owner"}));
    assert_eq!(env.pg.login("app", APP).await, Ok(()), "the verifier was prepared as the server prepares logins");
    let mut conn = env.pg.superuser().await;
    let stored: String = sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
        .fetch_one(&mut conn)
        .await
        .expect("verifier");
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "PostgreSQL 15's iteration count: {stored:.20}");

    // The owner runs the schema; the app reads and writes, and nothing more.
    as_user(&env, "app_owner", OWNER, "CREATE TABLE notes (id bigserial PRIMARY KEY, body text)")
        .await
        .expect("owner DDL");
    as_user(&env, "app", APP, "INSERT INTO notes (body) VALUES ('hi'); SELECT * FROM notes").await.expect("app DML");
    assert_eq!(as_user(&env, "app", APP, "CREATE TABLE mine (x int)").await, Err("42501".into()), "no DDL");
    assert_eq!(as_user(&env, "app", APP, "DROP TABLE notes").await, Err("42501".into()), "no DDL");

    // Alternating rotations: the clone inherits the app's DML.
    env.use_strategy(ALTERNATING_USERS).await;
    env.rotate(&s.app).await.expect("first rotation creates app_clone");
    let current = env.value(&s.app, "AWSCURRENT").await.expect("current");
    let clone_password = current["password"].as_str().expect("password").to_owned();
    as_user(&env, "app_clone", &clone_password, "INSERT INTO notes (body) VALUES ('from the clone')")
        .await
        .expect("clone DML");

    // An update (a redeploy) changes no password and keeps working.
    env.invoke_function(PROVISIONER, &event("Update", &s)).await.expect("idempotent");
    assert_eq!(env.pg.login("app_clone", &clone_password).await, Ok(()));
    assert_eq!(env.pg.login("app", APP).await, Ok(()), "the app's password is the rotations' to change");
    let out = env.invoke_function(PROVISIONER, &event("Delete", &s)).await.expect("delete");
    assert_eq!(out["PhysicalResourceId"], "db-logins");
    assert!(env.pg.role_exists("app").await && env.pg.role_exists("app_owner").await, "roles outlive the resource");
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn bad_input_is_named_and_nothing_is_created() {
    let mut env = TestEnv::start().await;
    let s = stack(&mut env).await;
    let mut incomplete = event("Create", &s);
    incomplete["ResourceProperties"].as_object_mut().expect("object").remove("OwnerSecretArn");
    let err = env.invoke_function(PROVISIONER, &incomplete).await.expect_err("refused");
    assert_eq!(err.error_type, "InvalidEvent");
    assert!(err.error_message.contains("ResourceProperties.OwnerSecretArn"), "{}", err.error_message);

    // An owner that is the app user itself would give the app DDL.
    let same = env.create_secret("stack/owner-is-app", &json!({"username": "app", "password": OWNER})).await;
    let mut wrong = event("Create", &s);
    wrong["ResourceProperties"]["OwnerSecretArn"] = json!(same);
    let err = env.invoke_function(PROVISIONER, &wrong).await.expect_err("refused");
    assert_eq!(err.error_type, "InconsistentSecret", "{}", err.error_message);
    assert!(!env.pg.role_exists("app").await && !env.pg.role_exists("app_owner").await);
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn the_provisioner_is_anchored_to_its_stack_and_never_resets_what_is_not_its_own() {
    let mut env = TestEnv::start().await;
    let s = stack(&mut env).await;
    // Configured for this stack's secrets and database, as the CDK app does.
    let anchors = [
        ("PROVISION_MASTER_SECRET_ARN", s.master.clone()),
        ("PROVISION_APP_SECRET_ARN", s.app.clone()),
        ("PROVISION_OWNER_SECRET_ARN", s.owner.clone()),
        ("PROVISION_DATABASE", "app".to_owned()),
    ];
    let pairs: Vec<(&str, &str)> = anchors.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.restart_function(&pairs).await;

    // An event naming another owner secret (someone who may invoke the
    // provisioner, pointing it at a role of their choice) is refused.
    env.pg.set_password("dba", "Dbas-0wn-Passw0rd").await;
    env.remember("Dbas-0wn-Passw0rd");
    let other = env.create_secret("stack/dba", &json!({"username": "dba", "password": OWNER})).await;
    let mut forged = event("Create", &s);
    forged["ResourceProperties"]["OwnerSecretArn"] = json!(other);
    let err = env.invoke_function(PROVISIONER, &forged).await.expect_err("refused");
    assert!(err.error_message.contains("OwnerSecretArn is not the secret"), "{}", err.error_message);

    // Without the anchors, the same event meets a role that exists and is
    // not the secret's: its password is left alone.
    env.restart_function(&[]).await;
    let err = env.invoke_function(PROVISIONER, &forged).await.expect_err("refused");
    assert!(err.error_message.contains("not this stack's"), "{}", err.error_message);
    assert_eq!(env.pg.login("dba", "Dbas-0wn-Passw0rd").await, Ok(()), "dba's password untouched");
    env.restart_function(&pairs).await;

    // The stack's own first deploy (the owner secret attached to the
    // database, as the CDK app's is), then an owner rotation stopped between
    // testSecret and finishSecret: the database has AWSPENDING's password.
    let mut attached = env.secret_json("app_owner", OWNER);
    attached["dbname"] = json!("app");
    env.put_value(&s.owner, &attached, "AWSCURRENT").await;
    env.invoke_function(PROVISIONER, &event("Create", &s)).await.expect("provisioned");
    let token = env.begin_rotation(&s.owner).await;
    for step in ["createSecret", "setSecret", "testSecret"] {
        env.step(step, &s.owner, &token).await.expect(step);
    }
    // A redeploy now must not put the database back on AWSCURRENT.
    let err = env.invoke_function(PROVISIONER, &event("Update", &s)).await.expect_err("refused");
    assert!(err.error_message.contains("rotation in progress"), "{}", err.error_message);
    env.step("finishSecret", &s.owner, &token).await.expect("finishSecret");
    let current = env.value(&s.owner, "AWSCURRENT").await.expect("current");
    assert_eq!(env.pg.login("app_owner", current["password"].as_str().expect("pw")).await, Ok(()));
    // And once it has finished, a redeploy goes through and changes nothing.
    env.invoke_function(PROVISIONER, &event("Update", &s)).await.expect("update");
    assert_eq!(env.pg.login("app_owner", current["password"].as_str().expect("pw")).await, Ok(()));
    env.assert_no_leaks().await;
}
