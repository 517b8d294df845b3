//! Sends a permitted request upstream and streams the answer back. Decides nothing.
//!
//! Invariants:
//! - takes a [`Permitted`] by value, and the upstream URI's path is `permit.path()`,
//!   never the client's raw path: the path authorised is the path forwarded;
//! - the headers are rewritten by [`rewrite`](super::rewrite), one function for HTTP/1.1 and HTTP/2;
//! - bodies are streamed, never buffered; hyper frames them (a valid `Content-Length`
//!   or chunked), so the client's `Transfer-Encoding` never reaches the upstream;
//! - a WebSocket upgrade is passed through only after authorisation (it is only ever
//!   called with a `Permitted`); any other `Upgrade` is dropped as hop-by-hop.
//!
//! Connections to the upstream: an HTTP/1 client connection has its own upstream
//! connection ([`affinity`](super::affinity)); HTTP/2 streams (which run concurrently on one client
//! connection) share a keep-alive pool instead. A kept connection unused for
//! `upstream.idle_timeout` is not used again (upstreams close idle ones, and a request
//! sent as they do is lost). A reused connection the upstream has closed is replaced, and
//! a request it never sent is sent once more on a new connection. One that was sent is
//! sent again, once, on a new connection only when it may be (RFC 9112 §9.3.1): an
//! idempotent method with no body, and not one byte of an answer heard ([`heard`](super::heard)); a
//! POST, a request with a body, or one partly answered is never resent. The answer
//! timeout on such a connection is the connection's [`LazyTimer`], and covers the resend.
//!
//! Where to: the route's upstream service ([`crate::upstream`], found by the index the
//! policy resolved), one of its targets in rotation. A kept connection stays with its
//! target while that target is in rotation; a new one goes to the target the service's
//! balancing picks, and one that cannot be opened is tried once on another target.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::{Either, Empty, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::Downstream;
use super::affinity::{Affinity, Kept, Lease, keep};
use super::answer_timer::{LazyTimer, TimedOut, by};
use super::refusal::{Refusal, SendError};
use super::rewrite::{self, Hop};
use crate::policy::Permitted;
use crate::upstream::balance::Chosen;
use crate::upstream::{Service, Target, Upstreams};

/// A forwarded request's body: the client's, cut off past `max_body`, or none (a request
/// without a body, which can then be sent again).
pub type UpBody = Either<Limited<Incoming>, Empty<Bytes>>;

/// The upstream APIs: where to send, and what to send.
pub struct Upstream {
    /// Every upstream service and its targets (shared with the admin API).
    upstreams: Arc<Upstreams>,
    key_header: HeaderName,
    /// Request bodies are cut off past this many bytes (a declared larger one never starts).
    max_body: u64,
    /// Peers whose forwarding headers are believed.
    trusted: Vec<ipnet::IpNet>,
}

/// What the upstream answered, for the access log.
pub struct Forwarded {
    pub response: Response<Incoming>,
    pub upstream_status: StatusCode,
    pub elapsed: Duration,
}

impl Upstream {
    /// The configured trusted proxies (`trusted_proxies`).
    pub fn trusted(&self) -> &[ipnet::IpNet] {
        &self.trusted
    }

    /// The sender for `upstreams`; `key_header` is stripped from what is forwarded,
    /// bodies past `max_body` are refused, `trusted` peers' forwarding headers kept.
    pub fn new(
        upstreams: Arc<Upstreams>,
        key_header: HeaderName,
        max_body: u64,
        trusted: Vec<ipnet::IpNet>,
    ) -> Self {
        Self {
            upstreams,
            key_header,
            max_body,
            trusted,
        }
    }

