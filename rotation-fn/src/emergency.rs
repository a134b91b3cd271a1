//! Emergency rotation: the leaked credential stops working everywhere.
//!
//! An operator's direct invocation (`{"Operation": "emergency-rotation",
//! "SecretId", "FleetWaitSeconds"?}`, see [`crate::event`]); Secrets Manager's
//! events cannot ask for it, so a secret's writer cannot either.
//!
//! 1. Refuse while another rotation is running or unfinished (a version other
//!    than AWSCURRENT is AWSPENDING): two rotations must not interleave.
//! 2. Rotate now, in this invocation, through the same four steps Secrets
//!    Manager runs: createSecret against the state RotateSecret leaves (a
//!    fresh token, AWSPENDING), then setSecret, testSecret and finishSecret as
//!    Secrets Manager invokes them, then AWSPENDING removed, as it does. With
//!    alternating users twice: the first rotation gives the login AWSPREVIOUS
//!    held a new password and makes it current, the second does the same for
//!    the other login, so no password either login had before still works,
//!    and every password the database has stays in a version (AWSCURRENT and
//!    AWSPREVIOUS).
//!    Not RotateSecret: it would invoke this function while this invocation
//!    waits for it, which deadlocks wherever the function's invocations are
//!    serialised (the local runtime, a reserved concurrency of 1), and the
//!    report would lose what each step saw.
//! 3. Note the server's clock. Every session of the secret's logins that
//!    started before it logged in with a password that no longer works (or
//!    with the new one between setSecret and finishSecret; ending those too
//!    costs their clients one reconnect).
//! 4. Wait, up to `FleetWaitSeconds` and never past the invocation's deadline,
//!    until every client (application name and address) with such a session
//!    has also opened one since: it has the new version.
//! 5. End the old sessions, each login ending its own (a role may end its own
//!    sessions without any privilege; the master needs none), and report which
//!    passwords changed, which sessions ended and which clients had not moved.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::error::{Credential, RotationError};
use crate::event::{RotationEvent, Step};
use crate::evidence::{Client, Evidence, SessionSeen, read_sessions};
use crate::guard::{PENDING, StageError};
use crate::session::Session;
use crate::strategy::Strategy;
use crate::{Deadline, Rotator, sql};

/// Kept back from the fleet wait for ending sessions and answering.
const WAIT_RESERVE: Duration = Duration::from_secs(3);
/// How often the sessions are looked at while waiting.
const POLL: Duration = Duration::from_millis(250);

/// What the emergency rotation did, as the invocation returns it.
#[derive(Debug, Serialize)]
struct Report {
    operation: &'static str,
    secret: String,
    /// Each rotation's steps, as each step answered.
    rotations: Vec<Vec<Value>>,
    /// The logins whose password changed (a login may appear once per rotation).
    passwords_changed: Vec<String>,
    /// How long the function waited for clients to move, in milliseconds.
    waited_ms: u128,
    /// Clients that still had a session from before and none since, when the
    /// wait ended.
    clients_not_moved: Vec<Client>,
    /// The sessions ended: they had logged in before the rotation finished.
    sessions_ended: Vec<Ended>,
}

#[derive(Debug, Serialize)]
struct Ended {
    login: String,
    #[serde(flatten)]
    session: SessionSeen,
}

pub(crate) async fn run(
    rotator: &Rotator,
    secret_id: &str,
    fleet_wait: Duration,
    deadline: Deadline,
) -> Result<Value, RotationError> {
    let state = rotator.store.describe(secret_id, &deadline).await?;
    let arn = state.arn.clone();
    warn!(secret = %arn, "emergency rotation requested");
    let count = match rotator.config.strategy {
        Strategy::SingleUser => 1,
        Strategy::AlternatingUsers => 2,
    };
    let mut rotations = Vec::new();
    let mut passwords_changed = Vec::new();
    for rotation in 1..=count {
        let steps = rotate_once(rotator, &arn, rotation, &deadline).await?;
        if let Some(user) = steps.iter().find_map(|s| s["evidence"]["login"].as_str()) {
            passwords_changed.push(user.to_owned());
        }
        rotations.push(steps);
    }

    let after = rotator.store.describe(&arn, &deadline).await?;
    let current = after
        .version_with(crate::guard::CURRENT)
        .ok_or_else(|| RotationError::Stage { arn: arn.clone(), source: StageError::NoCurrent })?
        .to_owned();
    let event =
        RotationEvent { step: Step::Test, secret_id: arn.clone(), token: current.clone(), rotation_token: None };
    let ctx = rotator.context(&event, after, current, deadline);
    let mut sessions = vec![ctx.login(&ctx.current().await?, Credential::Current).await?];
    if rotator.config.strategy == Strategy::AlternatingUsers
        && let Some(previous) = ctx.previous().await?
    {
        sessions.push(ctx.login(&previous, Credential::Previous).await?);
    }
    let clock = server_clock(&mut sessions[0], &deadline).await?;

    let started = std::time::Instant::now();
    let wait = fleet_wait.min(deadline.remaining().saturating_sub(WAIT_RESERVE));
    let clients_not_moved = loop {
        let mut seen = Vec::new();
        for session in &mut sessions {
            seen.push(Evidence::gather(session, &session.user.clone(), &deadline).await?);
        }
        let not_moved = not_moved(&seen, clock);
        if not_moved.is_empty() || started.elapsed() + POLL > wait {
            break not_moved;
        }
        tokio::time::sleep(POLL).await;
    };
    let waited_ms = started.elapsed().as_millis();

    let mut sessions_ended = Vec::new();
    for session in &mut sessions {
        let login = session.user.clone();
        let what = "ending the sessions that logged in before the rotation";
        let ended = read_sessions(session, what, sql::END_SESSIONS_BEFORE, &login, Some(clock), &deadline).await?;
        sessions_ended.extend(ended.into_iter().map(|session| Ended { login: login.clone(), session }));
    }
    for session in sessions {
        session.close().await;
    }
    warn!(
        secret = %arn,
        passwords_changed = ?passwords_changed,
        sessions_ended = sessions_ended.len(),
        clients_not_moved = clients_not_moved.len(),
        waited_ms = waited_ms as u64,
        "emergency rotation done"
    );
    let report = Report {
        operation: "emergency-rotation",
        secret: arn,
        rotations,
        passwords_changed,
        waited_ms,
        clients_not_moved,
        sessions_ended,
    };
    Ok(json!(report))
}

