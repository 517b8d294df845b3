//! `GET /openapi.json`: the `OpenAPI` 3 description of the admin API.
//!
//! Invariants: the document is `openapi.json` beside this file, compiled in, with the
//! configured key header (`keys.header`) written in where it says `X-API-Key`, so a
//! client generated from it sends the header this gateway reads; every
//! `/v1/` operation the router serves is described, with every status it can answer
//! (checked by the unit test below and, end to end, by schemathesis in
//! `tests/it/admin_openapi.rs`). Why a static file rather than generated: it is read by
//! people and tools alike, and a diff of it is a diff of the API.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// The document, as written (for the default key header).
pub const DOCUMENT: &str = include_str!("openapi.json");

/// The document as served: rendered once, at start-up, for the configured key header.
pub struct Document(Bytes);

impl Document {
    /// `key_header` is a valid header name (`config` checks it), so it needs no JSON
    /// escaping: a token has no quote, backslash or control character.
    pub fn new(key_header: &str) -> Self {
        Self(Bytes::from(DOCUMENT.replace("X-API-Key", key_header)))
    }

    pub fn response(&self) -> Response<Full<Bytes>> {
        response(self.0.clone())
    }
}

fn response(body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::{DOCUMENT, Document};

    #[test]
    fn describes_every_operation_the_router_serves() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap();
        assert_eq!(doc["openapi"], "3.0.3");
        for (path, method) in [
            ("/v1/keys", "post"),
            ("/v1/keys", "get"),
            ("/v1/keys/{id}", "get"),
            ("/v1/keys/{id}", "delete"),
            ("/v1/keys/{id}/rotate", "post"),
            ("/v1/policy", "get"),
            ("/v1/audit", "get"),
            ("/v1/whoami", "get"),
            ("/v1/upstreams", "get"),
        ] {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path} is not described");
            assert!(op["responses"]["401"].is_object(), "{method} {path}: 401");
        }
    }

    #[test]
    fn names_the_configured_key_header() {
        let doc: serde_json::Value =
            serde_json::from_slice(&Document::new("X-Custom-Key").0).unwrap();
        let scheme = &doc["components"]["securitySchemes"]["apiKey"];
        assert_eq!(scheme["name"], "X-Custom-Key");
        assert!(!doc.to_string().contains("X-API-Key"));
        let default: serde_json::Value =
            serde_json::from_slice(&Document::new("X-API-Key").0).unwrap();
        assert_eq!(
            default,
            serde_json::from_str::<serde_json::Value>(DOCUMENT).unwrap()
        );
    }
}
