//! The fault campaign: the function killed at every fault point of both
//! strategies, Secrets Manager errors on every call the function makes,
//! PostgreSQL stopped in the middle of setSecret and testSecret. After every
//! fault, and again after the retry:
//!
//! - **nobody is locked out**: the user AWSCURRENT names logs in with
//!   AWSCURRENT's password (or, between setSecret and finishSecret, with
//!   AWSPENDING's), and every user a labelled version names logs in with one
//!   of the passwords the labelled versions hold for it: the database never
//!   holds a password no version holds;
//! - the rotation **converges** when Secrets Manager retries it with the
//!   same token;
//! - during the crash campaign, the web app under load (set up as a
//!   deployment is: first-deployment SQL, `web-app migrate`) **serves every
//!   request**.
//!
//! The crash points are enumerated from the code (the `fault-points`
//! feature: each Secrets Manager call and database statement passes one), by
//! counting them in a clean rotation. CI runs a sample (every point of the
//! single-user rotation, every other one of the alternating rotation, one
//! kind of error on each call in turn, one hang past the deadline);
//! `FAULT_CAMPAIGN=full` runs all of it:
//!
//! ```sh
//! cargo build --workspace --bins
//! FAULT_CAMPAIGN=full cargo nextest run -p e2e --test faults --no-capture
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::web_app::{FAST_CYCLING, Load, WebApp};
use e2e::{ALTERNATING, ALTERNATING_USERS, SINGLE, STEPS, TestEnv};
use serde_json::{Value, json};
use sm_local::{Action, FaultSpec};

const OLD: &str = "Initial-Passw0rd-for-app";
/// Lambda's timeout in the campaign: short, so a hang past the deadline is cheap.
const TIMEOUT: Duration = Duration::from_secs(4);

fn full() -> bool {
    std::env::var("FAULT_CAMPAIGN").is_ok_and(|v| v == "full")
}

/// What the campaign saw, printed at the end of each test.
#[derive(Debug, Default)]
struct Tally {
    faults: usize,
    rotations: usize,
    lockouts: Vec<String>,
    /// Requests the web app answered, and those that failed.
    requests: u64,
    failed_requests: Vec<String>,
}

impl Tally {
    fn report(&self, what: &str) {
        #[allow(clippy::print_stdout)]
        {
            println!(
                "fault campaign, {what}: {} faults injected, {} rotations run, {} lockouts, {} requests served, {} failed",
                self.faults,
                self.rotations,
                self.lockouts.len(),
                self.requests,
                self.failed_requests.len()
            );
        }
        assert!(self.lockouts.is_empty(), "lockouts: {:#?}", self.lockouts);
        let failed = &self.failed_requests;
        assert!(failed.is_empty(), "{} failed requests, first: {:?}", failed.len(), &failed[..failed.len().min(5)]);
    }
}

struct Subject {
    secret: String,
    function: &'static str,
}

async fn subject(env: &mut TestEnv, strategy: &str, name: &str) -> Subject {
    if strategy == ALTERNATING_USERS {
        let superuser = env.pg.superuser_password().to_owned();
        let master = env.create_secret(&format!("{name}-master"), &env.secret_json("postgres", &superuser)).await;
        env.pg.set_password("app", OLD).await;
        let mut value = env.secret_json("app", OLD);
        value["masterarn"] = json!(master);
        Subject { secret: env.create_secret(name, &value).await, function: ALTERNATING }
    } else {
        Subject { secret: env.create_user_and_secret(name, "app", OLD).await, function: SINGLE }
    }
}

