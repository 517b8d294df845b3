//! The upstream services keygate forwards to: the default `upstream:` and the named
//! `upstreams:`, each with its targets, their TLS, their balancing and their health.
//!
//! Built once from the config ([`Upstreams::new`]); a route's upstream is an index
//! resolved when the policy is loaded (`Permitted::upstream`), so a request finds its
//! service by position, never by name. Each [`Target`] has its own keep-alive pool (for
//! HTTP/2 client streams) and dials its own connections for the HTTP/1 clients'
//! per-connection affinity ([`crate::proxy::affinity`]).
//!
//! Invariants: a request goes only to a target in rotation ([`health`]); when none is
//! left it is refused at once ([`NoHealthyTarget`]); a connection that could not be
//! opened is counted against its target where it failed, and the request, never sent, is
//! tried once on another target ([`Service::connect`]); a request that was sent is never
//! sent to another target. Labels are the upstream's name and the target's URL, both
//! from the config (bounded).

pub mod balance;
pub mod cause;
mod check;
pub mod connect;
pub mod health;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use http::{HeaderValue, Request, Response, Uri, header};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client_h1;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics::Counter;
use tokio_rustls::TlsConnector;

use crate::config::{Balance, Config, HealthSettings, UpstreamSettings};
use crate::proxy::affinity::Kept;
use crate::proxy::forward::UpBody;
use crate::proxy::heard::{Heard, Listening};
use crate::proxy::refusal::SendError;
use crate::report::Chain;
use balance::{Chosen, Turn};
use cause::Class;
use connect::{Connector, Dial};
use health::{Health, Who};
pub use tls::UpstreamTlsError;

pub const UPSTREAM_UP: &str = "keygate_upstream_up";
pub const UPSTREAM_REQUESTS: &str = "keygate_upstream_requests_total";

/// An upstream's settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream `{name}`: TLS setup failed")]
    Tls {
        name: String,
        #[source]
        source: UpstreamTlsError,
    },
    #[error("upstream `{name}`: `{value}` is not a valid TLS server name")]
    ServerName { name: String, value: String },
}

/// Every target of the upstream is out of rotation; nothing was sent.
#[derive(Debug, thiserror::Error)]
#[error("every target of upstream `{0}` is down")]
pub struct NoHealthyTarget(pub Arc<str>);

/// Every upstream service, the default first.
pub struct Upstreams {
    services: Vec<Arc<Service>>,
}

/// One upstream service (see the module docs).
pub struct Service {
    pub name: Arc<str>,
    index: u16,
    targets: Vec<Target>,
    balance: Balance,
    next: Turn,
    pub timeout: Duration,
    pub idle_timeout: Duration,
    /// The targets' common path without its trailing `/` (often empty).
    pub base_path: String,
    health: HealthSettings,
}

/// One instance of a service.
pub struct Target {
    index: u16,
    /// `scheme://host:port`: the label and the name in messages.
    pub label: Arc<str>,
    service: Arc<str>,
    dial: Arc<Dial>,
    client: Client<Connector, UpBody>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// `Host` on every request to it: the target URL's host and port.
    host: HeaderValue,
    pub health: Health,
    in_flight: AtomicUsize,
    /// `keygate_upstream_requests_total` by [`Class::RESULTS`].
    results: [Counter; 6],
}

impl Upstreams {
    /// Builds every service of the config (TLS material read now: an error stops start-up).
    /// Call after `metrics::install`, so the series land in the recorder.
    pub fn new(config: &Config) -> Result<Self, UpstreamError> {
        let services = config
            .all_upstreams()
            .enumerate()
            .map(|(i, s)| Service::new(u16::try_from(i).unwrap_or(u16::MAX), s).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(Self { services })
    }

    /// Reads every upstream's TLS material, as [`Upstreams::new`] would (`keygate check`).
    pub fn check(config: &Config) -> Result<(), UpstreamError> {
        for s in config.all_upstreams() {
            tls_for(s)?;
        }
        Ok(())
    }

    /// The service at `index` (a route's upstream); the default for an index no policy
    /// loaded against this config can hold.
    pub fn get(&self, index: usize) -> &Service {
        self.services
            .get(index)
            .or_else(|| self.services.first())
            .expect("the default upstream is always there")
    }

    /// The health checks: an active `GET` per target where `health.path` is set, else a
    /// prober that tries a target taken out again after a back-off.
    pub fn spawn_checks(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for s in &self.services {
            for i in 0..s.targets.len() {
                let s = Arc::clone(s);
                tasks.push(tokio::spawn(async move {
                    match s.health.path.clone() {
                        Some(path) => check::actively(&s, i, &path).await,
                        None => check::passively(&s, i).await,
                    }
                }));
            }
        }
        tasks
    }

    /// `GET /v1/upstreams`: each upstream's targets and their health.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let services: Vec<_> = self
            .services
            .iter()
            .map(|s| {
                let targets: Vec<_> = s
                    .targets
                    .iter()
                    .map(|t| {
                        let h = t.health.snapshot();
                        json!({
                            "url": &*t.label,
                            "up": h.up,
                            "in_flight": t.in_flight.load(std::sync::atomic::Ordering::Relaxed),
                            "consecutive_failures": h.consecutive_failures,
                            "last_error": h.last_error,
                            "changed_at": h.changed.and_then(rfc3339),
                        })
                    })
                    .collect();
                json!({
                    "name": &*s.name,
                    "balance": s.balance.as_str(),
                    "health_check": s.health.path,
                    "targets": targets,
                })
            })
            .collect();
        json!({ "upstreams": services })
    }
}

