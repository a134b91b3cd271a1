//! Opening PostgreSQL sessions with a secret's credentials.
//!
//! sqlx 0.9.0 neither sets `TCP_NODELAY` (sqlx#4335: Nagle's algorithm and the
//! server's delayed ACK add two 40 ms stalls to every TLS login) nor lets a
//! caller bring its own socket, and its rustls setup re-reads the platform's
//! certificate store on every connection. So this module makes the connection
//! itself: TCP with `TCP_NODELAY`, PostgreSQL's `SSLRequest`, and the TLS
//! handshake (chain and host name verified against [`Trust`], whose client
//! configuration is built once per process and resumes sessions). sqlx then
//! speaks the protocol — startup, SCRAM, queries — over a Unix socket in a
//! directory only this process's user can enter, relayed onto that TLS stream
//! by the login guard ([`crate::guard`]), which refuses to let sqlx answer a
//! server that asks for a cleartext password or an MD5 hash.
//!
//! Two ways in:
//! - [`Connector::connect`]: one session; the TCP/TLS part happens first, so a
//!   failure is reported precisely (unreachable, TLS refused, bad certificate).
//! - [`Connector::pool_options`]: options for an sqlx pool. The pool connects
//!   to a listener this module keeps per server; each accepted connection is
//!   dialled the same way. A dial failure is logged here and the pool sees a
//!   closed connection.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::pki_types::ServerName;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener};
use tokio::task::JoinHandle;

use crate::error::DbFailure;
use crate::secret::DbSecret;
use crate::tls::{PlaintextRefused, TlsFloor, TlsMode, Trust};

/// PostgreSQL's SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
/// How long a pool's connection may take to reach the server and finish TLS.
const POOL_DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a session goes and how: the server and the TLS mode the floor chose.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
}

