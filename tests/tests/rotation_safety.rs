//! "Never locks anyone out, never lets anyone in", tried by an attacker who can
//! write the application secret, and by an operator who abandons a rotation.
//! (SASLprep in the function's verifiers is proven in `provision.rs`, where
//! the function sets a password it did not generate.)
//!
//! The alternating-users function holds the master secret, which can change
//! any role's password: it must not act on whatever names the secret holds.

use e2e::TestEnv;
use serde_json::{Value, json};

const OLD: &str = "Initial-Passw0rd-for-app";
const VICTIM: &str = "Victims-0wn-Passw0rd";

/// The superuser's secret as the master, and an alternating-users secret for
/// `user` (a member of `readers`).
async fn alternating_secret(env: &mut TestEnv, name: &str, user: &str) -> (String, String) {
    let superuser = env.pg.superuser_password().to_owned();
    let master_arn = env.create_secret(&format!("{name}-master"), &env.secret_json("postgres", &superuser)).await;
    env.pg.set_password(user, OLD).await;
    env.pg
        .exec(&format!("CREATE ROLE readers NOLOGIN; GRANT readers TO {}", rotation_fn::sql::quote_ident(user)))
        .await;
    let mut value = env.secret_json(user, OLD);
    value["masterarn"] = json!(master_arn);
    (env.create_secret(name, &value).await, master_arn)
}

/// What someone with `secretsmanager:PutSecretValue` on the app secret can
/// do: a new AWSCURRENT.
async fn overwrite_current(env: &mut TestEnv, arn: &str, value: &Value) -> String {
    let version = env.put_value(arn, value, "AWSCURRENT").await;
    let current: Vec<_> =
        env.stages(arn).await.into_iter().filter(|(_, s)| s.iter().any(|l| l == "AWSCURRENT")).collect();
    assert_eq!(current.len(), 1, "one AWSCURRENT, as on AWS: {current:?}");
    version
}

