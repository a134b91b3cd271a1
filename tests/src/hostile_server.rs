//! A PostgreSQL-protocol server that lies: it holds the real server's
//! certificate (as an impostor who stole it would) and asks for whatever
//! authentication a test chooses, then records every byte a client sends.
//! Tests point secrets at it to prove what the function and the web app
//! refuse to hand over.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the server asks a client for after its startup message.
#[derive(Debug, Clone)]
pub enum Ask {
    /// `AuthenticationCleartextPassword`.
    Cleartext,
    /// `AuthenticationMD5Password` with a salt.
    Md5,
    /// SCRAM-SHA-256 with this iteration count in its first message.
    ScramIterations(u64),
    /// No authentication: a FATAL error whose message carries `text` (a
    /// server that learned a secret and sends it back).
    Error(String),
}

/// One connection as the server saw it.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// `user` from the startup message.
    pub user: String,
    /// Every byte the client sent after its startup message.
    pub answer: Vec<u8>,
}

#[derive(Debug)]
pub struct HostileServer {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl HostileServer {
    /// Listens on 127.0.0.1 with TLS from `cert_dir` (`server.crt`,
    /// `server.key`: the throwaway cluster's, so its CA vouches for it).
    pub async fn start(cert_dir: &Path, ask: Ask) -> HostileServer {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_dir.join("server.crt"))
            .expect("server.crt")
            .collect::<Result<_, _>>()
            .expect("certificates");
        let key = PrivateKeyDer::from_pem_file(cert_dir.join("server.key")).expect("server.key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else { continue };
                let (acceptor, ask, record) = (acceptor.clone(), ask.clone(), record.clone());
                tokio::spawn(async move {
                    let mut first = [0u8; 8];
                    if tcp.read_exact(&mut first).await.is_err() {
                        return;
                    }
                    if first == [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f] {
                        if tcp.write_all(b"S").await.is_err() {
                            return;
                        }
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            serve(tls, None, &ask, &record).await;
                        }
                    } else {
                        serve(tcp, Some(first), &ask, &record).await;
                    }
                });
            }
        });
        HostileServer { port, seen, task }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every connection so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// Whether any byte any client sent contains `secret`.
    pub fn received(&self, secret: &str) -> bool {
        self.seen().iter().any(|s| s.answer.windows(secret.len()).any(|w| w == secret.as_bytes()))
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    already: Option<[u8; 8]>,
    ask: &Ask,
    record: &Mutex<Vec<Seen>>,
) {
    // The startup message: length, protocol, then key/value pairs.
    let mut head = [0u8; 8];
    match already {
        Some(first) => head = first,
        None => {
            if stream.read_exact(&mut head).await.is_err() {
                return;
            }
        }
    }
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let mut rest = vec![0u8; len.saturating_sub(8)];
    if stream.read_exact(&mut rest).await.is_err() {
        return;
    }
    let fields: Vec<&[u8]> = rest.split(|b| *b == 0).collect();
    let user = fields
        .windows(2)
        .find(|w| w[0] == b"user")
        .map(|w| String::from_utf8_lossy(w[1]).into_owned())
        .unwrap_or_default();
    let index = {
        let mut seen = record.lock().expect("lock");
        seen.push(Seen { user, answer: Vec::new() });
        seen.len() - 1
    };
    let request = match ask {
        Ask::Cleartext => message(b'R', &3u32.to_be_bytes()),
        Ask::Md5 => message(b'R', &[0, 0, 0, 5, 0x12, 0x34, 0x56, 0x78]),
        Ask::ScramIterations(_) => message(b'R', b"\0\0\0\x0aSCRAM-SHA-256\0\0"),
        Ask::Error(text) => {
            let mut body = Vec::new();
            for (code, value) in [(b'S', "FATAL"), (b'C', "XX000"), (b'M', text.as_str())] {
                body.push(code);
                body.extend_from_slice(value.as_bytes());
                body.push(0);
            }
            body.push(0);
            message(b'E', &body)
        }
    };
    if stream.write_all(&request).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    // Record whatever comes back, for a while.
    let mut buf = [0u8; 4096];
    let mut continued = false;
    loop {
        let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await;
        let n = match read {
            Ok(Ok(n)) if n > 0 => n,
            _ => return,
        };
        record.lock().expect("lock")[index].answer.extend_from_slice(&buf[..n]);
        if let (Ask::ScramIterations(i), false) = (ask, continued) {
            // SASLInitialResponse: `n,,n=,r=<client nonce>`; answer with the
            // iteration count under test.
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let nonce = text.split("r=").nth(1).map(|r| r.trim_end_matches('\0').to_owned()).unwrap_or_default();
            let first = format!("r={nonce}hostile,s=c2FsdHNhbHRzYWx0,i={i}");
            let mut body = 11u32.to_be_bytes().to_vec();
            body.extend_from_slice(first.as_bytes());
            if stream.write_all(&message(b'R', &body)).await.is_err() {
                return;
            }
            let _ = stream.flush().await;
            continued = true;
        }
    }
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}