    /// Forwards `req` as `permit` allows and returns the upstream's answer. `conn` is the
    /// client connection it came in on: its peer, its scheme, its own upstream connection.
    /// `went_to` is set to the target the request went to (or last tried), for the log.
    #[allow(clippy::manual_async_fn)] // on purpose: see the comment in the body
    pub fn send<'u>(
        &'u self,
        permit: Permitted,
        mut req: Request<Incoming>,
        conn: &Downstream,
        went_to: &mut Option<&'u Target>,
    ) -> impl Future<Output = Result<Forwarded, Refusal>> {
        // Not an `async fn`: that moves each argument from the future's start into its body
        // as it first runs, a second copy of the request (~250 bytes) per call; an async block
        // keeps the arguments where they were captured.
        async move {
            let service = self.upstreams.get(permit.upstream());
            if declared_length(req.headers()).is_some_and(|n| n > self.max_body) {
                return Err(Refusal::PayloadTooLarge);
            }
            let websocket = rewrite::is_websocket(req.headers());
            let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
            let (mut parts, body) = req.into_parts();
            let multiplexed = parts.version == http::Version::HTTP_2;
            // HTTP/2 names the host in `:authority`, not `Host` (for `X-Forwarded-Host`).
            let authority = multiplexed
                .then(|| parts.uri.authority())
                .flatten()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
            parts.uri = target(&service.base_path, &permit, &parts.uri)?;
            parts.version = http::Version::HTTP_11;
            let hop = Hop {
                peer_ip: &conn.peer_ip,
                tls: conn.tls,
                trusted_peer: self.trusted.iter().any(|n| n.contains(&conn.peer.ip())),
            };
            let body = if body.is_end_stream() {
                Either::Right(Empty::new())
            } else {
                let limit = usize::try_from(self.max_body).unwrap_or(usize::MAX);
                Either::Left(Limited::new(body, limit))
            };
            // The headers in two halves, so that a request that may be sent again keeps only
            // what the client contributed (often nothing), not the whole rewritten map.
            let client_host = rewrite::strip_client_headers(
                &mut parts.headers,
                &self.key_header,
                websocket,
                hop.trusted_peer,
            )
            .or(authority);
            let resendable =
                !websocket && matches!(body, Either::Right(_)) && parts.method.is_idempotent();
            // Boxed: it rides in every future below `send` until the answer comes, and a small
            // pointer there is cheaper than moving ~250 bytes with each of them.
            let resend = resendable.then(|| Box::new(Resend::keep(&parts, client_host.as_ref())));
            // keygate's headers on what the client's left (the second half of the rewrite): the
            // same for the first send and a resend (`Host` is the target's, set as it is sent).
            rewrite::add_gateway_headers(&mut parts.headers, &permit, hop, client_host);
            let again = resend.map(|r| {
                let permit = &permit;
                move || Resend::again(r, permit, hop)
            });
            let streamed = matches!(body, Either::Left(_));
            let started = std::time::Instant::now();
            let deadline = tokio::time::Instant::from_std(started) + service.timeout;
            let mut chosen = Chosen::default();
            let sent = if multiplexed {
                let req = Request::from_parts(parts, body);
                // Boxed: the pool's future is large, and unboxed it would grow this one (and
                // every one above it) for the HTTP/1 requests that never take this branch.
                by(deadline, Box::pin(service.pooled(req, again, &mut chosen))).await
            } else {
                // Lent, not moved, to the futures below until it is sent: each would otherwise
                // hold its own copy of the ~250-byte request, copied as each is made.
                let mut req = Some(Request::from_parts(parts, body));
                own(
                    service,
                    &mut req,
                    &conn.upstream,
                    started,
                    deadline,
                    again,
                    &mut chosen,
                )
                .await
            };
            let target = chosen.get();
            *went_to = target;
            let mut response = outcome(sent, target, service.timeout, streamed)?;
            let elapsed = started.elapsed();
            let upstream_status = response.status();
            if upstream_status == StatusCode::SWITCHING_PROTOCOLS {
                // Only a WebSocket request may be switched; anything else is a broken upstream.
                let Some(client_upgrade) = client_upgrade else {
                    return Err(Refusal::UpstreamUnavailable(
                        "the upstream switched protocols for a request that asked for no upgrade"
                            .into(),
                    ));
                };
                splice_upgrade(client_upgrade, hyper::upgrade::on(&mut response));
            } else {
                rewrite::strip_hop_by_hop(response.headers_mut());
            }
            Ok(Forwarded {
                response,
                upstream_status,
                elapsed,
            })
        }
    }
}

