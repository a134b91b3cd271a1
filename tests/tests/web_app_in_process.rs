//! The app started in process, as a library: `App::build` returns the bound addresses
//! (port 0 picks free ones) and `App::serve` serves until the shutdown future resolves.
//! The secret source is injected: here one that counts calls and can be switched off,
//! wrapped around the real Secrets Manager client (on moto).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use e2e::TestEnv;
use e2e::web_app::{http_client, request};
use serde_json::json;
use web_app::Config;
use web_app::Metrics;
use web_app::{App, connector};
use web_app::{AwsSecretSource, SecretSource, SecretVersion, SourceError, Stage, Stages};

/// The real source, counted, with a switch that makes Secrets Manager unreachable.
#[derive(Debug)]
struct Injected {
    inner: AwsSecretSource,
    calls: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
}

impl Injected {
    fn check(&self, operation: &'static str) -> Result<(), SourceError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(SourceError::Unavailable { operation, detail: "injected outage".into() });
        }
        Ok(())
    }
}

impl SecretSource for Injected {
    async fn describe(&self) -> Result<Stages, SourceError> {
        self.check("DescribeSecret")?;
        self.inner.describe().await
    }
    async fn get(&self, stage: Stage) -> Result<SecretVersion, SourceError> {
        self.check("GetSecretValue")?;
        self.inner.get(stage).await
    }
    async fn get_version(&self, version_id: &str) -> Result<SecretVersion, SourceError> {
        self.check("GetSecretValue")?;
        self.inner.get_version(version_id).await
    }
    fn secret_id(&self) -> &str {
        self.inner.secret_id()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_builds_and_serves_in_process_with_an_injected_secret_source() {
    let mut env = TestEnv::start().await;
    let deployment = env.first_deployment("in-process", "InProcess-Passw0rd", "InProcess-Owner-Passw0rd").await;
    env.migrate(&deployment).await;

    let config = Config::from_vars([
        ("APP_SECRET_ID".to_owned(), deployment.app_arn.clone()),
        ("APP_LISTEN_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ("APP_ADMIN_LISTEN_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ("APP_SECRET_CHECK_INTERVAL".to_owned(), "1s".to_owned()),
        ("APP_SECRET_BACKOFF_MAX".to_owned(), "2s".to_owned()),
    ])
    .expect("config");
    let metrics = Arc::new(Metrics::new());
    let (calls, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let source = Injected {
        inner: AwsSecretSource::new(env.sm.clone(), deployment.app_arn.clone(), metrics.clone()),
        calls: calls.clone(),
        down: down.clone(),
    };
    let ca = env.pg.ca_bundle();
    let connector = connector(config.db_tls, Some(ca.as_path())).expect("connector");
    let app = App::build(&config, source, connector, metrics).await.expect("build");
    let (public, admin) = (app.public_addr(), app.admin_addr());
    assert_ne!(public.port(), 0, "bound before serving");
    assert_ne!(public, admin);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(async move {
        let _ = stopped.await;
    }));

    let http = http_client();
    let created = request(&http, "POST", &format!("http://{public}/notes"), Some(&json!({"body": "in process"})))
        .await
        .expect("POST");
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.json()["id"].as_i64().expect("id");
    let fetched = request(&http, "GET", &format!("http://{public}/notes/{id}"), None).await.expect("GET");
    assert_eq!(fetched.json()["body"], "in process");

    // The injected outage: the app keeps serving and reports failed change checks.
    down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(request(&http, "GET", &format!("http://{public}/ready"), None).await.expect("ready").status, 200);
    let text = request(&http, "GET", &format!("http://{admin}/metrics"), None).await.expect("metrics").body;
    assert!(!text.contains("web_app_secret_change_check_failures 0"), "{text}");
    assert!(calls.load(Ordering::SeqCst) >= 2, "the injected source was used");
    assert_eq!(request(&http, "GET", &format!("http://{public}/metrics"), None).await.expect("404").status, 404);

    stop.send(()).expect("stop");
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("stops").expect("task").expect("serve");
}
