//! A throwaway PostgreSQL 15 cluster: scram-sha-256 over TCP, TLS with a CA
//! made for it, and `log_statement=all`, so a test can read every statement
//! the server received.
//!
//! `initdb` refuses to run as root, so the cluster's files belong to the
//! `postgres` OS user and the server runs through `setpriv` (which execs in
//! place, so signalling the child signals the server).
//!
//! The server and the tools that set it up run in a process group of their
//! own (see [`crate::process`]). Dropping a [`Postgres`] that still runs stops
//! the server as [`Postgres::stop`] does, before its directory (the CA key,
//! the superuser's password file, the statement log) is removed: a server
//! killed outright leaves its backends writing into a directory being deleted.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{ConnectOptions, Connection};
use tokio::process::{Child, Command};

/// The server's binaries: Debian's PostgreSQL 15, or `E2E_PG_BIN` (a
/// directory with `initdb` and `postgres`) to run the same tests against
/// another major version.
fn bin() -> String {
    std::env::var("E2E_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".to_owned())
}
pub const HOST: &str = "127.0.0.1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    On,
    Off,
}

#[derive(Debug)]
pub struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    tls: Tls,
    child: Child,
    superuser_password: String,
}

impl Postgres {
    pub async fn start(tls: Tls) -> Postgres {
        let dir = tempfile::Builder::new().prefix("pg-e2e-").tempdir().expect("temp dir");
        let superuser_password = format!("su-{}", uuid::Uuid::new_v4().simple());
        std::fs::write(dir.path().join("pwfile"), &superuser_password).expect("pwfile");
        if tls == Tls::On {
            make_certificates(dir.path()).await;
        }
        run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path())).await;
        run(as_postgres(&format!("{}/initdb", bin()))
            .args(["-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8"])
            .args(["--locale=C.UTF-8", "--no-sync", "--pwfile"])
            .arg(dir.path().join("pwfile"))
            .arg("-D")
            .arg(dir.path().join("data")))
        .await;

        let port = free_port();
        let child = spawn_server(dir.path(), port, tls);
        let pg = Postgres { dir, port, tls, child, superuser_password };
        pg.wait_ready().await;
        pg
    }

    /// Starts the server again after [`Self::stop`], on the same port and
    /// data (a restart, a failover's return).
    pub async fn start_again(&mut self) {
        self.child = spawn_server(self.dir.path(), self.port, self.tls);
        self.wait_ready().await;
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process (the postmaster), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The cluster's temporary directory: data, certificates and keys, the
    /// superuser's password file, the server log. Removed when this is dropped.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The PEM file of the CA that signed the server's certificate.
    pub fn ca_bundle(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub fn superuser_password(&self) -> &str {
        &self.superuser_password
    }

    /// Every line the server logged, statements included.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn options(&self, user: &str, password: &str, dbname: &str) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .host(HOST)
            .port(self.port)
            .username(user)
            .password(password)
            .database(dbname)
            .ssl_mode(PgSslMode::Prefer)
            .disable_statement_logging()
    }

    /// Tries to log in; `Err` carries the SQLSTATE (or the error text).
    pub async fn login(&self, user: &str, password: &str) -> Result<(), String> {
        match PgConnection::connect_with(&self.options(user, password, "postgres")).await {
            Ok(conn) => {
                let _ = conn.close().await;
                Ok(())
            }
            Err(sqlx::Error::Database(e)) => Err(e.code().map(|c| c.into_owned()).unwrap_or_default()),
            Err(e) => Err(e.to_string()),
        }
    }

    pub async fn superuser(&self) -> PgConnection {
        PgConnection::connect_with(&self.options("postgres", &self.superuser_password, "postgres"))
            .await
            .expect("superuser login")
    }

    /// Runs statements as the superuser (test setup only; test passwords set
    /// here do appear in the statement log, so setup uses `set_password`).
    pub async fn exec(&self, sql: &str) {
        let mut conn = self.superuser().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut conn).await.expect(sql);
        let _ = conn.close().await;
    }

    /// Creates or updates a login role whose password the server only ever
    /// sees as a SCRAM verifier, so the statement log stays clean.
    pub async fn set_password(&self, role: &str, password: &str) {
        let verifier =
            rotation_fn::scram::verifier(&password.to_owned().into(), rotation_fn::scram::DEFAULT_ITERATIONS);
        let ident = rotation_fn::sql::quote_ident(role);
        let mut conn = self.superuser().await;
        let exists: bool = sqlx::query_scalar(rotation_fn::sql::ROLE_EXISTS)
            .bind(role)
            .fetch_one(&mut conn)
            .await
            .expect("role lookup");
        if !exists {
            let create = format!("CREATE ROLE {ident} WITH LOGIN");
            sqlx::raw_sql(sqlx::AssertSqlSafe(create)).execute(&mut conn).await.expect("create role");
        }
        let sql = rotation_fn::sql::set_password(role, &verifier);
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.expect("set password");
        let _ = conn.close().await;
    }

    pub async fn role_exists(&self, role: &str) -> bool {
        let mut conn = self.superuser().await;
        sqlx::query_scalar(rotation_fn::sql::ROLE_EXISTS).bind(role).fetch_one(&mut conn).await.expect("role lookup")
    }

    /// The server's major version (15, 17, …), for tests of what changed between them.
    /// Whether this server is older than `major`; if so, says on stderr that
    /// the calling test is skipped (CI runs those tests again on 17).
    pub async fn older_than(&self, major: u32) -> bool {
        let older = self.major_version().await < major;
        if older {
            eprintln!("skipped: needs PostgreSQL {major} or later (E2E_PG_BIN=$(bash tests/scripts/postgres-17.sh))");
        }
        older
    }

    pub async fn major_version(&self) -> u32 {
        let mut conn = self.superuser().await;
        let num: String = sqlx::query_scalar("SHOW server_version_num").fetch_one(&mut conn).await.expect("version");
        num.parse::<u32>().expect("server_version_num") / 10_000
    }

    /// Roles `role` is a direct member of.
    pub async fn memberships(&self, role: &str) -> Vec<String> {
        let mut conn = self.superuser().await;
        sqlx::query_scalar(rotation_fn::sql::MEMBERSHIPS).bind(role).fetch_all(&mut conn).await.expect("memberships")
    }

    /// Stops the server as `pg_ctl stop -m fast` does (SIGINT: sessions are
    /// terminated, the server exits cleanly), or kills it if it lingers.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill").args(["-INT", &pid.to_string()]).status().await;
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }

    async fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            if self.login("postgres", &self.superuser_password).await.is_ok() {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "postgres did not start: {}", self.server_log());
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}

