//! Alternating-users rotation, end to end: the master secret changes the
//! password of `app` and `app_clone` in turn, so the credentials an
//! application holds stay valid for one more rotation.

use e2e::TestEnv;
use serde_json::Value;

const OLD: &str = "Initial-Passw0rd-for-app";

/// A master secret for the server's superuser and an application secret
/// pointing at it; `app` is a member of `readers`.
async fn setup(env: &mut TestEnv, name: &str, user: &str) -> (String, String) {
    let superuser = env.pg.superuser_password().to_owned();
    let master = env.secret_json("postgres", &superuser);
    let master_arn = env.create_secret(&format!("{name}-master"), &master).await;
    env.pg.set_password(user, OLD).await;
    env.pg.exec(&format!("CREATE ROLE readers NOLOGIN; GRANT readers TO {}", quote(user))).await;
    let mut value = env.secret_json(user, OLD);
    value["masterarn"] = Value::String(master_arn.clone());
    let arn = env.create_secret(name, &value).await;
    (arn, master_arn)
}

fn quote(ident: &str) -> String {
    rotation_fn::sql::quote_ident(ident)
}

async fn current(env: &TestEnv, arn: &str) -> (String, String) {
    current_of(env, arn, "AWSCURRENT").await
}

#[tokio::test]
async fn rotations_alternate_users_and_the_previous_login_keeps_working() {
    let mut env = TestEnv::start_alternating().await;
    let (arn, master_arn) = setup(&mut env, "app-alt", "app").await;
    let master_before = env.value(&master_arn, "AWSCURRENT").await;

    env.rotate(&arn).await.expect("first rotation");
    let (user1, pw1) = current(&env, &arn).await;
    assert_eq!(user1, "app_clone");
    assert_eq!(env.pg.login("app_clone", &pw1).await, Ok(()));
    // The application's old login is untouched: nothing it holds breaks.
    assert_eq!(env.pg.login("app", OLD).await, Ok(()));
    let mut clone_roles = env.pg.memberships("app_clone").await;
    clone_roles.sort();
    assert_eq!(clone_roles, ["app", "readers"], "the clone can do what the original does");

    env.rotate(&arn).await.expect("second rotation");
    let (user2, pw2) = current(&env, &arn).await;
    assert_eq!(user2, "app");
    assert_eq!(env.pg.login("app", &pw2).await, Ok(()));
    assert_eq!(env.pg.login("app", OLD).await, Err("28P01".into()));
    assert_eq!(env.pg.login("app_clone", &pw1).await, Ok(()), "AWSPREVIOUS still logs in");
    assert_eq!(current_of(&env, &arn, "AWSPREVIOUS").await, ("app_clone".to_owned(), pw1));

    // The master secret is read, never written.
    assert_eq!(env.value(&master_arn, "AWSCURRENT").await, master_before);
    env.assert_no_leaks().await;
}

async fn current_of(env: &TestEnv, arn: &str, stage: &str) -> (String, String) {
    let value = env.value(arn, stage).await.expect("version");
    (value["username"].as_str().expect("username").to_owned(), value["password"].as_str().expect("password").to_owned())
}

#[tokio::test]
async fn the_clone_follows_grants_added_to_and_removed_from_the_original() {
    let mut env = TestEnv::start_alternating().await;
    let (arn, _) = setup(&mut env, "app-drift", "app").await;
    env.rotate(&arn).await.expect("creates the clone");
    env.pg.exec("REVOKE readers FROM app; CREATE ROLE writers NOLOGIN; GRANT writers TO app").await;

    env.rotate(&arn).await.expect("back to the original");
    env.rotate(&arn).await.expect("the clone again");
    let mut clone_roles = env.pg.memberships("app_clone").await;
    clone_roles.sort();
    assert_eq!(clone_roles, ["app", "writers"]);
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn unusual_usernames_alternate_too() {
    let mut env = TestEnv::start_alternating().await;
    let (arn, _) = setup(&mut env, "app-odd", "Odd \"User\"").await;
    env.rotate(&arn).await.expect("rotation");
    let (user, pw) = current(&env, &arn).await;
    assert_eq!(user, "Odd \"User\"_clone");
    assert_eq!(env.pg.login(&user, &pw).await, Ok(()));
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn a_username_too_long_for_its_clone_is_refused_before_anything_is_written() {
    let mut env = TestEnv::start_alternating().await;
    let user = "u".repeat(58); // 58 + "_clone" = 64 bytes, over PostgreSQL's 63
    let (arn, _) = setup(&mut env, "app-long", &user).await;
    let token = env.begin_rotation(&arn).await;
    let err = env.step("createSecret", &arn, &token).await.expect_err("refused");
    assert_eq!(err.error_type, "InvalidSecret");
    assert!(err.error_message.contains("63"), "{}", err.error_message);
    assert_eq!(env.version_value(&arn, &token).await, None, "no value written");
    env.assert_no_leaks().await;
}

#[tokio::test]
async fn a_wrong_master_password_fails_with_the_master_named_and_changes_nothing() {
    let mut env = TestEnv::start_alternating().await;
    let stale = env.secret_json("postgres", "Not-the-superuser-passw0rd");
    let master_arn = env.create_secret("stale-master", &stale).await;
    env.pg.set_password("app", OLD).await;
    let mut value = env.secret_json("app", OLD);
    value["masterarn"] = Value::String(master_arn);
    let arn = env.create_secret("app-stale-master", &value).await;

    let failure = env.rotate(&arn).await.expect_err("the master cannot log in");
    assert_eq!(failure.step, "setSecret");
    assert_eq!(failure.error.error_type, "DatabaseAuthenticationFailed");
    let message = &failure.error.error_message;
    assert!(message.contains("master") && message.contains("28P01") && message.contains("permanent"), "{message}");
    assert_eq!(current(&env, &arn).await, ("app".to_owned(), OLD.to_owned()), "AWSCURRENT unchanged");
    assert!(!env.pg.role_exists("app_clone").await, "no clone created");
    assert_eq!(env.pg.login("app", OLD).await, Ok(()));
    env.assert_no_leaks().await;
}
