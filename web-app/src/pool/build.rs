//! The sqlx pool: bounded, jittered connection lifetimes, and the signals its hooks share
//! with the request path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::sync::Notify;

use crate::config::Config;
use db_secret::{Connector, DbFailure, DbSecret};

/// The per-connection lifetime: `max * (1 - jitter * u)` where `u` in `[0,1)` is a hash
/// of the connection's creation time (sqlx has no per-connection user data, but it tells
/// us the age, and `now - age` is stable per connection to the millisecond).
pub fn jittered_lifetime(max: Duration, jitter: f64, created_ms: u64) -> Duration {
    // splitmix64: cheap, well-spread.
    let mut z = created_ms.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = (z >> 11) as f64 / (1u64 << 53) as f64;
    max.mul_f64(1.0 - jitter * u)
}

fn process_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis_since_epoch() -> u64 {
    u64::try_from(process_epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What the pool's hooks tell the request path, and the other way round.
#[derive(Debug, Default)]
pub struct PoolSignals {
    /// A connection went back to the pool (woken: requests waiting for one).
    pub(super) released: Notify,
    /// When a session was last found dead (ms since the process epoch; 0: never).
    lost_at_ms: AtomicU64,
    /// When the pool last switched to another login (ms since the process epoch; 0:
    /// never). Connections opened before it retire when next released: the app's
    /// sessions then show the database (and the rotation function's evidence of who has
    /// not moved) that this instance is on the new login, and a retired login keeps no
    /// session of ours.
    switched_at_ms: AtomicU64,
}

impl PoolSignals {
    pub fn session_lost_now(&self) {
        self.lost_at_ms.store(millis_since_epoch().max(1), Ordering::Release);
    }

    pub fn login_switched_now(&self) {
        self.switched_at_ms.store(millis_since_epoch().max(1), Ordering::Release);
    }

    /// Whether a connection opened at `created_ms` predates the last login switch.
    pub(super) fn opened_before_switch(&self, created_ms: u64) -> bool {
        created_ms < self.switched_at_ms.load(Ordering::Acquire)
    }

    /// Whether a connection idle for `idle_for` has sat in the pool since before the last
    /// lost session (and so may be dead too).
    pub(super) fn idle_across_a_loss(&self, idle_for: Duration) -> bool {
        let lost = self.lost_at_ms.load(Ordering::Acquire);
        let idle_ms = u64::try_from(idle_for.as_millis()).unwrap_or(u64::MAX);
        lost != 0 && millis_since_epoch().saturating_sub(idle_ms) <= lost
    }
}

/// Builds the pool for `initial`. Lazy: connections open on demand (and `min` in the
/// background), always with whatever login the credentials state machine installed last.
pub fn build_pool(
    config: &Config,
    initial: &DbSecret,
    connector: &Connector,
) -> Result<(PgPool, Arc<PoolSignals>), DbFailure> {
    let max = config.conn_max_lifetime;
    let spread = config.conn_lifetime_jitter;
    let epoch = process_epoch();
    let signals = Arc::new(PoolSignals::default());
    let (on_release, on_acquire) = (signals.clone(), signals.clone());
    let pool = PgPoolOptions::new()
        .max_connections(config.pool_max_connections)
        // The pool would open its minimum on its own, past the one-login-at-a-time gate
        // (see `Acquirer`); `Db::keep_warm` keeps the floor instead.
        .min_connections(0)
        .acquire_timeout(config.pool_acquire_timeout)
        // Hard cap (also applied to idle connections by the pool's reaper).
        .max_lifetime(max)
        .idle_timeout(Some(max))
        // The pool pings before handing out a connection by default: a round trip per
        // request to catch a session the server ended, which `Db::run` catches anyway by
        // retrying. Only after such a loss are idle connections pinged (below).
        .test_before_acquire(false)
        .after_release(move |_conn, meta| {
            let signals = on_release.clone();
            Box::pin(async move {
                let created = Instant::now().saturating_duration_since(epoch).saturating_sub(meta.age);
                let created_ms = u64::try_from(created.as_millis()).unwrap_or(u64::MAX);
                let keep =
                    meta.age < jittered_lifetime(max, spread, created_ms) && !signals.opened_before_switch(created_ms);
                if keep {
                    signals.released.notify_one();
                }
                Ok(keep)
            })
        })
        // Cheap unless a session was lost recently: then a connection idle since before
        // that is pinged, and dropped (the pool tries the next) if it is dead too.
        .before_acquire(move |conn, meta| {
            let signals = on_acquire.clone();
            Box::pin(async move {
                if !signals.idle_across_a_loss(meta.idle_for) {
                    return Ok(true);
                }
                Ok(conn.ping().await.is_ok())
            })
        })
        .connect_lazy_with(connector.pool_options(initial)?);
    Ok((pool, signals))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_spread_over_the_jitter_band_and_are_stable_per_connection() {
        let max = Duration::from_secs(100);
        let lifetimes: Vec<Duration> = (0..1000).map(|ms| jittered_lifetime(max, 0.2, ms * 7)).collect();
        assert!(lifetimes.iter().all(|l| *l > Duration::from_secs(80) && *l <= max));
        let below_90 = lifetimes.iter().filter(|l| **l < Duration::from_secs(90)).count();
        assert!((350..650).contains(&below_90), "{below_90} of 1000 in the lower half");
        assert_eq!(jittered_lifetime(max, 0.2, 12345), jittered_lifetime(max, 0.2, 12345));
        assert_eq!(jittered_lifetime(max, 0.0, 12345), max);
    }

    #[test]
    fn connections_opened_before_a_login_switch_retire() {
        let signals = PoolSignals::default();
        assert!(!signals.opened_before_switch(0), "no switch yet");
        std::thread::sleep(Duration::from_millis(3));
        let before = millis_since_epoch();
        std::thread::sleep(Duration::from_millis(3));
        signals.login_switched_now();
        std::thread::sleep(Duration::from_millis(3));
        assert!(signals.opened_before_switch(before));
        assert!(!signals.opened_before_switch(millis_since_epoch()));
    }
}
