//! Child processes whose output a test reads: everything they print to stdout
//! and stderr, collected as it comes.

use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::process::Child;

/// Takes `child`'s piped stdout and stderr and appends both, as they arrive,
/// to the returned buffer.
pub fn capture_output(child: &mut Child) -> Arc<Mutex<String>> {
    let output = Arc::new(Mutex::new(String::new()));
    let streams: [Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>; 2] =
        [child.stdout.take().map(|s| Box::new(s) as _), child.stderr.take().map(|s| Box::new(s) as _)];
    for mut stream in streams.into_iter().flatten() {
        let output = output.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                output.lock().expect("output").push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    output
}