/// The invariant; `Err` describes a lockout.
async fn invariant(env: &TestEnv, secret: &str) -> Result<(), String> {
    let mut labelled: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut by_stage = BTreeMap::new();
    for (id, stages) in env.stages(secret).await {
        if stages.is_empty() {
            continue;
        }
        let Some(value) = env.version_value(secret, &id).await else { continue }; // a placeholder
        let (user, password) = (value["username"].as_str().unwrap_or_default(), value["password"].as_str());
        let password = password.unwrap_or_default().to_owned();
        for stage in &stages {
            by_stage.insert(stage.clone(), (user.to_owned(), password.clone()));
        }
        labelled.entry(user.to_owned()).or_default().push((stages.join("+"), password));
    }
    let (current_user, current_password) = by_stage.get("AWSCURRENT").cloned().ok_or("no AWSCURRENT value")?;
    let mut current_ok = env.pg.login(&current_user, &current_password).await.is_ok();
    if let Some((user, password)) = by_stage.get("AWSPENDING")
        && *user == current_user
    {
        current_ok |= env.pg.login(user, password).await.is_ok();
    }
    if !current_ok {
        return Err(format!("{current_user:?} logs in with neither AWSCURRENT's nor AWSPENDING's password"));
    }
    for (user, passwords) in &labelled {
        let mut any = false;
        for (_, password) in passwords {
            any |= env.pg.login(user, password).await.is_ok();
        }
        if !any {
            let stages: Vec<_> = passwords.iter().map(|(s, _)| s.as_str()).collect();
            return Err(format!("{user:?} holds a password none of its labelled versions ({stages:?}) holds"));
        }
    }
    Ok(())
}

async fn check(env: &TestEnv, secret: &str, when: String, tally: &mut Tally) {
    if let Err(lockout) = invariant(env, secret).await {
        tally.lockouts.push(format!("{when}: {lockout}"));
    }
}

/// Retries rotation `token` (as Secrets Manager does, with the same token)
/// until it succeeds; it must within three tries.
async fn converge(env: &mut TestEnv, subject: &Subject, token: &str, when: &str, tally: &mut Tally) {
    let mut last = None;
    for _ in 0..3 {
        tally.rotations += 1;
        match env.resume(&subject.secret, token).await {
            Ok(()) => {
                assert_eq!(env.version_with(&subject.secret, "AWSCURRENT").await.as_deref(), Some(token), "{when}");
                check(env, &subject.secret, format!("{when}, after the retry"), tally).await;
                return;
            }
            Err(failure) => last = Some(failure),
        }
    }
    panic!("{when}: the rotation did not converge: {last:?}");
}

/// The fault points a cold process passes in one clean rotation, in order:
/// (number, name, step).
async fn fault_points(env: &mut TestEnv, subject: &Subject) -> Vec<(u64, String, String)> {
    env.restart_function(&[]).await;
    let token = env.rotate_secret(&subject.secret, subject.function).await;
    assert!(env.wait(&token).await.error.is_none(), "a clean rotation");
    let output = env.endpoint.function_output(subject.function).unwrap_or_default();
    // Every step begins with the guard's DescribeSecret: that is where one
    // step's points end and the next one's begin.
    let mut steps = 0;
    let points: Vec<_> = output
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "fault point")
        .map(|v| {
            let n = v["fields"]["fault_point"].as_u64().unwrap_or_default();
            let name = v["fields"]["name"].as_str().unwrap_or_default().to_owned();
            if name == "DescribeSecret" {
                steps += 1;
            }
            (n, name, STEPS[(steps - 1).min(3)].to_owned())
        })
        .collect();
    assert!(points.len() >= 8, "the fault points of a rotation: {points:?}");
    points
}

