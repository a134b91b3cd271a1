//! Who is still connected as a login whose password is about to change.
//!
//! PostgreSQL keeps a session alive after `ALTER ROLE … PASSWORD`; what breaks
//! is the client's *next* login. So before setSecret changes a password, the
//! function looks at the login's sessions (`pg_stat_activity`): with
//! alternating users, sessions of the login being retired are clients that
//! have not moved to AWSCURRENT (or pooled sessions that will reconnect with
//! it); with a single user, they are the clients that logged in with the old
//! password. The evidence is logged (one line per setSecret, which the CDK app
//! counts) and returned in the step's result; the operator's
//! [`InUsePolicy`] decides whether a retiring login still in use stops the step.

use std::collections::BTreeMap;

use serde::Serialize;
use tracing::{info, warn};

use crate::deadline::Deadline;
use crate::error::RotationError;
use crate::session::Session;
use crate::sql;

/// What setSecret does when the login it is about to retire still has
/// sessions (`RETIRING_LOGIN_IN_USE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InUsePolicy {
    /// Change the password and report the sessions (the default: a rotation
    /// is a security control, and whoever holds the old login, a forgotten job
    /// or an intruder, must not be able to hold it off by staying connected).
    #[default]
    Proceed,
    /// Fail the step (transient: Secrets Manager retries the rotation later),
    /// naming the clients that have not moved.
    Fail,
}

impl InUsePolicy {
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            "proceed" => Some(Self::Proceed),
            "fail" => Some(Self::Fail),
            _ => None,
        }
    }
}

/// One session of a login, as the asking session may see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionSeen {
    pub pid: i32,
    pub application: String,
    /// The client's address, `local` for a Unix socket; `None`: hidden from
    /// the asking role (it needs `pg_read_all_stats` to see it).
    pub address: Option<String>,
    /// When the session started (RFC 3339, UTC), `None` when hidden.
    pub since: Option<String>,
    #[serde(skip)]
    pub(crate) started: Option<f64>,
}

/// A client: the application name and address its sessions share.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Client {
    pub application: String,
    pub address: Option<String>,
}

impl SessionSeen {
    pub(crate) fn client(&self) -> Client {
        Client { application: self.application.clone(), address: self.address.clone() }
    }
}

/// The sessions of one login at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    pub login: String,
    pub sessions: Vec<SessionSeen>,
}

impl Evidence {
    pub(crate) async fn gather(session: &mut Session, login: &str, deadline: &Deadline) -> Result<Self, RotationError> {
        let what = "reading the login's sessions";
        let sessions = read_sessions(session, what, sql::SESSIONS_OF, login, None, deadline).await?;
        Ok(Self { login: login.to_owned(), sessions })
    }

    /// Whether some session's address and start were hidden from the asker.
    pub fn hidden(&self) -> bool {
        self.sessions.iter().any(|s| s.since.is_none())
    }