/// What came of sending, counted against the target it went to: the answer, or the refusal.
/// What the client caused is not the target's failure: a request with a body (`streamed`)
/// is timed with its upload, which the client paces, and a client body that broke off
/// fails the request; neither counts against the target's health.
fn outcome(
    sent: Result<Result<Response<Incoming>, SendError>, TimedOut>,
    target: Option<&Target>,
    timeout: Duration,
    streamed: bool,
) -> Result<Response<Incoming>, Refusal> {
    use crate::upstream::cause;
    match sent {
        Err(TimedOut) => {
            if let Some(t) = target
                && !streamed
            {
                t.timed_out(timeout);
            }
            Err(Refusal::UpstreamTimeout)
        }
        Ok(Err(e)) if caused_by_body_limit(&*e) => Err(Refusal::PayloadTooLarge),
        Ok(Err(e)) => {
            // A connection that could not be opened was counted where it failed.
            if let Some(t) = target
                && !cause::before_sending(&*e)
                && !cause::clients_fault(&*e)
            {
                t.failed(&*e);
            }
            Err(Refusal::UpstreamUnavailable(e))
        }
        Ok(Ok(r)) => {
            if let Some(t) = target {
                t.answered();
            }
            Ok(r)
        }
    }
}

/// Through the client connection's own upstream connection, answered by `deadline`;
/// if a concurrent request holds it, it is to another upstream, or the balancing picked
/// another target, through the (picked) target's pool.
async fn own<'s>(
    service: &'s Service,
    req: &mut Option<Request<UpBody>>,
    affinity: &Affinity,
    started: std::time::Instant,
    deadline: tokio::time::Instant,
    again: Option<impl FnOnce() -> Request<UpBody>>,
    chosen: &mut Chosen<'s>,
) -> Result<Result<Response<Incoming>, SendError>, TimedOut> {
    let lease = affinity
        .lease()
        .filter(|l| l.conn.as_ref().is_none_or(|c| c.service == service.index()));
    let Some(mut lease) = lease else {
        // Rare (a concurrent request holds the connection, or a route to another
        // upstream): boxed, as is `connect`, so that the common path's future stays
        // small (it is moved per request).
        let Some(req) = req.take() else {
            return Ok(Err(unsent()));
        };
        return by(deadline, Box::pin(service.pooled(req, again, chosen))).await;
    };
    // Several targets: each request is balanced; the kept connection serves those its
    // target is picked for, the others go through the picked target's pool.
    if service.several()
        && let Some(kept) = &lease.conn
        && let Some(pick) = service.pick()
        && pick.index() != kept.target
    {
        drop(lease);
        let Some(req) = req.take() else {
            return Ok(Err(unsent()));
        };
        return by(
            deadline,
            Box::pin(service.pooled_via(pick, req, again, chosen)),
        )
        .await;
    }
    let Lease { conn, timer, .. } = &mut lease;
    let timer = timer.get_or_insert_with(|| LazyTimer::new(deadline));
    // Pinned where it is made and lent to the timer: passed by value, the exchange's
    // state (about a kilobyte) would be copied into `Within` and again as it is awaited.
    let exchange = std::pin::pin!(exchange(service, req, conn, started, again, chosen));
    timer.within(deadline, exchange).await
}

