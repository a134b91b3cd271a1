//! Connections with `TCP_NODELAY`, which sqlx 0.9.0 no longer sets.
//!
//! Without it, Nagle's algorithm holds the client's second small write of the
//! TLS handshake until the server's delayed ACK: two 40 ms stalls per login
//! (sqlx#4335, fixed upstream and not yet released). A TLS login measured
//! 96 ms instead of 6 ms. Until a release carries the fix, this module opens
//! the TCP connection itself, sets `TCP_NODELAY`, and hands sqlx a private Unix
//! socket spliced onto it. sqlx still does everything else, TLS included
//! (`verify-full` against the secret's host name): the splice only ever
//! carries ciphertext. Delete this module when sqlx sets `TCP_NODELAY` again.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::net::{TcpStream, UnixListener};

/// Connects like `PgConnection::connect_with(options)`, over a TCP connection
/// to `host:port` that has `TCP_NODELAY` set.
pub async fn connect(options: &PgConnectOptions, host: &str, port: u16) -> Result<PgConnection, sqlx::Error> {
    let mut tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    let dir = PrivateDir::create()?;
    // sqlx looks for `<dir>/.s.PGSQL.<port>`, as libpq does.
    let listener = UnixListener::bind(dir.path().join(format!(".s.PGSQL.{port}")))?;
    let spliced = options.clone().socket(dir.path());
    let connecting = PgConnection::connect_with(&spliced);
    tokio::pin!(connecting);
    let mut unix = tokio::select! {
        accepted = listener.accept() => accepted?.0,
        // sqlx gave up before reaching the socket: its error is the answer.
        early = &mut connecting => return early,
    };
    drop((listener, dir)); // nobody else can connect, and nothing is left in /tmp
    // Ends when either side closes; dropping `connecting` (a deadline) closes ours.
    tokio::spawn(async move {
        let _ = tokio::io::copy_bidirectional(&mut unix, &mut tcp).await;
    });
    connecting.await
}

/// A directory only this process's user can enter, removed on drop.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn create() -> io::Result<Self> {
        let name = format!("rotation-fn-{:016x}", rand::random::<u64>());
        let path = std::env::temp_dir().join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
