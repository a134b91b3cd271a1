//! The router without a socket or a database: liveness, opaque errors, route templates in
//! metrics. (Everything that needs PostgreSQL is in the e2e tests.)

use std::future::Future;
use std::pin::Pin;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use sqlx::postgres::PgPoolOptions;
use tower::ServiceExt;

use super::*;
use crate::credentials::{Active, CredentialsError, Recover};
use db_secret::DbSecret;

const PASSWORD: &str = "never-in-a-response";

#[derive(Debug)]
struct Fixed(Arc<Active>);

impl Recover for Fixed {
    fn generation(&self) -> u64 {
        0
    }
    fn recover(&self, _: u64) -> Pin<Box<dyn Future<Output = Result<(), CredentialsError>> + Send>> {
        Box::pin(async { Err(CredentialsError::BackingOff) })
    }
    fn active(&self) -> Arc<Active> {
        self.0.clone()
    }
}

/// A router whose database is a closed port: every query fails fast.
fn app() -> (Router, Arc<Metrics>) {
    let value = serde_json::json!({
        "engine": "postgres", "host": "127.0.0.1", "port": 1, "username": "app", "password": PASSWORD, "ssl": false
    });
    let secret = DbSecret::parse(&value.to_string()).unwrap();
    let floor = db_secret::TlsFloor::from_setting("APP_DB_TLS", Some("disable")).unwrap();
    let connector = db_secret::Connector::new(floor, db_secret::Trust::platform(), "web-app-test");
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy_with(connector.pool_options(&secret).unwrap());
    let active = Arc::new(Active { version_id: "v1".into(), secret: Arc::new(secret) });
    let metrics = Arc::new(Metrics::new());
    let db = Db::new(pool, Arc::new(Fixed(active)), metrics.clone());
    let state = AppState { db, metrics: metrics.clone(), request_timeout: Duration::from_secs(2) };
    (router(state), metrics)
}

async fn call(app: &Router, method: &str, uri: &str) -> (StatusCode, String) {
    let req = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn liveness_does_not_need_the_database() {
    let (app, _) = app();
    assert_eq!(call(&app, "GET", "/health").await, (StatusCode::OK, r#"{"status":"ok"}"#.to_owned()));
}

#[tokio::test]
async fn database_failures_are_opaque_and_readiness_says_no() {
    let (app, _) = app();
    let (status, body) = call(&app, "GET", "/notes/7").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, r#"{"error":"internal error"}"#, "no database detail leaks to the client");
    let (status, body) = call(&app, "GET", "/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!body.contains(PASSWORD) && !body.contains("127.0.0.1"), "{body}");
}

#[tokio::test]
async fn metrics_label_requests_by_route_template_never_by_raw_path() {
    let (app, _) = app();
    call(&app, "GET", "/notes/123456").await;
    call(&app, "GET", "/no/such/thing").await;
    call(&app, "GET", "/notes?limit=0").await;
    let (status, text) = call(&app, "GET", "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains(r#"web_app_http_requests_total{method="GET",route="/notes/{id}",status="500"} 1"#), "{text}");
    assert!(text.contains(r#"route="unmatched",status="404"} 1"#), "{text}");
    assert!(text.contains(r#"route="/notes",status="400"} 1"#), "{text}");
    assert!(!text.contains("123456") && !text.contains("/no/such"), "raw paths stay out of labels");
    assert!(!text.contains(PASSWORD));
}
