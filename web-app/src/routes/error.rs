use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::pool::DbError;

/// What a handler can fail with. Internal causes are logged with their whole chain and
/// answered with an opaque 500 (or 503 when no database connection could be had in
/// time): the client learns nothing about the database or secret.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(&'static str),
    #[error(transparent)]
    Internal(#[from] DbError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not found"),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, *m),
            ApiError::Internal(cause) => {
                let mut chain = cause.to_string();
                let mut source = std::error::Error::source(cause);
                while let Some(s) = source {
                    chain.push_str(": ");
                    chain.push_str(&s.to_string());
                    source = s.source();
                }
                if cause.is_unavailable() {
                    tracing::error!(error = %chain, "database unavailable");
                    (StatusCode::SERVICE_UNAVAILABLE, "service unavailable")
                } else {
                    tracing::error!(error = %chain, "internal error");
                    (StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                }
            }
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}
