//! Startup and serving: everything `main` needs, built once, in order.
//!
//! [`App::build`] does the work that can fail (first login, pool, schema check, binding
//! both listeners) and returns the bound addresses; [`App::serve`] then serves until the
//! shutdown future resolves. The secret source is a parameter, so tests can start the app
//! in process against moto or a fake, as well as run the binary.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_smithy_http_client::tls;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::config::{Config, MigrateConfig};
use crate::credentials::{Credentials, CredentialsError, Pinned, RefreshPolicy, initial_login};
use crate::metrics::Metrics;
use crate::migrations::{self, SchemaError};
use crate::pool::{Db, PgTarget, PgVerifier, build_pool};
use crate::routes::{AppState, admin_router, router};
use crate::secret_source::{AwsSecretSource, SecretSource, Stage};
use crate::shutdown;
use db_secret::{Connector, DbFailure, TlsFloor, Trust};

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
    #[error("schema: {0}")]
    Schema(#[from] SchemaError),
    #[error("the owner's secret: {0}")]
    EndpointNotAllowed(db_secret::EndpointRefused),
    #[error("migrating as {user}: {source}")]
    Migrate { user: String, source: DbFailure },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
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

/// The connection policy from `APP_DB_TLS` and `APP_DB_CA_BUNDLE`.
pub fn connector(floor: TlsFloor, ca_bundle: Option<&std::path::Path>) -> Result<Connector, StartupError> {
    let trust = match ca_bundle {
        None => Trust::platform(),
        Some(path) => {
            let shown = path.display().to_string();
            let pem = std::fs::read(path).map_err(|source| StartupError::CaBundle { path: shown.clone(), source })?;
            Trust::with_bundle(&shown, &pem).map_err(StartupError::CaBundleContent)?
        }
    };
    Ok(Connector::new(floor, trust, "web-app"))
}

/// `web-app`: build, then serve until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> Result<(), StartupError> {
    let metrics = Arc::new(Metrics::new());
    let connector = connector(config.db_tls, config.db_ca_bundle.as_deref())?;
    let client = secrets_manager_client().await?;
    let source = AwsSecretSource::new(client, config.secret_id.clone(), metrics.clone());
    let app = App::build(&config, source, connector, metrics).await?;
    app.serve(shutdown::signal_received()).await
}

/// `web-app migrate`: applies the schema as the owner (AWSCURRENT of `APP_OWNER_SECRET_ID`)
/// and exits. Retries a database or Secrets Manager that is not reachable yet.
pub async fn migrate(config: MigrateConfig) -> Result<(), StartupError> {
    let metrics = Arc::new(Metrics::new());
    let connector = connector(config.db_tls, config.db_ca_bundle.as_deref())?;
    let client = secrets_manager_client().await?;
    let source = AwsSecretSource::new(client, config.owner_secret_id.clone(), metrics);
    let deadline = tokio::time::Instant::now() + STARTUP_PATIENCE;
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        let attempt = async {
            let owner = source.get(Stage::Current).await.map_err(CredentialsError::from)?;
            let user = owner.secret.username.clone();
            if let Some(pin) = &config.db_endpoints {
                pin.check(&owner.secret).map_err(StartupError::EndpointNotAllowed)?;
            }
            let migrate_error = |source| StartupError::Migrate { user: user.clone(), source };
            let mut conn = connector.connect(&owner.secret, |o| o).await.map_err(migrate_error)?;
            let applied = migrations::apply(&mut conn).await.map_err(|e| migrate_error(DbFailure::classify(&e)))?;
            let _ = sqlx::Connection::close(conn).await;
            tracing::info!(secret_id = %config.owner_secret_id, version_id = %owner.version_id, %user, applied, version = migrations::REQUIRED_VERSION, "schema up to date");
            Ok::<_, StartupError>(())
        };
        let transient = match attempt.await {
            Ok(()) => return Ok(()),
            Err(StartupError::Credentials(e)) if e.is_transient() => StartupError::Credentials(e),
            Err(StartupError::Migrate { user, source }) if source.is_transient() => {
                StartupError::Migrate { user, source }
            }
            Err(e) => return Err(e),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(transient);
        }
        let delay = backoff.next_delay();
        tracing::warn!(error = %transient, retry_in_ms = delay.as_millis() as u64, "migrate: not ready yet");
        tokio::time::sleep(delay).await;
    }
}

