//! The app on a least-privilege login, set up exactly as web-app/README.md tells a DBA
//! (its SQL block is read from the README and run here), on PostgreSQL 15's default
//! privileges: the runtime login cannot create anything, `web-app migrate` creates the
//! schema as the owner, and the app serves through ten alternating-users rotations,
//! restarted after each one so that it starts under `app` and under `app_clone` in turn.

use std::time::{Duration, Instant};

use e2e::TestEnv;
use e2e::web_app::{APP_USER, DBNAME, FAST_CYCLING, Load, OWNER_USER, WebApp, leaked};
use sqlx::Connection;

const APP_PASSWORD: &str = "App-Passw0rd-least-privilege";
const OWNER_PASSWORD: &str = "Owner-Passw0rd-least-privilege";
const ROTATIONS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dml_only_login_serves_through_alternating_rotations_starting_under_each_user() {
    let mut env = TestEnv::start_alternating().await;
    let deployment = env.first_deployment("least", APP_PASSWORD, OWNER_PASSWORD).await;

    // PostgreSQL 15's default: the app's login may not create anything in `public`.
    let mut as_app = sqlx::PgConnection::connect_with(&env.pg.options(APP_USER, APP_PASSWORD, DBNAME))
        .await
        .expect("the app logs in");
    let err = sqlx::raw_sql("CREATE TABLE probe (i int)").execute(&mut as_app).await.expect_err("no CREATE");
    assert!(err.to_string().contains("permission denied"), "{err}");
    let _ = as_app.close().await;

    env.migrate(&deployment).await;
    let arn = deployment.app_arn.clone();
    let mut started_as = Vec::new();
    let mut served = 0;
    let mut output = String::new();
    let mut bodies = String::new();
    for round in 0..ROTATIONS {
        let app = WebApp::spawn(&WebApp::env(&env, &arn, &env.moto.endpoint(), FAST_CYCLING)).await;
        let whoami = app.whoami_json().await;
        started_as.push(whoami["db_user"].as_str().expect("db_user").to_owned());
        let load = Load::start(&app, 4, Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let token = env.rotate(&arn).await.unwrap_or_else(|f| panic!("rotation {round}: {f:?}"));
        let started = Instant::now();
        while app.whoami().await.1 != token {
            assert!(started.elapsed() < Duration::from_secs(10), "round {round}: the app did not follow the rotation");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let report = load.stop().await;
        assert!(
            report.failures.is_empty(),
            "round {round}: failed requests: {:?}",
            &report.failures[..report.failures.len().min(5)]
        );
        assert!(report.ready_failures.is_empty(), "round {round}: {:?}", report.ready_failures);
        assert!(report.ok > 10, "round {round}: the load ran ({} requests)", report.ok);
        served += report.ok;
        bodies.push_str(&report.bodies);
        let mut app = app;
        assert_eq!(app.terminate().await, Some(0));
        output.push_str(&app.output());
    }
    eprintln!("least privilege: {served} requests over {ROTATIONS} rotations, started as {started_as:?}");
    let alternates: Vec<&str> = (0..ROTATIONS).map(|i| if i % 2 == 0 { APP_USER } else { "app_clone" }).collect();
    assert_eq!(started_as, alternates, "each start logged in as the user AWSCURRENT named");

    // Every object belongs to the owner, whichever user was active; serving ran no DDL.
    let mut su = env.superuser_on_app_db().await;
    let owners: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_userbyid(c.relowner)::text FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' ORDER BY 1",
    )
    .fetch_all(&mut su)
    .await
    .expect("owners");
    assert!(owners.iter().any(|(t, _)| t == "notes"), "{owners:?}");
    assert!(owners.iter().all(|(_, o)| o == OWNER_USER), "{owners:?}");
    let _ = su.close().await;
    let ddl_by_app = env
        .pg
        .server_log()
        .lines()
        .filter(|l| l.contains("app@") || l.contains("app_clone@"))
        .filter(|l| ["CREATE ", "ALTER ", "DROP "].iter().any(|k| l.contains(k)))
        .filter(|l| !l.contains("CREATE TABLE probe")) // this test's own attempt, above
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert_eq!(ddl_by_app, Vec::<String>::new(), "the runtime logins ran DDL");

    let passwords = env.known_passwords().await;
    for (place, text) in [("app logs", &output), ("responses", &bodies)] {
        assert_eq!(leaked(text, &passwords), Vec::<String>::new(), "a password leaked into the {place}");
    }
    env.assert_no_leaks().await;
}
