//! Ship what was tested: full rotations run by the very `bootstrap` file that
//! deploys (cargo-lambda's release build, for the CPU the CDK app configures),
//! not by the debug binary the other end-to-end tests run.
//!
//! `tests/scripts/ship-check.sh` builds the artifact, checks its ELF header and
//! glibc needs, then runs this file with
//! - `SHIPPED_BOOTSTRAP`: the artifact (`target/lambda/bootstrap/bootstrap`);
//! - `BOOTSTRAP_BIN`: how the harness starts it: the artifact itself, or a
//!   wrapper that runs it under `qemu-aarch64-static` on an x86-64 host.
//!
//! Ignored in the ordinary run: there is no release artifact to test there.
//! Run without the script's variables, these tests fail instead of passing
//! vacuously, and each one checks through `/proc` that the process that
//! rotated really is the shipped file.

use std::path::{Path, PathBuf};

use e2e::TestEnv;
use serde_json::Value;

const OLD: &str = "Initial-Passw0rd-for-app";

/// The artifact under test, canonical; panics with the way to run this file
/// when the script's variables are missing.
fn shipped_artifact() -> PathBuf {
    let Some(path) = std::env::var_os("SHIPPED_BOOTSTRAP") else {
        panic!(
            "SHIPPED_BOOTSTRAP is not set: this test rotates with the Lambda artifact that ships; \
             run it through tests/scripts/ship-check.sh"
        );
    };
    assert!(
        std::env::var_os("BOOTSTRAP_BIN").is_some(),
        "BOOTSTRAP_BIN is not set: without it the harness would run target/debug/bootstrap, \
         not the artifact; run this file through tests/scripts/ship-check.sh"
    );
    let path = PathBuf::from(path);
    std::fs::canonicalize(&path).unwrap_or_else(|e| panic!("SHIPPED_BOOTSTRAP={}: {e}", path.display()))
}

/// Starts the harness and (re)starts the function with an explicit strategy,
/// as the CDK app configures it.
async fn start(strategy: &str) -> (TestEnv, PathBuf) {
    let artifact = shipped_artifact();
    // The harness starts BOOTSTRAP_BIN: the artifact, or qemu running it.
    let env =
        if strategy == e2e::ALTERNATING_USERS { TestEnv::start_alternating().await } else { TestEnv::start().await };
    (env, artifact)
}

/// The running function process is `artifact`: either its executable, or an
/// emulator (`qemu-*`) whose command line names the artifact.
fn assert_runs(env: &TestEnv, artifact: &Path) {
    let pid = env.pid(env.function()).expect("the function is running");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("read /proc/PID/exe");
    if exe == artifact {
        return;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("read /proc/PID/cmdline");
    let args: Vec<PathBuf> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .filter_map(|a| std::fs::canonicalize(String::from_utf8_lossy(a).as_ref()).ok())
        .collect();
    let emulator = exe.file_name().is_some_and(|n| n.to_string_lossy().starts_with("qemu-"));
    assert!(
        emulator && args.iter().any(|a| a == artifact),
        "the function process runs {} ({args:?}), not the shipped artifact {}",
        exe.display(),
        artifact.display()
    );
}

async fn login_of(env: &TestEnv, arn: &str, stage: &str) -> (String, String) {
    let value: Value = env.value(arn, stage).await.unwrap_or_else(|| panic!("{stage} has a value"));
    let field = |k: &str| value[k].as_str().unwrap_or_else(|| panic!("{stage} has a {k}")).to_owned();
    (field("username"), field("password"))
}

#[tokio::test]
#[ignore = "run by tests/scripts/ship-check.sh"]
async fn the_shipped_artifact_rotates_a_single_user_secret() {
    let (mut env, artifact) = start("single-user").await;
    let arn = env.create_user_and_secret("shipped-single", "app", OLD).await;

    let token = env.rotate(&arn).await.expect("the rotation succeeds");

    assert_runs(&env, &artifact);
    assert_eq!(env.version_with(&arn, "AWSCURRENT").await.as_deref(), Some(token.as_str()), "AWSCURRENT moved");
    let (user, new_password) = login_of(&env, &arn, "AWSCURRENT").await;
    assert_eq!(user, "app");
    assert_ne!(new_password, OLD);
    assert_eq!(env.pg.login("app", &new_password).await, Ok(()), "the new password logs in");
    assert_eq!(env.pg.login("app", OLD).await, Err("28P01".into()), "the old password no longer does");
    assert_eq!(login_of(&env, &arn, "AWSPREVIOUS").await.1, OLD);
    // The artifact logs each step as JSON (what CloudWatch will show).
    let output = env.function_output();
    assert!(output.contains("finishSecret"), "the function logged its steps:\n{output}");
    env.assert_no_leaks().await;
}

#[tokio::test]
#[ignore = "run by tests/scripts/ship-check.sh"]
async fn the_shipped_artifact_alternates_users() {
    let (mut env, artifact) = start("alternating-users").await;
    let superuser = env.pg.superuser_password().to_owned();
    let master = env.secret_json("postgres", &superuser);
    let master_arn = env.create_secret("shipped-alt-master", &master).await;
    env.pg.set_password("app", OLD).await;
    let mut value = env.secret_json("app", OLD);
    value["masterarn"] = Value::String(master_arn);
    let arn = env.create_secret("shipped-alt", &value).await;

    env.rotate(&arn).await.expect("the first rotation succeeds");
    assert_runs(&env, &artifact);
    let (user1, pw1) = login_of(&env, &arn, "AWSCURRENT").await;
    assert_eq!(user1, "app_clone");
    assert_eq!(env.pg.login("app_clone", &pw1).await, Ok(()));
    assert_eq!(env.pg.login("app", OLD).await, Ok(()), "the login applications hold keeps working");

    env.rotate(&arn).await.expect("the second rotation succeeds");
    let (user2, pw2) = login_of(&env, &arn, "AWSCURRENT").await;
    assert_eq!(user2, "app");
    assert_eq!(env.pg.login("app", &pw2).await, Ok(()));
    assert_eq!(env.pg.login("app", OLD).await, Err("28P01".into()), "the original password no longer logs in");
    assert_eq!(env.pg.login("app_clone", &pw1).await, Ok(()), "AWSPREVIOUS still logs in");
    env.assert_no_leaks().await;
}
