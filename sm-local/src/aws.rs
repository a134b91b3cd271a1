//! The AWS JSON 1.1 protocol, as much of it as the endpoint speaks itself:
//! typed errors, successful answers, and who signed a request.
//!
//! An error is an HTTP status, a code and a message. SDKs read the code from
//! the `x-amzn-ErrorType` header or the body's `__type`; both are sent.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub const JSON_1_1: &str = "application/x-amz-json-1.1";

/// An error answer. Its message is public: it names secrets and versions,
/// never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AwsError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl AwsError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self { status, code: code.to_owned(), message: message.into() }
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidRequestException", message)
    }

    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidParameterException", message)
    }

    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::new(400, "AccessDeniedException", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalServiceError", message)
    }

    /// Reads an error answer (from moto, or anything speaking the protocol).
    pub fn from_answer(status: u16, headers: &HeaderMap, body: &[u8]) -> Self {
        let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let code = error_code(headers, &parsed).unwrap_or_else(|| format!("HTTP {status}"));
        let message = ["message", "Message"]
            .iter()
            .find_map(|k| parsed.get(*k).and_then(Value::as_str))
            .unwrap_or_default()
            .to_owned();
        Self { status, code, message }
    }
}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({ "__type": self.code, "message": self.message }).to_string();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_1_1));
        if let Ok(code) = HeaderValue::from_str(&self.code) {
            headers.insert("x-amzn-errortype", code);
        }
        add_request_id(headers);
        response
    }
}

/// A successful JSON 1.1 answer.
pub fn ok(value: &Value) -> Response {
    let mut response = (StatusCode::OK, value.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_1_1));
    add_request_id(response.headers_mut());
    response
}

pub fn add_request_id(headers: &mut HeaderMap) {
    if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert("x-amzn-requestid", id);
    }
}

/// The error code of an answer: the header, else the body's `__type`
/// (which may carry a `namespace#` prefix), else `code`.
pub fn error_code(headers: &HeaderMap, body: &Value) -> Option<String> {
    let from_header = headers.get("x-amzn-errortype").and_then(|v| v.to_str().ok());
    let from_body = body.get("__type").or_else(|| body.get("code")).and_then(Value::as_str);
    let raw = from_header.or(from_body)?;
    // `x-amzn-errortype` may also carry `:http://…` after the code.
    let code = raw.rsplit('#').next().unwrap_or(raw).split(':').next().unwrap_or(raw);
    (!code.is_empty()).then(|| code.to_owned())
}

/// The access key id and region of a SigV4 `Authorization` header:
/// `AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/secretsmanager/aws4_request, …`.
pub fn credential_scope(authorization: &str) -> Option<(&str, &str)> {
    let credential = authorization.split("Credential=").nth(1)?;
    let credential = credential.split([',', ' ']).next()?;
    let mut parts = credential.split('/');
    let key = parts.next().filter(|k| !k.is_empty())?;
    let _date = parts.next()?;
    let region = parts.next().filter(|r| !r.is_empty())?;
    Some((key, region))
}

/// The region of an ARN (`arn:aws:secretsmanager:REGION:…`).
pub fn arn_region(arn: &str) -> Option<&str> {
    arn.strip_prefix("arn:").and_then(|rest| rest.split(':').nth(2)).filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_scope_of_a_sigv4_header() {
        let header = "AWS4-HMAC-SHA256 Credential=testing/20250101/eu-west-1/secretsmanager/aws4_request, \
                      SignedHeaders=host;x-amz-date, Signature=abc";
        assert_eq!(credential_scope(header), Some(("testing", "eu-west-1")));
        assert_eq!(credential_scope("Bearer x"), None);
        assert_eq!(credential_scope("AWS4-HMAC-SHA256 Credential=/2025/"), None);
    }

    #[test]
    fn error_codes_from_header_or_body() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            error_code(&headers, &json!({"__type": "ResourceNotFoundException"})).as_deref(),
            Some("ResourceNotFoundException")
        );
        assert_eq!(
            error_code(&headers, &json!({"__type": "com.amazonaws.secretsmanager#InvalidRequestException"})).as_deref(),
            Some("InvalidRequestException")
        );
        headers.insert("x-amzn-errortype", HeaderValue::from_static("ThrottlingException:http://internal"));
        assert_eq!(error_code(&headers, &Value::Null).as_deref(), Some("ThrottlingException"));
        assert_eq!(error_code(&HeaderMap::new(), &Value::Null), None);
    }

    #[test]
    fn region_of_an_arn() {
        assert_eq!(arn_region("arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf"), Some("us-east-1"));
        assert_eq!(arn_region("db"), None);
    }
}
