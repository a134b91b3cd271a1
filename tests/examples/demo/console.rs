//! What the demo prints, and how it hears Ctrl-C.
//!
//! A rotation's line grows as its steps finish, so the console remembers
//! whether a line is open: anything else printed meanwhile (the Ctrl-C
//! notice) starts on a line of its own.
//!
//! Ctrl-C (SIGINT), SIGTERM and SIGHUP are caught from the start: the demo,
//! not the default disposition, decides when to stop, and stops its children
//! itself. They run in process groups of their own, so the terminal's SIGINT
//! reaches the demo alone.

use std::io::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

#[derive(Debug, Clone, Default)]
pub struct Console {
    open_line: Arc<Mutex<bool>>,
}

impl Console {
    /// A whole line.
    pub fn line(&self, text: &str) {
        let mut open = self.open_line.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = std::io::stdout().lock();
        if *open {
            let _ = writeln!(out);
            *open = false;
        }
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    /// Starts a line, or continues the open one.
    pub fn part(&self, text: &str) {
        let mut open = self.open_line.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{text}");
        let _ = out.flush();
        *open = true;
    }

    /// Ends the line with `text` if one is open (something else may have ended it).
    pub fn end_if_open(&self, text: &str) {
        let mut open = self.open_line.lock().unwrap_or_else(PoisonError::into_inner);
        if *open {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
            *open = false;
        }
    }

    /// Ends the open line with `text` (on a line of its own if none is open).
    pub fn end(&self, text: &str) {
        let mut open = self.open_line.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
        *open = false;
    }
}

/// Set once the first stop signal arrived.
#[derive(Debug, Clone)]
pub struct Interrupt {
    received: watch::Receiver<Option<&'static str>>,
}

/// The stop the demo was asked for, passed up with `?` to where it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted;

impl Interrupt {
    /// Catches SIGINT, SIGTERM and SIGHUP from now on. The first says what
    /// happens next; later ones are noted and otherwise ignored, because
    /// stopping is already under way and takes a few seconds at most.
    pub fn install(console: Console) -> std::io::Result<Interrupt> {
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let (tx, received) = watch::channel(None);
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    _ = int.recv() => "Ctrl-C",
                    _ = term.recv() => "SIGTERM",
                    _ = hup.recv() => "SIGHUP",
                };
                if tx.borrow().is_none() {
                    console.line(&format!(
                        "\n==> {name}: stopping everything the demo started, in order; the summary follows"
                    ));
                    tx.send_replace(Some(name));
                } else {
                    console.line(&format!("    ({name} again: already stopping, it takes a few seconds at most)"));
                }
            }
        });
        Ok(Interrupt { received })
    }

    pub fn requested(&self) -> bool {
        self.received.borrow().is_some()
    }

    /// `Err(Interrupted)` once a stop was asked for, for `?` between steps
    /// that must not be cut in half.
    pub fn check(&self) -> Result<(), Interrupted> {
        if self.requested() { Err(Interrupted) } else { Ok(()) }
    }

    /// Resolves when a stop is asked for (at once if it was).
    pub async fn wait(&mut self) {
        let _ = self.received.wait_for(Option::is_some).await;
    }
}
