//! Sends a permitted request upstream and streams the answer back. Decides nothing.
//!
//! Invariants:
//! - takes a [`Permitted`] by value, and the upstream URI's path is `permit.path()`,
//!   never the client's raw path: the path authorised is the path forwarded;
//! - the client's key header and every `X-Keygate-*` header are removed before the
//!   identity headers are added, and the headers a `Connection` header names are removed
//!   first, so a client cannot use hop-by-hop nominations to drop what keygate adds;
//! - HTTP/1.1 and HTTP/2 requests are rebuilt by the same function, so the two
//!   protocol paths cannot drift;
//! - bodies are streamed, never buffered; hyper frames them (a valid `Content-Length`
//!   or chunked), so the client's `Transfer-Encoding` never reaches the upstream;
//! - a WebSocket upgrade is passed through only after authorisation (it is only ever
//!   called with a `Permitted`); any other `Upgrade` is dropped as hop-by-hop.
//!
//! Connections to the upstream: an HTTP/1 client connection sends its requests one at a
//! time, so it gets its own upstream connection ([`Affinity`]), opened on its first
//! forwarded request and reused for the next ones with no pool look-up and no lock shared
//! with other connections; it closes with the client's connection. HTTP/2 streams (which
//! run concurrently on one client connection) share a keep-alive pool instead. A kept
//! connection unused for `upstream.idle_timeout` is not used again (upstreams close idle
//! ones, and a request sent as they do is lost). A reused connection the upstream has
//! closed is replaced, and a request it never sent is sent once more on a new
//! connection. One that was sent is sent again, once, on a new connection only when it
//! may be (RFC 9112 §9.3.1): an idempotent method with no body, and not one byte of an
//! answer heard ([`heard`]); a POST, a request with a body, or one partly answered is
//! never resent. The answer timeout on such a connection is one timer per client
//! connection, re-armed lazily ([`within`]), and covers the resend too.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt as _;

use bytes::Bytes;
use http::Method;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::{Either, Empty, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self as client_h1, SendRequest};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Sleep;

use super::Downstream;
use super::heard::{Heard, Listening};
use super::refusal::Refusal;
use crate::policy::Permitted;

pub const KEY_ID: HeaderName = HeaderName::from_static("x-keygate-key-id");
pub const USER_ID: HeaderName = HeaderName::from_static("x-keygate-user-id");
pub const BUSINESS_ID: HeaderName = HeaderName::from_static("x-keygate-business-id");
pub const ROUTE: HeaderName = HeaderName::from_static("x-keygate-route");
pub const LOCATION: HeaderName = HeaderName::from_static("x-keygate-location");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// A forwarded request's body: the client's, cut off past `max_body`, or none (a request
/// without a body, which can then be sent again).
type UpBody = Either<Limited<Incoming>, Empty<Bytes>>;

/// Why a request could not be sent upstream.
pub type SendError = Box<dyn std::error::Error + Send + Sync>;

/// The upstream API: where to send, and how to reach it.
pub struct Upstream {
    /// The shared keep-alive pool (HTTP/2 client streams).
    client: Client<HttpConnector, UpBody>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// `Host` on every upstream request: the upstream URL's authority.
    host: HeaderValue,
    connect_timeout: Duration,
    /// A kept connection unused for this long is not used again.
    idle_timeout: Duration,
    /// The upstream URL's own path without its trailing `/` (often empty).
    base_path: String,
    timeout: Duration,
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
    /// # Panics
    /// When `url` lacks a scheme or authority; `config` has already checked both.
    pub fn new(
        url: &Uri,
        timeout: Duration,
        connect_timeout: Duration,
        idle_timeout: Duration,
        key_header: HeaderName,
        max_body: u64,
        trusted: Vec<ipnet::IpNet>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(idle_timeout)
            .pool_max_idle_per_host(256)
            .build(connector);
        let authority = url.authority().cloned().expect("upstream URL has a host");
        Self {
            client,
            scheme: url.scheme().cloned().expect("upstream URL has a scheme"),
            host: host_header(&authority),
            authority,
            connect_timeout,
            idle_timeout,
            base_path: url.path().trim_end_matches('/').to_owned(),
            timeout,
            key_header,
            max_body,
            trusted,
        }
    }