async fn crash_at_every_point(strategy: &'static str, stride: usize) {
    let mut env = TestEnv::start_full(e2e::Tls::On, strategy).await;
    // The app's own secret, as a deployment has it, rotated under load.
    let deployment = env.first_deployment("crash", OLD, "Owner-Passw0rd-for-crash").await;
    env.migrate(&deployment).await;
    let function = if strategy == ALTERNATING_USERS { ALTERNATING } else { SINGLE };
    let subject = Subject { secret: deployment.app_arn.clone(), function };
    // Reads Secrets Manager from moto itself: the endpoint in front of it is
    // restarted for every crash point, moto is not.
    let app = WebApp::spawn(&WebApp::env(&env, &subject.secret, &env.moto.endpoint(), FAST_CYCLING)).await;
    let load = Load::start(&app, 8, Duration::from_millis(50));
    let points = fault_points(&mut env, &subject).await;
    let once_dir = tempfile::tempdir().expect("temp dir");
    let mut tally = Tally::default();
    for (n, name, step) in points.iter().step_by(stride) {
        let once = once_dir.path().join(format!("crash-{n}"));
        let (at, once_path) = (n.to_string(), once.display().to_string());
        env.restart_function(&[("ROTATION_FN_FAULT_AT", at.as_str()), ("ROTATION_FN_FAULT_ONCE", once_path.as_str())])
            .await;
        let when = format!("{strategy}: killed after fault point {n} ({name} in {step})");
        let token = env.rotate_secret(&subject.secret, subject.function).await;
        let record = env.wait(&token).await;
        tally.rotations += 1;
        assert!(once.exists(), "{when}: the point was reached");
        let error = record.error.unwrap_or_else(|| panic!("{when}: the rotation did not notice the crash"));
        assert_eq!(error.error_type, "Runtime.ExitError", "{when}: {}", error.error_message);
        tally.faults += 1;
        check(&env, &subject.secret, when.clone(), &mut tally).await;
        converge(&mut env, &subject, &token, &when, &mut tally).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.stop().await;
    tally.requests = report.ok;
    tally.failed_requests = report.failures.into_iter().chain(report.ready_failures).collect();
    assert!(report.ok > 100, "the load ran: {} requests", report.ok);
    for password in env.known_passwords().await {
        assert!(!app.output().contains(&password), "a password leaked into the app's log");
    }
    env.assert_no_leaks().await;
    tally.report(&format!("{strategy}, {} of {} crash points", points.len().div_ceil(stride), points.len()));
}

#[tokio::test]
async fn single_user_survives_a_crash_at_every_point() {
    crash_at_every_point(e2e::SINGLE_USER, 1).await;
}

#[tokio::test]
async fn alternating_users_survive_a_crash_at_every_point() {
    crash_at_every_point(ALTERNATING_USERS, if full() { 1 } else { 2 }).await;
}

/// Errors and hangs at the endpoint, on each Secrets Manager call the function
/// makes in a rotation (found in the endpoint's call log of a clean one).
#[tokio::test]
async fn secrets_manager_errors_on_every_call_heal_on_retry() {
    let mut env = TestEnv::start().await;
    env.set_timeout(TIMEOUT).await;
    let subject = subject(&mut env, e2e::SINGLE_USER, "sm-errors").await;
    env.endpoint.clear_calls();
    let token = env.rotate_secret(&subject.secret, subject.function).await;
    assert!(env.wait(&token).await.error.is_none());
    let calls: Vec<String> = env.function_calls(subject.function).into_iter().map(|c| c.operation).collect();
    assert!(calls.len() >= 7, "{calls:?}");

    let error = |code: &str, status| Action::Error { code: code.into(), status, message: None };
    let mut tally = Tally::default();
    for (i, operation) in calls.iter().enumerate() {
        let nth = calls[..i].iter().filter(|c| *c == operation).count() as u32;
        // Three in a row: the SDK's standard retries give up, the step fails.
        let mut faults = vec![
            ("throttled", error("ThrottlingException", 400), 3),
            ("500", error("InternalServiceError", 500), 3),
            ("503", error("ServiceUnavailable", 503), 3),
        ];
        let hang = ("hung past the deadline", Action::Hang { ms: TIMEOUT.as_millis() as u64 + 500 }, 1);
        if full() {
            faults.push(hang);
        } else {
            // The sample: one kind of error per call, in turn; one hang.
            faults = vec![faults.swap_remove(i % 3)];
            if i == 0 {
                faults.push(hang);
            }
        }
        for (what, action, times) in faults {
            env.restart_function(&[]).await; // cold: the same calls in the same order
            let spec = FaultSpec {
                operation: operation.clone(),
                secret: Some(subject.secret.clone()),
                action,
                times,
                skip: nth,
            };
            env.endpoint.add_fault(spec).expect("fault rule");
            let when = format!("{operation} #{} {what}", nth + 1);
            let token = env.rotate_secret(&subject.secret, subject.function).await;
            let record = env.wait(&token).await;
            tally.rotations += 1;
            tally.faults += 1;
            env.endpoint.clear_faults();
            check(&env, &subject.secret, when.clone(), &mut tally).await;
            if record.error.is_some() {
                converge(&mut env, &subject, &token, &when, &mut tally).await;
            }
        }
    }
    env.assert_no_leaks().await;
    tally.report(&format!("Secrets Manager errors on {} calls", calls.len()));
}

/// PostgreSQL stops between a step's login and its next statement (the
/// function pauses at that fault point while the test stops the server), and
/// starts again before Secrets Manager's retry.
#[tokio::test]
async fn postgres_stopped_during_set_secret_and_test_secret() {
    let mut tally = Tally::default();
    for strategy in [e2e::SINGLE_USER, ALTERNATING_USERS] {
        let mut env = TestEnv::start_full(e2e::Tls::On, strategy).await;
        let subject = subject(&mut env, strategy, "pg-stop").await;
        let points = fault_points(&mut env, &subject).await;
        let once_dir = tempfile::tempdir().expect("temp dir");
        for step in ["setSecret", "testSecret"] {
            let (n, _, _) = points.iter().find(|(_, name, s)| s == step && name == "login").expect("a login");
            let once = once_dir.path().join(format!("pause-{n}"));
            let (at, once_path) = (n.to_string(), once.display().to_string());
            env.restart_function(&[
                ("ROTATION_FN_FAULT_AT", at.as_str()),
                ("ROTATION_FN_FAULT_ONCE", once_path.as_str()),
                ("ROTATION_FN_FAULT_ACTION", "pause:1500"),
            ])
            .await;
            let when = format!("{strategy}: PostgreSQL stopped during {step}");
            let token = env.rotate_secret(&subject.secret, subject.function).await;
            while !once.exists() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            env.pg.stop().await;
            let record = env.wait(&token).await;
            tally.faults += 1;
            tally.rotations += 1;
            let error = record.error.unwrap_or_else(|| panic!("{when}: the step cannot have succeeded"));
            assert_eq!(error.step, step, "{when}");
            assert!(error.error_message.contains("transient"), "{when}: {}", error.error_message);
            env.pg.start_again().await;
            check(&env, &subject.secret, when.clone(), &mut tally).await;
            converge(&mut env, &subject, &token, &when, &mut tally).await;
        }
        env.assert_no_leaks().await;
    }
    tally.report("PostgreSQL stopped mid-step");
}

/// An operator cancels a rotation after setSecret (CancelRotateSecret, which
/// the next step's guard honours) and
/// removes its AWSPENDING label: the next rotation finds the password the
/// database has among the unlabelled versions, and nobody is locked out.
#[tokio::test]
async fn a_rotation_cancelled_after_set_secret_is_recovered_by_the_next() {
    let mut env = TestEnv::start().await;
    let subject = subject(&mut env, e2e::SINGLE_USER, "cancelled").await;
    // Hold the rotation inside testSecret's first call, cancel it there.
    let hold = FaultSpec {
        operation: "DescribeSecret".into(),
        secret: Some(subject.secret.clone()),
        action: Action::Hang { ms: 1500 },
        times: 1,
        skip: 2,
    };
    let fault = env.endpoint.add_fault(hold).expect("fault");
    let token = env.rotate_secret(&subject.secret, subject.function).await;
    env.wait_fault_used(fault).await;
    env.sm.cancel_rotate_secret().secret_id(&subject.secret).send().await.expect("CancelRotateSecret");
    // The held call then finds rotation turned off: testSecret stops there.
    let record = env.wait(&token).await;
    let error = record.error.expect("stopped");
    assert_eq!((error.step.as_str(), error.error_type.as_str()), ("testSecret", "RotationDisabled"));
    env.drop_pending(&subject.secret, &token).await;
    let in_database = env.version_value(&subject.secret, &token).await.expect("the abandoned value");
    assert_eq!(env.pg.login("app", in_database["password"].as_str().expect("pw")).await, Ok(()));

    let next = env.rotate(&subject.secret).await.expect("the next rotation recovers");
    assert_eq!(env.version_with(&subject.secret, "AWSCURRENT").await, Some(next));
    invariant(&env, &subject.secret).await.expect("nobody locked out");
    env.assert_no_leaks().await;
}
