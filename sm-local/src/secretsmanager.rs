//! The Secrets Manager API (JSON 1.1, `X-Amz-Target: secretsmanager.*`).
//!
//! Every call first meets the fault rules, then is logged (identifiers only)
//! and answered:
//! - RotateSecret and CancelRotateSecret by the endpoint itself
//!   ([`crate::rotation`]);
//! - DescribeSecret and ListSecrets by moto, with the rotation fields
//!   replaced by what the endpoint did;
//! - GetSecretValue by moto, with `VersionStage: AWSCURRENT` added when the
//!   request names neither a stage nor a version (moto's default version can
//!   be stale after a stage move; AWS's default is AWSCURRENT);
//! - PutSecretValue by moto, after refusing a token that already holds a
//!   different value (moto lets a value under AWSPENDING be overwritten;
//!   AWS answers ResourceExistsException, which rotation functions rely on
//!   to notice a concurrent createSecret);
//! - everything else by moto, unchanged.
//!
//! Request and response bodies are never logged: GetSecretValue answers and
//! PutSecretValue requests carry secret values.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Response, Uri, header};
use axum::response::IntoResponse as _;
use serde_json::{Value, json};
use tracing::info;

use crate::app::App;
use crate::aws::{self, AwsError, credential_scope};
use crate::calls::{CallIds, CallRecord};
use crate::faults::Action;
use crate::rotation::StartRequest;
use crate::stages::CURRENT;

/// `POST /`: a Secrets Manager call, or anything else for moto.
pub async fn handle(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok());
    let Some(operation) = target.and_then(|t| t.strip_prefix("secretsmanager.")).map(str::to_owned) else {
        return pass_through(&app, &method, &uri, &headers, body).await;
    };
    let arrived = SystemTime::now();
    let started = Instant::now();
    let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let scope = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(credential_scope);
    let region = scope.map_or(app.config.region.as_str(), |(_, r)| r).to_owned();
    let function = scope.and_then(|(key, _)| app.functions.by_access_key(key)).map(str::to_owned);
    let ids = CallIds::from_input(&input);

    let fault = app.faults().take(&operation, ids.secret_id.as_deref());
    let fault_kind = fault.as_ref().map(Action::kind);
    let call =
        Call { operation: &operation, input: &input, region: &region, method: &method, uri: &uri, headers: &headers };
    let response = match fault {
        Some(Action::Error { code, status, message }) => {
            AwsError::new(status, &code, Action::message(&code, message.as_deref())).into_response()
        }
        Some(Action::Hang { ms }) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            dispatch(&app, &call, body).await
        }
        None => dispatch(&app, &call, body).await,
    };

    let status = response.status().as_u16();
    let error = (status >= 400)
        .then(|| response.headers().get("x-amzn-errortype").and_then(|v| v.to_str().ok()))
        .flatten()
        .map(|code| code.split(':').next().unwrap_or(code).to_owned());
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    info!(
        operation = %operation,
        secret = ids.secret_id.as_deref().unwrap_or("-"),
        function = function.as_deref().unwrap_or("-"),
        status,
        error = error.as_deref().unwrap_or("-"),
        fault = fault_kind.unwrap_or("-"),
        duration_ms,
        "secretsmanager call"
    );
    app.calls.push(CallRecord {
        seq: 0,
        at_ms: arrived.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0)),
        operation,
        function,
        ids,
        status,
        error,
        fault: fault_kind,
        duration_ms,
    });
    response
}

struct Call<'a> {
    operation: &'a str,
    input: &'a Value,
    region: &'a str,
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
}

async fn dispatch(app: &Arc<App>, call: &Call<'_>, body: Bytes) -> Response<Body> {
    let result = match call.operation {
        "RotateSecret" => match StartRequest::from_input(call.input, call.region) {
            Ok(request) => app.rotate_secret(request).await.map(|v| aws::ok(&v)),
            Err(e) => Err(e),
        },
        "CancelRotateSecret" => app.cancel_rotate_secret(call.region, call.input).await.map(|v| aws::ok(&v)),
        "DescribeSecret" => forward_patched(app, call, body, |v| app.rotations.patch_description(v)).await,
        "ListSecrets" => {
            forward_patched(app, call, body, |v| {
                for secret in v.get_mut("SecretList").and_then(Value::as_array_mut).into_iter().flatten() {
                    app.rotations.patch_description(secret);
                }
            })
            .await
        }
        "GetSecretValue" => {
            let body = with_current_stage(call.input).map_or(body, |v| Bytes::from(v.to_string()));
            forward(app, call, body).await
        }
        "PutSecretValue" => match refuse_overwrite(app, call.region, call.input).await {
            Ok(()) => put_current_once(app, call, body).await,
            Err(e) => Err(e),
        },
        _ => forward(app, call, body).await,
    };
    result.unwrap_or_else(axum::response::IntoResponse::into_response)
}

async fn forward(app: &App, call: &Call<'_>, body: Bytes) -> Result<Response<Body>, AwsError> {
    let response = app.upstream.forward(call.method, call.uri, call.headers, body).await?;
    Ok(with_error_code(response).map(Body::from))
}

async fn forward_patched(
    app: &App,
    call: &Call<'_>,
    body: Bytes,
    patch: impl FnOnce(&mut Value),
) -> Result<Response<Body>, AwsError> {
    let response = app.upstream.forward(call.method, call.uri, call.headers, body).await?;
    if !response.status().is_success() {
        return Ok(with_error_code(response).map(Body::from));
    }
    let (parts, body) = response.into_parts();
    let Ok(mut value) = serde_json::from_slice::<Value>(&body) else {
        return Ok(Response::from_parts(parts, Body::from(body)));
    };
    patch(&mut value);
    Ok(Response::from_parts(parts, Body::from(value.to_string())))
}

