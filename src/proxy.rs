//! THE request flow: one request, from bytes received to answer sent, top-down.
//!
//! [`Proxy::handle`] runs the phases in this fixed order, each returning
//! `Result<_, Refusal>`:
//! 1. refuse `Upgrade: h2c`, ambiguous body framing (seen by [`framing`] in the raw
//!    bytes, or in the parsed head), and targets that are not origin-form;
//! 2. [`Proxy::authorise`] — the decision, shared with forward-auth mode:
//!    1. read exactly one key header ([`Authn::presented`]; none is fine until a route
//!       needs one);
//!    2. normalise the path (unsafe → 400 `bad_path`, never forwarded);
//!    3. match the policy's routes (snapshot of the live policy, safe across `.await`);
//!    4. public route → permit; else [`Authn::authenticate`] parses the key (shape +
//!       checksum, no look-up for junk) and looks it up through the cache (registry down
//!       and not cached → 503, never open), the same path the admin API takes; a key
//!       with an IP allowlist is refused from elsewhere ([`client::address`]); and the
//!       policy decides;
//!    5. the route's rate limit, in the bucket its `per` names (the key's, its user's or
//!       business's; the client address's on public routes), counted by this gateway
//!       or the fleet ([`Limits::check`]); where the bucket stands goes out as
//!       `RateLimit-*` headers on the answer, refused or not;
//!    6. the key's quota (its own or its plan's), spent from this gateway's lease
//!       ([`Quotas::spend`]): only a request every other check let through spends one;
//! 3. forward what the [`Permitted`] allows, nothing else.
//!
//! [`Proxy::serve`] wraps it: a refusal becomes its JSON answer, and every request,
//! allowed or not, is counted and writes exactly one access-log line ([`Proxy::finish`]).
//!
//! Invariants: nothing here panics on request data; the only way to reach
//! [`forward`] is with a [`Permitted`], which only `policy` can build.

pub mod affinity;
pub mod answer_timer;
pub mod client;
pub mod forward;
pub mod forward_auth;
pub mod framing;
pub mod heard;
pub mod rate_headers;
pub mod refusal;
pub mod rewrite;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::authn::Authn;
use crate::cache::Cache;
use crate::events::Notices;
use crate::expiry::Expiring;
use crate::keys::{KeyRecord, Timestamp};
use crate::limits::{Bucket, Limits, Standing};
use crate::logging;
use crate::metrics;
use crate::policy::path;
use crate::policy::{Facts, Permitted, Policy};
use crate::quotas::Quotas;
use crate::store::KeyStore;
use crate::upstream::Target;
use crate::upstream::cause::{self, Class};
use crate::usage::Usage;
pub use affinity::Affinity;
pub use forward::Upstream;
pub use framing::Ambiguous;
pub use refusal::Refusal;

/// A streamed upstream body or a small body keygate wrote itself.
pub type Body = Either<Incoming, Full<Bytes>>;

/// Everything the request flow needs; shared by every connection.
pub struct Proxy {
    pub policy: Arc<ArcSwap<Policy>>,
    /// The registry and cache that `authn` looks keys up in, for the background work:
    /// invalidations, sweeps and last-use writes.
    pub store: Arc<dyn KeyStore>,
    pub cache: Arc<Cache>,
    pub usage: Arc<Usage>,
    pub limits: Arc<Limits>,
    pub quotas: Arc<Quotas>,
    pub expiring: Arc<Expiring>,
    /// Key events the request path raises (expiring, rate limited, quota exceeded).
    pub notices: Arc<Notices>,
    pub upstream: Upstream,
    /// Key header, parse and look-up: shared with the admin API.
    pub authn: Arc<Authn>,
}

/// The client connection a request came in on: what the flow needs to know about it,
/// and what it keeps from one request to the next.
pub struct Downstream {
    pub peer: SocketAddr,
    /// The peer's address as an `X-Forwarded-For` value, written once per connection.
    peer_ip: http::HeaderValue,
    /// Whether the connection is TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
    /// From the first request with both `Content-Length` and `Transfer-Encoding` on,
    /// requests are refused (see [`framing`]).
    pub framing: Ambiguous,
    /// The connection's own upstream connection (see [`forward`]).
    pub upstream: Affinity,
}

impl Downstream {
    pub fn new(peer: SocketAddr, tls: bool, framing: Ambiguous) -> Self {
        Self {
            peer,
            peer_ip: rewrite::ip_value(peer.ip()),
            tls,
            framing,
            upstream: Affinity::default(),
        }
    }
}

/// The request a decision is about: the proxied request itself, or, in forward-auth
/// mode, the original request another proxy names in its sub-request.
pub struct Ask<'a> {
    pub method: &'a Method,
    /// The raw path, as sent (normalised by [`Proxy::authorise`]).
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub peer: SocketAddr,
}

