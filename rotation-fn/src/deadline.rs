//! Every I/O operation is bounded by the invocation's deadline, so the
//! function reports which operation ran out of time instead of being killed
//! by Lambda's timeout with nothing in the logs.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Kept back from Lambda's deadline to report the error and flush logs.
const RESERVE: Duration = Duration::from_millis(500);
/// No single connection attempt may take longer, so that trying AWSCURRENT
/// and then AWSPREVIOUS against an unreachable host still fits.
const CONNECT_CAP: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation} did not finish within the invocation's remaining {budget_ms} ms")]
pub struct TimedOut {
    pub operation: String,
    pub budget_ms: u128,
}

impl Deadline {
    /// From Lambda's context: the deadline in milliseconds since the epoch.
    pub fn from_epoch_millis(deadline_ms: u64) -> Self {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let left = Duration::from_millis(u64::try_from(u128::from(deadline_ms).saturating_sub(now_ms)).unwrap_or(0));
        Self::after(left.saturating_sub(RESERVE))
    }

    pub fn after(budget: Duration) -> Self {
        Self { at: Instant::now() + budget }
    }

    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    pub fn connect_budget(&self) -> Duration {
        self.remaining().min(CONNECT_CAP)
    }

    /// Runs `fut` until it finishes or the deadline passes.
    pub async fn run<T>(
        &self,
        operation: impl FnOnce() -> String,
        fut: impl Future<Output = T>,
    ) -> Result<T, TimedOut> {
        self.run_for(self.remaining(), operation, fut).await
    }

    pub async fn run_for<T>(
        &self,
        budget: Duration,
        operation: impl FnOnce() -> String,
        fut: impl Future<Output = T>,
    ) -> Result<T, TimedOut> {
        tokio::time::timeout(budget, fut)
            .await
            .map_err(|_| TimedOut { operation: operation(), budget_ms: budget.as_millis() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn operations_past_the_deadline_time_out_with_their_name() {
        let deadline = Deadline::after(Duration::from_secs(3));
        let slow = tokio::time::sleep(Duration::from_secs(5));
        let err = deadline.run(|| "GetSecretValue AWSCURRENT".into(), slow).await.expect_err("times out");
        assert_eq!(err.operation, "GetSecretValue AWSCURRENT");
        assert_eq!(err.budget_ms, 3000);
        let fast = async { 7 };
        assert_eq!(Deadline::after(Duration::from_secs(1)).run(String::new, fast).await, Ok(7));
    }

    #[tokio::test(start_paused = true)]
    async fn connect_budget_is_capped_and_shrinks() {
        let deadline = Deadline::after(Duration::from_secs(60));
        assert_eq!(deadline.connect_budget(), CONNECT_CAP);
        tokio::time::advance(Duration::from_secs(55)).await;
        assert_eq!(deadline.connect_budget(), Duration::from_secs(5));
    }

    #[test]
    fn lambda_deadline_keeps_a_reserve() {
        let in_two_seconds = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64 + 2000;
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        rt.block_on(async {
            let left = Deadline::from_epoch_millis(in_two_seconds).remaining();
            assert!(left <= Duration::from_millis(1500) && left > Duration::from_millis(1000), "{left:?}");
            assert_eq!(Deadline::from_epoch_millis(0).remaining(), Duration::ZERO);
        });
    }
}