    /// Forwards `req` as `permit` allows and returns the upstream's answer. `conn` is the
    /// client connection it came in on: its peer, its scheme, its own upstream connection.
    pub async fn send(
        &self,
        permit: Permitted,
        mut req: Request<Incoming>,
        conn: &Downstream,
    ) -> Result<Forwarded, Refusal> {
        if declared_length(req.headers()).is_some_and(|n| n > self.max_body) {
            return Err(Refusal::PayloadTooLarge);
        }
        let websocket = is_websocket(req.headers());
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let multiplexed = parts.version == http::Version::HTTP_2;
        parts.uri = self.target(&permit, &parts.uri)?;
        parts.version = http::Version::HTTP_11;
        let trusted_peer = self.trusted.iter().any(|n| n.contains(&conn.peer.ip()));
        rewrite_request_headers(
            &mut parts.headers,
            &self.key_header,
            &permit,
            Hop {
                peer_ip: &conn.peer_ip,
                tls: conn.tls,
                trusted_peer,
            },
            websocket,
        );
        parts.headers.insert(header::HOST, self.host.clone());
        let started = std::time::Instant::now();
        let body = if body.is_end_stream() {
            Either::Right(Empty::new())
        } else {
            let limit = usize::try_from(self.max_body).unwrap_or(usize::MAX);
            Either::Left(Limited::new(body, limit))
        };
        let req = Request::from_parts(parts, body);
        let deadline = tokio::time::Instant::from_std(started) + self.timeout;
        let sent = if multiplexed {
            by(deadline, self.pooled(req)).await
        } else {
            self.own(req, &conn.upstream, started, deadline).await
        };
        let mut response = match sent {
            Err(TimedOut) => return Err(Refusal::UpstreamTimeout),
            Ok(Err(e)) if caused_by_body_limit(&*e) => return Err(Refusal::PayloadTooLarge),
            Ok(Err(e)) => return Err(Refusal::UpstreamUnavailable(e)),
            Ok(Ok(r)) => r,
        };
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
            strip_hop_by_hop(response.headers_mut());
        }
        Ok(Forwarded {
            response,
            upstream_status,
            elapsed,
        })
    }

    /// Through the shared pool, which wants the absolute URI. The pool sends anew what a
    /// closing connection never sent; a request it sent is sent again, once, when it may
    /// be and the connection closed without a complete answer (the pool cannot say whether
    /// part of one came: see the module docs).
    async fn pooled(&self, req: Request<UpBody>) -> Result<Response<Incoming>, SendError> {
        let resend = Resend::of(&req);
        match self.client.request(self.absolute(req)?).await {
            Ok(resp) => Ok(resp),
            Err(e) if !e.is_connect() && closed_unanswered(&e) => match resend {
                Some(again) => {
                    tracing::debug!(error = %e, "upstream connection closed; sending again");
                    Ok(self.client.request(self.absolute(again.request())?).await?)
                }
                None => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        }
    }

    fn absolute(&self, mut req: Request<UpBody>) -> Result<Request<UpBody>, SendError> {
        let mut uri = std::mem::take(req.uri_mut()).into_parts();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        *req.uri_mut() = Uri::from_parts(uri)?;
        Ok(req)
    }

    /// Through the client connection's own upstream connection, answered by `deadline`;
    /// if a concurrent request holds it, through the pool.
    async fn own(
        &self,
        req: Request<UpBody>,
        affinity: &Affinity,
        started: std::time::Instant,
        deadline: tokio::time::Instant,
    ) -> Result<Result<Response<Incoming>, SendError>, TimedOut> {
        let Some(mut lease) = affinity.lease() else {
            // Rare (a concurrent request holds the connection): boxed, as is `connect`,
            // so that the common path's future stays small (it is moved per request).
            return by(deadline, Box::pin(self.pooled(req))).await;
        };
        let Lease { conn, timer, .. } = &mut lease;
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        within(timer, deadline, self.exchange(req, conn, started)).await
    }

    /// One request on the connection in `slot` (opened when there is none, it was closed
    /// or it has been idle too long), which is put back once the answer has come. `now`:
    /// when the request started.
    async fn exchange(
        &self,
        req: Request<UpBody>,
        slot: &mut Option<Kept>,
        now: std::time::Instant,
    ) -> Result<Response<Incoming>, SendError> {
        let mut reused = slot.take().filter(|c| {
            !c.send.is_closed() && now.saturating_duration_since(c.used) < self.idle_timeout
        });
        if let Some(conn) = reused.as_mut()
            && conn.send.ready().await.is_err()
        {
            reused = None;
        }
        let req = match reused {
            Some(mut conn) => {
                let resend = Resend::of(&req);
                conn.heard.clear();
                match conn.send.try_send_request(req).await {
                    Ok(resp) => return Ok(keep(slot, conn, resp, now)),
                    Err(mut e) => match (e.take_message(), resend) {
                        // Closed under us before the request left: never sent, so send it anew.
                        (Some(req), _) => req,
                        // Sent, and the connection closed without a word: may be sent again.
                        (None, Some(again)) if !conn.heard.anything() => {
                            tracing::debug!(
                                error = %e.error(),
                                "upstream closed a kept connection; sending again"
                            );
                            again.request()
                        }
                        (None, _) => return Err(e.into_error().into()),
                    },
                }
            }
            None => req,
        };
        let mut conn = Box::pin(self.connect()).await?;
        let resp = conn.send.send_request(req).await?;
        Ok(keep(slot, conn, resp, now))
    }

    /// A new HTTP/1.1 connection to the upstream, within the connect timeout.
    async fn connect(&self) -> Result<Kept, SendError> {
        let host = self.authority.host();
        // An IPv6 literal comes bracketed in a URL, and without brackets to the resolver.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = self.authority.port_u16().unwrap_or(80);
        let stream = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect((host, port)),
        )
        .await
        .map_err(|_| {
            format!(
                "no connection to {} within {:?}",
                self.authority, self.connect_timeout
            )
        })??;
        stream.set_nodelay(true)?;
        let heard = Heard::default();
        let io = TokioIo::new(Listening::new(stream, heard.clone()));
        let (send, driver) = client_h1::handshake(io).await?;
        tokio::spawn(async move {
            let _ = driver.with_upgrades().await;
        });
        Ok(Kept {
            send,
            heard,
            used: std::time::Instant::now(),
        })
    }

    /// The upstream request's origin-form target: the upstream URL's base path, the
    /// authorised path, and the client's query (`sent` is the client's target).
    fn target(&self, permit: &Permitted, sent: &Uri) -> Result<Uri, Refusal> {
        let path = permit.path().as_str();
        // The usual case: no base path, and normalisation left the path as sent. The
        // client's path and query are then byte for byte what was authorised: share them
        // (hyper has validated them) instead of copying and validating them again.
        if self.base_path.is_empty()
            && sent.path() == path
            && let Some(pq) = sent.path_and_query()
        {
            return Ok(Uri::from(pq.clone()));
        }
        let query = sent.query();
        let mut pq = String::with_capacity(
            self.base_path.len() + path.len() + query.map_or(0, |q| q.len() + 1),
        );
        pq.push_str(&self.base_path);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        // Origin-form; `pooled` adds the scheme and authority.
        Uri::try_from(pq).map_err(|_| Refusal::BadTarget)
    }
}

