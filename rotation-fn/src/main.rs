//! The Lambda entry point: read configuration, build clients once, serve.

// The runtime's service stack and the SDK's config loader nest deeply.
#![recursion_limit = "256"]

use aws_smithy_http_client::{Builder, tls};
use lambda_runtime::{LambdaEvent, service_fn};
use std::sync::Arc;

use rotation_fn::Rotator;
use rotation_fn::aws::AwsSecrets;
use rotation_fn::config::Config;
use rotation_fn::deadline::Deadline;
use serde_json::Value;
use tracing_subscriber::EnvFilter;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let config = Config::from_env().inspect_err(|e| tracing::error!(error = %e, "invalid configuration"))?;
    if config.tls.disables_tls() {
        tracing::warn!("DB_TLS=disable: connecting to databases without TLS (local development only)");
    }
    // One TLS stack for everything: rustls with ring, as sqlx uses.
    let http = Builder::new().tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring)).build_https();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http).load().await;
    let api = Arc::new(AwsSecrets::new(aws_sdk_secretsmanager::Client::new(&sdk)));
    let rotator = Rotator::new(api, config);
    let rotator = &rotator;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = Deadline::from_epoch_millis(event.context.deadline);
        rotator.handle(&event.payload, deadline).await
    }))
    .await
}

/// JSON logs on stdout (CloudWatch). Dependencies that can print request or
/// statement bodies at debug/trace are capped whatever RUST_LOG says: the
/// runtime traces the raw event, sqlx statements carry verifiers.
fn init_logging() {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for directive in [
        "lambda_runtime=info",
        "lambda_runtime_api_client=info",
        "sqlx=warn",
        "aws_smithy_runtime=info",
        "hyper=info",
        "rustls=info",
    ] {
        if let Ok(d) = directive.parse() {
            filter = filter.add_directive(d);
        }
    }
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .init();
}