/// Opens sessions; holds configuration and trust roots, never credentials.
#[derive(Debug, Clone)]
pub struct Connector {
    floor: TlsFloor,
    trust: Trust,
    application_name: &'static str,
    endpoints: Arc<Mutex<HashMap<Target, Arc<Endpoint>>>>,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl Connector {
    pub fn new(floor: TlsFloor, trust: Trust, application_name: &'static str) -> Self {
        Self { floor, trust, application_name, endpoints: Arc::default() }
    }

    pub fn floor(&self) -> &TlsFloor {
        &self.floor
    }

    /// Where sessions for `secret` go, with the TLS mode the floor allows.
    pub fn target(&self, secret: &DbSecret) -> Result<Target, PlaintextRefused> {
        let tls = self.floor.mode_for(secret)?;
        Ok(Target { host: secret.host.clone(), port: secret.port, tls })
    }

    /// The login part of the options: user, password, database. Transport
    /// options are this module's business.
    fn login_options(&self, secret: &DbSecret, target: &Target, socket_dir: &Path) -> PgConnectOptions {
        PgConnectOptions::new_without_pgpass()
            .host(&target.host)
            .port(target.port)
            .socket(socket_dir)
            // TLS is already done (or refused by policy) on the other side of the socket.
            .ssl_mode(PgSslMode::Disable)
            .username(&secret.username)
            .password(secrecy::ExposeSecret::expose_secret(secret.password()))
            .database(&secret.dbname)
            .application_name(self.application_name)
    }

    /// Opens one session as `secret`'s user. `configure` adds options (a
    /// statement timeout, statement logging). Errors are classified, so a
    /// caller can tell "wrong password" from "unreachable" from "bad certificate".
    pub async fn connect(
        &self,
        secret: &DbSecret,
        configure: impl FnOnce(PgConnectOptions) -> PgConnectOptions,
    ) -> Result<PgConnection, DbFailure> {
        let target = self.target(secret).map_err(|e| DbFailure::Tls(e.to_string()))?;
        let server = dial(&target, &self.trust).await?;
        let dir = PrivateDir::create().map_err(|e| DbFailure::Other(format!("private socket directory: {e}")))?;
        let listener = UnixListener::bind(dir.socket_path(target.port))
            .map_err(|e| DbFailure::Other(format!("private socket: {e}")))?;
        let options = configure(self.login_options(secret, &target, dir.path()));
        let connecting = PgConnection::connect_with(&options);
        tokio::pin!(connecting);
        let client = tokio::select! {
            accepted = listener.accept() => accepted.map_err(|e| DbFailure::Other(format!("private socket: {e}")))?.0,
            // sqlx gave up before reaching the socket: its error is the answer.
            early = &mut connecting => return early.map_err(|e| DbFailure::classify(&e)),
        };
        drop((listener, dir)); // nobody else can connect, and nothing is left on disk
        // Ends when either side closes; dropping `connecting` (a deadline) closes ours.
        tokio::spawn(crate::guard::relay(client, server));
        connecting.await.map_err(|e| DbFailure::classify(&e))
    }

    /// When the server's certificate chain stops verifying because a
    /// certificate in it expires (the earliest `notAfter` of the chain the
    /// server presents, as [`Trust::chain_expiry`] finds it), after a TLS
    /// handshake verified exactly as a login's is. `None` when the floor
    /// lets this secret connect in plain text. No login is attempted: the
    /// connection is closed after the handshake.
    pub async fn certificate_expiry(&self, secret: &DbSecret) -> Result<Option<SystemTime>, DbFailure> {
        let target = self.target(secret).map_err(|e| DbFailure::Tls(e.to_string()))?;
        let tcp = tcp(&target).await?;
        if target.tls == TlsMode::Plaintext {
            return Ok(None);
        }
        let mut tls = handshake(tcp, &target, &self.trust).await?;
        let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
        let name = ServerName::try_from(target.host.clone())
            .map_err(|_| DbFailure::Tls(format!("{:?} is not a valid TLS server name", target.host)))?;
        let expiry = self.trust.chain_expiry(chain, &name).map_err(|e| DbFailure::Tls(e.to_string()));
        // close_notify, then the socket: the server sees a client that left
        // before its startup packet, which it does not log.
        let _ = tokio::time::timeout(Duration::from_millis(200), tls.shutdown()).await;
        expiry.map(Some)
    }

    /// Options an sqlx pool connects with as `secret`'s user: through this
    /// connector's endpoint for the secret's server (started on first use),
    /// so pooled sessions get `TCP_NODELAY` and the shared TLS configuration.
    pub fn pool_options(&self, secret: &DbSecret) -> Result<PgConnectOptions, DbFailure> {
        let target = self.target(secret).map_err(|e| DbFailure::Tls(e.to_string()))?;
        let endpoint = self.endpoint(&target)?;
        Ok(self.login_options(secret, &target, endpoint.dir.path()))
    }

    fn endpoint(&self, target: &Target) -> Result<Arc<Endpoint>, DbFailure> {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(endpoint) = endpoints.get(target) {
            return Ok(endpoint.clone());
        }
        let endpoint = Arc::new(Endpoint::start(target.clone(), self.trust.clone()).map_err(|e| {
            DbFailure::Other(format!(
                "cannot create a private socket directory in {} ({e}); a read-only container needs a \
                 writable temporary directory, e.g. `docker run --tmpfs /tmp`",
                std::env::temp_dir().display()
            ))
        })?);
        endpoints.insert(target.clone(), endpoint.clone());
        Ok(endpoint)
    }
}

/// TCP with `TCP_NODELAY`, then TLS when the target wants it.
async fn dial(target: &Target, trust: &Trust) -> Result<Box<dyn Stream>, DbFailure> {
    let tcp = tcp(target).await?;
    if target.tls == TlsMode::Plaintext {
        return Ok(Box::new(tcp));
    }
    Ok(Box::new(handshake(tcp, target, trust).await?))
}

async fn tcp(target: &Target) -> Result<TcpStream, DbFailure> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port)).await.map_err(|e| DbFailure::from_io(&e))?;
    tcp.set_nodelay(true).map_err(|e| DbFailure::from_io(&e))?;
    Ok(tcp)
}