/// What one request did, filled in as the phases run; becomes the access-log line.
/// Shared, not copied: the route name and the key's record are `Arc`s already, the
/// target is borrowed from the proxy.
#[derive(Default)]
pub struct Trace<'p> {
    route: Option<Arc<str>>,
    key: Option<Arc<KeyRecord>>,
    upstream_status: Option<u16>,
    upstream_seconds: Option<f64>,
    target: Option<&'p Target>,
    /// The route's rate-limit bucket after this request, for the `RateLimit-*` headers.
    rate: Option<Standing>,
    /// When the key was checked (set with `key`): the time its use is counted at.
    checked_at: Option<Timestamp>,
    /// The policy allowed the key's request: its latest use (`last_used_at`).
    used: bool,
}

impl Proxy {
    /// Answers one request that came in on `conn`: forwards it or refuses it, and logs
    /// it either way.
    #[allow(clippy::manual_async_fn)] // on purpose: see the comment in the body
    pub fn serve(
        &self,
        req: Request<Incoming>,
        conn: &Downstream,
    ) -> impl Future<Output = Response<Body>> {
        // Not an `async fn`: that moves each argument from the future's start into its body
        // as it first runs, a second copy of the request (~250 bytes) per call; an async block
        // keeps the arguments where they were captured.
        async move {
            let started = Instant::now();
            let method = req.method().clone();
            // Cloning a `Uri` shares its bytes; no copy of the path.
            let uri = req.uri().clone();
            let mut trace = Trace::default();
            let result = if conn.framing.admit() {
                self.handle(req, conn, &mut trace).await
            } else {
                Err(Refusal::BadRequest(
                    "both Content-Length and Transfer-Encoding are set",
                ))
            };
            self.finish(started, &method, uri.path(), &trace, result)
        }
    }

    /// Turns a result into the answer, counts it and writes its access-log line.
    pub fn finish(
        &self,
        started: Instant,
        method: &Method,
        raw_path: &str,
        trace: &Trace<'_>,
        result: Result<Response<Body>, Refusal>,
    ) -> Response<Body> {
        // Why the upstream failed, for the log only (never the client's answer).
        let mut failure: Option<(Class, String)> = None;
        let (response, code) = match result {
            Ok(r) => (r, None),
            Err(refusal) => {
                match &refusal {
                    Refusal::AuthUnavailable(e) => {
                        metrics::store_error();
                        tracing::warn!(error = %crate::report::Chain(e), "key registry unavailable; refusing (fail closed)");
                    }
                    Refusal::UpstreamUnavailable(e) => {
                        failure = Some((
                            cause::classify(&**e),
                            crate::report::Chain(&**e).to_string(),
                        ));
                    }
                    Refusal::UpstreamTimeout => {
                        failure = Some((Class::Timeout, "no answer in time".to_owned()));
                    }
                    _ => {}
                }
                let code = refusal.code();
                (
                    refusal
                        .to_response(&self.authn.header_display)
                        .map(Either::Right),
                    Some(code),
                )
            }
        };
        let mut response = response;
        if let Some(standing) = trace.rate {
            rate_headers::write(response.headers_mut(), standing);
        }
        if let Some(key) = &trace.key {
            let at = trace.checked_at.unwrap_or_else(Timestamp::now);
            self.usage.counts.note(key, code, at, trace.used);
        }
        let elapsed = started.elapsed();
        let status = response.status().as_u16();
        metrics::request(
            trace.route.as_deref().unwrap_or(""),
            status,
            elapsed.as_secs_f64(),
            trace.upstream_seconds,
        );
        logging::access(&logging::Access {
            method: method.as_str(),
            path: raw_path,
            route: trace.route.as_deref().unwrap_or(""),
            status,
            code: code.unwrap_or(""),
            key_id: trace.key.as_ref().map_or("", |k| k.id.as_str()),
            business_id: trace.key.as_ref().map_or("", |k| k.business_id.as_str()),
            duration: elapsed,
            upstream_status: trace.upstream_status.unwrap_or(0),
            upstream: trace.target.map_or("", Target::service_name),
            upstream_target: trace.target.map_or("", |t| &t.label),
            upstream_error: failure.as_ref().map_or("", |(c, _)| c.as_str()),
            upstream_reason: failure.as_ref().map_or("", |(_, r)| r.as_str()),
        });
        response
    }

