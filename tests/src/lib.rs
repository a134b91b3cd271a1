//! End-to-end test harness: a real PostgreSQL server, moto behind the
//! project's Secrets Manager endpoint (`sm-local`), and the real binaries.
//! [`TestEnv::start`] spawns what a test needs and returns one handle whose
//! methods are named after what tests do.

pub mod env;
pub mod hostile_server;
pub mod http;
pub mod moto;
pub mod postgres;
pub mod process;
pub mod web_app;

pub use crate::env::{
    ALTERNATING, ALTERNATING_USERS, PROVISIONER, SINGLE, SINGLE_TWIN, SINGLE_USER, STEPS, StepFailure, TestEnv,
};
pub use crate::hostile_server::{Ask, HostileServer};
pub use crate::moto::Moto;
pub use crate::postgres::{Postgres, Tls};
pub use sm_local::FunctionError;
