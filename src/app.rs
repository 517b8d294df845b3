//! Wiring: builds the shared state from a [`Config`] and serves bound listeners until a
//! shutdown future resolves.
//!
//! Invariants: a config, policy or store error stops start-up before any listener serves
//! (never a half-configured gateway); listeners are bound by the caller and passed in, so
//! tests bind port 0 and know the address first; on shutdown the listeners stop
//! accepting, in-flight requests get `limits.drain_timeout` to finish, and pending last-use
//! times are flushed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::server::graceful::Watcher;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::broadcast::error::RecvError;
use tokio_rustls::TlsAcceptor;

mod cap;
mod opening;

use cap::Slots;
use opening::Opened;

use crate::admin::Admin;
use crate::admin::auth::Token;
use crate::admin::console::Console;
use crate::admin::openapi;
use crate::authn::Authn;
use crate::cache::Cache;
use crate::config::{self, Config};
use crate::events::Notices;
use crate::expiry::Expiring;
use crate::limits::Limits;
use crate::policy::watch::{self, Reloader, Trigger};
use crate::policy::{Policy, PolicyError};
use crate::proxy::forward_auth::ForwardAuth;
use crate::proxy::framing::Guarded;
use crate::proxy::{Ambiguous, Downstream, Proxy, Upstream};
use crate::quotas::Quotas;
use crate::report::Chain;
use crate::store::deferred::DeferredEmbedded;
use crate::store::embedded::EmbeddedStore;
use crate::store::redis::{RedisStore, Target};
use crate::store::{KeyStore, StoreError};
use crate::tls::{self, Certs, TlsError};
use crate::upstream::Upstreams;
use crate::usage::Usage;

