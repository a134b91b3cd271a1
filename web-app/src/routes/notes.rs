//! A small real API: notes you can create, list and fetch.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};

#[derive(Debug, Serialize)]
pub struct Note {
    pub id: i64,
    pub body: String,
    pub created_at: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewNote {
    pub body: String,
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    pub limit: Option<i64>,
}

/// The columns every query returns, timestamps rendered by the database as RFC 3339.
macro_rules! columns {
    () => {
        r#"id, body, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#
    };
}

type Row = (i64, String, String);

impl From<Row> for Note {
    fn from((id, body, created_at): Row) -> Self {
        Note { id, body, created_at }
    }
}

pub async fn create(
    State(state): State<AppState>,
    Json(new): Json<NewNote>,
) -> Result<(StatusCode, Json<Note>), ApiError> {
    let len = new.body.chars().count();
    if len == 0 || len > 10_000 {
        return Err(ApiError::BadRequest("body must be 1 to 10000 characters"));
    }
    let mut conn = state.db.acquire().await?;
    let note: Row = sqlx::query_as(concat!("INSERT INTO notes (body) VALUES ($1) RETURNING ", columns!()))
        .bind(new.body)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| state.db.query_error(e))?;
    Ok((StatusCode::CREATED, Json(note.into())))
}

pub async fn list(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<Note>>, ApiError> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be 1 to 500"));
    }
    let mut conn = state.db.acquire().await?;
    let notes: Vec<Row> = sqlx::query_as(concat!("SELECT ", columns!(), " FROM notes ORDER BY id DESC LIMIT $1"))
        .bind(limit)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| state.db.query_error(e))?;
    Ok(Json(notes.into_iter().map(Note::from).collect()))
}

pub async fn get_one(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Json<Note>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let note: Option<Row> = sqlx::query_as(concat!("SELECT ", columns!(), " FROM notes WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| state.db.query_error(e))?;
    note.map(|n| Json(n.into())).ok_or(ApiError::NotFound)
}
