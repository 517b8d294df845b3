//! Every way the proxy says no, and the one place each becomes a status, a code and JSON.
//!
//! Invariants: the mapping is an exhaustive `match` with no catch-all, so a new refusal
//! cannot compile without a status; every bad key (unknown, revoked, malformed, checksum
//! broken) produces byte-identical bodies, so the answer tells an attacker nothing about
//! which one they hit; messages never contain a secret.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::authn::AuthnError;
use crate::policy::Denial;
use crate::policy::path::BadPath;
use crate::store::StoreError;

/// Why a request could not be sent upstream.
pub type SendError = Box<dyn std::error::Error + Send + Sync>;

/// A request the proxy will not forward, or could not.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("more than one API key header was sent")]
    AmbiguousKey,
    #[error("the request path cannot be normalised safely")]
    BadPath(#[source] BadPath),
    #[error("the request target must be a path (origin-form), or an absolute URL naming this host")]
    BadTarget,
    #[error("the request is malformed: {0}")]
    BadRequest(&'static str),
    #[error("the original-request headers disagree")]
    AmbiguousRequest,
    #[error("an API key is required")]
    MissingKey,
    #[error("the API key is not valid")]
    InvalidKey,
    #[error("the API key has expired")]
    ExpiredKey,
    #[error("the API key is suspended")]
    DisabledKey,
    #[error("the API key may not be used from this address")]
    IpForbidden,
    #[error("the API key lacks the required scopes: {}", .missing.join(", "))]
    InsufficientScope { missing: Vec<String> },
    /// `reason` is a whole sentence from the policy ("the API key may not act at location
    /// `hq`"): shown as it is, so the message never says "location" twice.
    #[error("{reason}")]
    LocationForbidden { reason: String },
    #[error("API access is switched off for this key's business")]
    BusinessDisabled,
    #[error("no route matches this request")]
    NoRoute,
    #[error("the request body is larger than this gateway accepts")]
    PayloadTooLarge,
    #[error("rate limit exceeded; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// `retry_after`: seconds until the quota refills; `None` for spent credits.
    #[error("{}", quota_message(*.retry_after))]
    QuotaExceeded { retry_after: Option<u64> },
    #[error("the key registry cannot be reached")]
    AuthUnavailable(#[source] StoreError),
    #[error("the upstream could not be reached")]
    UpstreamUnavailable(#[source] SendError),
    #[error("the upstream did not answer in time")]
    UpstreamTimeout,
}

impl From<Denial> for Refusal {
    fn from(d: Denial) -> Self {
        match d {
            Denial::NoRoute => Self::NoRoute,
            Denial::Revoked => Self::InvalidKey,
            Denial::Expired => Self::ExpiredKey,
            Denial::Disabled => Self::DisabledKey,
            Denial::BusinessDisabled => Self::BusinessDisabled,
            Denial::LocationForbidden { reason } => Self::LocationForbidden { reason },
            Denial::InsufficientScope { missing } => Self::InsufficientScope { missing },
        }
    }
}

/// Every bad key is the same `invalid_api_key` (nothing tells which check it failed).
impl From<AuthnError> for Refusal {
    fn from(e: AuthnError) -> Self {
        match e {
            AuthnError::Ambiguous { .. } => Self::AmbiguousKey,
            AuthnError::NotText | AuthnError::Malformed | AuthnError::Unknown => Self::InvalidKey,
            AuthnError::Unavailable(e) => Self::AuthUnavailable(e),
        }
    }
}

fn quota_message(retry_after: Option<u64>) -> String {
    match retry_after {
        Some(s) => format!("the API key's quota is used up; it refills in {s} s"),
        None => "the API key's credits are used up; an admin can refill them".to_owned(),
    }
}

impl From<crate::quotas::Refused> for Refusal {
    fn from(r: crate::quotas::Refused) -> Self {
        match r {
            crate::quotas::Refused::Exceeded { resets_at } => Self::QuotaExceeded {
                retry_after: resets_at.map(|t| {
                    u64::try_from(t.0 - crate::keys::Timestamp::now().0)
                        .unwrap_or(0)
                        .max(1)
                }),
            },
            crate::quotas::Refused::Unavailable(e) => Self::AuthUnavailable(e),
        }
    }
}

impl From<BadPath> for Refusal {
    fn from(e: BadPath) -> Self {
        Self::BadPath(e)
    }
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::AmbiguousKey
            | Self::BadPath(_)
            | Self::BadTarget
            | Self::BadRequest(_)
            | Self::AmbiguousRequest => StatusCode::BAD_REQUEST,
            Self::MissingKey | Self::InvalidKey | Self::ExpiredKey | Self::DisabledKey => {
                StatusCode::UNAUTHORIZED
            }
            Self::InsufficientScope { .. }
            | Self::IpForbidden
            | Self::LocationForbidden { .. }
            | Self::BusinessDisabled
            | Self::NoRoute => StatusCode::FORBIDDEN,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } | Self::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            Self::AuthUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The contract's error code; also the `code` field of the access log.
    pub fn code(&self) -> &'static str {
        match self {
            Self::AmbiguousKey => "ambiguous_api_key",
            Self::BadPath(_) | Self::BadTarget => "bad_path",
            Self::BadRequest(_) => "bad_request",
            Self::AmbiguousRequest => "ambiguous_request",
            Self::MissingKey => "missing_api_key",
            Self::InvalidKey => "invalid_api_key",
            Self::ExpiredKey => "expired_api_key",
            Self::DisabledKey => "disabled_api_key",
            Self::IpForbidden => "ip_forbidden",
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::LocationForbidden { .. } => "location_forbidden",
            Self::BusinessDisabled => "business_disabled",
            Self::NoRoute => "no_route",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimited { .. } => "rate_limited",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::AuthUnavailable(_) => "auth_unavailable",
            Self::UpstreamUnavailable(_) => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
        }
    }

    /// The sentence a client is told: the refusal, and for a bad path why it is bad. A
    /// registry's or upstream's cause is never told (it is logged).
    pub fn message(&self) -> String {
        match self {
            Self::BadPath(why) => format!("{self}: {why}"),
            _ => self.to_string(),
        }
    }

    /// The JSON answer, with `WWW-Authenticate` or `Retry-After` where the status calls for one.
    pub fn to_response(&self, key_header: &str) -> Response<Full<Bytes>> {
        let body = serde_json::json!({
            "error": { "code": self.code(), "message": self.message() }
        });
        let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            Self::MissingKey | Self::InvalidKey | Self::ExpiredKey | Self::DisabledKey => {
                if let Ok(v) = HeaderValue::from_str(&format!("ApiKey header=\"{key_header}\"")) {
                    h.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            Self::RateLimited { retry_after }
            | Self::QuotaExceeded {
                retry_after: Some(retry_after),
            } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::Refusal;
    use crate::store::StoreError;

    /// Usage counts refusals by code: every code must be one it knows.
    #[test]
    fn every_code_is_an_outcome_usage_counts() {
        let all = [
            Refusal::AmbiguousKey,
            Refusal::BadTarget,
            Refusal::BadRequest("x"),
            Refusal::AmbiguousRequest,
            Refusal::MissingKey,
            Refusal::InvalidKey,
            Refusal::ExpiredKey,
            Refusal::DisabledKey,
            Refusal::IpForbidden,
            Refusal::InsufficientScope { missing: vec![] },
            Refusal::LocationForbidden {
                reason: String::new(),
            },
            Refusal::BusinessDisabled,
            Refusal::NoRoute,
            Refusal::PayloadTooLarge,
            Refusal::RateLimited { retry_after: 1 },
            Refusal::QuotaExceeded { retry_after: None },
            Refusal::AuthUnavailable(StoreError::unavailable("x")),
            Refusal::UpstreamUnavailable("x".into()),
            Refusal::UpstreamTimeout,
        ];
        for r in &all {
            assert!(
                crate::usage::OUTCOMES.contains(&r.code()),
                "{} is not in usage::OUTCOMES",
                r.code()
            );
        }
        assert_eq!(
            all.len() + 1,
            crate::usage::OUTCOMES.len(),
            "allowed, and each code"
        );
    }
}
