//! moto, behind the endpoint: requests passed through unchanged, and the
//! endpoint's own Secrets Manager calls while it runs a rotation.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::aws::{AwsError, JSON_1_1};

/// Headers that belong to one hop, never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
];

#[derive(Debug, Clone)]
pub struct Upstream {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Upstream {
    pub fn new(base: &str) -> Self {
        Self { base: base.trim_end_matches('/').to_owned(), client: Client::builder(TokioExecutor::new()).build_http() }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request to moto as it came (path, query, headers, body) and
    /// returns moto's answer with its body read.
    pub async fn forward(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response<Bytes>, AwsError> {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let target: Uri = format!("{}{path}", self.base).parse().map_err(|_| AwsError::internal("bad upstream URI"))?;
        let mut request = Request::builder().method(method.clone()).uri(target);
        for (name, value) in headers {
            if !HOP_BY_HOP.contains(&name.as_str()) {
                request = request.header(name, value);
            }
        }
        let request = request.body(Full::new(body)).map_err(|e| AwsError::internal(e.to_string()))?;
        let response = self.client.request(request).await.map_err(|e| self.unreachable(&e))?;
        let (mut parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| self.unreachable(&e))?.to_bytes();
        for name in HOP_BY_HOP {
            parts.headers.remove(*name);
        }
        Ok(Response::from_parts(parts, body))
    }

    /// One Secrets Manager call of the endpoint's own, in `region`.
    /// moto reads the region (and nothing else) from the credential scope.
    pub async fn call(&self, region: &str, operation: &str, input: &Value) -> Result<Value, AwsError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_1_1));
        let target = HeaderValue::from_str(&format!("secretsmanager.{operation}"))
            .map_err(|_| AwsError::internal("bad operation name"))?;
        headers.insert(HeaderName::from_static("x-amz-target"), target);
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential=sm-local/20250101/{region}/secretsmanager/aws4_request, \
             SignedHeaders=host, Signature=0"
        );
        if let Ok(value) = HeaderValue::from_str(&authorization) {
            headers.insert(header::AUTHORIZATION, value);
        }
        let uri = Uri::from_static("/");
        let response = self.forward(&Method::POST, &uri, &headers, Bytes::from(input.to_string())).await?;
        let status = response.status();
        if status == StatusCode::OK {
            return serde_json::from_slice(response.body())
                .map_err(|_| AwsError::internal(format!("moto answered {operation} with something other than JSON")));
        }
        Err(AwsError::from_answer(status.as_u16(), response.headers(), response.body()))
    }

    fn unreachable(&self, error: &dyn std::fmt::Display) -> AwsError {
        AwsError::new(503, "ServiceUnavailable", format!("sm-local cannot reach moto at {}: {error}", self.base))
    }
}
