//! Admin-API errors and the one place they become a status and JSON.
//!
//! Invariant: exhaustive `match` (no catch-all), so a new error needs a status to compile.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no such resource")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl AdminError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
        }
    }

    pub fn to_response(&self) -> Response<Full<Bytes>> {
        super::json(
            self.status(),
            &serde_json::json!({"error": {"code": self.code(), "message": self.to_string()}}),
        )
    }
}