/// PostgreSQL's SSLRequest, then the TLS handshake, chain and name verified.
async fn handshake(
    mut tcp: TcpStream,
    target: &Target,
    trust: &Trust,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, DbFailure> {
    tcp.write_all(&SSL_REQUEST).await.map_err(|e| DbFailure::from_io(&e))?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(|e| DbFailure::from_io(&e))?;
    match answer[0] {
        b'S' => {}
        b'N' => return Err(DbFailure::Tls("the server does not accept TLS connections".into())),
        other => return Err(DbFailure::Other(format!("unexpected answer {other:#04x} to the SSLRequest"))),
    }
    let name = ServerName::try_from(target.host.clone())
        .map_err(|_| DbFailure::Tls(format!("{:?} is not a valid TLS server name", target.host)))?;
    let connector = tokio_rustls::TlsConnector::from(trust.client_config());
    let tls = connector.connect(name, tcp).await.map_err(|e| match DbFailure::from_io(&e) {
        // A server that hangs up mid-handshake: say where it happened.
        DbFailure::Unreachable(detail) => DbFailure::Unreachable(format!("during the TLS handshake: {detail}")),
        other => other,
    })?;
    Ok(tls)
}

/// A pool's way in: a Unix listener whose connections are dialled to one
/// server. Stops (and removes its directory) when the connector goes.
#[derive(Debug)]
struct Endpoint {
    dir: PrivateDir,
    task: JoinHandle<()>,
}

impl Endpoint {
    fn start(target: Target, trust: Trust) -> io::Result<Self> {
        let dir = PrivateDir::create()?;
        let listener = UnixListener::bind(dir.socket_path(target.port))?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                let (target, trust) = (target.clone(), trust.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(POOL_DIAL_TIMEOUT, dial(&target, &trust)).await {
                        Ok(Ok(server)) => crate::guard::relay(client, server).await,
                        Ok(Err(failure)) => {
                            tracing::warn!(host = %target.host, port = target.port, error = %failure, "pool connection failed");
                        }
                        Err(_) => tracing::warn!(
                            host = %target.host,
                            port = target.port,
                            timeout_ms = POOL_DIAL_TIMEOUT.as_millis() as u64,
                            "pool connection: no answer from the server"
                        ),
                    }
                });
            }
        });
        Ok(Self { dir, task })
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A directory only this process's user can enter, removed on drop.
#[derive(Debug)]
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn create() -> io::Result<Self> {
        let name = format!("pg-{}-{:016x}", std::process::id(), rand::random::<u64>());
        let path = std::env::temp_dir().join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// sqlx looks for `<dir>/.s.PGSQL.<port>`, as libpq does.
    fn socket_path(&self, port: u16) -> PathBuf {
        self.0.join(format!(".s.PGSQL.{port}"))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(port: u16, ssl: bool) -> DbSecret {
        let text = format!(
            r#"{{"engine":"postgres","host":"127.0.0.1","port":{port},"username":"u","password":"p","ssl":{ssl}}}"#
        );
        DbSecret::parse(&text).expect("valid")
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_a_refused_plaintext_names_the_setting() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let connector = Connector::new(TlsFloor::verify_full("DB_TLS"), Trust::platform(), "test");
        let err = connector.connect(&secret(port, true), |o| o).await.expect_err("closed");
        assert!(matches!(err, DbFailure::Unreachable(_)), "{err:?}");
        let err = connector.connect(&secret(port, false), |o| o).await.expect_err("policy");
        assert!(matches!(&err, DbFailure::Tls(t) if t.contains("DB_TLS=allow-plaintext")), "{err:?}");
    }

    #[tokio::test]
    async fn a_server_that_refuses_tls_is_a_tls_failure() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 8];
            s.read_exact(&mut request).await.expect("request");
            assert_eq!(request, SSL_REQUEST);
            s.write_all(b"N").await.expect("answer");
        });
        let connector = Connector::new(TlsFloor::verify_full("DB_TLS"), Trust::platform(), "test");
        let err = connector.connect(&secret(port, true), |o| o).await.expect_err("no TLS");
        assert_eq!(err, DbFailure::Tls("the server does not accept TLS connections".into()));
    }

    #[tokio::test]
    async fn pool_endpoints_are_shared_per_server_and_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let connector = Connector::new(TlsFloor::verify_full("DB_TLS"), Trust::platform(), "test");
        let a = connector.pool_options(&secret(5432, true)).expect("endpoint");
        let b = connector.pool_options(&secret(5432, true)).expect("endpoint");
        assert_eq!(a.get_socket(), b.get_socket());
        let dir = a.get_socket().expect("socket dir").to_owned();
        let mode = std::fs::metadata(&dir).expect("dir").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_ne!(connector.pool_options(&secret(5433, true)).expect("other").get_socket(), Some(&dir));
        drop(connector);
        assert!(!dir.exists(), "the directory goes with the connector");
    }
}