#[tokio::test]
async fn a_current_login_that_does_not_work_never_gets_the_master_to_act() {
    let mut env = TestEnv::start_alternating().await;
    let (arn, master_arn) = alternating_secret(&mut env, "deputy-a", "app").await;
    env.pg.set_password("victim", VICTIM).await;
    env.remember(VICTIM);
    env.pg.exec("CREATE ROLE payroll NOLOGIN; GRANT payroll TO victim").await;
    // The attacker names a role whose password they do not know.
    let mut forged = env.secret_json("victim", "a-guess-at-the-password");
    forged["masterarn"] = json!(master_arn);
    let forged_version = overwrite_current(&mut env, &arn, &forged).await;
    let log_before = env.pg.server_log().len();

    // The real AWSCURRENT moved to AWSPREVIOUS: not the same pair.
    let failure = env.rotate(&arn).await.expect_err("refused");
    assert_eq!((failure.step, failure.error.error_type.as_str()), ("createSecret", "InconsistentSecret"));
    assert!(failure.error.error_message.contains("not the same pair"), "{}", failure.error.error_message);
    assert_eq!(env.version_with(&arn, "AWSCURRENT").await, Some(forged_version), "AWSCURRENT unchanged");

    // A secret that names the victim from its first version: its AWSCURRENT
    // must log in before the master acts.
    let arn = env.create_secret("deputy-a-fresh", &forged).await;
    let failure = env.rotate(&arn).await.expect_err("refused");
    assert_eq!((failure.step, failure.error.error_type.as_str()), ("setSecret", "DatabaseAuthenticationFailed"));
    let message = &failure.error.error_message;
    assert!(message.contains("AWSCURRENT user \"victim\"") && message.contains("nothing was changed"), "{message}");
    assert!(!env.pg.role_exists("victim_clone").await, "no clone with the victim's memberships was created");
    assert_eq!(env.pg.login("victim", VICTIM).await, Ok(()), "the victim's password is untouched");
    assert!(!env.pg.server_log()[log_before..].contains("ALTER ROLE"), "the master changed nothing");
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn a_clone_name_the_attacker_controls_cannot_reset_the_original() {
    let mut env = TestEnv::start_alternating().await;
    let (arn, master_arn) = alternating_secret(&mut env, "deputy-b", "app").await;
    // `dba` is powerful; `dba_clone` is a login the attacker has (its name
    // merely looks like a clone's), never paired with `dba`.
    env.pg.set_password("dba", VICTIM).await;
    env.remember(VICTIM);
    env.pg.exec("GRANT pg_read_all_data TO dba").await;
    env.pg.set_password("dba_clone", "Attackers-0wn-Passw0rd").await;
    let mut forged = env.secret_json("dba_clone", "Attackers-0wn-Passw0rd");
    forged["masterarn"] = json!(master_arn);
    overwrite_current(&mut env, &arn, &forged).await;
    let log_before = env.pg.server_log().len();

    // The real AWSCURRENT moved to AWSPREVIOUS: not the same pair.
    let failure = env.rotate(&arn).await.expect_err("refused");
    assert_eq!((failure.step, failure.error.error_type.as_str()), ("createSecret", "InconsistentSecret"));
    assert!(failure.error.error_message.contains("not the same pair"), "{}", failure.error.error_message);

    // A secret that names dba_clone from its first version reaches the
    // database, which does not know the pair.
    let fresh = env.create_secret("deputy-b-fresh", &forged).await;
    let failure = env.rotate(&fresh).await.expect_err("refused");
    assert_eq!((failure.step, failure.error.error_type.as_str()), ("setSecret", "InconsistentSecret"));
    assert!(failure.error.error_message.contains("is not a member of \"dba\""), "{}", failure.error.error_message);
    assert_eq!(env.pg.login("dba", VICTIM).await, Ok(()), "dba's password is untouched");
    assert!(!env.pg.server_log()[log_before..].contains("ALTER ROLE"), "the master changed nothing");
    env.assert_no_leaks().await;
}

/// A master as RDS's: CREATEROLE, not a superuser, so grants other grantors
/// made are beyond it.
async fn rds_like_master(env: &mut TestEnv, name: &str) -> String {
    env.pg.exec("CREATE ROLE rds_master LOGIN CREATEROLE").await;
    env.pg.set_password("rds_master", "Rds-Master-Passw0rd").await;
    env.remember("Rds-Master-Passw0rd");
    env.create_secret(name, &env.secret_json("rds_master", "Rds-Master-Passw0rd")).await
}

/// PostgreSQL 16+: membership options and grantors. CI runs this on 17.
#[tokio::test]
async fn on_16_and_later_a_clone_proves_its_pair_and_holds_no_power_the_original_lacks() {
    let mut env = TestEnv::start_alternating().await;
    if env.pg.older_than(16).await {
        return;
    }
    let master_arn = rds_like_master(&mut env, "rds-like-master").await;
    env.pg.set_password("app", OLD).await;
    env.pg.set_password("app_clone", VICTIM).await;
    env.remember(VICTIM);
    env.pg.exec("GRANT app TO rds_master WITH ADMIN OPTION; GRANT app_clone TO rds_master WITH ADMIN OPTION").await;
    let mut value = env.secret_json("app", OLD);
    value["masterarn"] = json!(master_arn);
    let arn = env.create_secret("app-pair-proof", &value).await;

    // 1. A membership that grants nothing proves nothing.
    env.pg.exec("GRANT app TO app_clone WITH INHERIT FALSE, SET FALSE").await;
    let failure = env.rotate(&arn).await.expect_err("refused");
    assert_eq!((failure.step, failure.error.error_type.as_str()), ("setSecret", "InconsistentSecret"));
    assert!(failure.error.error_message.contains("inherits or may SET"), "{}", failure.error.error_message);
    assert_eq!(env.pg.login("app_clone", VICTIM).await, Ok(()), "untouched");

    // 2. A real member, but with a predefined role's power a superuser
    // granted: the master cannot revoke it, so no password is set.
    let token = env.version_with(&arn, "AWSPENDING").await.expect("placeholder");
    env.pg.exec("REVOKE app FROM app_clone; GRANT app TO app_clone; GRANT pg_read_all_data TO app_clone").await;
    let failure = env.resume(&arn, &token).await.expect_err("refused");
    assert_eq!(failure.error.error_type, "InconsistentSecret", "{}", failure.error.error_message);
    assert!(failure.error.error_message.contains("pg_read_all_data"), "{}", failure.error.error_message);
    assert_eq!(env.pg.login("app_clone", VICTIM).await, Ok(()), "untouched");

    // 3. Ownership is a power too.
    env.pg.exec("REVOKE pg_read_all_data FROM app_clone; CREATE TABLE clones_own (x int); ALTER TABLE clones_own OWNER TO app_clone").await;
    let failure = env.resume(&arn, &token).await.expect_err("refused");
    assert!(failure.error.error_message.contains("owns 1 object"), "{}", failure.error.error_message);
    assert_eq!(env.pg.login("app_clone", VICTIM).await, Ok(()), "untouched");

    // Cleared by a DBA, the rotation goes through.
    env.pg.exec("DROP TABLE clones_own").await;
    env.resume(&arn, &token).await.expect("the pair is proven");
    assert_eq!(env.value(&arn, "AWSCURRENT").await.expect("current")["username"], "app_clone");
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn a_pending_value_naming_another_user_is_refused() {
    let mut env = TestEnv::start_alternating().await;
    let (arn, master_arn) = alternating_secret(&mut env, "deputy-c", "app").await;
    env.pg.set_password("victim", VICTIM).await;
    env.remember(VICTIM);
    // Between RotateSecret and createSecret, the attacker fills the placeholder.
    let token = env.begin_rotation(&arn).await;
    let mut forged = env.secret_json("victim", "Chosen-by-the-attacker-1");
    forged["masterarn"] = json!(master_arn);
    env.remember("Chosen-by-the-attacker-1");
    env.sm
        .put_secret_value()
        .secret_id(&arn)
        .client_request_token(&token)
        .secret_string(forged.to_string())
        .version_stages("AWSPENDING")
        .send()
        .await
        .expect("PutSecretValue");

    let failure = env.resume(&arn, &token).await.expect_err("refused");
    assert_eq!((failure.step, failure.error.error_type.as_str()), ("setSecret", "InconsistentSecret"));
    assert!(
        failure.error.error_message.contains("is not the alternate of AWSCURRENT"),
        "{}",
        failure.error.error_message
    );
    assert_eq!(env.pg.login("victim", VICTIM).await, Ok(()));
    assert!(!env.pg.role_exists("app_clone").await);
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn an_existing_clone_with_powers_the_original_lacks_is_refused() {
    let mut env = TestEnv::start_alternating().await;
    let (arn, _) = alternating_secret(&mut env, "deputy-d", "app").await;
    env.pg.exec("CREATE ROLE app_clone LOGIN CREATEROLE; GRANT app TO app_clone").await;
    let failure = env.rotate(&arn).await.expect_err("refused");
    assert_eq!((failure.step, failure.error.error_type.as_str()), ("setSecret", "InconsistentSecret"));
    assert!(failure.error.error_message.contains("CREATEROLE"), "{}", failure.error.error_message);
    assert!(!env.pg.server_log().contains("ALTER ROLE \"app_clone\" PASSWORD"), "its password was not set");
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn removing_masterarn_does_not_turn_alternating_users_into_single_user() {
    let mut env = TestEnv::start_alternating().await;
    let (arn, _) = alternating_secret(&mut env, "strategy", "app").await;
    env.rotate(&arn).await.expect("the first rotation makes app_clone current");
    let mut current = env.value(&arn, "AWSCURRENT").await.expect("current");
    let clone_password = current["password"].as_str().expect("password").to_owned();
    current.as_object_mut().expect("object").remove("masterarn");
    overwrite_current(&mut env, &arn, &current).await;
    let log_before = env.pg.server_log().len();

    let failure = env.rotate(&arn).await.expect_err("refused");
    assert_eq!((failure.step, failure.error.error_type.as_str()), ("createSecret", "InvalidSecret"));
    assert!(failure.error.error_message.contains("ROTATION_STRATEGY=alternating-users needs key `masterarn`"));
    let token = env.version_with(&arn, "AWSPENDING").await.expect("placeholder");
    assert_eq!(env.version_value(&arn, &token).await, None, "no AWSPENDING value");
    assert_eq!(env.pg.login("app_clone", &clone_password).await, Ok(()), "no password changed");
    assert!(!env.pg.server_log()[log_before..].contains("ALTER ROLE"), "the database was not touched");
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn an_rds_managed_master_secret_is_accepted_as_masterarn() {
    let mut env = TestEnv::start_alternating().await;
    let superuser = env.pg.superuser_password().to_owned();
    // What RDS writes with ManageMasterUserPassword: username and password only.
    let master_arn = env.create_secret("rds-managed", &json!({"username": "postgres", "password": superuser})).await;
    env.pg.set_password("app", OLD).await;
    let mut value = env.secret_json("app", OLD);
    value["masterarn"] = json!(master_arn);
    let arn = env.create_secret("app-rds-master", &value).await;
    env.rotate(&arn).await.expect("rotation with the RDS-managed master");
    let current = env.value(&arn, "AWSCURRENT").await.expect("current");
    assert_eq!(current["username"], "app_clone");
    assert_eq!(env.pg.login("app_clone", current["password"].as_str().expect("pw")).await, Ok(()));
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn an_abandoned_single_user_rotation_is_recovered_from_its_unlabelled_version() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("abandoned", "app", OLD).await;
    env.rotate(&arn).await.expect("a first rotation, so AWSPREVIOUS exists");
    // A rotation that sets the database, then is cancelled by an operator who
    // removes AWSPENDING: the database now holds a password only an
    // unlabelled version holds.
    let abandoned = env.begin_rotation(&arn).await;
    env.step("createSecret", &arn, &abandoned).await.expect("createSecret");
    env.step("setSecret", &arn, &abandoned).await.expect("setSecret");
    env.drop_pending(&arn, &abandoned).await;
    let in_database = env.version_value(&arn, &abandoned).await.expect("value")["password"].clone();
    assert_eq!(env.stages(&arn).await.get(&abandoned).map(Vec::len), Some(0), "unlabelled now");

    let token = env.rotate(&arn).await.expect("the next rotation recovers");
    let current = env.value(&arn, "AWSCURRENT").await.expect("current");
    assert_eq!(env.version_with(&arn, "AWSCURRENT").await, Some(token));
    assert_eq!(env.pg.login("app", current["password"].as_str().expect("pw")).await, Ok(()));
    assert_eq!(env.pg.login("app", in_database.as_str().expect("pw")).await, Err("28P01".into()));
    let output = env.function_output();
    assert!(output.contains(&format!("logged in with unlabelled version {abandoned}")), "the log says which one");
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn recovery_cannot_be_crowded_out_by_newer_unlabelled_versions() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("crowded", "app", OLD).await;
    env.rotate(&arn).await.expect("a first rotation, so AWSPREVIOUS exists");
    let abandoned = env.begin_rotation(&arn).await;
    env.step("createSecret", &arn, &abandoned).await.expect("createSecret");
    env.step("setSecret", &arn, &abandoned).await.expect("setSecret");
    env.drop_pending(&arn, &abandoned).await;
    // Whoever can write the secret adds newer versions of the same login
    // (more than the five the function used to look at) and unlabels them.
    let mut junk = json!({});
    for i in 0..7 {
        junk = env.secret_json("app", &format!("Junk-Passw0rd-number-{i}"));
        let id = env.put_value(&arn, &junk, "junk").await;
        env.sm
            .update_secret_version_stage()
            .secret_id(&arn)
            .version_stage("junk")
            .remove_from_version_id(&id)
            .send()
            .await
            .expect("unlabel");
    }
    assert!(junk.is_object());
    let token = env.rotate(&arn).await.expect("the next rotation still finds the database's password");
    assert_eq!(env.version_with(&arn, "AWSCURRENT").await, Some(token));
    let current = env.value(&arn, "AWSCURRENT").await.expect("current");
    assert_eq!(env.pg.login("app", current["password"].as_str().expect("pw")).await, Ok(()));
    assert!(env.function_output().contains(&format!("logged in with unlabelled version {abandoned}")));
    env.assert_no_leaks().await;
}
