//! The admin listener: health, readiness, the admin API (`/v1/…`), its `OpenAPI`
//! description and the web console.
//!
//! [`Admin::route`] reads top-down: resolve `(method, path)` to an [`Endpoint`] (unknown
//! path 404, known path with another method 405 + `Allow`) before any credential is
//! looked at; public endpoints answer at once; every `/v1/` endpoint first
//! authenticates the caller ([`auth::authenticate`]: 401/403), then reads its input
//! ([`input`]: 400/413), then acts ([`keys`]).
//!
//! Invariants: `/healthz`, `/readyz`, `/metrics`, `/openapi.json` and the console's page and assets
//! need no credentials (bind the admin listener privately); everything under `/v1/`
//! does; errors become JSON only in [`error`]; every answer carries `nosniff`,
//! `X-Frame-Options: DENY` and `Referrer-Policy: no-referrer`, and API answers
//! `Cache-Control: no-store` (they may hold a secret). `/readyz` answers 200 only when
//! a policy is loaded and the store answers a live ping within `store.timeout` (at
//! least a second); it does not check upstreams (a gateway whose upstreams are down is
//! still ready: it answers and says why it cannot forward; `/v1/upstreams` and
//! `keygate_upstream_up` show them). Writes go only through `KeyStore`, via `lifecycle`.

pub mod auth;
pub mod console;
mod edit;
pub mod error;
mod events;
mod give;
pub mod input;
pub mod keys;
pub mod openapi;
mod usage;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;

use crate::authn::Authn;
use crate::cache::Cache;
use crate::expiry::Expiring;
use crate::metrics;
use crate::policy::Policy;
use crate::store::KeyStore;
use crate::usage::Usage;
use error::AdminError;

/// What the admin listener serves from.
pub struct Admin {
    pub store: Arc<dyn KeyStore>,
    /// How long `/readyz` waits for the store (a key look-up waits `authn.timeout`).
    pub store_timeout: Duration,
    /// The live policy (the proxy's, swapped on reload): validation and `GET /v1/policy`.
    pub policy: Arc<ArcSwap<Policy>>,
    /// The proxy's key cache (for `/metrics`; keys are looked up through `authn`).
    pub cache: Arc<Cache>,
    /// Keys in use that expire soon (for `/metrics`).
    pub expiring: Arc<Expiring>,
    /// Last-use times of admin keys, flushed with the proxy's.
    pub usage: Arc<Usage>,
    /// The proxy's key authentication: admin keys are read, parsed and looked up
    /// exactly as any other key.
    pub authn: Arc<Authn>,
    pub max_ttl: Option<Duration>,
    /// The bootstrap token, read once at start from the env var `admin.token_env` names.
    pub token: Option<auth::Token>,
    pub console: console::Console,
    pub openapi: openapi::Document,
    /// The upstream services and their targets' health (`GET /v1/upstreams`).
    pub upstreams: Arc<crate::upstream::Upstreams>,
}

/// What a request asks for, known before anyone is authenticated.
enum Endpoint<'p> {
    Health,
    Ready,
    Metrics,
    OpenApi,
    Console(console::Asset),
    Api(Api<'p>),
}