/// How often pending last-use times are written (the contract allows 10 s; each flush
/// writes every key used since the last, so a longer period means fewer writes).
const USAGE_FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Why the gateway cannot start. Policy, store and TLS errors already say what failed
/// (and name the file), so they pass through as they are: one layer, not two saying the same.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamError),
    #[error(transparent)]
    Webhook(#[from] crate::events::deliver::WebhookError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Opens the key store the config names, for a command or a Redis-backed server. A Redis
/// store opens even while Redis is down (it connects on first use), so the gateway starts
/// and `/readyz` tells the truth. `store.timeout` bounds each registry round trip. Needs a
/// tokio runtime.
pub fn open_store(store: &config::StoreSettings) -> Result<Arc<dyn KeyStore>, ServeError> {
    Ok(match open_redis(store)? {
        Ok(redis) => redis,
        Err(path) => Arc::new(EmbeddedStore::open(path)?),
    })
}

/// The Redis store the config names, or the embedded store's path.
fn open_redis(
    store: &config::StoreSettings,
) -> Result<Result<Arc<RedisStore>, &std::path::Path>, ServeError> {
    let target = match &store.backend {
        config::Store::Embedded { path } => return Ok(Err(path)),
        config::Store::Redis { url } => Target::Single(url.clone()),
        config::Store::RedisCluster { seeds } => Target::Cluster(seeds.clone()),
    };
    Ok(Ok(Arc::new(RedisStore::open(&target, store.timeout)?)))
}

/// A gateway ready to serve: policy loaded, store open.
pub struct App {
    config: Config,
    reloader: Option<Reloader>,
    /// The served certificate (reloaded on SIGHUP) and the acceptor using it.
    certs: Option<Arc<Certs>>,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    admin: Arc<Admin>,
    upstreams: Arc<Upstreams>,
    /// The webhooks, until the background tasks take them.
    hooks: Vec<crate::events::deliver::Hook>,
    /// The webhook lease, once delivering; handed back on shutdown.
    lease: Option<crate::events::deliver::Lease>,
}

impl App {
    /// Loads the policy and opens the store; nothing listens yet.
    pub fn build(config: Config) -> Result<Self, ServeError> {
        let certs = match &config.tls {
            Some(t) => Some(Arc::new(Certs::load(&t.cert, &t.key)?)),
            None => None,
        };
        let tls = match &certs {
            Some(c) => Some(TlsAcceptor::from(Arc::new(tls::server_config(
                Arc::clone(c),
            )?))),
            None => None,
        };
        let (policy, policy_text) = Policy::load_for(&config.policy, &config.upstream_names())?;
        crate::metrics::install(policy.route_names());
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        let upstreams = Arc::new(Upstreams::new(&config)?);
        let hooks = crate::events::deliver::hooks(&config.events)?;
        let live_policy = Arc::new(ArcSwap::from_pointee(policy));
        // A server starts even when its store cannot be opened yet: it fails closed
        // (503) until it can, and recovers without a restart.
        // On Redis, the registry also counts the fleet's rate limits.
        let (store, limits): (Arc<dyn KeyStore>, Limits) = match open_redis(&config.store)? {
            Ok(redis) => (
                Arc::clone(&redis) as Arc<dyn KeyStore>,
                Limits::fleet(redis),
            ),
            Err(path) => (
                Arc::new(DeferredEmbedded::new(path.to_path_buf())),
                Limits::default(),
            ),
        };
        let cache = Arc::new(Cache::new(&config.cache));
        let upstream = Upstream::new(
            Arc::clone(&upstreams),
            config.keys.header.clone(),
            config.limits.max_body_bytes,
            config.trusted_proxies.clone(),
        );
        let usage = Arc::new(Usage::keeping(config.usage_retention));
        let quotas = Arc::new(Quotas::new(Arc::clone(&store), config.store.quotas_fail));
        let expiring = Arc::new(Expiring::new(config.keys.expiry_warning));
        let authn = Arc::new(Authn {
            header: config.keys.header.clone(),
            header_display: config.keys.header_display.clone(),
            prefix: config.keys.prefix.clone(),
            cache: Arc::clone(&cache),
            store: Arc::clone(&store),
            timeout: config.store.timeout,
            accept_imported: config.keys.accept_imported,
        });
        let proxy = Arc::new(Proxy {
            policy: Arc::clone(&live_policy),
            store: Arc::clone(&store),
            cache: Arc::clone(&cache),
            usage: Arc::clone(&usage),
            limits: Arc::new(limits),
            quotas,
            expiring: Arc::clone(&expiring),
            notices: Arc::new(Notices::default()),
            upstream,
            authn: Arc::clone(&authn),
        });
        let admin = Arc::new(Admin {
            store,
            expiring,
            store_timeout: config.store.timeout.max(Duration::from_secs(1)),
            policy: Arc::clone(&live_policy),
            cache,
            usage,
            authn,
            max_ttl: config.keys.max_ttl,
            token: admin_token(config.admin.token_env.as_deref()),
            console: Console::new(&config.keys.prefix, &config.keys.header_display),
            openapi: openapi::Document::new(&config.keys.header_display),
            upstreams: Arc::clone(&upstreams),
        });
        let names = config.upstreams.iter().map(|u| u.name.clone()).collect();
        let reloader = Reloader::new(config.policy.clone(), live_policy, Some(policy_text))
            .with_upstreams(names);
        Ok(Self {
            config,
            reloader: Some(reloader),
            certs,
            tls,
            proxy,
            admin,
            upstreams,
            hooks,
            lease: None,
        })
    }

    /// Serves the listeners until `shutdown` resolves, then drains.
    pub async fn serve(
        mut self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let Listeners {
            proxy,
            admin,
            forward_auth,
        } = listeners;
        let forward_auth_service = Arc::new(ForwardAuth {
            proxy: Arc::clone(&self.proxy),
        });
        let background = self.spawn_background();
        let graceful = GracefulShutdown::new();
        let limits = self.config.limits;
        let opening = limits.header_read_timeout;
        let builder = Arc::new(http_builder(&limits));
        let proxy_side = Arc::new(ProxySide {
            builder: Arc::clone(&builder),
            proxy: Arc::clone(&self.proxy),
            tls: self.tls.clone(),
            opening,
            max_head: limits.max_header_bytes,
        });

        let slots = Slots::new(limits.max_connections);
        let accepting = async {
            tokio::join!(
                accept_each(
                    &proxy,
                    || slots.public(),
                    |stream, peer, slot| {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(serve_proxy_connection(
                            Arc::clone(&proxy_side),
                            graceful.watcher(),
                            stream,
                            peer,
                            slot,
                        ));
                    }
                ),
                async {
                    let Some(listener) = forward_auth.as_ref() else {
                        return std::future::pending().await;
                    };
                    accept_each(
                        listener,
                        || slots.public(),
                        |stream, peer, slot| {
                            let f = Arc::clone(&forward_auth_service);
                            let answer = move |req| {
                                let f = Arc::clone(&f);
                                async move { f.serve(req, peer).await }
                            };
                            let watcher = graceful.watcher();
                            spawn_plain(&builder, watcher, stream, (opening, slot), answer);
                        },
                    )
                    .await;
                },
                accept_each(
                    &admin,
                    || slots.admin(),
                    |stream, _peer, slot| {
                        let a = Arc::clone(&self.admin);
                        let answer = move |req| {
                            let a = Arc::clone(&a);
                            async move { a.serve(req).await }
                        };
                        spawn_plain(
                            &builder,
                            graceful.watcher(),
                            stream,
                            (opening, slot),
                            answer,
                        );
                    }
                ),
            )
        };
        tokio::select! {
            () = shutdown => {}
            _ = accepting => {}
        }
        drop(proxy);
        drop(admin);
        drop(forward_auth);
        tracing::info!("shutting down: draining in-flight requests");
        if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("drain timeout passed; closing the remaining connections");
        }
        self.wind_down(background).await;
        Ok(())
    }

    /// After the drain: stops the background work, hands back the webhook lease, writes
    /// the key events still queued and the last usage counts, gives back unspent quota.
    async fn wind_down(&mut self, background: Vec<tokio::task::JoinHandle<()>>) {
        for task in background {
            task.abort();
        }
        if let Some(lease) = self.lease.take() {
            lease.release().await;
        }
        self.proxy.notices.flush(&*self.proxy.store).await;
        flush_usage(&self.proxy).await;
        self.proxy.quotas.give_back().await;
    }

    /// Cache invalidations, batched last-use writes, metrics upkeep, and the cache sweeper.
    fn spawn_background(&mut self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = self.upstreams.spawn_checks();
        if let Some(reloader) = self.reloader.take() {
            let (tx, rx) = tokio::sync::mpsc::channel(8);
            tasks.push(tokio::spawn(reload_on_sighup(
                tx.clone(),
                self.certs.clone(),
            )));
            tasks.push(tokio::spawn(watch::run(reloader, rx, tx)));
        }
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
            p.notices.run(Arc::clone(&p.store)).await;
        }));
        let (delivering, lease) = crate::events::deliver::spawn(
            std::mem::take(&mut self.hooks),
            self.config.events.retry_for,
            &self.proxy.store,
        );
        tasks.extend(delivering);
        self.lease = lease;
        let p = Arc::clone(&self.proxy);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(USAGE_FLUSH_EVERY);
            loop {
                tick.tick().await;
                flush_usage(&p).await;
            }
        }));
        tasks.push(tokio::spawn(async {
            let mut tick = tokio::time::interval(crate::metrics::UPKEEP_EVERY);
            loop {
                tick.tick().await;
                crate::metrics::upkeep();
            }
        }));
        let p = Arc::clone(&self.proxy);
        let every = self.config.cache.ttl.max(Duration::from_secs(1));
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                p.cache.sweep();
                p.limits.sweep();
                p.quotas.sweep();
                p.notices.sweep();
                p.expiring.sweep(crate::keys::Timestamp::now());
            }
        }));
        tasks
    }
}

