//! Child processes whose output a test reads: everything they print to stdout
//! and stderr, collected as it comes.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// Starts `path` with exactly `vars` (plus `PATH`), stdin closed, killed when
/// dropped, and returns it with its captured output.
pub fn spawn_captured<'a>(
    path: &Path,
    vars: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> (Child, Arc<Mutex<String>>) {
    let mut child = Command::new(path)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", path.display()));
    let output = capture_output(&mut child);
    (child, output)
}

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