/// One request on the connection in `slot` (opened when there is none, it was closed,
/// it has been idle too long or its target is out of rotation), which is put back once
/// the answer has come. `req` is taken when it is sent (and put back if it never left);
/// `now`: when the request started; `again` builds the request anew, when it may be resent.
async fn exchange<'s>(
    service: &'s Service,
    req: &mut Option<Request<UpBody>>,
    slot: &mut Option<Kept>,
    now: std::time::Instant,
    again: Option<impl FnOnce() -> Request<UpBody>>,
    chosen: &mut Chosen<'s>,
) -> Result<Response<Incoming>, SendError> {
    let mut again = again;
    let mut reused = slot.take().and_then(|c| {
        let fresh =
            !c.send.is_closed() && now.saturating_duration_since(c.used) < service.idle_timeout;
        let target = service.target(c.target).filter(|t| t.health.is_up());
        target.filter(|_| fresh).map(|t| (c, t))
    });
    if let Some((conn, _)) = reused.as_mut()
        && conn.send.ready().await.is_err()
    {
        reused = None;
    }
    if let Some((mut conn, target)) = reused {
        chosen.set(target);
        if let Some(resp) = send_or_again(&mut conn, target, req, &mut again).await? {
            return Ok(keep(slot, conn, resp, now));
        }
    }
    let mut conn = Box::pin(service.connect(chosen)).await?;
    let target = chosen.get();
    if !service.several() {
        let req = for_target(req, target)?;
        let resp = conn.send.send_request(req).await?;
        return Ok(keep(slot, conn, resp, now));
    }
    // Several targets: a new connection that closes before the request left, or without
    // a word after it (an instance going away), is replaced once, to whichever target
    // the balancing picks, when the request may be sent again.
    if let Some(target) = target
        && let Some(resp) = send_or_again(&mut conn, target, req, &mut again).await?
    {
        return Ok(keep(slot, conn, resp, now));
    }
    let mut conn = Box::pin(service.connect(chosen)).await?;
    let req = for_target(req, chosen.get())?;
    let resp = conn.send.send_request(req).await?;
    Ok(keep(slot, conn, resp, now))
}

/// The request in `req`, taken to be sent, with `target`'s `Host`.
fn for_target(
    req: &mut Option<Request<UpBody>>,
    target: Option<&Target>,
) -> Result<Request<UpBody>, SendError> {
    let mut req = req.take().ok_or_else(unsent)?;
    if let Some(t) = target {
        req.headers_mut().insert(header::HOST, t.host().clone());
    }
    Ok(req)
}

/// The error for a request found already taken: each path takes it once, so this is a
/// bug in this module, answered 502 rather than a panic.
fn unsent() -> SendError {
    "keygate lost the request before sending it (a bug: please report it)".into()
}

/// The request in `req` on `conn` to `target`: the answer, or none when it is to be sent
/// on a new connection, and `req` holds it again: one that never left (the connection
/// closed under it), or one that was sent and met a close without a word, when `again`
/// may build it anew (it is then used up).
async fn send_or_again(
    conn: &mut Kept,
    target: &Target,
    req: &mut Option<Request<UpBody>>,
    again: &mut Option<impl FnOnce() -> Request<UpBody>>,
) -> Result<Option<Response<Incoming>>, SendError> {
    let sent = for_target(req, Some(target))?;
    conn.heard.clear();
    match conn.send.try_send_request(sent).await {
        Ok(resp) => Ok(Some(resp)),
        Err(mut e) => match (e.take_message(), again.take()) {
            // Closed under us before the request left: never sent, so send it anew.
            (Some(unsent), _) => {
                *req = Some(unsent);
                Ok(None)
            }
            // Sent, and the connection closed without a word: may be sent again.
            (None, Some(again)) if !conn.heard.anything() => {
                tracing::debug!(
                    error = %e.error(),
                    "upstream closed a connection without answering; sending again"
                );
                *req = Some(again());
                Ok(None)
            }
            (None, _) => Err(e.into_error().into()),
        },
    }
}