/// The bound listeners: the caller binds them (tests use port 0) and passes them in.
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin: TcpListener,
    /// Forward-auth sub-requests (`forward_auth.listen`), when configured.
    pub forward_auth: Option<TcpListener>,
}

/// The HTTP/1.1 + HTTP/2 server every listener serves with, bounded by `limits:`.
fn http_builder(limits: &config::LimitSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Accepts connections on `listener` and serves each once it has a slot. At the cap the
/// one accepted connection waits for a slot and no more are accepted (the kernel queues
/// the rest). A slot is taken after the accept, not before: an idle listener holding a
/// slot would shrink the cap for the others.
async fn accept_each<S>(
    listener: &TcpListener,
    slot: impl Fn() -> S,
    mut serve: impl FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
) where
    S: Future<Output = Option<OwnedSemaphorePermit>>,
{
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let Some(slot) = slot().await else { return };
        serve(stream, peer, slot);
    }
}

/// Serves a plain (admin or forward-auth) connection, `answer` answering each request,
/// to its end under the drain watcher and the opening deadline (`cap`: its limit, and the
/// connection's cap slot, held until the end).
fn spawn_plain<A, F, B>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    stream: TcpStream,
    cap: (Duration, OwnedSemaphorePermit),
    answer: A,
) where
    A: Fn(Request<Incoming>) -> F + Send + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let opened = Opened::default();
    let o = opened.clone();
    let svc = service_fn(move |req| {
        o.mark();
        let answered = answer(req);
        async move { Ok::<_, Infallible>(answered.await) }
    });
    let conn = builder
        .serve_connection(TokioIo::new(stream), svc)
        .into_owned();
    let (limit, slot) = cap;
    tokio::spawn(async move {
        let _slot = slot;
        opening::within(limit, &opened, async {
            let _ = watcher.watch(conn).await;
        })
        .await;
    });
}

