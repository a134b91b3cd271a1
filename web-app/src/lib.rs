//! A notes API on PostgreSQL whose database login comes from AWS Secrets Manager and
//! follows rotations live, without failing requests. See `README.md` for the design;
//! `credentials/mod.rs` holds the state machine, `pool/` the connections.
//!
//! Modules are private; this is the crate's face, one path per name. Imports point
//! down: `app` builds everything; `routes` and `migrations` use the `pool`; the `pool`
//! uses the `credentials`; the `credentials` use the `secret_source`.

// Unit tests state their expectations with unwrap; production code may not.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod app;
mod backoff;
mod config;
mod credentials;
mod healthcheck;
mod metrics;
mod migrations;
mod pool;
mod routes;
mod secret_source;
mod shutdown;
mod telemetry;

pub use app::{App, StartupError, connector, migrate, run, secrets_manager_client};
pub use config::{Config, ConfigError, MigrateConfig};
pub use credentials::{
    Active, CheckOutcome, CredentialTarget, Credentials, CredentialsError, Pinned, Recover, Recovered, RefreshPolicy,
    Refusal, Verify, VerifyError, initial_login,
};
pub use healthcheck::run as run_healthcheck;
pub use metrics::{Metrics, PoolGauges};
pub use migrations::SchemaError;
pub use pool::{Acquirer, Connections, Db, DbError, PoolSignals, Work};
pub use routes::{AppState, admin_router, router};
pub use secret_source::{AwsSecretSource, SecretSource, SecretVersion, SourceError, Stage, Stages};
pub use telemetry::init as init_telemetry;
