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

/// A new note. The INSERT carries a key unique to this request, so when its session dies
/// mid-statement [`crate::pool::Db::run`] can run it again on another connection: if the
/// first run committed, the second finds that row instead of inserting a duplicate.
pub async fn create(
    State(state): State<AppState>,
    Json(new): Json<NewNote>,
) -> Result<(StatusCode, Json<Note>), ApiError> {
    let len = new.body.chars().count();
    if len == 0 || len > 10_000 {
        return Err(ApiError::BadRequest("body must be 1 to 10000 characters"));
    }
    let key = format!("{:032x}", rand::random::<u128>());
    let note: Row = state
        .db
        .run(|conn| {
            let (body, key) = (new.body.clone(), key.clone());
            Box::pin(async move {
                let inserted: Option<Row> = sqlx::query_as(concat!(
                    "INSERT INTO notes (body, request_key) VALUES ($1, $2::uuid) ",
                    "ON CONFLICT (request_key) DO NOTHING RETURNING ",
                    columns!()
                ))
                .bind(body)
                .bind(&key)
                .fetch_optional(&mut *conn)
                .await?;
                match inserted {
                    Some(row) => Ok(row),
                    // An earlier run of this request committed before its session died.
                    None => {
                        sqlx::query_as(concat!("SELECT ", columns!(), " FROM notes WHERE request_key = $1::uuid"))
                            .bind(&key)
                            .fetch_one(&mut *conn)
                            .await
                    }
                }
            })
        })
        .await?;
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
    let notes: Vec<Row> = state
        .db
        .run(|conn| {
            Box::pin(
                sqlx::query_as(concat!("SELECT ", columns!(), " FROM notes ORDER BY id DESC LIMIT $1"))
                    .bind(limit)
                    .fetch_all(conn),
            )
        })
        .await?;
    Ok(Json(notes.into_iter().map(Note::from).collect()))
}

pub async fn get_one(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Json<Note>, ApiError> {
    let note: Option<Row> = state
        .db
        .run(|conn| {
            Box::pin(
                sqlx::query_as(concat!("SELECT ", columns!(), " FROM notes WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(conn),
            )
        })
        .await?;
    note.map(|n| Json(n.into())).ok_or(ApiError::NotFound)
}
