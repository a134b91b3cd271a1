//! Startup and serving: everything `main` needs, built once, in order.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_smithy_http_client::tls;
use tokio::net::TcpListener;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::credentials::{Credentials, CredentialsError, initial_login};
use crate::metrics::Metrics;
use crate::pool::{Db, DbError, PgTarget, PgVerifier, build_pool};
use crate::routes::{AppState, router};
use crate::secret_source::AwsSecretSource;
use crate::{migrations, shutdown};
use db_secret::{Connector, Trust};

/// Why the app refused to start. Each message names the problem and never a credential.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot read APP_DB_CA_BUNDLE {path}: {source}")]
    CaBundle { path: String, source: std::io::Error },
    #[error("APP_DB_CA_BUNDLE {0}")]
    CaBundleContent(db_secret::TrustError),
    #[error("database connections: {0}")]
    Connect(db_secret::DbFailure),
    #[error("no AWS region configured: set AWS_REGION")]
    NoRegion,
    #[error("database secret: {0}")]
    Credentials(#[from] CredentialsError),
    #[error("database migrations: {0}")]
    Migrations(#[from] DbError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("server: {0}")]
    Serve(std::io::Error),
}

/// How long startup keeps retrying a database or Secrets Manager that is not reachable
/// yet (a container may start before its network or its database).
const STARTUP_PATIENCE: Duration = Duration::from_secs(30);

/// Secrets Manager client on the SDK's default credential chain, over rustls + ring (the
/// TLS stack sqlx uses too; the SDK's default would add aws-lc). `AWS_ENDPOINT_URL`
/// points it at an emulator locally.
pub async fn secrets_manager_client() -> Result<aws_sdk_secretsmanager::Client, StartupError> {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(3))
                .operation_timeout(Duration::from_secs(8))
                .build(),
        )
        .load()
        .await;
    if sdk.region().is_none() {
        return Err(StartupError::NoRegion);
    }
    Ok(aws_sdk_secretsmanager::Client::new(&sdk))
}

pub async fn run(config: Config) -> Result<(), StartupError> {
    let metrics = Arc::new(Metrics::new());
    let trust = match &config.db_ca_bundle {
        None => Trust::platform(),
        Some(path) => {
            let shown = path.display().to_string();
            let pem = std::fs::read(path).map_err(|source| StartupError::CaBundle { path: shown.clone(), source })?;
            Trust::with_bundle(&shown, &pem).map_err(StartupError::CaBundleContent)?
        }
    };
    let connector = Connector::new(config.db_tls, trust, "web-app");
    let client = secrets_manager_client().await?;
    let source = AwsSecretSource::new(client, config.secret_id.clone(), metrics.clone());

    // The first login that works; retry only what may fix itself.
    let verifier = PgVerifier { connector: connector.clone() };
    let deadline = tokio::time::Instant::now() + STARTUP_PATIENCE;
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    let (initial, current_seen) = loop {
        match initial_login(&source, &verifier).await {
            Ok(found) => break found,
            Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "startup: not ready yet");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    tracing::info!(secret_id = %config.secret_id, version_id = %initial.version_id, user = %initial.secret.username, "database login verified");

    let pool = build_pool(&config, &initial.secret, &connector)?;
    let target = PgTarget { pool: pool.clone(), connector };
    let credentials =
        Arc::new(Credentials::new(source, target, metrics.clone(), initial, current_seen, config.secret_backoff_max));
    let db = Db::new(pool.clone(), Arc::new(credentials.clone()), metrics.clone());
    let applied = migrations::run(&db).await?;
    tracing::info!(applied, "schema up to date");

    let checker =
        tokio::spawn(credentials.clone().run_change_checks(config.secret_check_interval, config.secret_backoff_max));

    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| StartupError::Bind { addr: config.listen_addr, source })?;
    tracing::info!(addr = %config.listen_addr, "listening");
    let app = router(AppState { db, metrics, request_timeout: config.request_timeout });

    let stopping = Arc::new(tokio::sync::Notify::new());
    let server = axum::serve(listener, app)
        .with_graceful_shutdown({
            let stopping = stopping.clone();
            async move {
                shutdown::signal_received().await;
                stopping.notify_one();
            }
        })
        .into_future();
    let grace = config.shutdown_grace;
    let result = tokio::select! {
        r = server => r.map_err(StartupError::Serve),
        () = async { stopping.notified().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "in-flight requests did not finish in time; exiting anyway");
            Ok(())
        }
    };
    checker.abort();
    pool.close().await;
    tracing::info!("stopped");
    result
}