/// `Host` for the upstream: its host and port, never the URL's `user:password@`.
fn host_header(authority: &http::uri::Authority) -> HeaderValue {
    let host = match authority.port() {
        Some(port) => format!("{}:{port}", authority.host()),
        None => authority.host().to_owned(),
    };
    HeaderValue::try_from(host).expect("a URL's host and port are a valid header")
}

/// One client connection's own upstream connection (see the module docs).
#[derive(Default)]
pub struct Affinity(Mutex<Slot>);

#[derive(Default)]
struct Slot {
    /// A request holds the connection and the timer.
    busy: bool,
    /// None yet, while a request holds it, or after a failure, a timeout, a cancelled
    /// request or a protocol switch (the connection was then closed or given away).
    conn: Option<Kept>,
    /// The connection's answer timer, kept armed from one request to the next ([`within`]);
    /// on an idle connection it comes due once, up to a timeout after the last request, and
    /// wakes the connection's task for nothing that one time.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Affinity {
    /// Takes the connection (if any) and the timer for one request; `None` when a
    /// request holds them.
    fn lease(&self) -> Option<Lease<'_>> {
        let mut slot = self.slot();
        if slot.busy {
            return None;
        }
        slot.busy = true;
        Some(Lease {
            affinity: self,
            conn: slot.conn.take(),
            timer: slot.timer.take(),
        })
    }

    /// The slot, locked. A poisoned lock only means a request panicked while holding it;
    /// the slot itself is always a whole value.
    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A request's hold on its connection's upstream connection and timer; when dropped it
