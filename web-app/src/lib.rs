//! A notes API on PostgreSQL whose database login comes from AWS Secrets Manager and
//! follows rotations live, without failing requests. See `README.md` for the design;
//! `credentials.rs` holds the state machine.

// Unit tests state their expectations with unwrap; production code may not.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod app;
pub mod backoff;
pub mod config;
pub mod credentials;
pub mod healthcheck;
pub mod metrics;
pub mod migrations;
pub mod pool;
pub mod routes;
pub mod secret_source;
pub mod shutdown;
pub mod telemetry;
