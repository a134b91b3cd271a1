//! The state machine against a fake Secrets Manager and a fake database: which calls it
//! makes, which login it ends on. Time is paused (`tokio::time::pause`), never slept.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use secrecy::ExposeSecret;

use super::*;
use crate::secret_source::Stages;
use db_secret::Endpoints;

fn secret_at(host: &str, user: &str, password: &str) -> DbSecret {
    let value = serde_json::json!({"engine": "postgres", "host": host, "username": user, "password": password});
    DbSecret::parse(&value.to_string()).unwrap()
}

/// version id -> (stages, (user, password))
type Versions = HashMap<String, (Vec<&'static str>, (String, String))>;

#[derive(Debug, Default)]
struct FakeSm {
    versions: Mutex<Versions>,
    /// version id -> the server it names, when not `db`.
    hosts: Mutex<HashMap<String, String>>,
    outage: AtomicBool,
    /// Calls hang for a minute (an SDK waiting out its timeouts) instead of failing.
    hang: AtomicBool,
    describes: AtomicU64,
    gets: AtomicU64,
    /// GetSecretValue by VersionStage (startup only; refreshes name the VersionId).
    gets_by_stage: AtomicU64,
}

impl FakeSm {
    fn put(&self, id: &str, user: &str, password: &str, stages: &[&'static str]) {
        let mut v = self.versions.lock().unwrap();
        // Moving a label takes it off the version that had it, as Secrets Manager does.
        for s in stages {
            for (other, _) in v.values_mut() {
                other.retain(|x| x != s);
            }
        }
        v.insert(id.into(), (stages.to_vec(), (user.into(), password.into())));
    }
    /// A version naming server `host` (port 5432).
    fn put_at(&self, host: &str, id: &str, user: &str, password: &str, stages: &[&'static str]) {
        self.hosts.lock().unwrap().insert(id.into(), host.into());
        self.put(id, user, password, stages);
    }
    fn secret_of(&self, id: &str, user: &str, password: &str) -> Arc<DbSecret> {
        let host = self.hosts.lock().unwrap().get(id).cloned().unwrap_or_else(|| "db".into());
        Arc::new(secret_at(&host, user, password))
    }
    fn label(&self, id: &str, stage: &'static str) {
        let mut v = self.versions.lock().unwrap();
        for (other, _) in v.values_mut() {
            other.retain(|x| *x != stage);
        }
        v.get_mut(id).unwrap().0.push(stage);
    }
    /// finishSecret: AWSCURRENT -> `id`, old current becomes AWSPREVIOUS, AWSPENDING dropped.
    fn finish(&self, id: &str) {
        let old = {
            let v = self.versions.lock().unwrap();
            v.iter().find(|(_, (s, _))| s.contains(&"AWSCURRENT")).map(|(k, _)| k.clone())
        };
        self.label(id, "AWSCURRENT");
        if let Some(old) = old {
            self.label(&old, "AWSPREVIOUS");
        }
        self.versions.lock().unwrap().get_mut(id).unwrap().0.retain(|s| *s != "AWSPENDING");
    }
    fn calls(&self) -> (u64, u64) {
        (self.describes.load(Ordering::SeqCst), self.gets.load(Ordering::SeqCst))
    }
    fn down() -> SourceError {
        SourceError::Unavailable { operation: "DescribeSecret", detail: "connection refused".into() }
    }
}

impl SecretSource for Arc<FakeSm> {
    async fn describe(&self) -> Result<Stages, SourceError> {
        self.describes.fetch_add(1, Ordering::SeqCst);
        if self.hang.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return Err(FakeSm::down());
        }
        if self.outage.load(Ordering::SeqCst) {
            return Err(FakeSm::down());
        }
        let v = self.versions.lock().unwrap();
        Ok(Stages::new(v.iter().map(|(k, (s, _))| (k.clone(), s.iter().map(|x| (*x).to_owned()).collect())).collect()))
    }
    async fn get(&self, stage: Stage) -> Result<SecretVersion, SourceError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.gets_by_stage.fetch_add(1, Ordering::SeqCst);
        if self.outage.load(Ordering::SeqCst) {
            return Err(FakeSm::down());
        }
        let v = self.versions.lock().unwrap();
        let (id, (_, (user, pw))) = v
            .iter()
            .find(|(_, (s, _))| s.contains(&stage.label()))
            .ok_or(SourceError::NoSuchStage { secret_id: "s".into(), stage: stage.label() })?;
        Ok(SecretVersion { version_id: id.clone(), secret: self.secret_of(id, user, pw) })
    }
    async fn get_version(&self, version_id: &str) -> Result<SecretVersion, SourceError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        if self.outage.load(Ordering::SeqCst) {
            return Err(FakeSm::down());
        }
        let v = self.versions.lock().unwrap();
        let (_, (user, pw)) = v
            .get(version_id)
            .ok_or(SourceError::NoSuchVersion { secret_id: "s".into(), version_id: version_id.into() })?;
        Ok(SecretVersion { version_id: version_id.to_owned(), secret: self.secret_of(version_id, user, pw) })
    }
    fn secret_id(&self) -> &str {
        "test/db"
    }
}