/// One rotation through the four steps, as Secrets Manager would run it.
async fn rotate_once(
    rotator: &Rotator,
    arn: &str,
    rotation: usize,
    deadline: &Deadline,
) -> Result<Vec<Value>, RotationError> {
    let mut state = rotator.store.describe(arn, deadline).await?;
    let stage_error = |source| RotationError::Stage { arn: arn.to_owned(), source };
    if !state.rotation_enabled {
        return Err(stage_error(StageError::RotationDisabled));
    }
    let current = state.version_with(crate::guard::CURRENT).ok_or_else(|| stage_error(StageError::NoCurrent))?;
    let current = current.to_owned();
    if let Some(pending) = state.version_with(PENDING).filter(|p| *p != current) {
        return Err(stage_error(StageError::RotationInProgress(pending.to_owned())));
    }
    let token = uuid::Uuid::new_v4().to_string();
    info!(secret = %arn, rotation, version = %token, "emergency rotation: rotating");
    state.versions.insert(token.clone(), vec![PENDING.to_owned()]);
    let stopped =
        |source| RotationError::EmergencyStopped { rotation, version: token.clone(), source: Box::new(source) };
    let mut steps = Vec::new();
    let mut staged = Some((state, current));
    for step in [Step::Create, Step::Set, Step::Test, Step::Finish] {
        let event = RotationEvent { step, secret_id: arn.to_owned(), token: token.clone(), rotation_token: None };
        steps.push(rotator.step(&event, *deadline, staged.take()).await.map_err(stopped)?);
    }
    rotator.store.remove_pending(arn, &token, deadline).await.map_err(stopped)?;
    Ok(steps)
}

async fn server_clock(session: &mut Session, deadline: &Deadline) -> Result<f64, RotationError> {
    session
        .run("reading the server's clock", deadline, async |conn| {
            sqlx::query_scalar::<_, f64>(sql::SERVER_CLOCK).fetch_one(conn).await
        })
        .await
}

/// The clients with a session from before `clock` and none since.
fn not_moved(seen: &[Evidence], clock: f64) -> Vec<Client> {
    let sessions = || seen.iter().flat_map(|e| &e.sessions);
    let old: BTreeSet<Client> =
        sessions().filter(|s| s.started.is_some_and(|t| t < clock)).map(|s| s.client()).collect();
    let new: BTreeSet<Client> =
        sessions().filter(|s| s.started.is_some_and(|t| t >= clock)).map(|s| s.client()).collect();
    old.difference(&new).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(app: &str, started: f64) -> SessionSeen {
        SessionSeen {
            pid: 1,
            application: app.into(),
            address: Some("10.0.0.5".into()),
            since: Some("t".into()),
            started: Some(started),
        }
    }

    #[test]
    fn a_client_has_moved_once_it_has_a_session_from_after_the_rotation() {
        let e = |sessions| Evidence { login: "app".into(), sessions };
        let clock = 100.0;
        assert!(not_moved(&[e(vec![])], clock).is_empty(), "nobody connected");
        assert!(not_moved(&[e(vec![seen("web-app", 101.0)])], clock).is_empty(), "only new sessions");
        let stuck =
            not_moved(&[e(vec![seen("web-app", 99.0), seen("job", 50.0)]), e(vec![seen("web-app", 100.5)])], clock);
        assert_eq!(stuck, vec![Client { application: "job".into(), address: Some("10.0.0.5".into()) }]);
    }
}
