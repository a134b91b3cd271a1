//! The demo stops cleanly (issue 12). The demo binary runs with a TMPDIR of
//! its own and is interrupted as a terminal's Ctrl-C does it, SIGINT to its
//! whole process group: during start-up, during a rotation, and with
//! `--keep-running` after a rotation by hand with the aws CLI command it
//! printed (run as printed). One more run goes to its end. Every time: it
//! exits with its summary; the clients saw no failed request (a child that
//! got the SIGINT itself would have died under them); no process it started
//! is alive (its descendants are sampled from /proc while it runs); its
//! TMPDIR is empty; nothing listens on the ports it or its children used.
//!
//! Runs the example's build: `cargo build --workspace --bins --examples`
//! (`DEMO_BIN` overrides the path).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// The demo binary: `DEMO_BIN`, else the debug build of the example.
fn demo_path() -> PathBuf {
    if let Ok(path) = std::env::var("DEMO_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug/examples/demo");
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins --examples` first", path.display());
    path
}

/// One line of /proc/PID/stat: (parent, state, start time in ticks, command).
fn stat(pid: u32) -> Option<(u32, char, u64, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let comm = text[text.find('(')? + 1..text.rfind(')')?].to_owned();
    let fields: Vec<&str> = text[text.rfind(')')? + 2..].split_whitespace().collect();
    // Fields from the state on are numbered 3, 4, …; starttime is field 22.
    Some((fields.get(1)?.parse().ok()?, fields.first()?.chars().next()?, fields.get(19)?.parse().ok()?, comm))
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// Socket inodes a process holds open.
fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return BTreeSet::new() };
    fds.flatten()
        .filter_map(|fd| {
            let link = std::fs::read_link(fd.path()).ok()?;
            link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// Every TCP listener on the machine: (port, socket inode).
fn listeners() -> Vec<(u16, u64)> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" {
                let port = f[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
                if let (Some(port), Ok(inode)) = (port, f[9].parse()) {
                    out.push((port, inode));
                }
            }
        }
    }
    out
}

/// What the sampler saw of the demo and its descendants.
#[derive(Debug, Default)]
struct Seen {
    /// pid → (start time, command)
    processes: BTreeMap<u32, (u64, String)>,
    ports: BTreeSet<u16>,
}

impl Seen {
    fn sample(&mut self, root: u32) {
        let table: Vec<(u32, u32, u64, String)> = all_pids()
            .into_iter()
            .filter_map(|pid| stat(pid).map(|(ppid, _, start, comm)| (pid, ppid, start, comm)))
            .collect();
        let mut family = BTreeSet::from([root]);
        loop {
            let before = family.len();
            for (pid, ppid, _, _) in &table {
                if family.contains(ppid) {
                    family.insert(*pid);
                }
            }
            if family.len() == before {
                break;
            }
        }
        let inodes: BTreeSet<u64> = family.iter().flat_map(|pid| socket_inodes(*pid)).collect();
        for (port, inode) in listeners() {
            if inodes.contains(&inode) {
                self.ports.insert(port);
            }
        }
        for (pid, _, start, comm) in table {
            if pid != root && family.contains(&pid) {
                self.processes.entry(pid).or_insert((start, comm));
            }
        }
    }

    fn commands(&self) -> BTreeSet<String> {
        self.processes.values().map(|(_, comm)| comm.clone()).collect()
    }
}

/// A running demo, its output, and what it started.
struct Demo {
    child: Child,
    pid: u32,
    output: Arc<Mutex<String>>,
    tmp: tempfile::TempDir,
    picture: PathBuf,
    _out_dir: tempfile::TempDir,
    seen: Arc<Mutex<Seen>>,
    sampling: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<()>>,
}

impl Demo {
    fn start(args: &[&str]) -> Demo {
        let tmp = tempfile::Builder::new().prefix("demo-tmpdir-").tempdir().expect("tmp");
        // PostgreSQL runs as the postgres user under TMPDIR: it must pass through.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let out_dir = tempfile::Builder::new().prefix("demo-out-").tempdir().expect("out");
        let picture = out_dir.path().join("timeline.svg");
        let mut child = Command::new(demo_path())
            .args(args)
            .arg("--out")
            .arg(&picture)
            .env("TMPDIR", tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, as a shell's job: the test signals the group as a terminal does.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the demo");
        let pid = child.id().expect("pid");
        let output = e2e::process::capture_output(&mut child);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = std::thread::spawn({
            let (seen, sampling) = (seen.clone(), sampling.clone());
            move || {
                while sampling.load(Ordering::Relaxed) {
                    seen.lock().expect("seen").sample(pid);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        Demo { child, pid, output, tmp, picture, _out_dir: out_dir, seen, sampling, sampler: Some(sampler) }
    }

    fn output(&self) -> String {
        self.output.lock().expect("output").clone()
    }

    /// Waits until a line of the output satisfies `matches`; returns it.
    async fn wait_for_line(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let output = self.output();
            // Only complete lines, except for a rotation's line, which grows.
            if let Some(line) = output.lines().find(|l| matches(l)) {
                return line.to_owned();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the demo exited ({status}) before {what}:\n{output}");
            }
            assert!(started.elapsed() < Duration::from_secs(90), "no {what} within 90 s:\n{output}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGINT to the demo's process group, as a terminal's Ctrl-C.
    fn ctrl_c(&self) {
        let status =
            std::process::Command::new("kill").args(["-INT", "--", &format!("-{}", self.pid)]).status().expect("kill");
        assert!(status.success(), "kill -INT -{}", self.pid);
    }

    /// Waits for the exit; asserts that the demo cleaned up; returns its exit
    /// code, its output and the picture it drew.
    async fn finish(mut self) -> (Option<i32>, String, Option<String>) {
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
        self.sampling.store(false, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // the last output
        let output = self.output();
        let status = match status {
            Ok(status) => status.expect("wait"),
            Err(_) => panic!("the demo did not exit within 60 s:\n{output}"),
        };
        let seen = std::mem::take(&mut *self.seen.lock().expect("seen"));
        assert!(
            seen.commands().iter().any(|c| c == "postgres") && !seen.ports.is_empty(),
            "the sampler saw the demo's PostgreSQL and its ports ({:?}, {:?}):\n{output}",
            seen.commands(),
            seen.ports
        );

        let alive: Vec<String> = seen
            .processes
            .iter()
            .filter(|(pid, (start, _))| {
                stat(**pid).is_some_and(|(_, state, now_start, _)| now_start == *start && !matches!(state, 'Z' | 'X'))
            })
            .map(|(pid, (_, comm))| format!("{comm} ({pid})"))
            .collect();
        assert!(alive.is_empty(), "still running after the demo exited: {alive:?}\n{output}");

        let inodes_of_seen: BTreeSet<u64> = seen.processes.keys().flat_map(|pid| socket_inodes(*pid)).collect();
        let mut owners: BTreeMap<u64, u32> = BTreeMap::new();
        let listening: Vec<(u16, u64)> =
            listeners().into_iter().filter(|(port, _)| seen.ports.contains(port)).collect();
        if !listening.is_empty() {
            for pid in all_pids() {
                for inode in socket_inodes(pid) {
                    owners.insert(inode, pid);
                }
            }
        }
        // A port another test picked up since is not the demo's leftover; one
        // held by a process the demo started (or by nobody) is.
        let leftovers: Vec<String> = listening
            .iter()
            .filter(|(_, inode)| {
                inodes_of_seen.contains(inode) || owners.get(inode).is_none_or(|pid| seen.processes.contains_key(pid))
            })
            .map(|(port, _)| format!("127.0.0.1:{port}"))
            .collect();
        assert!(leftovers.is_empty(), "still listening: {leftovers:?}\n{output}");

        let left: Vec<String> = std::fs::read_dir(self.tmp.path())
            .expect("tmp")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(left.is_empty(), "left in the demo's TMPDIR: {left:?}\n{output}");
        assert!(output.contains("\n==> summary ("), "a summary:\n{output}");
        assert!(!output.contains("NOT REMOVED") && !output.contains("panicked"), "{output}");
        let picture = std::fs::read_to_string(&self.picture).ok();
        if picture.is_some() {
            assert!(
                output.contains(&format!("    picture: {}\n", self.picture.display())),
                "its path is printed:\n{output}"
            );
        }
        (status.code(), output, picture)
    }
}

/// The summary's line starting with `prefix`.
fn summary_line<'a>(output: &'a str, prefix: &str) -> &'a str {
    let summary = &output[output.find("\n==> summary (").expect("summary")..];
    summary
        .lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line:\n{output}"))
}

/// What every run that got as far as serving shows: no failed request, no
/// failed rotation, the web app stopped by the demo (not by the SIGINT), a picture.
fn assert_served_without_failures(output: &str, picture: Option<&str>) {
    let clients = summary_line(output, "clients:");
    assert!(clients.contains(" answered, 0 failed in "), "{clients}\n{output}");
    let rotations = summary_line(output, "rotations:");
    assert!(rotations.contains(" succeeded, 0 failed, 0 unfinished"), "{rotations}\n{output}");
    let stopped = summary_line(output, "stopped, in order:");
    assert!(
        stopped.starts_with("    stopped, in order: web-app ") && stopped.contains("(SIGTERM, exit 0)"),
        "{stopped}"
    );
    assert!(stopped.contains(" moto ") && stopped.contains(" PostgreSQL "), "{stopped}");
    assert!(output.contains("\n    no password in the statement log, "), "the leak check ran:\n{output}");
    let svg = picture.unwrap_or_else(|| panic!("no picture:\n{output}"));
    assert!(svg.starts_with("<svg") && svg.contains("#1 "), "an SVG picture with the first rotation's close-up");
}

#[tokio::test]
async fn ctrl_c_during_start_up() {
    let mut demo = Demo::start(&["--rotations", "1", "--interval", "1"]);
    demo.wait_for_line("the start-up line", |l| l.starts_with("==> starting PostgreSQL")).await;
    // initdb and openssl run now, in their own process group.
    tokio::time::sleep(Duration::from_millis(300)).await;
    demo.ctrl_c();
    let (code, output, _) = demo.finish().await;
    assert_eq!(code, Some(130), "{output}");
    assert!(output.contains("==> summary (interrupted during start-up"), "{output}");
    assert!(summary_line(&output, "stopped, in order:").contains(" PostgreSQL "), "{output}");
    assert!(output.contains("(the CA key, the superuser's password file, the statement log)"), "{output}");
}

#[tokio::test]
async fn ctrl_c_during_a_rotation() {
    let mut demo = Demo::start(&["--rotations", "3", "--interval", "1"]);
    demo.wait_for_line("rotation #2", |l| l.starts_with("    #2 ")).await;
    demo.ctrl_c();
    let (code, output, picture) = demo.finish().await;
    assert_served_without_failures(&output, picture.as_deref());
    assert_eq!(code, Some(130), "{output}");
    assert!(output.contains("==> summary (interrupted during rotation #2"), "{output}");
    assert!(summary_line(&output, "stopped, in order:").contains("rotation-single "), "{output}");
}

#[tokio::test]
async fn ctrl_c_with_keep_running_after_a_rotation_by_hand() {
    let mut demo = Demo::start(&["--rotations", "1", "--interval", "1", "--keep-running"]);
    let command = demo.wait_for_line("the aws CLI command", |l| l.starts_with("    AWS_ACCESS_KEY_ID=")).await;
    assert!(command.contains("/tests/.venv/bin/aws ") || command.contains(" aws "), "{command}");
    // As an operator pastes it into another shell.
    let cli = Command::new("bash").arg("-c").arg(&command).output().await.expect("bash");
    assert!(cli.status.success(), "{command}\n{}", String::from_utf8_lossy(&cli.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&cli.stdout).expect("the CLI's JSON answer");
    let token = answer["VersionId"].as_str().expect("VersionId");
    let line =
        demo.wait_for_line("the rotation by hand", |l| l.contains("(by hand)") && l.contains(" answered, ")).await;
    assert!(line.starts_with(&format!("    #2 {} (by hand)", &token[..8])), "{line}");
    assert!(line.contains(" = ") && line.contains("│ app → app at +"), "{line}");
    demo.ctrl_c();
    let (code, output, picture) = demo.finish().await;
    assert_served_without_failures(&output, picture.as_deref());
    let rotations = summary_line(&output, "rotations:");
    assert!(rotations.starts_with("    rotations: 2 succeeded, 0 failed, 0 unfinished (1 by hand)"), "{rotations}");
    assert_eq!(code, Some(130), "{output}");
    assert!(output.contains("==> summary (interrupted during --keep-running"), "{output}");
}

#[tokio::test]
async fn alternating_users_to_the_end() {
    let demo = Demo::start(&["--rotations", "2", "--interval", "0.5", "--strategy", "alternating-users"]);
    let (code, output, picture) = demo.finish().await;
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("==> summary (done"), "{output}");
    assert_served_without_failures(&output, picture.as_deref());
    assert!(summary_line(&output, "clients:").ends_with("database users seen: app, app_clone"), "{output}");
}
