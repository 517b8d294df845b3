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

use std::error::Error;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::{Either, Empty, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client_h1;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::Downstream;
use super::affinity::{Affinity, Kept, Lease, keep};
use super::answer_timer::{LazyTimer, TimedOut, by};
use super::heard::{Heard, Listening};
use super::refusal::{Refusal, SendError};
use super::rewrite::{self, Hop};
use crate::policy::Permitted;

/// A forwarded request's body: the client's, cut off past `max_body`, or none (a request
/// without a body, which can then be sent again).
pub type UpBody = Either<Limited<Incoming>, Empty<Bytes>>;

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
    /// The client for the `upstream:` section; `key_header` is stripped from what is
    /// forwarded, bodies past `max_body` are refused, `trusted` peers' forwarding headers kept.
    ///
    /// # Panics
    /// When `url` lacks a scheme or authority; `config` has already checked both.
    pub fn new(
        settings: &crate::config::UpstreamSettings,
        key_header: HeaderName,
        max_body: u64,
        trusted: Vec<ipnet::IpNet>,
    ) -> Self {
        let crate::config::UpstreamSettings {
            ref url,
            timeout,
            connect_timeout,
            idle_timeout,
        } = *settings;
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
        let websocket = rewrite::is_websocket(req.headers());
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let multiplexed = parts.version == http::Version::HTTP_2;
        parts.uri = self.target(&permit, &parts.uri)?;
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
        let client_host =
            rewrite::strip_client_headers(&mut parts.headers, &self.key_header, websocket);
        let resendable =
            !websocket && matches!(body, Either::Right(_)) && parts.method.is_idempotent();
        // Boxed: it rides in every future below `send` until the answer comes, and a small
        // pointer there is cheaper than moving ~250 bytes with each of them.
        let resend = resendable.then(|| Box::new(Resend::keep(&parts, client_host.as_ref())));
        self.add_ours(&mut parts.headers, &permit, hop, client_host);
        let again = resend.map(|r| {
            let permit = &permit;
            move || self.again(r, permit, hop)
        });
        let started = std::time::Instant::now();
        let req = Request::from_parts(parts, body);
        let deadline = tokio::time::Instant::from_std(started) + self.timeout;
        let sent = if multiplexed {
            // Boxed: the pool's future is large, and unboxed it would grow this one (and
            // every one above it) for the HTTP/1 requests that never take this branch.
            by(deadline, Box::pin(self.pooled(req, again))).await
        } else {
            self.own(req, &conn.upstream, started, deadline, again)
                .await
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
            rewrite::strip_hop_by_hop(response.headers_mut());
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
    async fn pooled(
        &self,
        req: Request<UpBody>,
        again: Option<impl FnOnce() -> Request<UpBody>>,
    ) -> Result<Response<Incoming>, SendError> {
        match self.client.request(self.absolute(req)?).await {
            Ok(resp) => Ok(resp),
            Err(e) if !e.is_connect() && closed_unanswered(&e) => match again {
                Some(again) => {
                    tracing::debug!(error = %e, "upstream connection closed; sending again");
                    Ok(self.client.request(self.absolute(again())?).await?)
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
        again: Option<impl FnOnce() -> Request<UpBody>>,
    ) -> Result<Result<Response<Incoming>, SendError>, TimedOut> {
        let Some(mut lease) = affinity.lease() else {
            // Rare (a concurrent request holds the connection): boxed, as is `connect`,
            // so that the common path's future stays small (it is moved per request).
            return by(deadline, Box::pin(self.pooled(req, again))).await;
        };
        let Lease { conn, timer, .. } = &mut lease;
        let timer = timer.get_or_insert_with(|| LazyTimer::new(deadline));
        timer
            .within(deadline, self.exchange(req, conn, started, again))
            .await
    }

    /// One request on the connection in `slot` (opened when there is none, it was closed
    /// or it has been idle too long), which is put back once the answer has come. `now`:
    /// when the request started; `again` builds the request anew, when it may be resent.
    async fn exchange(
        &self,
        req: Request<UpBody>,
        slot: &mut Option<Kept>,
        now: std::time::Instant,
        again: Option<impl FnOnce() -> Request<UpBody>>,
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
                conn.heard.clear();
                match conn.send.try_send_request(req).await {
                    Ok(resp) => return Ok(keep(slot, conn, resp, now)),
                    Err(mut e) => match (e.take_message(), again) {
                        // Closed under us before the request left: never sent, so send it anew.
                        (Some(req), _) => req,
                        // Sent, and the connection closed without a word: may be sent again.
                        (None, Some(again)) if !conn.heard.anything() => {
                            tracing::debug!(
                                error = %e.error(),
                                "upstream closed a kept connection; sending again"
                            );
                            again()
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

impl Upstream {
    /// keygate's headers on what the client's left (the second half of the rewrite), and
    /// the upstream's `Host`: the same for the first send and a resend.
    fn add_ours(
        &self,
        headers: &mut HeaderMap,
        permit: &Permitted,
        hop: Hop<'_>,
        client_host: Option<HeaderValue>,
    ) {
        rewrite::add_gateway_headers(headers, permit, hop, client_host);
        headers.insert(header::HOST, self.host.clone());
    }

    /// The request `resend` keeps, rebuilt with keygate's headers as the first time.
    fn again(&self, resend: Box<Resend>, permit: &Permitted, hop: Hop<'_>) -> Request<UpBody> {
        let resend = *resend;
        let mut headers = resend.client_headers;
        self.add_ours(&mut headers, permit, hop, resend.client_host);
        let mut req = Request::new(Either::Right(Empty::new()));
        *req.method_mut() = resend.method;
        *req.uri_mut() = resend.uri;
        *req.headers_mut() = headers;
        req
    }
}

/// Whether the pool's request failed because its connection closed before a complete
/// answer (hyper's "connection closed before message completed").
fn closed_unanswered(e: &(dyn Error + 'static)) -> bool {
    caused_by(e, |c| {
        c.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
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

#[cfg(test)]
mod tests {
    use super::*;

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