/// Makes sure an error answer names its code in `x-amzn-ErrorType` (the
/// call log reads it there). Error bodies hold no secret values.
fn with_error_code(mut response: Response<Bytes>) -> Response<Bytes> {
    if response.status().as_u16() >= 400 && !response.headers().contains_key("x-amzn-errortype") {
        let body: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
        if let Some(code) = aws::error_code(response.headers(), &body).and_then(|c| HeaderValue::from_str(&c).ok()) {
            response.headers_mut().insert("x-amzn-errortype", code);
        }
    }
    response
}

/// A GetSecretValue that names neither a version nor a stage reads AWSCURRENT.
fn with_current_stage(input: &Value) -> Option<Value> {
    let named = |key: &str| input.get(key).is_some_and(|v| !v.is_null());
    if !input.is_object() || named("VersionId") || named("VersionStage") {
        return None;
    }
    let mut input = input.clone();
    input["VersionStage"] = json!(CURRENT);
    Some(input)
}

/// PutSecretValue that labels the new version AWSCURRENT (its default): on
/// AWS the old AWSCURRENT becomes AWSPREVIOUS. moto relabels the version it
/// last *created* as current, so once a rotation has moved AWSCURRENT (with
/// UpdateSecretVersionStage) two versions end up AWSCURRENT. The label is
/// taken off the version that held it before, which moto then marks
/// AWSPREVIOUS, as AWS does.
async fn put_current_once(app: &App, call: &Call<'_>, body: Bytes) -> Result<Response<Body>, AwsError> {
    let stages = call.input.get("VersionStages").and_then(Value::as_array);
    let labels_current = stages.is_none_or(|s| s.iter().any(|v| v.as_str() == Some(CURRENT)));
    let secret = call.input.get("SecretId").and_then(Value::as_str).unwrap_or_default();
    let before = if labels_current { current_version(app, call.region, secret).await } else { None };
    let response = forward(app, call, body).await?;
    if !response.status().is_success() {
        return Ok(response);
    }
    let (parts, bytes) = response.into_parts();
    let bytes = axum::body::to_bytes(bytes, usize::MAX).await.unwrap_or_default();
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let new = answer.get("VersionId").and_then(Value::as_str);
    if let (Some(old), Some(new)) = (before, new)
        && old != new
    {
        let described = app.upstream.call(call.region, "DescribeSecret", &json!({"SecretId": secret})).await?;
        let still_current = described
            .pointer(&format!("/VersionIdsToStages/{old}"))
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|v| v.as_str() == Some(CURRENT)));
        if still_current {
            let input = json!({"SecretId": secret, "VersionStage": CURRENT, "RemoveFromVersionId": old});
            app.upstream.call(call.region, "UpdateSecretVersionStage", &input).await?;
        }
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

async fn current_version(app: &App, region: &str, secret: &str) -> Option<String> {
    let described = app.upstream.call(region, "DescribeSecret", &json!({"SecretId": secret})).await.ok()?;
    let versions = described.get("VersionIdsToStages")?.as_object()?;
    versions
        .iter()
        .find(|(_, s)| s.as_array().is_some_and(|s| s.iter().any(|v| v.as_str() == Some(CURRENT))))
        .map(|(id, _)| id.clone())
}

/// PutSecretValue with a token whose version already holds a different
/// value fails, as on AWS. (The same value is an idempotent retry.)
async fn refuse_overwrite(app: &App, region: &str, input: &Value) -> Result<(), AwsError> {
    let text = |key: &str| input.get(key).and_then(Value::as_str);
    let (Some(secret), Some(token)) = (text("SecretId"), text("ClientRequestToken")) else { return Ok(()) };
    let lookup = json!({ "SecretId": secret, "VersionId": token });
    let Ok(existing) = app.upstream.call(region, "GetSecretValue", &lookup).await else {
        return Ok(()); // no such version, or a placeholder without a value
    };
    let same = ["SecretString", "SecretBinary"].iter().all(|k| existing.get(*k) == input.get(*k));
    if same {
        return Ok(());
    }
    let arn = existing.get("ARN").and_then(Value::as_str).unwrap_or(secret);
    Err(AwsError::new(
        400,
        "ResourceExistsException",
        format!(
            "You can't use ClientRequestToken {token} because that value is already in use for a version of secret {arn}."
        ),
    ))
}

/// Anything that is not a Secrets Manager call goes to moto as it came.
/// moto's reset also forgets the endpoint's rotations, faults and calls.
pub async fn pass_through(app: &App, method: &Method, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Response<Body> {
    let reset = method == Method::POST && uri.path() == "/moto-api/reset";
    match app.upstream.forward(method, uri, headers, body).await {
        Ok(response) => {
            if reset && response.status().is_success() {
                app.reset();
            }
            response.map(Body::from)
        }
        Err(e) => e.into_response(),
    }
}

/// The fallback route: every request no other route takes.
pub async fn fallback(
    State(app): State<Arc<App>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    pass_through(&app, &method, &uri, &headers, body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_without_stage_or_version_reads_awscurrent() {
        assert_eq!(
            with_current_stage(&json!({"SecretId": "db"})),
            Some(json!({"SecretId": "db", "VersionStage": CURRENT}))
        );
        assert_eq!(with_current_stage(&json!({"SecretId": "db", "VersionStage": "AWSPREVIOUS"})), None);
        assert_eq!(with_current_stage(&json!({"SecretId": "db", "VersionId": "v"})), None);
        assert_eq!(
            with_current_stage(&json!({"SecretId": "db", "VersionId": null})),
            Some(json!({"SecretId": "db", "VersionId": null, "VersionStage": CURRENT}))
        );
        assert_eq!(with_current_stage(&Value::Null), None);
    }
}
