//! The database server's own record of what the app did: refused logins.

use crate::TestEnv;

impl TestEnv {
    /// Where the server log ends now: pass it to [`Self::refused_logins_since`].
    pub fn server_log_mark(&self) -> usize {
        self.pg.server_log().len()
    }

    /// The server's own record of logins it refused since `mark` (its `FATAL: password
    /// authentication failed` lines): what a brute-force detector reading the database's
    /// log counts.
    pub fn refused_logins_since(&self, mark: usize) -> Vec<String> {
        let log = self.pg.server_log();
        log.get(mark..)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("FATAL:") && l.contains("authentication failed for user"))
            .map(str::to_owned)
            .collect()
    }
}