/// puts back what it holds: the connection only if [`keep`] returned it (not after an
/// error, a timeout or a cancelled request: that connection is closed).
struct Lease<'a> {
    affinity: &'a Affinity,
    conn: Option<Kept>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut slot = self.affinity.slot();
        slot.busy = false;
        slot.conn = self.conn.take();
        slot.timer = self.timer.take();
    }
}

/// A kept-alive upstream connection.
pub struct Kept {
    send: SendRequest<UpBody>,
    /// Whether the upstream has sent anything since the request now on it was sent.
    heard: Heard,
    /// When its last request started.
    used: std::time::Instant,
}

/// Puts `conn` back in `slot` for the next request once its answer has come, unless the
/// answer switched protocols (the connection then belongs to the upgrade). `now`: when
/// the request started.
fn keep(
    slot: &mut Option<Kept>,
    mut conn: Kept,
    resp: Response<Incoming>,
    now: std::time::Instant,
) -> Response<Incoming> {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        conn.used = now;
        *slot = Some(conn);
    }
    resp
}

/// What it takes to send a request again: kept only for a request that may be sent
/// again (RFC 9112 §9.3.1), an idempotent method with no body.
struct Resend {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Resend {
    fn of(req: &Request<UpBody>) -> Option<Self> {
        let bodiless = matches!(req.body(), Either::Right(_));
        (bodiless && req.method().is_idempotent()).then(|| Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
        })
    }

    fn request(self) -> Request<UpBody> {
        let mut req = Request::new(Either::Right(Empty::new()));
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.headers_mut() = self.headers;
        req
    }
}

