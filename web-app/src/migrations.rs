//! Schema migrations, embedded in the binary (the runtime image has no files to read).
//!
//! Each migration runs once, in a transaction, under an advisory lock so several
//! instances starting together do not race.

use sqlx::Acquire;

use crate::pool::{Db, DbError};

/// `(version, description, sql)`, in order. Never edit an applied one; append.
const MIGRATIONS: &[(i64, &str, &str)] = &[(1, "notes table", include_str!("../migrations/0001_notes.sql"))];

pub async fn run(db: &Db) -> Result<usize, DbError> {
    let mut conn = db.acquire().await?;
    let mut tx = conn.begin().await.map_err(|e| db.query_error(e))?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('web-app migrations'))")
        .execute(&mut *tx)
        .await
        .map_err(|e| db.query_error(e))?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS web_app_migrations (
            version bigint PRIMARY KEY,
            description text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| db.query_error(e))?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM web_app_migrations")
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db.query_error(e))?;
    let mut count = 0;
    for (version, description, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        sqlx::raw_sql(*sql).execute(&mut *tx).await.map_err(|e| db.query_error(e))?;
        sqlx::query("INSERT INTO web_app_migrations (version, description) VALUES ($1, $2)")
            .bind(version)
            .bind(description)
            .execute(&mut *tx)
            .await
            .map_err(|e| db.query_error(e))?;
        tracing::info!(version, description, "applied migration");
        count += 1;
    }
    tx.commit().await.map_err(|e| db.query_error(e))?;
    Ok(count)
}
