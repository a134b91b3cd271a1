//! The HTTP client tests talk to the app with: keep-alive, as a load balancer holds.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A keep-alive HTTP/1.1 client, as a load balancer or a browser would hold.
pub type Http = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> Http {
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build_http()
}

/// One HTTP answer: status and body text.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// `GET` or `POST` (with a JSON body) to `url`; `Err` is a transport failure.
pub async fn request(http: &Http, method: &str, url: &str, body: Option<&Value>) -> Result<Answer, String> {
    let mut req = hyper::Request::builder().method(method).uri(url);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let payload = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let req = req.body(Full::new(payload)).map_err(|e| e.to_string())?;
    let resp = http.request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Answer { status, body: String::from_utf8_lossy(&bytes).into_owned() })
}