/// What every proxy connection is served with: built once per [`App::serve`], shared.
struct ProxySide {
    builder: Arc<auto::Builder<TokioExecutor>>,
    proxy: Arc<Proxy>,
    tls: Option<TlsAcceptor>,
    /// `limits.header_read_timeout`: the handshake and the first request come within it.
    opening: Duration,
    /// `limits.max_header_bytes`: the framing guard's bound on a request head.
    max_head: usize,
}

/// One proxy connection: TLS handshake if configured, then HTTP/1.1 or HTTP/2 with
/// upgrades; the handshake and the first request come within `side.opening` ([`opening`]).
/// `_slot` is the connection-cap permit, freed on return.
async fn serve_proxy_connection(
    side: Arc<ProxySide>,
    watcher: Watcher,
    stream: TcpStream,
    peer: SocketAddr,
    _slot: OwnedSemaphorePermit,
) {
    let ProxySide {
        builder,
        proxy,
        tls,
        opening,
        max_head,
    } = &*side;
    let (proxy, max_head) = (Arc::clone(proxy), *max_head);
    // Every connection's bytes pass the framing guard on their way to hyper.
    let framing = Ambiguous::default();
    let opened = Opened::default();
    let serve = async {
        match tls {
            None => {
                let io = TokioIo::new(Guarded::new(stream, framing.clone(), max_head));
                serve_http(builder, watcher, proxy, io, (peer, false), &opened, framing).await;
            }
            // Boxed for the same reason as the connection (`serve_http`): a TLS session's
            // state is large.
            Some(acceptor) => match Box::pin(acceptor.accept(stream)).await {
                Ok(s) => {
                    let io = TokioIo::new(Guarded::new(s, framing.clone(), max_head));
                    let hop = (peer, true);
                    Box::pin(serve_http(
                        builder, watcher, proxy, io, hop, &opened, framing,
                    ))
                    .await;
                }
                Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            },
        }
    };
    opening::within(*opening, &opened, serve).await;
}

/// `hop`: the peer, and whether the connection is TLS.
async fn serve_http<I>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    proxy: Arc<Proxy>,
    io: I,
    hop: (SocketAddr, bool),
    opened: &Opened,
    framing: Ambiguous,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = Arc::new(Downstream::new(hop.0, hop.1, framing));
    let opened = opened.clone();
    let svc = service_fn(move |req| {
        opened.mark();
        let p = Arc::clone(&proxy);
        let conn = Arc::clone(&conn);
        async move { Ok::<_, Infallible>(p.serve(req, &conn).await) }
    });
    let conn = builder.serve_connection_with_upgrades(io, svc).into_owned();
    // Boxed: hyper's connection state is kilobytes, and unboxed it would make every future
    // above this one (the spawned task's) as large, copied whole each time it is moved.
    let _ = Box::pin(watcher.watch(conn)).await;
}

/// SIGHUP asks for a policy reload (the file watcher covers edits; this covers the rest).
async fn reload_on_sighup(tx: tokio::sync::mpsc::Sender<Trigger>, certs: Option<Arc<Certs>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; policy reloads only on file change");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the policy");
            if let Some(c) = &certs {
                match c.reload() {
                    Ok(()) => tracing::info!("TLS certificate reloaded"),
                    Err(e) => {
                        tracing::error!(error = %Chain(&e), "TLS certificate reload failed; the current certificate stays");
                    }
                }
            }
            if tx.send(Trigger::Signal).await.is_err() {
                break;
            }
        }
    }
    #[cfg(not(unix))]
    drop((tx, certs));
}

async fn flush_usage(p: &Proxy) {
    let crate::usage::Drained { counts, uses } = p.usage.counts.drain();
    if !uses.is_empty()
        && let Err(e) = p.store.record_use(&uses).await
    {
        crate::metrics::store_error();
        tracing::warn!(error = %Chain(&e), "could not record last use; will retry");
        p.usage.counts.restore_uses(uses);
    }
    // In chunks, so the look-ups sharing the store's connection never wait behind a
    // whole flush. A chunk that fails is put back with every chunk after it (if Redis
    // applied part of it before failing, those requests are counted twice, never lost).
    let mut chunks = counts.chunks(crate::usage::FLUSH_CHUNK);
    while let Some(chunk) = chunks.next() {
        if let Err(e) = p.store.add_usage(chunk, p.usage.retention).await {
            crate::metrics::store_error();
            tracing::warn!(error = %Chain(&e), "could not record usage counts; will retry");
            let rest: Vec<_> = chunk.iter().chain(chunks.flatten()).cloned().collect();
            p.usage.counts.restore(rest);
            break;
        }
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
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen { addr, source })
}