    #[allow(clippy::manual_async_fn)] // on purpose: see the comment in the body
    fn handle<'p>(
        &'p self,
        req: Request<Incoming>,
        conn: &Downstream,
        trace: &mut Trace<'p>,
    ) -> impl Future<Output = Result<Response<Body>, Refusal>> {
        // Not an `async fn`: that moves each argument from the future's start into its body
        // as it first runs, a second copy of the request (~250 bytes) per call; an async block
        // keeps the arguments where they were captured.
        async move {
            refuse_h2c(req.headers())?;
            refuse_ambiguous_framing(&req)?;
            check_target(&req)?;
            let ask = Ask {
                method: req.method(),
                path: req.uri().path(),
                query: req.uri().query(),
                headers: req.headers(),
                peer: conn.peer,
            };
            let permit = self.authorise(&ask, trace).await?;
            let forwarded = self
                .upstream
                .send(permit, req, conn, &mut trace.target)
                .await?;
            trace.upstream_status = Some(forwarded.upstream_status.as_u16());
            trace.upstream_seconds = Some(forwarded.elapsed.as_secs_f64());
            Ok(forwarded.response.map(Either::Left))
        }
    }

    /// The decision for `ask`: a [`Permitted`] to act on, or the refusal to answer.
    pub async fn authorise(
        &self,
        ask: &Ask<'_>,
        trace: &mut Trace<'_>,
    ) -> Result<Permitted, Refusal> {
        let secret = self.authn.presented(ask.headers)?;
        let path = path::normalise(ask.path)?;
        let policy = self.policy.load_full();
        let matched = policy.route(ask.method, &path)?;
        trace.route = Some(matched.route_name_shared());
        let (permit, bucket) = if matched.is_public() {
            (
                policy.permit_public(matched, path),
                Bucket::Address(ask.peer.ip()),
            )
        } else {
            let secret = secret.ok_or(Refusal::MissingKey)?;
            let (hash, record) = self.authn.authenticate(secret).await?;
            trace.key = Some(Arc::clone(&record));
            let now = Timestamp::now();
            trace.checked_at = Some(now);
            if !record.allowed_ips.is_empty() {
                // Revoked, expired and suspended are said first, then where from.
                policy.admit(&record, now)?;
                let from = client::address(ask.peer.ip(), ask.headers, self.upstream.trusted());
                if !record.allows_ip(from) {
                    return Err(Refusal::IpForbidden);
                }
            }
            let facts = Facts {
                headers: ask.headers,
                query: ask.query,
            };
            let permit = policy.decide(matched, path, &record, &facts, now)?;
            trace.used = true;
            if self.expiring.note(&record, now) {
                self.notices.expiring(&record);
            }
            (permit, Bucket::Key(hash))
        };
        if let Some(limit) = permit.rate_limit() {
            let bucket = bucket.widened(limit.per, trace.key.as_ref());
            match self.limits.check(permit.route_name(), limit, bucket).await {
                Ok(standing) => trace.rate = Some(standing),
                Err(over) => {
                    trace.rate = Some(over.standing);
                    if let Some(key) = &trace.key {
                        self.notices
                            .rate_limited(key, permit.route_name(), limit.rate);
                    }
                    return Err(Refusal::RateLimited {
                        retry_after: whole_seconds_up(over.wait),
                    });
                }
            }
        }
        if let Some(key) = &trace.key
            && let Some(quota) = policy.quota_for(key)
        {
            // Counted at the time the key was checked, as its usage is.
            let at = trace.checked_at.unwrap_or_else(Timestamp::now);
            let spent = self.quotas.spend(&key.quota_counter, quota, at);
            if let Err(refused) = spent.await {
                if let crate::quotas::Refused::Exceeded { resets_at } = &refused {
                    self.notices.quota_exceeded(key, *resets_at);
                }
                return Err(refused.into());
            }
        }
        Ok(permit)
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
fn whole_seconds_up(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// `Upgrade: h2c` would let a client talk past the gateway on a reused connection.
fn refuse_h2c(h: &HeaderMap) -> Result<(), Refusal> {
    let h2c = h
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("h2c"));
    if h2c {
        Err(Refusal::BadRequest("Upgrade: h2c is not accepted"))
    } else {
        Ok(())
    }
}

/// Smuggling relies on the proxy and the upstream framing one body differently. hyper
/// refuses malformed or conflicting lengths, unknown codings and `Transfer-Encoding` on
/// HTTP/1.0, and for `Content-Length` + `Transfer-Encoding` drops the length and closes
/// the connection after answering (RFC 9112 §6.3); keygate re-frames every body it
/// forwards. This is the defence in depth should a head with both still arrive.
fn refuse_ambiguous_framing<B>(req: &Request<B>) -> Result<(), Refusal> {
    let h = req.headers();
    if h.contains_key(header::TRANSFER_ENCODING)
        && (h.contains_key(header::CONTENT_LENGTH) || req.version() != http::Version::HTTP_11)
    {
        return Err(Refusal::BadRequest("ambiguous body framing"));
    }
    Ok(())
}

/// Origin-form only; absolute-form when its authority is this request's `Host`;
/// HTTP/2 always carries scheme and authority as pseudo-headers and is fine.
fn check_target<B>(req: &Request<B>) -> Result<(), Refusal> {
    let uri = req.uri();
    if req.version() == http::Version::HTTP_2 {
        return Ok(());
    }
    if !uri.path().starts_with('/') {
        return Err(Refusal::BadTarget);
    }
    match uri.authority() {
        None => Ok(()),
        Some(auth) => {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok());
            if host.is_some_and(|h| h.eq_ignore_ascii_case(auth.as_str())) {
                Ok(())
            } else {
                Err(Refusal::BadTarget)
            }
        }
    }
}
