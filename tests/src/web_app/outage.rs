//! A Secrets Manager outage for the app alone: a proxy in front of moto that can cut it off.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::postgres::HOST;

/// A TCP proxy in front of moto: the app talks to Secrets Manager through it, and
/// [`SmProxy::outage`] cuts every connection and refuses new ones, while moto (and the
/// rotation function, which talks to moto directly) keeps its state.
#[derive(Debug)]
pub struct SmProxy {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl SmProxy {
    pub async fn start(upstream: &str) -> SmProxy {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind((HOST, 0)).await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let down = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let (down, connections) = (down.clone(), connections.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if down.load(Ordering::SeqCst) {
                        drop(inbound); // connection reset: Secrets Manager unreachable
                        continue;
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    let mut c = connections.lock().expect("connections");
                    c.retain(|t| !t.is_finished());
                    c.push(task);
                }
            }
        });
        SmProxy { addr, down, connections, accept }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `true`: drop every open connection and refuse new ones. `false`: forward again.
    pub fn outage(&self, on: bool) {
        self.down.store(on, Ordering::SeqCst);
        if on {
            for t in self.connections.lock().expect("connections").drain(..) {
                t.abort();
            }
        }
    }
}

impl Drop for SmProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
