//! Child processes whose output a test reads: everything they print to stdout
//! and stderr, collected as it comes.
//!
//! Every process the harness starts runs in a process group of its own
//! (`process_group(0)`): a terminal's Ctrl-C goes to the whole foreground
//! group, and a harness (the demo) that catches it must be the one to stop
//! its children, in order, instead of each child dying on its own mid-work.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// Starts `path` with `args` and exactly `vars` (plus `PATH`), stdin closed,
/// in its own process group, killed when dropped, and returns it with its
/// captured output.
pub fn spawn_captured<'a>(
    path: &Path,
    args: &[&str],
    vars: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> (Child, Arc<Mutex<String>>) {
    let mut child = Command::new(path)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
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

/// Where `cargo build` put the binary `name` of this workspace, or the path
/// in `env_override`.
pub fn binary_path(env_override: &str, name: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env_override) {
        return PathBuf::from(path);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug").join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` first", path.display());
    path
}

/// The rotation function; `BOOTSTRAP_BIN` overrides.
pub fn bootstrap_path() -> PathBuf {
    binary_path("BOOTSTRAP_BIN", "bootstrap")
}

/// Sends `signal` (`STOP`, `KILL`, `TERM`) to a process.
pub async fn signal(pid: u32, signal: &str) {
    let status = tokio::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .await
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Waits until process `pid` has died (gone, or a zombie nobody reaped yet).
pub async fn wait_gone(pid: u32) {
    let started = std::time::Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the command name in parentheses: `pid (comm) S …`.
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
        if matches!(state, None | Some("Z" | "X")) {
            return;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "process {pid} did not die");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A command the project installs into its Python environment (`moto_server`,
/// `aws`): `tests/.venv/bin/<name>` when it is there, else `<name>` on PATH.
pub fn tool(name: &str) -> PathBuf {
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin").join(name);
    if local.exists() { local } else { PathBuf::from(name) }
}