/// The endpoints that need credentials.
enum Api<'p> {
    CreateKey,
    ListKeys,
    ShowKey(&'p str),
    RevokeKey(&'p str),
    RotateKey(&'p str),
    UpdateKey(&'p str),
    SuspendKey(&'p str),
    ResumeKey(&'p str),
    Policy,
    Audit,
    Whoami,
    Upstreams,
    KeyUsage(&'p str),
    Usage,
    Events,
}

/// `(method, path)` → endpoint; a known path with another method is 405 with `Allow`.
fn endpoint<'p>(method: &Method, path: &'p str) -> Result<Endpoint<'p>, AdminError> {
    use Endpoint as E;
    let get = *method == Method::GET;
    let get_or_head = get || *method == Method::HEAD;
    let post = *method == Method::POST;
    let (found, allow) = match path {
        "/healthz" => (get_or_head.then_some(E::Health), "GET, HEAD"),
        "/readyz" => (get_or_head.then_some(E::Ready), "GET, HEAD"),
        "/metrics" => (get_or_head.then_some(E::Metrics), "GET, HEAD"),
        "/openapi.json" => (get.then_some(E::OpenApi), "GET"),
        "/v1/keys" => (
            if get {
                Some(E::Api(Api::ListKeys))
            } else if post {
                Some(E::Api(Api::CreateKey))
            } else {
                None
            },
            "GET, POST",
        ),
        "/v1/policy" => (get.then_some(E::Api(Api::Policy)), "GET"),
        "/v1/audit" => (get.then_some(E::Api(Api::Audit)), "GET"),
        "/v1/whoami" => (get.then_some(E::Api(Api::Whoami)), "GET"),
        "/v1/upstreams" => (get.then_some(E::Api(Api::Upstreams)), "GET"),
        "/v1/usage" => (get.then_some(E::Api(Api::Usage)), "GET"),
        "/v1/events" => (get.then_some(E::Api(Api::Events)), "GET"),
        _ => {
            if let Some(asset) = console::Asset::at(path) {
                (get_or_head.then_some(E::Console(asset)), "GET, HEAD")
            } else if let Some(rest) = path.strip_prefix("/v1/keys/") {
                match rest.split_once('/') {
                    None if !rest.is_empty() => (
                        if get {
                            Some(E::Api(Api::ShowKey(rest)))
                        } else if *method == Method::DELETE {
                            Some(E::Api(Api::RevokeKey(rest)))
                        } else if *method == Method::PATCH {
                            Some(E::Api(Api::UpdateKey(rest)))
                        } else {
                            None
                        },
                        "GET, PATCH, DELETE",
                    ),
                    Some((id, "rotate")) if !id.is_empty() => {
                        (post.then_some(E::Api(Api::RotateKey(id))), "POST")
                    }
                    Some((id, "suspend")) if !id.is_empty() => {
                        (post.then_some(E::Api(Api::SuspendKey(id))), "POST")
                    }
                    Some((id, "resume")) if !id.is_empty() => {
                        (post.then_some(E::Api(Api::ResumeKey(id))), "POST")
                    }
                    Some((id, "usage")) if !id.is_empty() => {
                        (get.then_some(E::Api(Api::KeyUsage(id))), "GET")
                    }
                    _ => return Err(AdminError::NotFound),
                }
            } else {
                return Err(AdminError::NotFound);
            }
        }
    };
    found.ok_or(AdminError::MethodNotAllowed { allow })
}

impl Admin {
    /// Answers one admin request; errors become their JSON answer here.
    pub async fn serve<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let mut response = match self.route(req).await {
            Ok(r) => r,
            Err(e) => e.to_response(&self.authn.header_display),
        };
        let h = response.headers_mut();
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        if path.starts_with("/v1/") {
            tracing::info!(target: "keygate::admin", method = %method, path = %path, status = response.status().as_u16(), "admin request");
        }
        response
    }

    async fn route<B>(&self, req: Request<B>) -> Result<Response<Full<Bytes>>, AdminError>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let api = match endpoint(&parts.method, parts.uri.path())? {
            Endpoint::Health => {
                return Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"})));
            }
            Endpoint::Ready => return Ok(self.readyz().await),
            Endpoint::Metrics => return Ok(self.metrics()),
            Endpoint::OpenApi => return Ok(self.openapi.response()),
            Endpoint::Console(asset) => return Ok(self.console.response(asset)),
            Endpoint::Api(api) => api,
        };
        // A hung registry must not hang the admin API: the whole action (several store
        // round trips) is bounded, and an answer that does not come is a 503.
        let bound = (self.store_timeout * 5).max(Duration::from_secs(5));
        match tokio::time::timeout(bound, self.act(api, &parts, body)).await {
            Ok(result) => result,
            Err(_) => Err(AdminError::Store(crate::store::StoreError::unavailable(
                format!("the key store did not answer within {} s", bound.as_secs()),
            ))),
        }
    }

    /// Authenticates the caller, reads the input and performs one `/v1/` request.
    async fn act<B>(
        &self,
        api: Api<'_>,
        parts: &http::request::Parts,
        body: B,
    ) -> Result<Response<Full<Bytes>>, AdminError>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let caller = auth::authenticate(self, &parts.headers).await?;
        let query = parts.uri.query();
        match api {
            Api::CreateKey => {
                let body = input::body(body).await?;
                self.create_key(&caller, &body).await
            }
            Api::ListKeys => self.list_keys(&caller, query).await,
            Api::ShowKey(id) => self.show_key(&caller, id).await,
            Api::RevokeKey(id) => self.revoke_key(&caller, id).await,
            Api::RotateKey(id) => {
                let body = input::body(body).await?;
                self.rotate_key(&caller, id, &body).await
            }
            Api::UpdateKey(id) => {
                let body = input::body(body).await?;
                self.update_key(&caller, id, &body).await
            }
            Api::SuspendKey(id) => {
                let body = input::body(body).await?;
                self.set_enabled(&caller, id, false, &body).await
            }
            Api::ResumeKey(id) => {
                let body = input::body(body).await?;
                self.set_enabled(&caller, id, true, &body).await
            }
            Api::Policy => Ok(self.show_policy()),
            Api::Audit => self.audit(&caller, query).await,
            Api::Whoami => Ok(Self::whoami(&caller)),
            Api::Upstreams => self.show_upstreams(&caller),
            Api::KeyUsage(id) => self.key_usage(&caller, id, query).await,
            Api::Usage => self.business_usage(&caller, query).await,
            Api::Events => self.events(&caller, query).await,
        }
    }

    /// Prometheus text; counters kept as atomics elsewhere are copied in first.
    fn metrics(&self) -> Response<Full<Bytes>> {
        let stats = &self.cache.stats;
        metrics::cache(
            stats.hits.load(Ordering::Relaxed),
            stats.misses.load(Ordering::Relaxed),
            stats.stale_served.load(Ordering::Relaxed),
            self.cache.len(),
        );
        metrics::expiring_soon(self.expiring.count());
        let mut r = Response::new(Full::new(Bytes::from(metrics::render())));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    }

    async fn readyz(&self) -> Response<Full<Bytes>> {
        let ping = tokio::time::timeout(self.store_timeout, self.store.ping()).await;
        if !matches!(ping, Ok(Ok(()))) {
            metrics::store_error();
        }
        match ping {
            Ok(Ok(())) => json(
                StatusCode::OK,
                &serde_json::json!({"status": "ready", "policy": "loaded", "store": "ok"}),
            ),
            Ok(Err(e)) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"status": "not_ready", "policy": "loaded", "store": e.to_string()}),
            ),
            Err(_) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"status": "not_ready", "policy": "loaded", "store": "timed out"}),
            ),
        }
    }
}

/// A JSON response with `Cache-Control: no-store`.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}
