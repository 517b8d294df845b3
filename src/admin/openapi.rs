//! `GET /openapi.json`: the `OpenAPI` 3 description of the admin API.
//!
//! Invariants: the document is `openapi.json` beside this file, compiled in; every
//! `/v1/` operation the router serves is described, with every status it can answer
//! (checked by the unit test below and, end to end, by schemathesis in
//! `tests/it/admin_openapi.rs`). Why a static file rather than generated: it is read by
//! people and tools alike, and a diff of it is a diff of the API.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

pub fn response() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(DOCUMENT.as_bytes())));
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
    use super::DOCUMENT;

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
        ] {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path} is not described");
            assert!(op["responses"]["401"].is_object(), "{method} {path}: 401");
        }
    }
}
