//! A plain HTTP request, for the endpoint's control and Lambda APIs.

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;

/// A plain HTTP request: status, headers, body.
pub async fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> (u16, hyper::HeaderMap, Bytes) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let mut request = hyper::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body.to_owned()))).expect("request");
    let response = client.request(request).await.expect("HTTP request");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (parts.status.as_u16(), parts.headers, body)
}