/// The database: which (user, password) pairs it accepts right now.
#[derive(Debug, Default)]
struct FakeDb {
    logins: Mutex<HashSet<(String, String)>>,
    pool_login: Mutex<Option<(String, String)>>,
    verifies: AtomicU64,
    down: AtomicBool,
    /// Every server a login was tried on.
    dialled: Mutex<Vec<String>>,
}

impl FakeDb {
    fn set_password(&self, user: &str, password: &str) {
        let mut l = self.logins.lock().unwrap();
        l.retain(|(u, _)| u != user);
        l.insert((user.into(), password.into()));
    }
    fn pool_user(&self) -> (String, String) {
        self.pool_login.lock().unwrap().clone().unwrap()
    }
}

impl Verify for Arc<FakeDb> {
    async fn verify(&self, s: &DbSecret) -> Result<(), VerifyError> {
        self.verifies.fetch_add(1, Ordering::SeqCst);
        self.dialled.lock().unwrap().push(s.host.clone());
        if self.down.load(Ordering::SeqCst) {
            return Err(VerifyError::Unreachable("connection refused".into()));
        }
        let key = (s.username.clone(), s.password().expose_secret().to_owned());
        if self.logins.lock().unwrap().contains(&key) {
            Ok(())
        } else {
            Err(VerifyError::Rejected { sqlstate: "28P01".into() })
        }
    }
}

impl CredentialTarget for Arc<FakeDb> {
    fn switch_to(&self, s: &DbSecret) {
        *self.pool_login.lock().unwrap() = Some((s.username.clone(), s.password().expose_secret().to_owned()));
    }
}

type Creds = Credentials<Arc<FakeSm>, Arc<FakeDb>>;

/// Secret `v1` = app/pw1 as AWSCURRENT, the database accepting it, the app started on it.
async fn started() -> (Arc<FakeSm>, Arc<FakeDb>, Arc<Creds>) {
    let sm = Arc::new(FakeSm::default());
    let db = Arc::new(FakeDb::default());
    sm.put("v1", "app", "pw1", &["AWSCURRENT"]);
    db.set_password("app", "pw1");
    let (initial, seen) = initial_login(&sm, &db).await.unwrap();
    db.switch_to(&initial.secret);
    let creds = Arc::new(Credentials::new(
        sm.clone(),
        db.clone(),
        Arc::new(Metrics::new()),
        initial,
        seen,
        RefreshPolicy::new(Duration::from_secs(60)),
    ));
    sm.describes.store(0, Ordering::SeqCst);
    sm.gets.store(0, Ordering::SeqCst);
    sm.gets_by_stage.store(0, Ordering::SeqCst);
    (sm, db, creds)
}