    /// The clients, each with its number of sessions and its oldest start.
    pub fn clients(&self) -> Vec<(Client, usize, Option<&str>)> {
        let mut by_client: BTreeMap<Client, (usize, Option<&str>)> = BTreeMap::new();
        for s in &self.sessions {
            let entry = by_client.entry(s.client()).or_default();
            entry.0 += 1;
            entry.1 = match (entry.1, s.since.as_deref()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        by_client.into_iter().map(|(c, (n, since))| (c, n, since)).collect()
    }

    /// One line naming the clients, for logs and errors (at most ten named).
    pub fn summary(&self) -> String {
        if self.sessions.is_empty() {
            return "no sessions".into();
        }
        let clients = self.clients();
        let mut parts: Vec<String> = clients
            .iter()
            .take(10)
            .map(|(c, n, since)| {
                let app = if c.application.is_empty() { "(no application name)" } else { &c.application };
                let from = c.address.as_deref().unwrap_or("an address hidden without pg_read_all_stats");
                let since = since.map(|s| format!(", oldest since {s}")).unwrap_or_default();
                format!("{n} session(s) of {app:?} from {from}{since}")
            })
            .collect();
        if clients.len() > 10 {
            parts.push(format!("and {} more client(s)", clients.len() - 10));
        }
        parts.join("; ")
    }

    /// Logs the evidence as the line the CDK app's metric filter reads
    /// (`message` = [`IN_USE_MESSAGE`], `sessions` its value).
    pub(crate) fn log(&self, role: &'static str) {
        let sessions = self.sessions.len();
        if sessions == 0 {
            info!(login = %self.login, role, sessions, clients = "none", message = IN_USE_MESSAGE);
        } else {
            warn!(
                login = %self.login,
                role,
                sessions,
                hidden = self.hidden(),
                clients = %self.summary(),
                message = IN_USE_MESSAGE
            );
        }
    }
}

/// Runs `query`, one of the statements that answer sessions of `login` with
/// `sql::session_columns!` ([`sql::SESSIONS_OF`], [`sql::END_SESSIONS_BEFORE`]
/// with `before` as its `$2`).
pub(crate) async fn read_sessions(
    session: &mut Session,
    what: &str,
    query: &'static str,
    login: &str,
    before: Option<f64>,
    deadline: &Deadline,
) -> Result<Vec<SessionSeen>, RotationError> {
    let rows = session
        .run(what, deadline, async |conn| {
            let mut q = sqlx::query_as::<_, (i32, Option<String>, Option<String>, Option<String>, Option<f64>)>(query)
                .bind(login);
            if let Some(before) = before {
                q = q.bind(before);
            }
            q.fetch_all(conn).await
        })
        .await?;
    Ok(rows
        .into_iter()
        .map(|(pid, application, address, since, started)| SessionSeen {
            pid,
            application: application.unwrap_or_default(),
            address,
            since,
            started,
        })
        .collect())
}

/// The message of the evidence line, one per setSecret.
pub const IN_USE_MESSAGE: &str = "sessions of the login whose password changes";

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(pid: i32, app: &str, address: Option<&str>, since: Option<&str>) -> SessionSeen {
        SessionSeen {
            pid,
            application: app.into(),
            address: address.map(Into::into),
            since: since.map(Into::into),
            started: None,
        }
    }

    #[test]
    fn the_policy_is_named_in_words() {
        assert_eq!(InUsePolicy::parse("proceed"), Some(InUsePolicy::Proceed));
        assert_eq!(InUsePolicy::parse(" fail "), Some(InUsePolicy::Fail));
        assert_eq!(InUsePolicy::parse("block"), None);
        assert_eq!(InUsePolicy::default(), InUsePolicy::Proceed);
    }

    #[test]
    fn clients_group_sessions_and_keep_the_oldest_start() {
        let e = Evidence {
            login: "app".into(),
            sessions: vec![
                seen(1, "web-app", Some("10.0.0.5"), Some("2026-12-07T10:00:05Z")),
                seen(2, "web-app", Some("10.0.0.5"), Some("2026-12-07T10:00:01Z")),
                seen(3, "nightly-job", None, None),
            ],
        };
        assert!(e.hidden());
        assert_eq!(
            e.summary(),
            "1 session(s) of \"nightly-job\" from an address hidden without pg_read_all_stats; \
             2 session(s) of \"web-app\" from 10.0.0.5, oldest since 2026-12-07T10:00:01Z"
        );
        let none = Evidence { login: "app".into(), sessions: vec![] };
        assert_eq!(none.summary(), "no sessions");
        assert!(!none.hidden());
    }

    #[test]
    fn a_long_list_is_cut_at_ten_clients() {
        let sessions = (0..12).map(|i| seen(i, &format!("job-{i:02}"), Some("local"), None)).collect();
        let summary = Evidence { login: "app".into(), sessions }.summary();
        assert!(summary.ends_with("; and 2 more client(s)"), "{summary}");
        assert!(!summary.contains("job-10"));
    }
}
