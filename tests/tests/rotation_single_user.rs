//! Single-user rotation, end to end: the real bootstrap, PostgreSQL, moto.

use e2e::TestEnv;

const OLD: &str = "Initial-Passw0rd-for-app";

#[tokio::test]
async fn full_rotation_switches_the_database_and_the_secret() {
    let mut env = TestEnv::start().await;
    let arn = env.create_user_and_secret("app-single", "app", OLD).await;
    let old_version = env.version_with(&arn, "AWSCURRENT").await.expect("current");

    let token = env.rotate(&arn).await.expect("rotation succeeds");

    let current = env.value(&arn, "AWSCURRENT").await.expect("current value");
    let new_password = current["password"].as_str().expect("password").to_owned();
    assert_ne!(new_password, OLD);
    assert_eq!(env.version_with(&arn, "AWSCURRENT").await.as_deref(), Some(token.as_str()));
    assert_eq!(env.version_with(&arn, "AWSPREVIOUS").await, Some(old_version));
    assert_eq!(env.value(&arn, "AWSPREVIOUS").await.expect("previous")["password"], OLD);
    assert_eq!(env.pg.login("app", &new_password).await, Ok(()));
    assert_eq!(env.pg.login("app", OLD).await, Err("28P01".into()));
    env.assert_no_leaks().await;
}
