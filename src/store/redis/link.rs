//! The data connection to Redis (one server or a Cluster), and every round trip on it.
//!
//! Job: connect on first use, drop a dead connection, redial with backoff, and run
//! commands, batches and scripts each bounded by `store.timeout`, counting failures in
//! [`Health`].
//!
//! Invariants:
//! - Every round trip ends within the timeout; a Redis that is down, slow or backing
//!   off is [`StoreError::Unavailable`] at once (fail fast, never fail open).
//! - While backing off after a failed dial, calls fail at once instead of queueing
//!   behind a dead server; one dial runs at a time.
//! - A `WRONGTYPE` reply is bad data, not an outage: [`StoreError::Corrupt`] (with the
//!   record left for the caller to name), and Redis counts as up.
//!
//! Why one multiplexed connection: every call shares it, so a batch of independent
//! commands costs one round trip's latency, and nothing waits for a pool slot.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{AsyncConnectionConfig, Client, Cmd, RedisError, RedisFuture, Script, Value};
use arc_swap::ArcSwapOption;
use futures_util::future::join_all;

use super::Target;
use super::health::Health;
use crate::store::{StoreError, Undecodable};

/// First reconnect delay; doubles per failure up to [`MAX_BACKOFF`].
pub(super) const MIN_BACKOFF: Duration = Duration::from_millis(50);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Why Redis could not be asked (the cause inside [`StoreError::Unavailable`]).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("no answer from Redis within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("Redis is unreachable; reconnecting with backoff")]
    BackingOff,
    #[error("Redis failed")]
    Redis {
        #[source]
        source: RedisError,
    },
    #[error("invalid Redis address")]
    Address {
        #[source]
        source: RedisError,
    },
}

enum Dialer {
    Single(Client),
    Cluster(Box<ClusterClient>),
}

/// A live connection: cheap to clone (both kinds multiplex over shared sockets).
#[derive(Clone)]
pub(super) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a ::redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// The data connection: made on first use, dropped when it dies, remade with backoff.
/// While backing off after a failed dial, calls fail at once instead of queueing behind
/// a dead server.
pub(super) struct Link {
    dialer: Dialer,
    /// The bound on every round trip (`store.timeout`).
    pub(super) timeout: Duration,
    /// Failures of this link and of the subscriptions beside it.
    pub(super) health: Health,
    live: ArcSwapOption<Conn>,
    dial: tokio::sync::Mutex<Backoff>,
}

#[derive(Default)]
struct Backoff {
    next_try: Option<Instant>,
    delay: Duration,
}

impl Link {
    /// The link for `target`, not yet connected, and one client per node to subscribe
    /// on (the server, or every Cluster seed).
    pub(super) fn open(
        target: &Target,
        timeout: Duration,
    ) -> Result<(Self, Vec<Client>), StoreError> {
        let address = |source| StoreError::unavailable(LinkError::Address { source });
        let (dialer, feeds) = match target {
            Target::Single(url) => {
                let client = Client::open(url.as_str()).map_err(address)?;
                (Dialer::Single(client.clone()), vec![client])
            }
            Target::Cluster(seeds) => {
                let cluster = ClusterClient::builder(seeds.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(1)
                    .build()
                    .map_err(address)?;
                let feeds = seeds
                    .iter()
                    .map(|s| Client::open(s.as_str()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(address)?;
                (Dialer::Cluster(Box::new(cluster)), feeds)
            }
        };
        let link = Self {
            dialer,
            timeout,
            health: Health::default(),
            live: ArcSwapOption::empty(),
            dial: tokio::sync::Mutex::new(Backoff::default()),
        };
        Ok((link, feeds))
    }

    /// One round trip, bounded by the timeout, with the outage bookkeeping.
    pub(super) async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let attempt = async {
            let conn = self.conn().await?;
            f(conn).await.map_err(|e| {
                self.forget_if_dead(&e);
                LinkError::Redis { source: e }
            })
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(v)) => {
                self.health.ok();
                Ok(v)
            }
            Ok(Err(LinkError::Redis { source })) if source.code() == Some("WRONGTYPE") => {
                self.health.ok(); // Redis answered: it is up, the data is bad
                Err(StoreError::Corrupt {
                    record: String::new(),
                    source: Box::new(Undecodable::WrongType {
                        source: Box::new(source),
                    }),
                })
            }
            Ok(Err(e)) => {
                self.health.failed(&e);
                Err(StoreError::unavailable(e))
            }
            Err(_) => {
                let e = LinkError::Timeout(self.timeout);
                self.health.failed(&e);
                Err(StoreError::unavailable(e))
            }
        }
    }

    /// One command.
    pub(super) async fn cmd<T: ::redis::FromRedisValue>(&self, cmd: Cmd) -> Result<T, StoreError> {
        self.run(|mut c| async move { cmd.query_async(&mut c).await })
            .await
    }

    /// Several independent commands (any slots), sent at once over the multiplexed
    /// connection: one round trip's latency, not one per command.
    pub(super) async fn batch<T: ::redis::FromRedisValue>(
        &self,
        cmds: Vec<Cmd>,
    ) -> Result<Vec<T>, StoreError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        self.run(|conn| async move {
            let replies = join_all(cmds.iter().map(|cmd| {
                let mut c = conn.clone();
                async move { cmd.query_async::<T>(&mut c).await }
            }))
            .await;
            replies.into_iter().collect::<Result<Vec<T>, _>>()
        })
        .await
    }

    /// Runs `script` on one key.
    pub(super) async fn script<T: ::redis::FromRedisValue>(
        &self,
        script: &Script,
        key: &str,
        args: &[&str],
    ) -> Result<T, StoreError> {
        self.run(|mut c| async move {
            let mut call = script.key(key);
            for a in args {
                call.arg(*a);
            }
            call.invoke_async(&mut c).await
        })
        .await
    }

    /// The live connection, dialing one if there is none (unless backing off).
    pub(super) async fn conn(&self) -> Result<Conn, LinkError> {
        if let Some(c) = self.live.load_full() {
            return Ok((*c).clone());
        }
        // One dial at a time: the others wait for its outcome (within their timeout).
        let mut backoff = self.dial.lock().await;
        if let Some(c) = self.live.load_full() {
            return Ok((*c).clone());
        }
        if backoff.next_try.is_some_and(|t| Instant::now() < t) {
            return Err(LinkError::BackingOff);
        }
        let dialed = match tokio::time::timeout(self.timeout, self.dial()).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(source)) => Err(LinkError::Redis { source }),
            Err(_) => Err(LinkError::Timeout(self.timeout)),
        };
        match dialed {
            Ok(c) => {
                *backoff = Backoff::default();
                self.live.store(Some(Arc::new(c.clone())));
                Ok(c)
            }
            Err(e) => {
                backoff.delay = (backoff.delay * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
                backoff.next_try = Some(Instant::now() + backoff.delay);
                Err(e)
            }
        }
    }

    async fn dial(&self) -> Result<Conn, RedisError> {
        match &self.dialer {
            Dialer::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout));
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Conn::Single)
            }
            Dialer::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
        }
    }

    /// A single server's connection is dead once its socket is: drop it so the next call
    /// redials. A cluster connection heals itself node by node, so it is kept.
    fn forget_if_dead(&self, e: &RedisError) {
        if matches!(self.dialer, Dialer::Single(_))
            && (e.is_unrecoverable_error() || e.is_connection_dropped() || e.is_io_error())
        {
            self.live.store(None);
        }
    }
}
