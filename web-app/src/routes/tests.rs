//! The router without a socket or a database: liveness, opaque errors, route templates in
//! metrics. (Everything that needs PostgreSQL is in the e2e tests.)

use std::future::Future;
use std::pin::Pin;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use sqlx::postgres::PgPoolOptions;
use tower::ServiceExt;

use super::*;
use crate::credentials::{Active, Recover};
use crate::pool::PoolSignals;
use db_secret::DbSecret;

const PASSWORD: &str = "never-in-a-response";

#[derive(Debug)]
struct Fixed(Arc<Active>);

impl Recover for Fixed {
    fn generation(&self) -> u64 {
        0
    }
    fn refused(&self, _: u64) -> bool {
        false
    }
    fn report_refused(&self, _: u64) {}
    fn kick(&self, _: u64) {}
    fn changed(&self, _: u64) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(std::future::pending())
    }
    fn active(&self) -> Arc<Active> {
        self.0.clone()
    }
}

/// The public and admin routers over a database on a closed port: every query fails fast.
fn app() -> (Router, Router) {
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
    let signals = Arc::new(PoolSignals::default());
    let db = Db::new(pool, signals, Arc::new(Fixed(active)), metrics.clone(), Duration::from_millis(300));
    let state = AppState { db, metrics, request_timeout: Duration::from_secs(2) };
    (router(state.clone()), admin_router(state))
}

async fn call(app: &Router, method: &str, uri: &str) -> (StatusCode, String) {
    let (status, _, body) = call_with(app, Request::builder().method(method).uri(uri)).await;
    (status, body)
}

async fn call_with(app: &Router, req: axum::http::request::Builder) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
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
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "no connection within the acquire timeout");
    assert_eq!(body, r#"{"error":"service unavailable"}"#, "no database detail leaks to the client");
    let (status, body) = call(&app, "GET", "/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!body.contains(PASSWORD) && !body.contains("127.0.0.1"), "{body}");
}

#[tokio::test]
async fn metrics_label_requests_by_route_template_never_by_raw_path_or_method() {
    let (app, admin) = app();
    call(&app, "GET", "/notes/123456").await;
    call(&app, "GET", "/no/such/thing").await;
    call(&app, "GET", "/notes?limit=0").await;
    call(&app, "BREW", "/notes").await;
    call(&app, "FOOBAR", "/health").await;
    let (status, text) = call(&admin, "GET", "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains(r#"web_app_http_requests_total{method="GET",route="/notes/{id}",status="503"} 1"#), "{text}");
    assert!(text.contains(r#"route="unmatched",status="404"} 1"#), "{text}");
    assert!(text.contains(r#"route="/notes",status="400"} 1"#), "{text}");
    assert!(text.contains(r#"web_app_http_requests_total{method="other",route="/notes",status="405"} 1"#), "{text}");
    assert!(text.contains(r#"web_app_http_requests_total{method="other",route="/health",status="405"} 1"#), "{text}");
    assert!(text.contains("web_app_http_request_duration_seconds_bucket"), "latency histogram by route");
    assert!(text.contains("web_app_db_acquire_duration_seconds_bucket"), "connection wait histogram");
    assert!(!text.contains("123456") && !text.contains("/no/such"), "raw paths stay out of labels");
    assert!(!text.contains("BREW") && !text.contains("FOOBAR"), "client-chosen methods stay out of labels");
    assert!(!text.contains(PASSWORD));
}

#[tokio::test]
async fn metrics_and_whoami_are_only_on_the_admin_router() {
    let (app, admin) = app();
    assert_eq!(call(&app, "GET", "/metrics").await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(&app, "GET", "/whoami").await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(&admin, "GET", "/metrics").await.0, StatusCode::OK);
    assert_eq!(call(&admin, "GET", "/notes").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_safe_client_id_is_kept() {
    let (app, _) = app();
    let (_, headers, _) = call_with(&app, Request::builder().uri("/health")).await;
    let generated = headers["x-request-id"].to_str().unwrap();
    assert_eq!(generated.len(), 32);
    let (_, headers, _) =
        call_with(&app, Request::builder().uri("/health").header("x-request-id", "lb-1234.abc")).await;
    assert_eq!(headers["x-request-id"], "lb-1234.abc");
    let unsafe_id = "x".repeat(65);
    let (_, headers, _) = call_with(&app, Request::builder().uri("/health").header("x-request-id", &unsafe_id)).await;
    assert_ne!(headers["x-request-id"], unsafe_id.as_str(), "too long: replaced");
    let (_, headers, _) = call_with(&app, Request::builder().uri("/health").header("x-request-id", "a\"b")).await;
    assert_eq!(headers["x-request-id"].len(), 32, "quotes: replaced");
}
