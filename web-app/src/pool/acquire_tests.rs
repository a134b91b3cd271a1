//! The acquire path against a fake pool and fake credentials, in paused time: what a
//! request does when the database refuses the login, and when it cannot be reached.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32};

use tokio::sync::watch;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::*;
use crate::credentials::Recover;
use crate::credentials::{Active, Refusal};
use crate::metrics::{Metrics, PoolGauges};
use db_secret::DbSecret;

/// A server error with a SQLSTATE, as sqlx reports it.
#[derive(Debug)]
struct ServerError(&'static str);

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server error {}", self.0)
    }
}

impl std::error::Error for ServerError {}

impl sqlx::error::DatabaseError for ServerError {
    fn message(&self) -> &str {
        "refused"
    }
    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(self.0))
    }
    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }
    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }
    fn kind(&self) -> sqlx::error::ErrorKind {
        sqlx::error::ErrorKind::Other
    }
}

fn refused() -> sqlx::Error {
    sqlx::Error::Database(Box::new(ServerError("28P01")))
}

fn connection_refused() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"))
}

/// Connections are numbers. `opens` scripts what opening a new one answers (then `Ok`).
#[derive(Debug, Default)]
struct FakePool {
    opens: Mutex<VecDeque<fn() -> sqlx::Error>>,
    refuse_all: AtomicBool,
    idle: Mutex<Vec<u32>>,
    attempts: AtomicU32,
    next: AtomicU32,
}

impl Connections for Arc<FakePool> {
    type Conn = u32;

    async fn acquire(&self) -> Result<u32, sqlx::Error> {
        if let Some(conn) = self.try_idle() {
            return Ok(conn);
        }
        self.attempts.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await; // a login takes a moment
        if self.refuse_all.load(Ordering::SeqCst) {
            return Err(refused());
        }
        let scripted = self.opens.lock().unwrap().pop_front();
        match scripted {
            Some(error) => Err(error()),
            None => Ok(self.next.fetch_add(1, Ordering::SeqCst) + 100),
        }
    }

    fn try_idle(&self) -> Option<u32> {
        self.idle.lock().unwrap().pop()
    }

    fn size(&self) -> u32 {
        self.next.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct FakeCredentials {
    generation: watch::Sender<u64>,
    kicks: AtomicU64,
    refusal: Refusal,
    active: Arc<Active>,
}

impl Recover for FakeCredentials {
    fn generation(&self) -> u64 {
        *self.generation.borrow()
    }
    fn refused(&self, generation: u64) -> bool {
        self.refusal.is_refused(generation)
    }
    fn report_refused(&self, generation: u64) {
        self.refusal.mark_refused(generation);
        self.kick(generation);
    }
    fn kick(&self, _: u64) {
        self.kicks.fetch_add(1, Ordering::SeqCst);
    }
    fn changed(&self, generation: u64) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let mut rx = self.generation.subscribe();
        Box::pin(async move {
            let _ = rx.wait_for(|g| *g != generation).await;
        })
    }
    fn active(&self) -> Arc<Active> {
        self.active.clone()
    }
}

struct Fixture {
    pool: Arc<FakePool>,
    creds: Arc<FakeCredentials>,
    signals: Arc<PoolSignals>,
    acquirer: Arc<Acquirer<Arc<FakePool>>>,
    metrics: Arc<Metrics>,
}

fn fixture(timeout: Duration) -> Fixture {
    let value = serde_json::json!({"engine": "postgres", "host": "db", "username": "app", "password": "pw"});
    let secret = Arc::new(DbSecret::parse(&value.to_string()).unwrap());
    let creds = Arc::new(FakeCredentials {
        generation: watch::Sender::new(0),
        kicks: AtomicU64::new(0),
        refusal: Refusal::default(),
        active: Arc::new(Active { version_id: "v1".into(), secret }),
    });
    let pool = Arc::new(FakePool::default());
    let signals = Arc::new(PoolSignals::default());
    let metrics = Arc::new(Metrics::new());
    let acquirer = Arc::new(Acquirer::new(pool.clone(), creds.clone(), metrics.clone(), signals.clone(), timeout));
    Fixture { pool, creds, signals, acquirer, metrics }
}

impl Fixture {
    fn spawn_acquire(&self) -> tokio::task::JoinHandle<Result<u32, DbError>> {
        let acquirer = self.acquirer.clone();
        tokio::spawn(async move { acquirer.acquire().await })
    }

    fn release(&self, conn: u32) {
        self.pool.idle.lock().unwrap().push(conn);
        self.signals.released.notify_one();
    }

