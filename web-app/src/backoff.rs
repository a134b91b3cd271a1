//! Exponential backoff with jitter, so a fleet of instances that lost Secrets Manager at
//! the same moment does not come back in lockstep, and a failing dependency never turns
//! into a busy loop.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max: max.max(base), failures: 0 }
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Records one more failure and returns how long to wait before the next attempt:
    /// "equal jitter", i.e. uniformly in `[d/2, d]` where `d = min(max, base * 2^failures)`.
    /// The lower half keeps a floor under the delay (never a busy loop); the upper half
    /// spreads instances apart.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.delay_for(self.failures, rand::random::<f64>())
    }

    /// Pure form of [`Self::next_delay`]: `unit` is a random number in `[0, 1)`.
    pub fn delay_for(&self, failures: u32, unit: f64) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        let d = self.base.saturating_mul(1u32 << exp).min(self.max);
        let half = d / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// `d` scaled by a random factor in `[1 - spread, 1 + spread]`.
pub fn jitter(d: Duration, spread: f64) -> Duration {
    let f = 1.0 + spread * (rand::random::<f64>() * 2.0 - 1.0);
    d.mul_f64(f.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_until_the_ceiling_and_stays_within_the_jitter_band() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(b.delay_for(1, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay_for(1, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay_for(3, 1.0), Duration::from_secs(4));
        assert_eq!(b.delay_for(7, 1.0), Duration::from_secs(60));
        assert_eq!(b.delay_for(200, 0.0), Duration::from_secs(30));
    }

    #[test]
    fn next_delay_counts_failures_and_never_returns_zero() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for i in 1..=20 {
            let d = b.next_delay();
            assert!(d >= Duration::from_millis(50), "attempt {i}: {d:?}");
            assert!(d <= Duration::from_secs(1));
        }
        assert_eq!(b.failures(), 20);
        b.reset();
        assert_eq!(b.failures(), 0);
    }

    #[test]
    fn jitter_stays_in_band() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(10), 0.1);
            assert!(d >= Duration::from_secs(9) && d <= Duration::from_secs(11));
        }
    }
}
