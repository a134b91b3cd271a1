use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::{ApiError, AppState};

#[derive(Debug, Serialize)]
pub struct WhoAmI {
    /// `current_user` of the pooled connection that served this request (it may predate
    /// the latest switch until it retires).
    pub db_user: String,
    /// The user and secret version new connections log in with.
    pub login_user: String,
    pub secret_version_id: String,
}

pub async fn whoami(State(state): State<AppState>) -> Result<Json<WhoAmI>, ApiError> {
    let active = state.db.credentials().active();
    let db_user = state
        .db
        .run(|conn| Box::pin(sqlx::query_scalar::<_, String>("SELECT current_user::text").fetch_one(conn)))
        .await?;
    Ok(Json(WhoAmI {
        db_user,
        login_user: active.secret.username.clone(),
        secret_version_id: active.version_id.clone(),
    }))
}