/// Whether the pool's request failed because its connection closed before a complete
/// answer (hyper's "connection closed before message completed").
fn closed_unanswered(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The upstream did not answer in time.
#[derive(Debug)]
pub struct TimedOut;

/// `fut`, unless `deadline` passes first, on a timer of its own (registered and removed).
async fn by<F: Future>(deadline: tokio::time::Instant, fut: F) -> Result<F::Output, TimedOut> {
    tokio::time::timeout_at(deadline, fut)
        .await
        .map_err(|_| TimedOut)
}

/// `fut`, unless `deadline` passes first. `timer` is the connection's, and may still be
/// armed for an earlier request's (earlier) deadline: when that one passes, it is re-armed
/// for this one. So a request costs no timer registration, only a connection whose timer
/// comes due does, once per timeout period, unlike `tokio::time::timeout`, which
/// registers and removes a timer for every request.
async fn within<F: Future>(
    timer: &mut Pin<Box<Sleep>>,
    deadline: tokio::time::Instant,
    fut: F,
) -> Result<F::Output, TimedOut> {
    if timer.deadline() > deadline {
        timer.as_mut().reset(deadline);
    }
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        // Unconstrained (`tokio::time::timeout` does so once the inner future has spent
        // the task's budget; here always, which costs nothing): a future that spent the
        // budget must not keep its deadline from being noticed.
        while tokio::task::unconstrained(timer.as_mut())
            .poll_unpin(cx)
            .is_ready()
        {
            if timer.deadline() >= deadline {
                return Poll::Ready(Err(TimedOut));
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await
}

/// The `Content-Length` the client declared, if any (hyper has already refused malformed ones).
fn declared_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Whether the upstream request failed because the client's body passed the limit.
fn caused_by_body_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// True for `Connection: upgrade` + `Upgrade: websocket` (HTTP/1.1 only).
fn is_websocket(h: &HeaderMap) -> bool {
    let upgrade_ws = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    upgrade_ws && connection_tokens(h).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(h: &HeaderMap) -> impl Iterator<Item = &str> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), those the `Connection` header names included.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the (few) names present; most requests carry none, and most
    // answers only `Connection`.
    let mut present = h.keys().filter(|k| is_hop_by_hop(k)).count();
    if present == 0 {
        return;
    }
    // `close` and `keep-alive` are the usual tokens: the first names no header, the
    // second is removed below anyway.
    let named: Vec<HeaderName> = connection_tokens(h)
        .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        h.remove(name);
    }
    // Stops once the names counted are gone (a nominated one may already be: then it
    // simply asks for all seven).
    for name in &HOP_BY_HOP {
        if present == 0 {
            break;
        }
        if h.remove(name).is_some() {
            present -= 1;
        }
    }
}

/// Whether `name` is one of [`HOP_BY_HOP`] (a length-first string match, no hashing).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The connection a request came in on, as the forwarding headers describe it.
#[derive(Clone, Copy)]
pub struct Hop<'a> {
    /// The peer's address, as [`ip_value`] writes it (once per connection).
    pub peer_ip: &'a HeaderValue,
    pub tls: bool,
    /// The peer is a configured trusted proxy: its forwarding headers are kept.
    pub trusted_peer: bool,
}

/// Headers the upstream request may gain: five identity, three forwarding, `Host`.
const ADDED_HEADERS: usize = 9;

/// The one place the upstream request's headers are decided, for HTTP/1.1 and HTTP/2
/// alike (public for the criterion bench).
pub fn rewrite_request_headers(
    h: &mut HeaderMap,
    key_header: &HeaderName,
    permit: &Permitted,
    hop: Hop<'_>,
    websocket: bool,
) {
    // Room for what is added below (identity, forwarding, `Host`): one growth, not several.
    h.reserve(ADDED_HEADERS);
    let original_host = h.remove(header::HOST);
    strip_hop_by_hop(h);
    if websocket {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    // After hop-by-hop removal, so a `Connection: x-api-key` cannot matter either way.
    h.remove(key_header);
    let spoofed: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("x-keygate-"))
        .cloned()
        .collect();
    for name in spoofed {
        h.remove(name);
    }
    // Public routes forward with no identity headers at all.
    if permit.who().is_some() {
        insert_identity(h, permit, false);
    }
    forwarding_headers(h, hop);
    if let Some(host) = original_host {
        h.insert(X_FORWARDED_HOST, host);
    }
}

/// The `X-Keygate-*` identity headers for `permit`. With `every`, all five are set, empty
/// where there is nothing to say (forward-auth answers: a fronting proxy copies them
/// over whatever the client sent, so none may be missing).
pub fn insert_identity(h: &mut HeaderMap, permit: &Permitted, every: bool) {
    let who = permit.who();
    let fields = [
        (KEY_ID, who.map(|w| w.id.as_str())),
        (USER_ID, who.map(|w| w.user_id.as_str())),
        (BUSINESS_ID, who.map(|w| w.business_id.as_str())),
        (ROUTE, Some(permit.route_name())),
        (LOCATION, permit.location()),
    ];
    for (name, value) in fields {
        match value {
            Some(v) => insert_text(h, name, v),
            None if every => {
                h.insert(name, HeaderValue::from_static(""));
            }
            None => {}
        }
    }
}