fn rfc3339(t: std::time::SystemTime) -> Option<String> {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// The TLS client config of an upstream with an `https://` target.
fn tls_for(s: &UpstreamSettings) -> Result<Option<Arc<rustls::ClientConfig>>, UpstreamError> {
    if !s.targets.iter().any(|t| t.scheme_str() == Some("https")) {
        return Ok(None);
    }
    tls::client_config(&s.tls)
        .map(Some)
        .map_err(|source| UpstreamError::Tls {
            name: s.name.clone(),
            source,
        })
}

impl Service {
    fn new(index: u16, s: &UpstreamSettings) -> Result<Self, UpstreamError> {
        let tls = tls_for(s)?.map(TlsConnector::from);
        let name: Arc<str> = Arc::from(s.name.as_str());
        let targets = s
            .targets
            .iter()
            .enumerate()
            .map(|(i, url)| {
                Target::new(
                    u16::try_from(i).unwrap_or(u16::MAX),
                    &name,
                    url,
                    s,
                    tls.as_ref(),
                )
            })
            .collect::<Result<_, _>>()?;
        let base_path = s
            .targets
            .first()
            .map_or("", |u| u.path().trim_end_matches('/'))
            .to_owned();
        Ok(Self {
            name,
            index,
            targets,
            balance: s.balance,
            next: Turn::new(0),
            timeout: s.timeout,
            idle_timeout: s.idle_timeout,
            base_path,
            health: s.health.clone(),
        })
    }

    /// Its position among the upstreams (0: the default).
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Whether it has more than one target (requests are then balanced one by one).
    pub fn several(&self) -> bool {
        self.targets.len() > 1
    }

    pub fn target(&self, index: u16) -> Option<&Target> {
        self.targets.get(usize::from(index))
    }

    /// A new connection to a target in rotation, for a request not sent yet: if it
    /// cannot be opened, the failure counts against that target and one other target is
    /// tried. `chosen` is the target the connection is to (or the last one tried).
    pub async fn connect<'s>(&'s self, chosen: &mut Chosen<'s>) -> Result<Kept, SendError> {
        let first = self
            .pick()
            .ok_or_else(|| NoHealthyTarget(Arc::clone(&self.name)))?;
        chosen.set(first);
        let e = match first.connect(self.index).await {
            Ok(k) => return Ok(k),
            Err(e) => e,
        };
        first.failed(&*e);
        let Some(second) = self.pick_other(first) else {
            return Err(e);
        };
        tracing::debug!(upstream = &*self.name, from = &*first.label, to = &*second.label, error = %Chain(&*e), "connection failed; trying another target");
        chosen.set(second);
        second.connect(self.index).await.inspect_err(|e| {
            second.failed(&**e);
        })
    }

    /// A request through a target's shared pool (HTTP/2 client streams, or a second
    /// request while a connection's own upstream connection is busy). When the pool
    /// cannot connect, a request that can be built again (`again`) is tried once on
    /// another target; a request closed unanswered on a reused connection is sent again
    /// once, when it may be (see `proxy::forward`).
    pub async fn pooled<'s>(
        &'s self,
        req: Request<UpBody>,
        again: Option<impl FnOnce() -> Request<UpBody>>,
        chosen: &mut Chosen<'s>,
    ) -> Result<Response<Incoming>, SendError> {
        let target = self
            .pick()
            .ok_or_else(|| NoHealthyTarget(Arc::clone(&self.name)))?;
        self.pooled_via(target, req, again, chosen).await
    }

    /// [`Service::pooled`] through `target`'s pool.
    pub async fn pooled_via<'s>(
        &'s self,
        target: &'s Target,
        req: Request<UpBody>,
        again: Option<impl FnOnce() -> Request<UpBody>>,
        chosen: &mut Chosen<'s>,
    ) -> Result<Response<Incoming>, SendError> {
        chosen.set(target);
        let e = match target.client.request(target.absolute(req)?).await {
            Ok(resp) => return Ok(resp),
            Err(e) => e,
        };
        let connect = e.is_connect();
        if connect {
            target.failed(&e);
        } else if !crate::proxy::forward::closed_unanswered(&e) {
            return Err(e.into());
        }
        // Never sent, or closed without an answer: built again and sent once more, to
        // another target when there is one.
        let Some(again) = again else {
            return Err(e.into());
        };
        let next = match self.pick_other(target) {
            Some(next) => next,
            None if connect => return Err(e.into()),
            None => target,
        };
        tracing::debug!(error = %e, to = &*next.label, "upstream request not answered; sending again");
        chosen.set(next);
        next.client
            .request(next.absolute(again())?)
            .await
            .map_err(|e| {
                if e.is_connect() {
                    next.failed(&e);
                }
                e.into()
            })
    }
}

