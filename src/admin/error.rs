//! Admin-API errors and the one place they become a status and JSON.
//!
//! Invariants: exhaustive `match` (no catch-all), so a new error needs a status to
//! compile; every error answers `{"error": {"code", "message"}}`; bad input is 400
//! `invalid_request` with the message `<field>: <why>`; a store failure never says
//! more than the store's own summary (no paths, no SQL). Why one place: the admin
//! handlers return `Result<_, AdminError>` and never pick a status themselves.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::lifecycle::LifecycleError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No such path, or a key the caller may not see (another business's key).
    #[error("no such resource")]
    NotFound,
    /// The path exists, the method does not; `allow` lists the methods that do.
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    /// Missing or wrong credentials.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Valid credentials without the right.
    #[error("{0}")]
    Forbidden(String),
    /// Bad input, naming the field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("body: larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The store's own summary is the message; its cause is logged, never answered.
    #[error(transparent)]
    Store(StoreError),
}

impl AdminError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Store(e) => match e {
                StoreError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
                StoreError::Conflict => StatusCode::CONFLICT,
                StoreError::Corrupt { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                StoreError::BadCursor => StatusCode::BAD_REQUEST,
            },
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Forbidden(_) => "forbidden",
            Self::Invalid { .. } => "invalid_request",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::Store(e) => match e {
                StoreError::Unavailable { .. } => "store_unavailable",
                StoreError::Conflict => "conflict",
                StoreError::Corrupt { .. } => "store_corrupt",
                StoreError::BadCursor => "invalid_request",
            },
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Store(StoreError::BadCursor) => {
                "cursor: not a next_cursor this API returned".to_owned()
            }
            _ => self.to_string(),
        }
    }

    pub fn to_response(&self) -> Response<Full<Bytes>> {
        if let Self::Store(e) = self {
            tracing::warn!(error = %crate::report::Chain(e), "admin API: key store error");
        }
        let mut r = super::json(
            self.status(),
            &serde_json::json!({"error": {"code": self.code(), "message": self.message()}}),
        );
        match self {
            Self::Unauthenticated(_) => {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        r#"Bearer realm="keygate-admin", ApiKey header="X-API-Key""#,
                    ),
                );
            }
            Self::MethodNotAllowed { allow } => {
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        r
    }
}

impl From<LifecycleError> for AdminError {
    fn from(e: LifecycleError) -> Self {
        match e {
            LifecycleError::Invalid { field, message } => Self::invalid(field, message),
            LifecycleError::NotFound => Self::NotFound,
            LifecycleError::Store(s) => Self::Store(s),
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}