/// `X-Forwarded-For`: the peer appended to the chain a trusted proxy sent, else the peer
/// alone (a client-sent chain is not believed). `X-Forwarded-Proto`: a trusted proxy's
/// value, else this hop's scheme.
fn forwarding_headers(h: &mut HeaderMap, hop: Hop<'_>) {
    let chain = hop
        .trusted_peer
        .then(|| {
            let sent: Vec<&str> = h
                .get_all(X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            let all_ips = sent
                .iter()
                .flat_map(|v| v.split(','))
                .all(|ip| ip.trim().parse::<std::net::IpAddr>().is_ok());
            let peer = hop.peer_ip.to_str().unwrap_or_default();
            (!sent.is_empty() && all_ips).then(|| format!("{}, {peer}", sent.join(", ")))
        })
        .flatten();
    // The peer alone (the usual case) is the connection's value, shared, not rebuilt.
    match chain.map(HeaderValue::try_from) {
        Some(Ok(chain)) => h.insert(X_FORWARDED_FOR, chain),
        _ => h.insert(X_FORWARDED_FOR, hop.peer_ip.clone()),
    };
    let trusted_https = hop
        .trusted_peer
        .then(|| h.get(X_FORWARDED_PROTO).and_then(|v| v.to_str().ok()))
        .flatten()
        .and_then(|p| match p {
            "https" => Some(true),
            "http" => Some(false),
            _ => None,
        });
    let https = trusted_https.unwrap_or(hop.tls);
    h.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
}

/// An IP address as a header value (`X-Forwarded-For`).
pub fn ip_value(ip: std::net::IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_string()).expect("an IP address is a valid header value")
}

fn insert_text(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::time::Instant;

    /// A request whose upstream answers after `after`, by `deadline`, on `timer`.
    async fn answered(timer: &mut Pin<Box<Sleep>>, after: Duration, deadline: Duration) -> bool {
        let now = Instant::now();
        within(timer, now + deadline, tokio::time::sleep(after))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_timer_left_armed_for_an_earlier_request_is_re_armed_not_fired() {
        // Armed for a deadline long past (an earlier request's).
        let mut timer = Box::pin(tokio::time::sleep_until(Instant::now()));
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            answered(
                &mut timer,
                Duration::from_millis(20),
                Duration::from_secs(5)
            )
            .await
        );
        // Now armed for that request's deadline; the next request has a later one.
        assert!(answered(&mut timer, Duration::from_millis(1), Duration::from_secs(6)).await);
    }

    #[tokio::test]
    async fn a_request_past_its_deadline_times_out_whatever_the_timer_was_armed_for() {
        let started = std::time::Instant::now();
        // Armed for a deadline long past (an earlier request's), and armed later than this
        // request's deadline (never the case in the proxy): either way, it is kept.
        for mut timer in [
            Box::pin(tokio::time::sleep_until(Instant::now())),
            Box::pin(tokio::time::sleep(Duration::from_secs(60))),
        ] {
            let never = Duration::from_secs(60);
            assert!(!answered(&mut timer, never, Duration::from_millis(30)).await);
        }
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn hop_by_hop_names_are_recognised_without_hashing() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop(name), "{name}");
        }
        for name in [
            header::HOST,
            header::CONTENT_LENGTH,
            KEY_ID,
            X_FORWARDED_FOR,
        ] {
            assert!(!is_hop_by_hop(&name), "{name}");
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_all_removed() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, te"),
            ("connection", "x-drop, close"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("x-drop", "1"),
            ("x-keep", "2"),
        ] {
            h.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-keep"]);
        // Nothing hop-by-hop: nothing touched.
        let mut plain = HeaderMap::new();
        plain.insert(header::HOST, HeaderValue::from_static("a"));
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
    }

    #[test]
    fn the_host_header_is_host_and_port_without_credentials() {
        let host = |url: &str| {
            let uri: Uri = url.parse().expect("test URL");
            host_header(uri.authority().expect("authority"))
        };
        assert_eq!(
            host("http://u:secret@api.internal:8080/v1"),
            "api.internal:8080"
        );
        assert_eq!(host("http://api.internal"), "api.internal");
        assert_eq!(host("http://[::1]:9000"), "[::1]:9000");
    }
}