#[tokio::test(start_paused = true)]
async fn unchanged_secret_costs_one_describe_per_check_and_nothing_else() {
    let (sm, db, creds) = started().await;
    for _ in 0..5 {
        assert_eq!(creds.check_for_change().await.unwrap(), CheckOutcome::Unchanged);
    }
    assert_eq!(sm.calls(), (5, 0));
    assert_eq!(db.pool_user(), ("app".into(), "pw1".into()));
    assert_eq!(creds.generation(), 0);
}

#[tokio::test(start_paused = true)]
async fn alternating_rotation_is_picked_up_by_the_change_check_with_one_get() {
    let (sm, db, creds) = started().await;
    // createSecret + setSecret on the clone user; the app's login keeps working.
    sm.put("v2", "app_clone", "pw2", &["AWSPENDING"]);
    db.set_password("app_clone", "pw2");
    assert_eq!(creds.check_for_change().await.unwrap(), CheckOutcome::Unchanged);
    sm.finish("v2");
    assert_eq!(creds.check_for_change().await.unwrap(), CheckOutcome::Switched);
    assert_eq!(db.pool_user(), ("app_clone".into(), "pw2".into()));
    assert_eq!(creds.active().version_id, "v2");
    assert_eq!(creds.check_for_change().await.unwrap(), CheckOutcome::Unchanged);
    assert_eq!(sm.calls(), (3, 1), "3 describes, 1 GetSecretValue for the whole rotation");
}

#[tokio::test(start_paused = true)]
async fn single_user_set_without_finish_is_recovered_from_awspending_once_for_many_requests() {
    let (sm, db, creds) = started().await;
    sm.put("v2", "app", "pw2", &["AWSPENDING"]);
    db.set_password("app", "pw2"); // setSecret: the active login stops working
    let failed_under = creds.generation();
    let handles: Vec<_> = (0..32)
        .map(|_| {
            let c = creds.clone();
            tokio::spawn(async move { c.recover(failed_under).await })
        })
        .collect();
    for h in handles {
        h.await.unwrap().unwrap();
    }
    assert_eq!(db.pool_user(), ("app".into(), "pw2".into()));
    assert_eq!(sm.calls(), (1, 1), "32 refused requests, one refresh: 1 describe + 1 get");
    assert_eq!(sm.gets_by_stage.load(Ordering::SeqCst), 0, "fetched by the VersionId DescribeSecret reported");
    assert_eq!(creds.generation(), failed_under + 1);

    // Much later finishSecret: AWSCURRENT lands on the version already in use. No Get.
    sm.finish("v2");
    assert_eq!(creds.check_for_change().await.unwrap(), CheckOutcome::Unchanged);
    assert_eq!(creds.check_for_change().await.unwrap(), CheckOutcome::Unchanged);
    assert_eq!(sm.calls(), (3, 1));
}

#[tokio::test(start_paused = true)]
async fn a_failed_rotation_left_pending_does_not_make_the_change_check_flap() {
    let (sm, db, creds) = started().await;
    sm.put("v2", "app", "pw2", &["AWSPENDING"]);
    db.set_password("app", "pw2");
    creds.recover(0).await.unwrap();
    // The rotation failed after setSecret: AWSCURRENT still names v1 (now refused).
    for _ in 0..10 {
        assert_eq!(creds.check_for_change().await.unwrap(), CheckOutcome::Unchanged);
    }
    assert_eq!(db.pool_user().1, "pw2");
    assert_eq!(db.verifies.load(Ordering::SeqCst), 2, "startup + the one recovery: no verify per check");
}

#[tokio::test(start_paused = true)]
async fn falls_back_to_awsprevious_when_current_and_pending_are_refused() {
    let (sm, db, creds) = started().await;
    sm.put("v2", "app_clone", "pw2", &["AWSCURRENT"]); // v1 becomes... nothing
    sm.label("v1", "AWSPREVIOUS");
    sm.put("v3", "app", "pw3", &["AWSPENDING"]);
    // Database: v1's login no longer works, v2's was never set, only an old one works.
    db.set_password("app", "pw-old");
    sm.put("v0", "app", "pw-old", &["AWSPREVIOUS"]);
    creds.recover(0).await.unwrap();
    assert_eq!(creds.active().version_id, "v0");
    assert_eq!(db.pool_user().1, "pw-old");
}