impl Target {
    fn new(
        index: u16,
        service: &Arc<str>,
        url: &Uri,
        s: &UpstreamSettings,
        tls: Option<&TlsConnector>,
    ) -> Result<Self, UpstreamError> {
        let authority = url.authority().cloned().expect("config checked the host");
        let scheme = url.scheme().cloned().expect("config checked the scheme");
        let https = scheme == http::uri::Scheme::HTTPS;
        let label: Arc<str> = Arc::from(format!("{scheme}://{}", host_port(&authority)));
        let host = connect::dial_host(&authority);
        let tls =
            match (https, tls) {
                (true, Some(connector)) => {
                    let name = s.tls.server_name.clone().unwrap_or_else(|| host.clone());
                    let server_name = rustls::pki_types::ServerName::try_from(name.clone())
                        .map_err(|_| UpstreamError::ServerName {
                            name: s.name.clone(),
                            value: name,
                        })?;
                    Some((connector.clone(), server_name))
                }
                _ => None,
            };
        let dial = Arc::new(Dial {
            label: Arc::clone(&label),
            host,
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            timeout: s.connect_timeout,
            tls,
        });
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(s.idle_timeout)
            .pool_max_idle_per_host(256)
            .build(Connector(Arc::clone(&dial)));
        let labels = |result: &'static str| metrics::counter!(UPSTREAM_REQUESTS, "upstream" => service.to_string(), "target" => label.to_string(), "result" => result);
        let results = Class::RESULTS.map(|c| {
            let counter = labels(c.as_str());
            counter.increment(0);
            counter
        });
        let gauge = metrics::gauge!(UPSTREAM_UP, "upstream" => service.to_string(), "target" => label.to_string());
        Ok(Self {
            index,
            host: host_header(&authority),
            label,
            service: Arc::clone(service),
            dial,
            client,
            scheme,
            authority,
            health: Health::new(s.health.unhealthy_after, s.health.healthy_after, gauge),
            in_flight: AtomicUsize::new(0),
            results,
        })
    }

    /// Its position in its service.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// `Host` for requests to this target.
    pub fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// The upstream it belongs to.
    pub fn service_name(&self) -> &str {
        &self.service
    }

    fn who(&self) -> Who<'_> {
        Who {
            upstream: &self.service,
            target: &self.label,
        }
    }

    /// An answer came from it.
    pub fn answered(&self) {
        self.count(Class::Ok);
        self.health.answered();
    }

    /// A request to it failed with `e` (counted, and against its health unless the error
    /// is not the target's fault).
    pub fn failed(&self, e: &(dyn std::error::Error + 'static)) {
        let class = cause::classify(e);
        self.count(class);
        self.health.failed(&self.who(), &Chain(e).to_string());
    }

    /// No answer within the upstream's timeout.
    pub fn timed_out(&self, after: Duration) {
        self.count(Class::Timeout);
        self.health
            .failed(&self.who(), &format!("no answer within {after:?}"));
    }

    fn count(&self, class: Class) {
        if let Some(c) = class.slot().and_then(|i| self.results.get(i)) {
            c.increment(1);
        }
    }

    /// A new HTTP/1.1 connection to this target (TLS done), noting what it hears.
    pub async fn connect(&self, service: u16) -> Result<Kept, SendError> {
        let stream = self.dial.open().await?;
        let heard = Heard::default();
        let io = TokioIo::new(Listening::new(stream, heard.clone()));
        let (send, driver) = client_h1::handshake(io).await?;
        // Boxed: the connection's state (a TLS session's too) is large, and the task
        // would otherwise copy it whole as it is spawned and stored.
        let driver = Box::pin(driver.with_upgrades());
        tokio::spawn(async move {
            let _ = driver.await;
        });
        Ok(Kept {
            send,
            heard,
            used: std::time::Instant::now(),
            service,
            target: self.index,
        })
    }

    /// `req` with this target's scheme and authority (the pool wants an absolute URI)
    /// and `Host`.
    fn absolute(&self, mut req: Request<UpBody>) -> Result<Request<UpBody>, SendError> {
        let mut uri = std::mem::take(req.uri_mut()).into_parts();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        *req.uri_mut() = Uri::from_parts(uri)?;
        req.headers_mut().insert(header::HOST, self.host.clone());
        Ok(req)
    }
}

/// `host:port` of an authority, never its `user:password@`.
fn host_port(authority: &http::uri::Authority) -> String {
    match authority.port() {
        Some(port) => format!("{}:{port}", authority.host()),
        None => authority.host().to_owned(),
    }
}

/// `Host` for the upstream: its host and port, never the URL's `user:password@`.
pub fn host_header(authority: &http::uri::Authority) -> HeaderValue {
    HeaderValue::try_from(host_port(authority)).expect("a URL's host and port are a valid header")
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