    fn attempts(&self) -> u32 {
        self.pool.attempts.load(Ordering::SeqCst)
    }
}

#[tokio::test(start_paused = true)]
async fn while_the_login_is_refused_requests_wait_for_a_released_session_not_a_new_login() {
    let f = fixture(Duration::from_secs(5));
    f.pool.refuse_all.store(true, Ordering::SeqCst);
    let first = f.spawn_acquire();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(f.attempts(), 1, "the first request met the refusal");
    assert!(f.creds.kicks.load(Ordering::SeqCst) >= 1, "and started a refresh");
    let others: Vec<_> = (0..8).map(|_| f.spawn_acquire()).collect();
    // Three seconds with the refresh still running (longer than any poll-then-fail budget).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(f.attempts(), 1, "no request tried the refused login again");
    assert!(!first.is_finished() && others.iter().all(|h| !h.is_finished()), "nobody failed either");

    // A request elsewhere finishes with an older, still valid session: one waiter takes it.
    f.release(7);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let served = others.iter().filter(|h| h.is_finished()).count() + usize::from(first.is_finished());
    assert_eq!(served, 1, "the released session went to one waiting request");

    // The refresh finds the new login: everyone else opens connections with it.
    f.pool.refuse_all.store(false, Ordering::SeqCst);
    f.creds.generation.send_modify(|g| *g += 1);
    let mut conns = vec![first.await.unwrap().unwrap()];
    for h in others {
        conns.push(h.await.unwrap().unwrap());
    }
    assert!(conns.contains(&7));
    assert_eq!(f.attempts(), 1 + 8, "one refused login, then one new connection per request still waiting");
}

#[tokio::test(start_paused = true)]
async fn a_refusal_that_outlasts_the_acquire_timeout_answers_unavailable_without_a_login_storm() {
    let f = fixture(Duration::from_secs(2));
    f.pool.refuse_all.store(true, Ordering::SeqCst);
    let handles: Vec<_> = (0..16).map(|_| f.spawn_acquire()).collect();
    for h in handles {
        assert!(matches!(h.await.unwrap(), Err(DbError::Unavailable(_))));
    }
    // One login at a time: the first refusal is known before anyone else tries, and
    // nobody tries again while it stays refused.
    assert_eq!(f.attempts(), 1, "16 requests at once, one refused login");
    let text = f.metrics.render(PoolGauges::default());
    assert!(text.contains("web_app_db_errors_total{sqlstate=\"pool_timeout\"} 16"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_server_is_retried_with_backoff_until_it_is_back() {
    let f = fixture(Duration::from_secs(5));
    f.pool.opens.lock().unwrap().extend([connection_refused as fn() -> sqlx::Error; 6]);
    let conn = f.acquirer.acquire().await.unwrap();
    assert_eq!(conn, 100);
    assert_eq!(f.attempts(), 7);
    let text = f.metrics.render(PoolGauges::default());
    assert!(text.contains("web_app_db_retries_total{reason=\"connect_failed\"} 6"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn errors_that_are_not_about_reaching_the_server_are_not_retried() {
    let f = fixture(Duration::from_secs(5));
    f.pool.opens.lock().unwrap().push_back(|| sqlx::Error::Database(Box::new(ServerError("3D000"))));
    assert!(matches!(f.acquirer.acquire().await, Err(DbError::Sqlx { class, .. }) if class == "3D000"));
    assert_eq!(f.attempts(), 1);
}

#[test]
fn only_connections_idle_since_before_a_loss_are_suspect() {
    let signals = PoolSignals::default();
    assert!(!signals.idle_across_a_loss(Duration::from_secs(3600)), "no loss yet");
    std::thread::sleep(Duration::from_millis(20));
    signals.session_lost_now();
    assert!(signals.idle_across_a_loss(Duration::from_secs(1)), "released before the loss");
    std::thread::sleep(Duration::from_millis(20));
    assert!(!signals.idle_across_a_loss(Duration::from_millis(5)), "released after the loss");
}

#[tokio::test(start_paused = true)]
async fn the_pool_floor_is_kept_through_the_same_gate_and_not_while_refused() {
    let f = fixture(Duration::from_secs(5));
    f.acquirer.top_up(3).await;
    assert_eq!((f.attempts(), f.pool.size()), (3, 3), "three connections opened, one after another");
    assert_eq!(f.pool.idle.lock().unwrap().len(), 0, "the fake keeps no idle list; the real pool gets them back");

    let f = fixture(Duration::from_secs(5));
    f.pool.refuse_all.store(true, Ordering::SeqCst);
    let requests: Vec<_> = (0..8).map(|_| f.spawn_acquire()).collect();
    // A request is mid-login when the floor check queues behind it for the gate.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(f.attempts(), 1);
    f.acquirer.top_up(3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    f.acquirer.top_up(3).await;
    assert_eq!(f.attempts(), 1, "warming and requests together: one refused login");
    f.creds.generation.send_modify(|g| *g += 1);
    f.pool.refuse_all.store(false, Ordering::SeqCst);
    for r in requests {
        r.await.unwrap().unwrap();
    }
}
