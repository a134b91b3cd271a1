//! The schema: applied by `web-app migrate` with the **owner's** login, checked (never
//! changed) by the serving app with its runtime login.
//!
//! Why two logins: the runtime login alternates (`app`, `app_clone`) and needs only DML.
//! A table created by whichever user happened to be active would belong to that user, and
//! after the next rotation the other one could not read it (42501 on every request). The
//! owner role creates every object, and its default privileges (`ALTER DEFAULT PRIVILEGES
//! FOR ROLE <owner> … TO app`, see README.md) give the app role DML on each of them; the
//! clone is a member of `app` and inherits.
//!
//! Migrations are embedded in the binary (the runtime image has no files to read). Each
//! runs once, all in one transaction, under an advisory lock so two deploys running
//! `migrate` together do not race.

use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::{Acquire, Executor};

use crate::pool::{Db, DbError};

/// `(version, description, sql)`, in order. Never edit an applied one's SQL; append.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "notes table", include_str!("../migrations/0001_notes.sql")),
    (2, "idempotency key for note inserts", include_str!("../migrations/0002_notes_request_key.sql")),
];

/// The schema version this build serves: the newest migration it knows.
pub const REQUIRED_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS web_app_migrations (
    version bigint PRIMARY KEY,
    description text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())";

/// Applies every migration not applied yet, as the login of `conn` (the owner). Returns
/// how many ran.
pub async fn apply(conn: &mut PgConnection) -> Result<usize, sqlx::Error> {
    let mut tx = conn.begin().await?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('web-app migrations'))").await?;
    sqlx::raw_sql(VERSION_TABLE).execute(&mut *tx).await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM web_app_migrations").fetch_all(&mut *tx).await?;
    let mut count = 0;
    for (version, description, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        sqlx::raw_sql(*sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO web_app_migrations (version, description) VALUES ($1, $2)")
            .bind(version)
            .bind(description)
            .execute(&mut *tx)
            .await?;
        tracing::info!(version, description, "applied migration");
        count += 1;
    }
    tx.commit().await?;
    Ok(count)
}

/// Why serving cannot use the database's schema.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the database schema is {found} but this build needs version {REQUIRED_VERSION}; run `web-app migrate` \
         (with APP_OWNER_SECRET_ID naming the schema owner's secret) before starting the app"
    )]
    NotMigrated { found: String },
    #[error(
        "the app's login may not read web_app_migrations (SQLSTATE 42501): the schema owner's default privileges \
         must grant the app role SELECT, INSERT, UPDATE, DELETE on its tables (see the web-app README, \"First \
         deployment\")"
    )]
    NoPrivilege,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Waits (up to `patience`) until the schema is at least [`REQUIRED_VERSION`]: a deploy may
/// start the app while `web-app migrate` is still running. Never changes anything.
pub async fn wait_for_schema(db: &Db, patience: Duration) -> Result<i64, SchemaError> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut warned = false;
    loop {
        let result = db
            .run(|conn| {
                Box::pin(
                    sqlx::query_scalar::<_, Option<i64>>("SELECT max(version) FROM web_app_migrations").fetch_one(conn),
                )
            })
            .await;
        let found = match result {
            Ok(Some(version)) if version >= REQUIRED_VERSION => return Ok(version),
            Ok(Some(version)) => format!("at version {version}"),
            Ok(None) => "empty".to_owned(),
            Err(DbError::Sqlx { class, .. }) if class == "42P01" => {
                "not created (no web_app_migrations table)".to_owned()
            }
            Err(DbError::Sqlx { class, .. }) if class == "42501" => return Err(SchemaError::NoPrivilege),
            Err(e) if e.is_unavailable() => format!("unknown ({e})"),
            Err(e) => return Err(e.into()),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(SchemaError::NotMigrated { found });
        }
        if !warned {
            tracing::warn!(schema = %found, needed = REQUIRED_VERSION, "waiting for `web-app migrate`");
            warned = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (i, (version, _, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i64 + 1);
        }
        assert_eq!(REQUIRED_VERSION, MIGRATIONS.len() as i64);
        assert!(SchemaError::NotMigrated { found: "empty".into() }.to_string().contains("web-app migrate"));
    }
}
