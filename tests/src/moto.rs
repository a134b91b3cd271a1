//! moto's server as Secrets Manager, one per test, on a free loopback port,
//! in its own process group (see [`crate::process`]).

use std::process::Stdio;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::retry::RetryConfig;
use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use tokio::process::{Child, Command};

use crate::postgres::{HOST, free_port};

pub const REGION: &str = "us-east-1";

#[derive(Debug)]
pub struct Moto {
    port: u16,
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Moto {
    pub async fn start() -> Moto {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(crate::process::tool("moto_server"))
            .args(["-H", HOST, "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log"))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("moto_server (bash tests/scripts/install-deps.sh installs it into tests/.venv)");
        let moto = Moto { port, child, log };
        let started = Instant::now();
        while tokio::net::TcpStream::connect((HOST, port)).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "moto did not start: {}", moto.log());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://{HOST}:{}", self.port)
    }

    /// The environment that points an AWS SDK at this emulator.
    pub fn sdk_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// A client talking to moto directly (tests talk to the endpoint in front of it).
    pub fn client(&self) -> Client {
        client(&self.endpoint(), RetryConfig::standard())
    }

    /// Turns IAM enforcement on: every call without an allowing policy is denied.
    pub async fn enforce_iam(&self) {
        let out = Command::new("curl")
            .args([
                "-sf",
                "-X",
                "POST",
                "-H",
                "Content-Type: text/plain",
                "--data-binary",
                "0",
                &format!("{}/moto-api/reset-auth", self.endpoint()),
            ])
            .output()
            .await
            .expect("curl");
        assert!(out.status.success(), "reset-auth failed");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// The temporary file moto logs to (removed when this is dropped).
    pub fn log_path(&self) -> &std::path::Path {
        self.log.path()
    }

    /// The server's process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the server and waits until it is gone.
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// A Secrets Manager client for `endpoint` with dummy credentials.
pub fn client(endpoint: &str, retry: RetryConfig) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "e2e"))
        .retry_config(retry)
        .http_client(http)
        .build();
    Client::from_conf(config)
}
