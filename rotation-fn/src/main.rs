//! The Lambda entry point: read configuration, build clients once, serve.

// The runtime's service stack and the SDK's config loader nest deeply.
#![recursion_limit = "256"]

use aws_smithy_http_client::{Builder, tls};
use lambda_runtime::{LambdaEvent, service_fn};
use std::sync::Arc;

use rotation_fn::{Anchors, AwsSecrets, Config, ConfigError, DbConfig, Deadline, Provisioner, Rotator};
use serde_json::Value;
use tracing_subscriber::EnvFilter;

/// Lambda sets `_HANDLER` from the function's `handler` setting: `provision`
/// makes this binary the deployment's database provisioner; anything else
/// (the CDK app sets `bootstrap`) rotates.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let provisioning = std::env::var("_HANDLER").is_ok_and(|h| h == "provision");
    let invalid = |e: &ConfigError| tracing::error!(error = %e, "invalid configuration");
    // One TLS stack for everything: rustls with ring, as db-secret uses.
    let http = Builder::new().tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring)).build_https();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http).load().await;
    let api = Arc::new(AwsSecrets::new(aws_sdk_secretsmanager::Client::new(&sdk)));
    if provisioning {
        let db = warn_if_plaintext(DbConfig::from_env().map_err(ConfigError::from).inspect_err(invalid)?);
        let provisioner = &Provisioner::new(api, db, Anchors::from_env());
        return lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
            provisioner.handle(&event.payload, Deadline::from_epoch_millis(event.context.deadline)).await
        }))
        .await;
    }
    let mut config = Config::from_env().inspect_err(invalid)?;
    config.db = warn_if_plaintext(config.db);
    let rotator = &Rotator::new(api, config);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        rotator.handle(&event.payload, Deadline::from_epoch_millis(event.context.deadline)).await
    }))
    .await
}

fn warn_if_plaintext(db: DbConfig) -> DbConfig {
    if db.tls.disables_tls() {
        tracing::warn!("DB_TLS=disable: connecting to databases without TLS (local development only)");
    }
    db
}

/// JSON logs on stdout (CloudWatch). Dependencies that can print request or
/// statement bodies at debug/trace are capped whatever RUST_LOG says: the
/// runtime traces the raw event, sqlx statements carry verifiers, and a
/// server's notices are its own text (it could echo a secret back).
fn init_logging() {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for directive in [
        "lambda_runtime=info",
        "lambda_runtime_api_client=info",
        "sqlx=warn",
        "sqlx::postgres::notice=off",
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