impl Drop for Postgres {
    /// A server still running is stopped as `pg_ctl stop -m fast` does and
    /// waited for (at most 10 s, then killed), synchronously: the directory
    /// is removed right after this returns.
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status();
        }
        let started = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) {
            if started.elapsed() > Duration::from_secs(10) {
                let _ = self.child.start_kill();
            }
            if started.elapsed() > Duration::from_secs(12) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The server with this harness's settings: TLS (when on), every statement
/// and connection logged, appended to `server.log`.
fn spawn_server(dir: &Path, port: u16, tls: Tls) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("server.log")).expect("log file");
    let mut server = as_postgres(&format!("{}/postgres", bin()));
    server
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-c", &format!("port={port}"), "-c", &format!("listen_addresses={HOST}")])
        .args(["-c", &format!("unix_socket_directories={}", dir.display())])
        .args(["-c", "fsync=off", "-c", "log_statement=all", "-c", "log_connections=on"])
        // Every statement's server-side duration, for the rotation benchmark's floor.
        .args(["-c", "log_duration=on"])
        .args(["-c", "log_line_prefix=%m [%p] %u@%d "]);
    if tls == Tls::On {
        server.args(["-c", "ssl=on"]);
        server.args(["-c", &format!("ssl_cert_file={}", dir.join("server.crt").display())]);
        server.args(["-c", &format!("ssl_key_file={}", dir.join("server.key").display())]);
    }
    server.stdout(Stdio::null()).stderr(log).process_group(0).kill_on_drop(true).spawn().expect("start postgres")
}

fn as_postgres(program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--", program]);
    cmd
}

/// Runs a set-up tool (initdb, openssl, chown) to its end, in its own process group.
async fn run(cmd: &mut Command) {
    let out = cmd.process_group(0).output().await.expect("spawn");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA and a server certificate for 127.0.0.1, made with the openssl CLI.
async fn make_certificates(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(Command::new("openssl")
        .current_dir(dir)
        .args(["req", "-x509", "-days", "2", "-subj", "/CN=e2e test CA", "-keyout", "ca.key", "-out", "ca.crt"])
        .args(ec)
        .args(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]))
    .await;
    run(Command::new("openssl")
        .current_dir(dir)
        .args(["req", "-new", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr"])
        .args(ec))
    .await;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext file");
    run(Command::new("openssl").current_dir(dir).args([
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-extfile",
        "server.ext",
    ]))
    .await;
    run(Command::new("chmod").args(["600"]).arg(dir.join("server.key"))).await;
}

/// A port nobody listens on right now (the OS picks it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind((HOST, 0)).and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}