/// The upstream request's origin-form target: the upstream's base path, the authorised
/// path less the route's `strip_prefix`, and the client's query (`sent` is the client's
/// target).
fn target(base_path: &str, permit: &Permitted, sent: &Uri) -> Result<Uri, Refusal> {
    let path = permit.forward_path();
    // The usual case: no base path, and normalisation left the path as sent. The
    // client's path and query are then byte for byte what was authorised: share them
    // (hyper has validated them) instead of copying and validating them again.
    if base_path.is_empty()
        && sent.path() == path
        && let Some(pq) = sent.path_and_query()
    {
        return Ok(Uri::from(pq.clone()));
    }
    let query = sent.query();
    let mut pq =
        String::with_capacity(base_path.len() + path.len() + query.map_or(0, |q| q.len() + 1));
    pq.push_str(base_path);
    pq.push_str(path);
    if let Some(q) = query {
        pq.push('?');
        pq.push_str(q);
    }
    // Origin-form; the pool adds the scheme and authority.
    Uri::try_from(pq).map_err(|_| Refusal::BadTarget)
}

/// What it takes to build a request again, kept only for one that may be sent again (RFC
/// 9112 §9.3.1: an idempotent method with no body): its method and target, and what the
/// client contributed to its headers. keygate's own headers are added anew
/// ([`Upstream::again`]), so a keep-alive GET with no headers of the client's beyond
/// `Host` and the key keeps nothing that costs a copy.
struct Resend {
    method: Method,
    uri: Uri,
    client_headers: HeaderMap,
    client_host: Option<HeaderValue>,
}

impl Resend {
    /// From the request's parts after [`rewrite::strip_client_headers`].
    fn keep(parts: &http::request::Parts, client_host: Option<&HeaderValue>) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            // An empty map allocates nothing; `clone` would copy the index table.
            client_headers: if parts.headers.is_empty() {
                HeaderMap::new()
            } else {
                parts.headers.clone()
            },
            client_host: client_host.cloned(),
        }
    }
}

impl Resend {
    /// The request `resend` keeps, rebuilt with keygate's headers as the first time.
    fn again(resend: Box<Resend>, permit: &Permitted, hop: Hop<'_>) -> Request<UpBody> {
        let resend = *resend;
        let mut headers = resend.client_headers;
        rewrite::add_gateway_headers(&mut headers, permit, hop, resend.client_host);
        let mut req = Request::new(Either::Right(Empty::new()));
        *req.method_mut() = resend.method;
        *req.uri_mut() = resend.uri;
        *req.headers_mut() = headers;
        req
    }
}

/// Whether the pool's request failed because its connection closed before a complete
/// answer (hyper's "connection closed before message completed", or a reset).
pub(crate) fn closed_unanswered(e: &(dyn Error + 'static)) -> bool {
    caused_by(e, |c| {
        c.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
            // An instance killed with the request unread in its socket resets the
            // connection instead of closing it: the same "gone without an answer".
            || c.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                )
            })
    })
}

/// The `Content-Length` the client declared, if any (hyper has already refused malformed ones).
fn declared_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Whether the upstream request failed because the client's body passed the limit.
fn caused_by_body_limit(e: &(dyn Error + 'static)) -> bool {
    caused_by(e, <dyn Error>::is::<LengthLimitError>)
}

/// Whether `e`, or an error in its `source()` chain, is one `pick` picks out.
fn caused_by(e: &(dyn Error + 'static), pick: impl Fn(&(dyn Error + 'static)) -> bool) -> bool {
    std::iter::successors(Some(e), |&c| c.source()).any(pick)
}

/// Joins the client's and the upstream's upgraded connections once both are ready.
fn splice_upgrade(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        let (Ok(c), Ok(u)) = tokio::join!(client, upstream) else {
            return;
        };
        let mut c = TokioIo::new(c);
        let mut u = TokioIo::new(u);
        let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
    });
}
