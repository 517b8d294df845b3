//! The admin listener: `/healthz`, `/readyz`, `/metrics` (and, later, the admin API and console).
//!
//! Invariants: `/healthz` answers 200 while the process serves; `/readyz` answers 200
//! only when a policy is loaded and the store answers a live ping within
//! `store.timeout` (at least a second). Both need no credentials: bind the admin listener privately.

pub mod error;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;

use crate::cache::Cache;
use crate::expiry::Expiring;
use crate::metrics;
use crate::store::KeyStore;
use error::AdminError;

/// What the admin listener serves from.
pub struct Admin {
    pub store: Arc<dyn KeyStore>,
    pub cache: Arc<Cache>,
    pub expiring: Arc<Expiring>,
    /// How long `/readyz` waits for the store's ping.
    pub store_timeout: Duration,
}

impl Admin {
    /// Answers one admin request; errors become their JSON answer here.
    pub async fn serve<B>(&self, req: Request<B>) -> Response<Full<Bytes>> {
        match self.route(&req).await {
            Ok(r) => r,
            Err(e) => e.to_response(),
        }
    }

    async fn route<B>(&self, req: &Request<B>) -> Result<Response<Full<Bytes>>, AdminError> {
        match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/healthz") => {
                Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"})))
            }
            (&Method::GET | &Method::HEAD, "/readyz") => Ok(self.readyz().await),
            (&Method::GET | &Method::HEAD, "/metrics") => Ok(self.metrics()),
            (_, "/healthz" | "/readyz" | "/metrics") => Err(AdminError::MethodNotAllowed),
            _ => Err(AdminError::NotFound),
        }
    }

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
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
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
