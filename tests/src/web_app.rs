//! The real `web-app` binary for end-to-end tests and the benchmark: set the database up
//! the way the README tells a DBA to (an owner role, a DML-only app login), run
//! `web-app migrate`, spawn the app against this test's PostgreSQL and moto, drive it with
//! concurrent HTTP clients, read its metrics and logs, terminate its database sessions
//! as an administrator or a failover would, and cut it off from Secrets Manager (an
//! outage) without touching moto's state.
//!
//! One file per job: `client` (HTTP), `process` (the binary), `metrics` (`/metrics`
//! parsed), `load` (clients and what they saw), `outage` (Secrets Manager cut off),
//! `logs` (the app's output), `deployment` (the README's database set-up, session kills),
//! `server_log` (the server's record of refused logins).

mod client;
mod deployment;
mod load;
mod logs;
mod metrics;
mod outage;
mod process;
mod server_log;

pub use client::{Answer, Http, http_client, request};
pub use deployment::{APP_USER, DBNAME, Deployment, OWNER_USER, first_deployment_sql};
pub use load::{Load, LoadReport, percentile};
pub use logs::{leaked, switch_line};
pub use metrics::Metrics;
pub use outage::SmProxy;
pub use process::{FAST_CYCLING, WebApp, web_app_path};
