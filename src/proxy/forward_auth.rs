//! Forward-auth mode: answers auth sub-requests from another proxy (nginx
//! `auth_request`, Traefik `forwardAuth`, Envoy `ext_authz` in HTTP mode) with the same
//! decision the proxy makes ([`Proxy::authorise`]), and forwards nothing itself.
//!
//! The original request is read from `X-Original-Method` + `X-Original-URI` (nginx),
//! else `X-Forwarded-Method` + `X-Forwarded-Uri` (Traefik), else the sub-request's own
//! method and path (Envoy). A fronting proxy passes client headers through, so a client
//! can add the pair its proxy does not set: when both pairs are present and disagree,
//! or a header of a pair is repeated, the answer is 400 `ambiguous_request`, never a
//! decision on either.
//!
//! Invariants: an allowed request gets 200, an empty body and every `X-Keygate-*`
//! identity header (empty where there is nothing to say), so the fronting proxy always
//! overwrites what a client sent, plus one `X-Keygate-Meta-<name>` per metadata entry; a
//! sub-request carrying a client's own `X-Keygate-Meta-*` header is refused (400), since
//! a metadata name the key lacks would not be overwritten; a refusal gets the proxy's
//! status and JSON.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::HeaderName;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::{Either, Full};

use super::rewrite::insert_identity;
use super::{Ask, Body, Proxy, Refusal, Trace};

const NGINX_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const NGINX_URI: HeaderName = HeaderName::from_static("x-original-uri");
const TRAEFIK_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const TRAEFIK_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");

/// The forward-auth listener's service.
pub struct ForwardAuth {
    pub proxy: Arc<Proxy>,
}

impl ForwardAuth {
    /// Answers one sub-request; logged and counted like a proxied request.
    pub async fn serve<B>(&self, req: Request<B>, peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let mut trace = Trace::default();
        let (result, method, path) = match original(&req) {
            Ok((method, target)) => {
                let path = target.path().to_owned();
                let ask = Ask {
                    method: &method,
                    path: target.path(),
                    query: target.query(),
                    headers: req.headers(),
                    peer,
                };
                let result = self.proxy.authorise(&ask, &mut trace).await.map(|permit| {
                    let mut r = Response::new(Either::Right(Full::new(Bytes::new())));
                    insert_identity(r.headers_mut(), &permit, true);
                    r
                });
                (result, method, path)
            }
            Err(refusal) => (
                Err(refusal),
                req.method().clone(),
                req.uri().path().to_owned(),
            ),
        };
        self.proxy.finish(started, &method, &path, &trace, result)
    }
}

/// The original method and path-and-query the sub-request is about. A client's own
/// `X-Keygate-Meta-*` header refuses the request: a fronting proxy copies the answer's
/// metadata headers by name, so a name the key's metadata lacks would pass the client's
/// value through to the upstream (the five identity headers are always answered, so the
/// proxy always overwrites those).
fn original<B>(req: &Request<B>) -> Result<(Method, PathAndQuery), Refusal> {
    let h = req.headers();
    if h.keys().any(|k| k.as_str().starts_with("x-keygate-meta-")) {
        return Err(Refusal::BadRequest(
            "X-Keygate-Meta-* headers are keygate's to set; the client may not send them",
        ));
    }
    let own = || {
        req.uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"))
    };
    let nginx = pair(h, &NGINX_METHOD, &NGINX_URI)?;
    let traefik = pair(h, &TRAEFIK_METHOD, &TRAEFIK_URI)?;
    let (method, uri) = match (nginx, traefik) {
        (Some(n), Some(t)) => {
            if n != t {
                return Err(Refusal::AmbiguousRequest);
            }
            n
        }
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => return Ok((req.method().clone(), own())),
    };
    let method = match method {
        Some(m) => Method::from_bytes(m.as_bytes())
            .map_err(|_| Refusal::BadRequest("the original method is not a method"))?,
        None => req.method().clone(),
    };
    let target = match uri {
        Some(u) if u.starts_with('/') => {
            u.parse::<PathAndQuery>().map_err(|_| Refusal::BadTarget)?
        }
        Some(_) => return Err(Refusal::BadTarget),
        None => own(),
    };
    Ok((method, target))
}

/// One proxy's (method, uri) headers: `None` if neither is sent; a repeated header is ambiguous.
#[allow(clippy::type_complexity)] // a local pair of optional header texts
fn pair(
    h: &HeaderMap,
    method: &HeaderName,
    uri: &HeaderName,
) -> Result<Option<(Option<String>, Option<String>)>, Refusal> {
    let m = single(h, method)?;
    let u = single(h, uri)?;
    Ok((m.is_some() || u.is_some()).then_some((m, u)))
}

fn single(h: &HeaderMap, name: &HeaderName) -> Result<Option<String>, Refusal> {
    let Some(first) =
        crate::headers::at_most_one(h, name).map_err(|_| Refusal::AmbiguousRequest)?
    else {
        return Ok(None);
    };
    let text = first.to_str().map_err(|_| Refusal::AmbiguousRequest)?;
    Ok(Some(text.trim().to_owned()))
}