/// A built app: logged in, schema checked, both listeners bound, not serving yet.
#[derive(Debug)]
pub struct App {
    public: TcpListener,
    admin: TcpListener,
    state: AppState,
    checker: JoinHandle<()>,
    warm: JoinHandle<()>,
    shutdown_grace: Duration,
}

impl App {
    /// Logs in (AWSCURRENT, else the fallbacks), builds the pool, waits for the schema,
    /// starts the change checks and binds both listeners (port 0 picks a free one).
    pub async fn build<S>(
        config: &Config,
        source: S,
        connector: Connector,
        metrics: Arc<Metrics>,
    ) -> Result<App, StartupError>
    where
        S: SecretSource + std::fmt::Debug,
    {
        // The first login that works; retry only what may fix itself.
        let verifier =
            Pinned::new(config.db_endpoints.clone(), PgVerifier { connector: connector.clone() }, metrics.clone());
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
        // Logged like every later switch ("switched…", `to`), so a fleet's
        // per-instance credential version is known from the first line on.
        tracing::info!(secret_id = %source.secret_id(), to = %initial.version_id, user = %initial.secret.username, "switched to its first database login, verified");

        let (pool, signals) = build_pool(config, &initial.secret, &connector).map_err(StartupError::Connect)?;
        let target = Pinned::new(
            config.db_endpoints.clone(),
            PgTarget { pool: pool.clone(), connector, signals: signals.clone() },
            metrics.clone(),
        );
        let credentials = Arc::new(Credentials::new(
            source,
            target,
            metrics.clone(),
            initial,
            current_seen,
            RefreshPolicy::new(config.secret_backoff_max),
        ));
        let db = Db::new(pool, signals, Arc::new(credentials.clone()), metrics.clone(), config.pool_acquire_timeout);
        let version = migrations::wait_for_schema(&db, config.schema_wait).await?;
        tracing::info!(version, "schema version checked");

        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr).await.map_err(|source| StartupError::Bind { addr, source })
        };
        let public = bind(config.listen_addr).await?;
        let admin = bind(config.admin_listen_addr).await?;
        let checker =
            tokio::spawn(credentials.run_change_checks(config.secret_check_interval, config.secret_backoff_max));
        let warm = tokio::spawn(db.clone().keep_warm(config.pool_min_connections));
        let state = AppState { db, metrics, request_timeout: config.request_timeout };
        Ok(App { public, admin, state, checker, warm, shutdown_grace: config.shutdown_grace })
    }

    /// Where the public API listens (health, readiness, notes).
    pub fn public_addr(&self) -> SocketAddr {
        self.public.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Where `/metrics` and `/whoami` are served.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves both listeners until `shutdown` resolves, then lets in-flight requests
    /// finish (at most `APP_SHUTDOWN_GRACE`) and closes the pool.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartupError> {
        let App { public, admin, state, checker, warm, shutdown_grace } = self;
        tracing::info!(public = %public.local_addr().map_err(StartupError::Serve)?, admin = %admin.local_addr().map_err(StartupError::Serve)?, "listening");
        let pool = state.db.pool().clone();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let public =
            axum::serve(public, router(state.clone())).with_graceful_shutdown(stopped(stop_rx.clone())).into_future();
        let admin = axum::serve(admin, admin_router(state)).with_graceful_shutdown(stopped(stop_rx)).into_future();
        let result = tokio::select! {
            r = async { tokio::try_join!(public, admin) } => r.map(|_| ()).map_err(StartupError::Serve),
            () = async {
                shutdown.await;
                let _ = stop_tx.send(true);
                tokio::time::sleep(shutdown_grace).await;
            } => {
                tracing::warn!(grace_ms = shutdown_grace.as_millis() as u64, "in-flight requests did not finish in time; exiting anyway");
                Ok(())
            }
        };
        checker.abort();
        warm.abort();
        pool.close().await;
        tracing::info!("stopped");
        result
    }
}