#[tokio::test(start_paused = true)]
async fn nothing_works_backs_off_instead_of_hammering_secrets_manager() {
    let (sm, db, creds) = started().await;
    db.set_password("app", "unknown-to-the-secret");
    let err = creds.recover(0).await.unwrap_err();
    assert!(matches!(err, CredentialsError::NoWorkingVersion { .. }), "{err}");
    assert!(!err.to_string().contains("pw1"));
    let (d1, _) = sm.calls();
    for _ in 0..100 {
        assert!(matches!(creds.recover(0).await, Err(CredentialsError::BackingOff)));
    }
    assert_eq!(sm.calls().0, d1, "no Secrets Manager call while backing off");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(creds.recover(0).await.is_err());
    assert_eq!(sm.calls().0, d1 + 1);
}

#[tokio::test(start_paused = true)]
async fn a_brief_refusal_of_the_active_login_does_not_stall_until_the_next_rotation() {
    let (sm, db, creds) = started().await;
    // A pg_hba mistake (or a proxy with a stale secret): every login is refused for 60 s.
    db.logins.lock().unwrap().clear();
    let verifies_before = db.verifies.load(Ordering::SeqCst);
    let started = Instant::now();
    let mut refreshes = 0;
    while started.elapsed() < Duration::from_secs(60) {
        if creds.may_probe() {
            assert!(creds.recover(0).await.is_err());
            refreshes += 1;
        }
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    // Probes keep going with a short backoff (≤ 5 s); DescribeSecret backs off separately.
    assert!(refreshes >= 12, "{refreshes} probes in 60 s");
    assert!(db.verifies.load(Ordering::SeqCst) - verifies_before >= 12);
    let (describes, _) = sm.calls();
    assert!(describes <= 7, "{describes} DescribeSecret calls in 60 s of refusal");
    // Reverted: the next probe finds the active login works again and keeps it.
    db.set_password("app", "pw1");
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(creds.recover(0).await.unwrap(), Recovered::ActiveWorksAgain);
    assert_eq!(creds.generation(), 1, "requests stop treating the login as refused");
    assert_eq!(creds.active().version_id, "v1");
    assert!(creds.may_probe(), "backoff reset");
}

#[tokio::test(start_paused = true)]
async fn the_active_login_is_tried_last_after_every_other_version() {
    let (sm, db, creds) = started().await;
    sm.put("v2", "app", "pw2", &["AWSPENDING"]);
    db.set_password("app", "pw2");
    // Both would work for a moment (e.g. the old password is accepted again): the
    // rotation's version wins, the active one is only the last resort.
    db.logins.lock().unwrap().insert(("app".into(), "pw1".into()));
    assert_eq!(creds.recover(0).await.unwrap(), Recovered::Switched);
    assert_eq!(creds.active().version_id, "v2");
}

#[tokio::test(start_paused = true)]
async fn a_refresh_still_probes_the_database_when_secrets_manager_is_down() {
    let (sm, db, creds) = started().await;
    sm.outage.store(true, Ordering::SeqCst);
    db.logins.lock().unwrap().clear();
    let err = creds.recover(0).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    db.set_password("app", "pw1");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(creds.recover(0).await.unwrap(), Recovered::ActiveWorksAgain, "no Secrets Manager needed");
}

#[tokio::test(start_paused = true)]
async fn a_new_awscurrent_the_database_refuses_is_not_adopted_nor_retried() {
    let (sm, db, creds) = started().await;
    sm.put("v2", "app", "never-set", &["AWSCURRENT"]);
    assert_eq!(creds.check_for_change().await.unwrap(), CheckOutcome::NewVersionRejected);
    assert_eq!(creds.check_for_change().await.unwrap(), CheckOutcome::Unchanged);
    assert_eq!(db.pool_user().1, "pw1");
    assert_eq!(db.verifies.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn outage_backs_off_with_jitter_and_recovers() {
    let (sm, db, creds) = started().await;
    sm.outage.store(true, Ordering::SeqCst);
    let task = tokio::spawn(creds.clone().run_change_checks(Duration::from_secs(10), Duration::from_secs(160)));
    // Ten simulated minutes of outage. Steady state would be ~60 calls; backoff is
    // 10 s, then [20,40], [40,80], [80,160], then ≤160 s each: at most ~8 calls.
    tokio::time::sleep(Duration::from_secs(600)).await;
    let during = sm.calls().0;
    assert!((3..=10).contains(&during), "{during} describes during a 10-minute outage");
    assert_eq!(db.pool_user().1, "pw1", "kept serving with the working login");
    sm.outage.store(false, Ordering::SeqCst);
    sm.put("v2", "app_clone", "pw2", &["AWSCURRENT"]);
    db.set_password("app_clone", "pw2");
    tokio::time::sleep(Duration::from_secs(200)).await;
    assert_eq!(db.pool_user().0, "app_clone", "picked up the rotation once reachable");
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn startup_falls_back_to_pending_when_current_is_refused() {
    let sm = Arc::new(FakeSm::default());
    let db = Arc::new(FakeDb::default());
    sm.put("v1", "app", "pw1", &["AWSCURRENT"]);
    sm.put("v2", "app", "pw2", &["AWSPENDING"]);
    db.set_password("app", "pw2");
    let (v, seen) = initial_login(&sm, &db).await.unwrap();
    assert_eq!((v.version_id.as_str(), seen.as_str()), ("v2", "v1"));

    db.set_password("app", "nope");
    let err = initial_login(&sm, &db).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("AWSCURRENT v1") && text.contains("AWSPENDING v2"), "{text}");
    assert!(!text.contains("pw1") && !text.contains("pw2"));
}

#[tokio::test(start_paused = true)]
async fn a_request_that_failed_under_an_old_generation_just_retries() {
    let (sm, db, creds) = started().await;
    sm.put("v2", "app_clone", "pw2", &["AWSCURRENT"]);
    db.set_password("app_clone", "pw2");
    creds.check_for_change().await.unwrap();
    let before = sm.calls();
    assert_eq!(creds.recover(0).await.unwrap(), Recovered::AlreadyDone);
    assert_eq!(sm.calls(), before);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_secrets_manager_delays_neither_the_refresh_nor_is_held_by_the_change_check() {
    let (sm, db, creds) = started().await;
    sm.hang.store(true, Ordering::SeqCst);
    // A change check stuck in DescribeSecret for a minute...
    let check = tokio::spawn({
        let creds = creds.clone();
        async move { creds.check_for_change().await }
    });
    tokio::task::yield_now().await;
    // ...while the login is refused for a moment and then allowed again.
    db.logins.lock().unwrap().clear();
    db.set_password("app", "pw1");
    let started = Instant::now();
    assert_eq!(creds.recover(0).await.unwrap(), Recovered::ActiveWorksAgain);
    assert!(started.elapsed() <= Duration::from_secs(2), "refresh took {:?}", started.elapsed());
    check.abort();
}

/// The pin: `db:5432` only.
fn pin() -> Option<Endpoints> {
    Endpoints::from_setting("APP_DB_ENDPOINTS", Some("db:5432")).unwrap()
}

type PinnedCreds = Credentials<Arc<FakeSm>, Pinned<Arc<FakeDb>>>;

/// `v1` = app/pw1 on `db` as AWSCURRENT, the app started on it behind the pin.
async fn started_pinned() -> (Arc<FakeSm>, Arc<FakeDb>, Arc<PinnedCreds>, Arc<Metrics>) {
    let sm = Arc::new(FakeSm::default());
    let db = Arc::new(FakeDb::default());
    let metrics = Arc::new(Metrics::new());
    sm.put("v1", "app", "pw1", &["AWSCURRENT"]);
    db.set_password("app", "pw1");
    let target = Pinned::new(pin(), db.clone(), metrics.clone());
    let (initial, seen) = initial_login(&sm, &target).await.unwrap();
    target.switch_to(&initial.secret);
    let policy = RefreshPolicy::new(Duration::from_secs(60));
    let creds = Arc::new(Credentials::new(sm.clone(), target, metrics.clone(), initial, seen, policy));
    (sm, db, creds, metrics)
}

fn dialled(db: &FakeDb) -> Vec<String> {
    db.dialled.lock().unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn startup_never_dials_a_server_outside_the_pin_and_names_the_setting_when_nothing_is_left() {
    let sm = Arc::new(FakeSm::default());
    let db = Arc::new(FakeDb::default());
    let metrics = Arc::new(Metrics::new());
    let verifier = Pinned::new(pin(), db.clone(), metrics.clone());
    db.set_password("app", "pw1");
    sm.put("v0", "app", "pw1", &["AWSPREVIOUS"]);
    sm.put_at("evil.example", "v1", "app", "pw1", &["AWSCURRENT"]);
    let (v, seen) = initial_login(&sm, &verifier).await.unwrap();
    assert_eq!((v.version_id.as_str(), seen.as_str()), ("v0", "v1"), "fell back to the version on the pinned server");
    assert_eq!(dialled(&db), ["db"], "evil.example was never dialled");

    sm.versions.lock().unwrap().remove("v0");
    let err = initial_login(&sm, &verifier).await.unwrap_err();
    assert!(!err.is_transient(), "start-up fails rather than waits");
    let text = err.to_string();
    assert!(
        text.contains("evil.example:5432 is not among the database endpoints APP_DB_ENDPOINTS allows (db:5432)"),
        "{text}"
    );
    assert_eq!(dialled(&db), ["db"]);
    let rendered = metrics.render(crate::metrics::PoolGauges::default());
    assert!(
        rendered.contains("web_app_secret_versions_refused_total{reason=\"endpoint_not_allowed\"} 2"),
        "{rendered}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_awscurrent_naming_another_server_is_refused_once_and_the_working_login_kept() {
    let (sm, db, creds, metrics) = started_pinned().await;
    sm.put_at("evil.example", "v2", "app", "pw1", &["AWSCURRENT"]);
    assert_eq!(creds.check_for_change().await.unwrap(), CheckOutcome::NewVersionRejected);
    assert_eq!(creds.check_for_change().await.unwrap(), CheckOutcome::Unchanged, "judged once");
    assert_eq!(creds.active().version_id, "v1");
    assert_eq!(db.pool_user(), ("app".into(), "pw1".into()));
    assert!(dialled(&db).iter().all(|h| h == "db"), "{:?}", dialled(&db));
    let rendered = metrics.render(crate::metrics::PoolGauges::default());
    assert!(
        rendered.contains("web_app_secret_versions_refused_total{reason=\"endpoint_not_allowed\"} 1"),
        "{rendered}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refresh_skips_versions_naming_another_server_and_takes_the_next_that_works() {
    let (sm, db, creds, _) = started_pinned().await;
    // The password moved on; AWSCURRENT (by whoever wrote it) names another server with
    // the new password, AWSPENDING names ours.
    sm.put_at("evil.example", "v2", "app", "pw2", &["AWSCURRENT"]);
    sm.put("v3", "app", "pw2", &["AWSPENDING"]);
    db.set_password("app", "pw2");
    assert_eq!(creds.recover(creds.generation()).await.unwrap(), Recovered::Switched);
    assert_eq!(creds.active().version_id, "v3");
    assert_eq!(db.pool_user(), ("app".into(), "pw2".into()));
    assert!(dialled(&db).iter().all(|h| h == "db"), "{:?}", dialled(&db));
}
