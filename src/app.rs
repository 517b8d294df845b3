//! Wiring: builds the shared state from a [`Config`] and serves bound listeners until a
//! shutdown future resolves.
//!
//! Invariants: a config, policy or store error stops start-up before any listener serves
//! (never a half-configured gateway); listeners are bound by the caller and passed in, so
//! tests bind port 0 and know the address first; on shutdown the listeners stop
//! accepting, in-flight requests get [`DRAIN_TIMEOUT`] to finish, and pending last-use
//! times are flushed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;

use crate::admin::Admin;
use crate::admin::auth::Token;
use crate::admin::console::Console;
use crate::cache::Cache;
use crate::config::{self, Config};
use crate::policy::{Policy, PolicyError};
use crate::proxy::{Proxy, Upstream};
use crate::store::embedded::EmbeddedStore;
use crate::store::{KeyStore, StoreError};
use crate::usage::Usage;

/// How long in-flight requests may run on after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often pending last-use times are written (the contract allows 10 s).
const USAGE_FLUSH_EVERY: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("cannot open the key store: {0}")]
    Store(#[from] StoreError),
    #[error("{0} is not available in this build yet")]
    Unsupported(&'static str),
    #[error("cannot accept connections: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens the key store the config names.
pub fn open_store(store: &config::Store) -> Result<Arc<dyn KeyStore>, ServeError> {
    match store {
        config::Store::Embedded { path } => Ok(Arc::new(EmbeddedStore::open(path)?)),
        config::Store::Redis { .. } | config::Store::RedisCluster { .. } => Err(
            ServeError::Unsupported("the Redis key registry (store.kind: redis)"),
        ),
    }
}

/// A gateway ready to serve: policy loaded, store open.
pub struct App {
    config: Config,
    proxy: Arc<Proxy>,
    admin: Arc<Admin>,
}

impl App {
    /// Loads the policy and opens the store; nothing listens yet.
    pub fn build(config: Config) -> Result<Self, ServeError> {
        if config.tls.is_some() {
            return Err(ServeError::Unsupported("TLS on the proxy listener (tls:)"));
        }
        let policy = Policy::load(&config.policy)?;
        let store = open_store(&config.store)?;
        let cache = Arc::new(Cache::new(
            config.cache_ttl,
            config.cache_negative_ttl,
            config.cache_max_entries,
        ));
        let upstream = Upstream::new(
            &config.upstream,
            config.upstream_timeout,
            config.upstream_connect_timeout,
            config.key_header.clone(),
        );
        let policy = Arc::new(ArcSwap::from_pointee(policy));
        let usage = Arc::new(Usage::default());
        let proxy = Arc::new(Proxy {
            policy: Arc::clone(&policy),
            store: Arc::clone(&store),
            cache: Arc::clone(&cache),
            usage: Arc::clone(&usage),
            upstream,
            key_header: config.key_header.clone(),
            key_header_display: config.key_header_display.clone(),
            key_prefix: config.key_prefix.clone(),
            store_timeout: config.store_timeout,
        });
        let admin = Arc::new(Admin {
            store,
            store_timeout: config.store_timeout.max(Duration::from_secs(1)),
            policy,
            cache,
            usage,
            key_prefix: config.key_prefix.clone(),
            key_header: config.key_header.clone(),
            key_header_display: config.key_header_display.clone(),
            max_ttl: config.key_max_ttl,
            token: admin_token(config.admin_token_env.as_deref()),
            console: Console::new(&config.key_prefix, &config.key_header_display),
        });
        Ok(Self {
            config,
            proxy,
            admin,
        })
    }

    /// Serves the proxy and admin listeners until `shutdown` resolves, then drains.
    pub async fn serve(
        self,
        proxy: TcpListener,
        admin: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let background = self.spawn_background();
        let graceful = GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.header_read_timeout)
            .max_buf_size(self.config.max_header_bytes.max(8192));
        builder.http2().timer(TokioTimer::new());
        let builder = Arc::new(builder);

        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = proxy.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let p = Arc::clone(&self.proxy);
                    let svc = service_fn(move |req| {
                        let p = Arc::clone(&p);
                        async move { Ok::<_, Infallible>(p.serve(req, peer, false).await) }
                    });
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned();
                    tokio::spawn(graceful.watch(conn));
                }
                accepted = admin.accept() => {
                    let Ok((stream, _peer)) = accepted else { continue };
                    let a = Arc::clone(&self.admin);
                    let svc = service_fn(move |req| {
                        let a = Arc::clone(&a);
                        async move { Ok::<_, Infallible>(a.serve(req).await) }
                    });
                    let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                    tokio::spawn(graceful.watch(conn));
                }
            }
        }
        drop(proxy);
        drop(admin);
        tracing::info!("shutting down: draining in-flight requests");
        if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("drain timeout passed; closing the remaining connections");
        }
        for task in background {
            task.abort();
        }
        flush_usage(&self.proxy).await;
        Ok(())
    }

    /// Cache invalidations, batched last-use writes, and the cache sweeper.
    fn spawn_background(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        let p = Arc::clone(&self.proxy);
        let mut rx = p.store.invalidations();
        tasks.push(tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(inv) => p.cache.invalidate(&inv),
                    Err(RecvError::Lagged(_)) => {
                        p.cache.invalidate(&crate::store::Invalidation::All);
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        }));
        let p = Arc::clone(&self.proxy);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(USAGE_FLUSH_EVERY);
            loop {
                tick.tick().await;
                flush_usage(&p).await;
            }
        }));
        let p = Arc::clone(&self.proxy);
        let every = self.config.cache_ttl.max(Duration::from_secs(1));
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                p.cache.sweep();
            }
        }));
        tasks
    }
}

async fn flush_usage(p: &Proxy) {
    let uses = p.usage.drain();
    if uses.is_empty() {
        return;
    }
    if let Err(e) = p.store.record_use(&uses).await {
        tracing::warn!(error = %e, "could not record last use; will retry");
        p.usage.restore(uses);
    }
}

/// The bootstrap admin token, read once from the env var `admin.token_env` names.
/// Unset or empty: no token (only admin keys can use the admin API); said once in the log.
fn admin_token(env: Option<&str>) -> Option<Token> {
    let name = env?;
    let token = std::env::var(name).ok().as_deref().and_then(Token::new);
    if token.is_none() {
        tracing::warn!(
            env = name,
            "admin.token_env names an unset or empty variable: no bootstrap admin token"
        );
    }
    token
}

/// Binds a listener, naming the address in the error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, std::io::Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}
