//! Fault points: where the crash campaign (tests/tests/faults_*.rs) kills the
//! function. Every Secrets Manager call and every database statement passes
//! one, so the campaign enumerates the points from the code by counting them,
//! not from a list someone keeps by hand.
//!
//! Compiled in only with the `fault-points` feature (the test harness builds
//! it; the shipped artifact does not). With the feature, the process counts the
//! points it passes and, when `ROTATION_FN_FAULT_AT=k` and the file named by
//! `ROTATION_FN_FAULT_ONCE` does not exist yet, creates that file and aborts
//! right after the k-th point: after the call or statement took effect, before
//! its result was used. The file makes the crash happen once, so the process
//! that replaces it runs the retry to the end. With
//! `ROTATION_FN_FAULT_ACTION=pause:<ms>` the process instead creates the file
//! and stops for that long at the point (so a test can stop the database
//! between, say, a login and the statement that follows it).

#[cfg(feature = "fault-points")]
pub(crate) fn point(name: &'static str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PASSED: AtomicU64 = AtomicU64::new(0);
    let n = PASSED.fetch_add(1, Ordering::SeqCst) + 1;
    tracing::info!(fault_point = n, name, "fault point");
    let at = std::env::var("ROTATION_FN_FAULT_AT").ok().and_then(|v| v.parse::<u64>().ok());
    let Some(once) = std::env::var_os("ROTATION_FN_FAULT_ONCE") else { return };
    if at == Some(n) && std::fs::OpenOptions::new().write(true).create_new(true).open(&once).is_ok() {
        let action = std::env::var("ROTATION_FN_FAULT_ACTION").unwrap_or_default();
        if let Some(ms) = action.strip_prefix("pause:").and_then(|ms| ms.parse::<u64>().ok()) {
            tracing::warn!(fault_point = n, name, pause_ms = ms, "fault injected: pausing");
            std::thread::sleep(std::time::Duration::from_millis(ms));
            return;
        }
        tracing::warn!(fault_point = n, name, "fault injected: aborting");
        std::process::abort();
    }
}

#[cfg(not(feature = "fault-points"))]
#[inline(always)]
pub(crate) fn point(_name: &'static str) {}
