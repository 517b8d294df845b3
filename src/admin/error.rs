//! Admin-API errors and the one place they become a status and JSON.
//!
//! Invariants: exhaustive `match` (no catch-all), so a new error needs a status to
//! compile; every error answers `{"error": {"code", "message"}}`; bad input is 400
//! `invalid_request` with the message `<field>: <why>`; a store failure never says
//! more than the store's own summary (no paths, no SQL). Why one place: the admin
//! handlers return `Result<_, AdminError>` and never pick a status themselves.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::authn::AuthnError;
use crate::lifecycle::LifecycleError;
use crate::policy::Denial;
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
    Unauthenticated(Cow<'static, str>),
    /// Valid credentials without the right.
    #[error("{0}")]
    Forbidden(String),
    /// Bad input, naming the field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The request is valid but the key's state forbids it (a revoked key's edit): 409.
    #[error("{0}")]
    Refused(String),
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

    /// An unknown, malformed or revoked key: one answer for all three.
    fn bad_key() -> Self {
        Self::Unauthenticated("unknown, malformed or revoked API key".into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::Refused(_) => StatusCode::CONFLICT,
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
            Self::Invalid { .. } | Self::Refused(_) => "invalid_request",
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

    /// The JSON answer; a 401 names both schemes, the key one with `key_header` (as
    /// configured), in `WWW-Authenticate`.
    pub fn to_response(&self, key_header: &str) -> Response<Full<Bytes>> {
        if let Self::Store(e) = self {
            tracing::warn!(error = %crate::report::Chain(e), "admin API: key store error");
        }
        let mut r = super::json(
            self.status(),
            &serde_json::json!({"error": {"code": self.code(), "message": self.message()}}),
        );
        match self {
            Self::Unauthenticated(_) => {
                let challenge =
                    format!(r#"Bearer realm="keygate-admin", ApiKey header="{key_header}""#);
                if let Ok(v) = HeaderValue::from_str(&challenge) {
                    r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
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
            LifecycleError::GrantOutsideLocations { .. } => {
                let text = e.to_string();
                let message = text.strip_prefix("grants: ").unwrap_or(&text).to_owned();
                Self::invalid("grants", message)
            }
            LifecycleError::NotFound => Self::NotFound,
            LifecycleError::Revoked | LifecycleError::Contended { .. } => {
                Self::Refused(e.to_string())
            }
            LifecycleError::Store(s) => Self::Store(s),
        }
    }
}

/// The key path shared with the proxy ([`crate::authn`]): every bad key is the same 401.
impl From<AuthnError> for AdminError {
    fn from(e: AuthnError) -> Self {
        match e {
            AuthnError::Ambiguous { header } => {
                Self::invalid(header.as_str(), "more than one such header")
            }
            AuthnError::NotText => {
                Self::Unauthenticated("the credentials are not visible ASCII".into())
            }
            AuthnError::Malformed | AuthnError::Unknown => Self::bad_key(),
            AuthnError::Unavailable(s) => Self::Store(s),
        }
    }
}

/// The policy's refusal of a key ([`crate::policy::Policy::admit`]): revoked or expired
/// is 401 like any bad key, a disabled business 403.
impl From<Denial> for AdminError {
    fn from(d: Denial) -> Self {
        match d {
            Denial::Revoked => Self::bad_key(),
            Denial::Expired => Self::Unauthenticated("the API key has expired".into()),
            Denial::Disabled => Self::Unauthenticated("the API key is suspended".into()),
            Denial::BusinessDisabled => {
                Self::Forbidden("the key's business has API access switched off".to_owned())
            }
            Denial::NoRoute
            | Denial::LocationForbidden { .. }
            | Denial::InsufficientScope { .. } => Self::Forbidden(d.to_string()),
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}
