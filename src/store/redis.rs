//! The fleet key registry: every gateway of a fleet (and the CLI) shares one Redis, or
//! one Redis Cluster, through this [`KeyStore`].
//!
//! Job: implement [`KeyStore`] on Redis (`store.kind: redis`, `store.url` or
//! `store.cluster`), and turn every writer's changes into [`Invalidation`]s in every
//! process, fast (Redis pub/sub).
//!
//! Data layout (the key name's `{…}` is the Cluster hash tag, so keys spread over slots):
//! - `kg:key:{<sha256 hex>}`: a hash, one per key: the record's fields (lists as JSON,
//!   times as Unix seconds, absent optional times = no field). `by_hash` is one `HGETALL`.
//! - `kg:id:{<id>}`: a string, the record's hash hex (id → hash).
//! - `kg:idx:all`, `kg:idx:biz:{<business>}`, `kg:idx:user:{<user>}`: sorted sets of
//!   `<created_at as 16 hex>\0<id>\0<hash hex>` members, all score 0, read with
//!   `ZREVRANGEBYLEX`: newest first, id tiebreak, and the cursor is a lex bound.
//! - `kg:audit`, `kg:audit:biz:{<business>}`: lists of JSON events, newest first, capped.
//! - channel `kg:invalidate`: the hash hex of each changed record (`*` = everything).
//!
//! Invariants:
//! - Only SHA-256 hashes (and the record's display `prefix`) are stored; never a secret.
//! - Each step of a mutation touches one key (so it works on a Cluster) and is atomic
//!   (a Lua script), and a script that changes a record publishes its hash in the same
//!   step. Steps run in an order that leaves, if interrupted, at worst a dangling id or
//!   an unlisted record, never a live key that cannot be found by id and revoked.
//! - A value of the wrong type or shape is [`StoreError::Corrupt`], never a panic.
//! - Every round trip is bounded by `store.timeout`; a Redis that is down, slow or
//!   backing off is [`StoreError::Unavailable`] at once (fail fast, never fail open).
//! - The store starts while Redis is down: it connects on first use and reconnects with
//!   backoff. The subscriber sends [`Invalidation::All`] whenever it (re)subscribes
//!   after having had no live subscription, so a change published while it was
//!   not listening cannot outlive the cache TTL.
//!
//! Why pub/sub on every node we know: a Cluster forwards `PUBLISH` to every node, so
//! with one subscription per seed, losing one node loses no invalidation and does
//! not flush every gateway's cache (cached keys keep working while a node is down).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{AsyncConnectionConfig, Client, Cmd, RedisError, RedisFuture, Script, Value};
use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use futures_util::future::join_all;
use tokio::sync::broadcast;

use super::{AuditEvent, Cursor, Invalidation, KeyStore, ListQuery, Page, StoreError};
use crate::keys::{Grant, KeyHash, KeyRecord, Timestamp};

/// The pub/sub channel every writer publishes changed hashes on.
pub const CHANNEL: &str = "kg:invalidate";
/// Audit events kept (per list); older ones are trimmed.
pub const AUDIT_KEPT: usize = 100_000;
/// First reconnect delay; doubles per failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How often an idle subscription is pinged, so a silently dead one is noticed.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(1);
/// Invalidations buffered per subscriber before it lags (and must assume `All`).
const CHANNEL_CAPACITY: usize = 1024;

/// Inserts a record if its hash is new; publishes the hash. KEYS: record. ARGV: channel,
/// hash hex, field, value, …
const INSERT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1";

/// Frees an id claim, only if it still points at this hash. KEYS: id. ARGV: hash hex.
const RELEASE_ID: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1";

/// Sets a field unless set (`HSETNX`, for revocation) or to the minimum of old and new
/// (`MIN`, for rotation's end of life); publishes; returns the record after.
/// KEYS: record. ARGV: channel, hash hex, mode, field, value.
const UPDATE: &str = r"
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then return false end
if t ~= 'hash' then return redis.error_reply('WRONGTYPE keygate record is a ' .. t) end
if ARGV[3] == 'HSETNX' then
  redis.call('HSETNX', KEYS[1], ARGV[4], ARGV[5])
else
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[4]))
  if cur == nil or cur > tonumber(ARGV[5]) then redis.call('HSET', KEYS[1], ARGV[4], ARGV[5]) end
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return redis.call('HGETALL', KEYS[1])";

/// `last_used_at = max(existing, t)` on a record that is a hash; no publish (it changes
/// no decision). KEYS: record. ARGV: t.
const TOUCH: &str = r"
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return 0 end
local cur = tonumber(redis.call('HGET', KEYS[1], 'last_used_at'))
if cur == nil or cur < tonumber(ARGV[1]) then redis.call('HSET', KEYS[1], 'last_used_at', ARGV[1]) end
return 1";

/// Why a stored value does not decode (the cause inside [`StoreError::Corrupt`]).
#[derive(Debug, thiserror::Error)]
pub enum Undecodable {
    #[error("field `{0}` is missing")]
    Missing(&'static str),
    #[error("field `{field}` is not a whole number: `{value}`")]
    Number { field: &'static str, value: String },
    #[error("field `{field}` is not the expected JSON")]
    Json {
        field: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the value is not a hash of UTF-8 fields")]
    Shape,
    #[error("an index member is malformed")]
    Member,
    #[error("Redis refused the value's type")]
    WrongType {
        #[source]
        source: RedisError,
    },
    #[error("the id index points at a record with another id")]
    IdMismatch,
}

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

/// Where the registry lives.
#[derive(Debug, Clone)]
pub enum Target {
    /// One server: `redis://host:port/db` (or `unix://`).
    Single(String),
    /// Redis Cluster seed nodes.
    Cluster(Vec<String>),
}

/// The Redis-backed [`KeyStore`]. Dropping it stops its subscribers.
pub struct RedisStore {
    inner: Arc<Inner>,
    subscribers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        for task in &self.subscribers {
            task.abort();
        }
    }
}

struct Inner {
    link: Link,
    timeout: Duration,
    health: Health,
    tx: broadcast::Sender<Invalidation>,
    insert: Script,
    release_id: Script,
    update: Script,
    touch: Script,
}

impl RedisStore {
    /// A store for `target`, answering within `timeout` per round trip. Does not wait for
    /// Redis: it may be down now (calls fail until it is back). Needs a tokio runtime.
    pub fn open(target: &Target, timeout: Duration) -> Result<Self, StoreError> {
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
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        let inner = Arc::new(Inner {
            link: Link {
                dialer,
                timeout,
                live: ArcSwapOption::empty(),
                dial: tokio::sync::Mutex::new(Backoff::default()),
            },
            timeout,
            health: Health::default(),
            tx,
            insert: Script::new(INSERT),
            release_id: Script::new(RELEASE_ID),
            update: Script::new(UPDATE),
            touch: Script::new(TOUCH),
        });
        let live = Arc::new(AtomicUsize::new(0));
        let subscribers = feeds
            .into_iter()
            .map(|client| {
                tokio::spawn(subscribe_forever(
                    client,
                    Arc::clone(&inner),
                    Arc::clone(&live),
                ))
            })
            .collect();
        Ok(Self { inner, subscribers })
    }

    /// Failed round trips (and lost subscriptions) since start: the store error counter.
    pub fn error_count(&self) -> u64 {
        self.inner.health.errors.load(Ordering::Relaxed)
    }
}

impl Inner {
    /// One round trip, bounded by the timeout, with the outage bookkeeping.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let attempt = async {
            let conn = self.link.conn().await?;
            f(conn).await.map_err(|e| {
                self.link.forget_if_dead(&e);
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
                    source: Box::new(Undecodable::WrongType { source }),
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
    async fn cmd<T: ::redis::FromRedisValue>(&self, cmd: Cmd) -> Result<T, StoreError> {
        self.run(|mut c| async move { cmd.query_async(&mut c).await })
            .await
    }

    /// Several independent commands (any slots), sent at once over the multiplexed
    /// connection: one round trip's latency, not one per command.
    async fn batch<T: ::redis::FromRedisValue>(
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
    async fn script<T: ::redis::FromRedisValue>(
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

    /// The record hash the id index names, if any.
    async fn hash_of(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.cmd(::redis::cmd("GET").arg(id_key(id)).clone()).await
    }

    fn announce(&self, hash: &KeyHash) {
        // The publish inside the script reaches other processes (and, a moment later,
        // this one); this reaches this process's cache at once. Duplicates are harmless.
        let _ = self.tx.send(Invalidation::Key(*hash));
    }
}

#[async_trait::async_trait]
impl KeyStore for RedisStore {
    async fn by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        let hex = hash.to_hex();
        let fields: Value = self
            .inner
            .cmd(::redis::cmd("HGETALL").arg(record_key(&hex)).clone())
            .await
            .map_err(|e| named(e, &hex))?;
        decode_reply(fields, *hash, &hex)
    }

    async fn by_id(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let Some(hex) = self.inner.hash_of(id).await? else {
            return Ok(None);
        };
        let hash = parse_hash(&hex).map_err(|e| corrupt(id, e))?;
        let record = self.by_hash(&hash).await.map_err(|e| named(e, id))?;
        match record {
            Some(r) if r.id != id => Err(corrupt(id, Undecodable::IdMismatch)),
            other => Ok(other),
        }
    }

    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
        let inner = &self.inner;
        let hex = record.hash.to_hex();
        let fields = encode(record)?;
        // 1. Claim the id (atomic, so two writers cannot both take it).
        let claimed: Option<String> = inner
            .cmd(
                ::redis::cmd("SET")
                    .arg(id_key(&record.id))
                    .arg(&hex)
                    .arg("NX")
                    .clone(),
            )
            .await?;
        if claimed.is_none() {
            return Err(StoreError::Conflict);
        }
        // 2. Write the record if its hash is new; this publishes the hash.
        let mut args: Vec<&str> = vec![CHANNEL, &hex];
        for (f, v) in &fields {
            args.push(f);
            args.push(v);
        }
        let created: i64 = inner
            .script(&inner.insert, &record_key(&hex), &args)
            .await
            .map_err(|e| named(e, &record.id))?;
        if created == 0 {
            let _: i64 = inner
                .script(&inner.release_id, &id_key(&record.id), &[&hex])
                .await?;
            return Err(StoreError::Conflict);
        }
        inner.announce(&record.hash);
        // 3. List it. (Interrupted here: a live record that `list` misses, still found by id.)
        let member = index_member(record.created_at, &record.id, &hex);
        let zadds = index_keys(&record.business_id, &record.user_id)
            .into_iter()
            .map(|k| ::redis::cmd("ZADD").arg(k).arg(0).arg(&member).clone())
            .collect();
        let _: Vec<i64> = inner.batch(zadds).await?;
        Ok(())
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let cursor = query.cursor.as_deref().map(Cursor::decode).transpose()?;
        let index = match (&query.business_id, &query.user_id) {
            (Some(b), _) => biz_index(b),
            (None, Some(u)) => user_index(u),
            (None, None) => ALL_INDEX.to_owned(),
        };
        let want = query.page_size() + 1; // one more tells whether a next page exists
        let batch = want.clamp(16, 512);
        let mut max = cursor.map_or_else(
            || b"+".to_vec(),
            |c| {
                let mut b = b"(".to_vec();
                b.extend(member_prefix(c.created_at, &c.id));
                b
            },
        );
        let mut found = Vec::new();
        while found.len() < want {
            let members: Vec<Vec<u8>> = self
                .inner
                .cmd(
                    ::redis::cmd("ZREVRANGEBYLEX")
                        .arg(&index)
                        .arg(&max)
                        .arg("-")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(batch)
                        .clone(),
                )
                .await?;
            let Some(last) = members.last() else { break };
            max = [b"(".as_slice(), last].concat();
            let hashes = members
                .iter()
                .map(|m| parse_member(m))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| corrupt(&index, e))?;
            let replies: Vec<Value> = self
                .inner
                .batch(
                    hashes
                        .iter()
                        .map(|(_, hex)| ::redis::cmd("HGETALL").arg(record_key(hex)).clone())
                        .collect(),
                )
                .await
                .map_err(|e| named(e, &index))?;
            for ((hash, hex), reply) in hashes.into_iter().zip(replies) {
                // A member whose record is missing is an interrupted insert: skip it.
                if let Some(r) = decode_reply(reply, hash, &hex)?
                    && query.matches(&r)
                {
                    found.push(r);
                }
            }
            if members.len() < batch {
                break;
            }
        }
        let next_cursor = if found.len() > query.page_size() {
            found.truncate(query.page_size());
            found.last().map(|r| Cursor::after(r).encode())
        } else {
            None
        };
        Ok(Page {
            keys: found,
            next_cursor,
        })
    }

    async fn revoke(&self, id: &str, at: Timestamp) -> Result<Option<KeyRecord>, StoreError> {
        let Some(hex) = self.inner.hash_of(id).await? else {
            return Ok(None);
        };
        let hash = parse_hash(&hex).map_err(|e| corrupt(id, e))?;
        let at = at.0.to_string();
        let after: Value = self
            .inner
            .script(
                &self.inner.update,
                &record_key(&hex),
                &[CHANNEL, &hex, "HSETNX", "revoked_at", &at],
            )
            .await
            .map_err(|e| named(e, id))?;
        self.inner.announce(&hash);
        decode_reply(after, hash, id)
    }

    async fn rotate(
        &self,
        old_id: &str,
        new: &KeyRecord,
        old_expires_at: Timestamp,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let Some(hex) = self.inner.hash_of(old_id).await? else {
            return Ok(None);
        };
        let hash = parse_hash(&hex).map_err(|e| corrupt(old_id, e))?;
        let exists: i64 = self
            .inner
            .cmd(::redis::cmd("EXISTS").arg(record_key(&hex)).clone())
            .await?;
        if exists == 0 {
            return Ok(None); // a dangling id: nothing to rotate
        }
        // New key first: a conflict leaves the old key untouched. (Interrupted after
        // this: both keys live; the caller saw an error and may revoke or retry.)
        self.insert(new).await?;
        let until = old_expires_at.0.to_string();
        let after: Value = self
            .inner
            .script(
                &self.inner.update,
                &record_key(&hex),
                &[CHANNEL, &hex, "MIN", "expires_at", &until],
            )
            .await
            .map_err(|e| named(e, old_id))?;
        self.inner.announce(&hash);
        decode_reply(after, hash, old_id)
    }

    async fn record_use(&self, uses: &[(String, Timestamp)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        // Two round trips for the whole batch: ids → hashes, then every touch at once.
        let hashes: Vec<Option<String>> = inner
            .batch(
                uses.iter()
                    .map(|(id, _)| ::redis::cmd("GET").arg(id_key(id)).clone())
                    .collect(),
            )
            .await?;
        let touches: Vec<(String, String)> = uses
            .iter()
            .zip(hashes)
            .filter_map(|((_, at), hex)| Some((record_key(&hex?), at.0.to_string())))
            .collect();
        inner
            .run(|conn| async move {
                let replies = join_all(touches.iter().map(|(key, at)| {
                    let mut c = conn.clone();
                    async move {
                        inner
                            .touch
                            .key(key)
                            .arg(at)
                            .invoke_async::<i64>(&mut c)
                            .await
                    }
                }))
                .await;
                replies.into_iter().collect::<Result<Vec<i64>, _>>()
            })
            .await?;
        Ok(())
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let json = serde_json::to_string(event).map_err(|source| StoreError::Corrupt {
            record: event.key_id.clone(),
            source: Box::new(Undecodable::Json {
                field: "audit",
                source,
            }),
        })?;
        let mut cmds = Vec::new();
        for key in [AUDIT_ALL.to_owned(), audit_biz(&event.business_id)] {
            cmds.push(::redis::cmd("LPUSH").arg(&key).arg(&json).clone());
            cmds.push(
                ::redis::cmd("LTRIM")
                    .arg(&key)
                    .arg(0)
                    .arg(AUDIT_KEPT - 1)
                    .clone(),
            );
        }
        let _: Vec<Value> = self.inner.batch(cmds).await?;
        Ok(())
    }

    async fn audit(
        &self,
        business_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = business_id.map_or_else(|| AUDIT_ALL.to_owned(), audit_biz);
        let raw: Vec<Vec<u8>> = self
            .inner
            .cmd(
                ::redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(limit - 1)
                    .clone(),
            )
            .await
            .map_err(|e| named(e, &key))?;
        raw.iter()
            .map(|j| {
                serde_json::from_slice(j).map_err(|source| {
                    corrupt(
                        &key,
                        Undecodable::Json {
                            field: "audit",
                            source,
                        },
                    )
                })
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: Value = self.inner.cmd(::redis::cmd("PING")).await?;
        Ok(())
    }

    fn invalidations(&self) -> broadcast::Receiver<Invalidation> {
        self.inner.tx.subscribe()
    }
}

// ---- key names -------------------------------------------------------------------------

const ALL_INDEX: &str = "kg:idx:all";
const AUDIT_ALL: &str = "kg:audit";

fn record_key(hash_hex: &str) -> String {
    format!("kg:key:{{{hash_hex}}}")
}
fn id_key(id: &str) -> String {
    format!("kg:id:{{{id}}}")
}
fn biz_index(business: &str) -> String {
    format!("kg:idx:biz:{{{business}}}")
}
fn user_index(user: &str) -> String {
    format!("kg:idx:user:{{{user}}}")
}
fn audit_biz(business: &str) -> String {
    format!("kg:audit:biz:{{{business}}}")
}
fn index_keys(business: &str, user: &str) -> [String; 3] {
    [ALL_INDEX.to_owned(), biz_index(business), user_index(user)]
}

/// `<created_at>\0<id>`: the sort key. `created_at` is flipped to unsigned and written as
/// 16 hex digits so byte order is numeric order, negatives included.
fn member_prefix(created_at: Timestamp, id: &str) -> Vec<u8> {
    #[allow(clippy::cast_sign_loss)] // a bit flip, not a conversion: order-preserving
    let sortable = (created_at.0 as u64) ^ (1 << 63);
    let mut m = format!("{sortable:016x}").into_bytes();
    m.push(0);
    m.extend_from_slice(id.as_bytes());
    m
}

fn index_member(created_at: Timestamp, id: &str, hash_hex: &str) -> Vec<u8> {
    let mut m = member_prefix(created_at, id);
    m.push(0);
    m.extend_from_slice(hash_hex.as_bytes());
    m
}

/// The record hash an index member points at.
fn parse_member(member: &[u8]) -> Result<(KeyHash, String), Undecodable> {
    let hex = member
        .rsplit(|b| *b == 0)
        .next()
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or(Undecodable::Member)?;
    let hash = parse_hash(hex).map_err(|_| Undecodable::Member)?;
    Ok((hash, hex.to_owned()))
}

fn parse_hash(hex_text: &str) -> Result<KeyHash, Undecodable> {
    let bytes = hex::decode(hex_text).map_err(|_| Undecodable::Shape)?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map(KeyHash)
        .map_err(|_| Undecodable::Shape)
}

// ---- encoding --------------------------------------------------------------------------

fn encode(r: &KeyRecord) -> Result<Vec<(&'static str, String)>, StoreError> {
    let json = |field: &'static str, v: Result<String, serde_json::Error>| {
        v.map_err(|source| corrupt(&r.id, Undecodable::Json { field, source }))
    };
    let mut f = vec![
        ("id", r.id.clone()),
        ("name", r.name.clone()),
        ("description", r.description.clone()),
        ("prefix", r.prefix.clone()),
        ("user_id", r.user_id.clone()),
        ("business_id", r.business_id.clone()),
        ("scopes", json("scopes", serde_json::to_string(&r.scopes))?),
        (
            "locations",
            json("locations", serde_json::to_string(&r.locations))?,
        ),
        ("grants", json("grants", serde_json::to_string(&r.grants))?),
        ("created_at", r.created_at.0.to_string()),
        ("created_by", r.created_by.clone()),
    ];
    for (name, t) in [
        ("expires_at", r.expires_at),
        ("revoked_at", r.revoked_at),
        ("last_used_at", r.last_used_at),
    ] {
        if let Some(t) = t {
            f.push((name, t.0.to_string()));
        }
    }
    Ok(f)
}

/// A `HGETALL` reply (or a script's copy of one): empty or nil = no record.
fn decode_reply(reply: Value, hash: KeyHash, name: &str) -> Result<Option<KeyRecord>, StoreError> {
    let fields = match reply {
        Value::Nil => return Ok(None),
        Value::Array(items) => pairs(items),
        Value::Map(items) => items
            .into_iter()
            .map(|(k, v)| Some((text(k)?, text(v)?)))
            .collect(),
        _ => None,
    }
    .ok_or_else(|| corrupt(name, Undecodable::Shape))?;
    if fields.is_empty() {
        return Ok(None);
    }
    decode(&fields, hash)
        .map(Some)
        .map_err(|e| corrupt(name, e))
}

fn pairs(items: Vec<Value>) -> Option<HashMap<String, String>> {
    if !items.len().is_multiple_of(2) {
        return None;
    }
    let mut it = items.into_iter();
    let mut out = HashMap::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.insert(text(k)?, text(v)?);
    }
    Some(out)
}

fn text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn decode(f: &HashMap<String, String>, hash: KeyHash) -> Result<KeyRecord, Undecodable> {
    let s = |field: &'static str| f.get(field).cloned().ok_or(Undecodable::Missing(field));
    let time = |field: &'static str| -> Result<Option<Timestamp>, Undecodable> {
        f.get(field)
            .map(|v| {
                v.parse::<i64>()
                    .map(Timestamp)
                    .map_err(|_| Undecodable::Number {
                        field,
                        value: v.clone(),
                    })
            })
            .transpose()
    };
    let scopes: Vec<String> = json_field(f, "scopes")?;
    let locations: Vec<String> = json_field(f, "locations")?;
    let grants: Vec<Grant> = json_field(f, "grants")?;
    Ok(KeyRecord {
        id: s("id")?,
        hash,
        name: s("name")?,
        description: s("description")?,
        prefix: s("prefix")?,
        user_id: s("user_id")?,
        business_id: s("business_id")?,
        scopes,
        locations,
        grants,
        created_at: time("created_at")?.ok_or(Undecodable::Missing("created_at"))?,
        expires_at: time("expires_at")?,
        revoked_at: time("revoked_at")?,
        last_used_at: time("last_used_at")?,
        created_by: s("created_by")?,
    })
}

fn json_field<T: serde::de::DeserializeOwned>(
    f: &HashMap<String, String>,
    field: &'static str,
) -> Result<T, Undecodable> {
    let text = f.get(field).ok_or(Undecodable::Missing(field))?;
    serde_json::from_str(text).map_err(|source| Undecodable::Json { field, source })
}

fn corrupt(name: &str, e: Undecodable) -> StoreError {
    StoreError::Corrupt {
        record: name.to_owned(),
        source: Box::new(e),
    }
}

/// Names the record in a `Corrupt` error that the round-trip helper could not name.
fn named(e: StoreError, name: &str) -> StoreError {
    match e {
        StoreError::Corrupt { record, source } if record.is_empty() => StoreError::Corrupt {
            record: name.to_owned(),
            source,
        },
        other => other,
    }
}

// ---- connections -----------------------------------------------------------------------

enum Dialer {
    Single(Client),
    Cluster(Box<ClusterClient>),
}

/// A live connection: cheap to clone (both kinds multiplex over shared sockets).
#[derive(Clone)]
enum Conn {
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
struct Link {
    dialer: Dialer,
    timeout: Duration,
    live: ArcSwapOption<Conn>,
    dial: tokio::sync::Mutex<Backoff>,
}

#[derive(Default)]
struct Backoff {
    next_try: Option<Instant>,
    delay: Duration,
}

impl Link {
    async fn conn(&self) -> Result<Conn, LinkError> {
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

/// Outage bookkeeping: an error counter and one log line when an outage starts and ends.
#[derive(Default)]
struct Health {
    errors: AtomicU64,
    down: AtomicBool,
    since: Mutex<Option<Instant>>,
}

impl Health {
    fn failed(&self, e: &dyn std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if self.down.swap(true, Ordering::AcqRel) {
            return;
        }
        *self.since.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        tracing::warn!(error = %e, "key registry unreachable: outage began; serving cached keys only");
    }

    fn ok(&self) {
        if !self.down.load(Ordering::Acquire) || !self.down.swap(false, Ordering::AcqRel) {
            return;
        }
        let since = self
            .since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let ms = since.map_or(0, |s| s.elapsed().as_millis());
        tracing::info!(outage_ms = %ms, "key registry reachable again: outage ended");
    }
}

// ---- invalidation feed -----------------------------------------------------------------

/// Keeps one subscription to [`CHANNEL`] on one node alive forever, forwarding what it
/// hears. `live` counts the subscriptions currently up across every node: one that
/// comes up while none was up sends `All` (changes may have been missed meanwhile).
async fn subscribe_forever(client: Client, inner: Arc<Inner>, live: Arc<AtomicUsize>) {
    let mut delay = MIN_BACKOFF;
    loop {
        let subscribed = tokio::time::timeout(inner.timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(CHANNEL).await?;
            Ok::<_, RedisError>(pubsub)
        })
        .await;
        let pubsub = match subscribed {
            Ok(Ok(p)) => p,
            Ok(Err(source)) => {
                inner.health.failed(&LinkError::Redis { source });
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(_) => {
                inner.health.failed(&LinkError::Timeout(inner.timeout));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        delay = MIN_BACKOFF;
        if live.fetch_add(1, Ordering::AcqRel) == 0 {
            tracing::info!("subscribed to registry invalidations; forgetting every cached key");
            let _ = inner.tx.send(Invalidation::All);
        }
        inner.health.ok();
        // Warm the data connection too, so recovery needs no request to notice it.
        let _ = inner.link.conn().await;
        listen(pubsub, &inner).await;
        live.fetch_sub(1, Ordering::AcqRel);
        tracing::warn!("registry invalidation subscription lost; resubscribing");
    }
}

/// Forwards messages until the subscription closes or stops answering pings.
async fn listen(pubsub: ::redis::aio::PubSub, inner: &Inner) {
    let (mut sink, mut stream) = pubsub.split();
    let mut keepalive = tokio::time::interval(KEEPALIVE_EVERY);
    keepalive.tick().await;
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { return };
                let _ = inner.tx.send(parse_invalidation(msg.get_payload_bytes()));
            }
            _ = keepalive.tick() => {
                let pong = tokio::time::timeout(inner.timeout, sink.ping::<Value>()).await;
                if !matches!(pong, Ok(Ok(_))) {
                    inner.health.failed(&LinkError::Timeout(inner.timeout));
                    return;
                }
            }
        }
    }
}

/// A message on [`CHANNEL`]: a hash hex, or anything else (including `*`) = `All`.
fn parse_invalidation(payload: &[u8]) -> Invalidation {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|h| parse_hash(h).ok())
        .map_or(Invalidation::All, Invalidation::Key)
}

/// Real `redis-server`s for every test target (the unit tests here, `tests/it`, benches).
#[doc(hidden)]
pub mod testing;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::testing::{RedisCluster, RedisServer};
    use super::*;
    use crate::store::contract::{self, expect_invalidation, record};

    const T: Duration = Duration::from_millis(500);

    fn open(url: &str) -> RedisStore {
        RedisStore::open(&Target::Single(url.to_owned()), T).unwrap()
    }

    /// Polls `ping` until it answers (bounded).
    async fn until_ready(store: &RedisStore) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.ping().await.is_err() {
            assert!(Instant::now() < deadline, "store never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_contract_suite() {
        let server = RedisServer::start();
        let store = open(&server.url());
        contract::contract_suite(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_contract_suite_on_a_cluster() {
        let cluster = RedisCluster::start();
        let store = RedisStore::open(&Target::Cluster(cluster.seeds()), T).unwrap();
        until_ready(&store).await;
        contract::contract_suite(&store).await;
        // Keys really spread over the nodes.
        let holding = cluster
            .nodes
            .iter()
            .filter(|n| n.cli_text(&["dbsize"]).trim() != "0")
            .count();
        assert!(holding >= 2, "keys on {holding} node(s) only");
    }

    /// Two stores on one server stand for two gateways of a fleet.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_invalidation_contract() {
        let server = RedisServer::start();
        // Frozen while the stores open, so the reader cannot subscribe (and send its `All`
        // to nobody) before its receiver exists.
        server.freeze(true);
        let (a, b) = (open(&server.url()), open(&server.url()));
        let mut rx = b.invalidations();
        server.freeze(false);
        until_ready(&a).await;
        // The reader listens before the contract starts: it says `All` on its first subscribe.
        expect_invalidation(&mut rx, &Invalidation::All, Duration::from_secs(5)).await;
        contract::invalidation(&a, &b).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn starts_while_redis_is_down_and_recovers_with_all() {
        let mut server = RedisServer::start();
        server.stop();
        let store = open(&server.url());
        let mut rx = store.invalidations();
        let started = Instant::now();
        let err = store.ping().await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
        assert!(started.elapsed() < T * 2, "a down Redis fails fast");
        assert!(store.by_hash(&KeyHash([1; 32])).await.is_err());
        assert!(store.error_count() >= 1);
        server.restart();
        until_ready(&store).await;
        expect_invalidation(&mut rx, &Invalidation::All, Duration::from_secs(5)).await;
        // And again after an outage in the middle of a life.
        server.restart();
        until_ready(&store).await;
        expect_invalidation(&mut rx, &Invalidation::All, Duration::from_secs(5)).await;
        let key = record("kid_back", "biz", "u", 1);
        store.insert(&key).await.unwrap();
        assert_eq!(store.by_id(&key.id).await.unwrap(), Some(key));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hand_edited_values_are_corrupt_not_panics() {
        let server = RedisServer::start();
        let store = open(&server.url());
        let mut keys = Vec::new();
        for (i, damage) in [
            &["SET", "{k}", "a string"][..],
            &["HSET", "{k}", "scopes", "not json"],
            &["HSET", "{k}", "grants", "[{\"role\": 1}]"],
            &["HSET", "{k}", "created_at", "yesterday"],
            &["HDEL", "{k}", "name"],
            &["HSET", "{k}", "expires_at", "1.5"],
        ]
        .iter()
        .enumerate()
        {
            let key = record(
                &format!("kid_bad{i}"),
                "biz-bad",
                "u",
                i64::try_from(i).unwrap(),
            );
            store.insert(&key).await.unwrap();
            let name = record_key(&key.hash.to_hex());
            if damage[0] == "SET" {
                server.cli_text(&["DEL", &name]);
            }
            let args: Vec<&str> = damage
                .iter()
                .map(|a| if *a == "{k}" { name.as_str() } else { a })
                .collect();
            server.cli_text(&args);
            let err = store.by_hash(&key.hash).await.unwrap_err();
            assert!(
                matches!(err, StoreError::Corrupt { .. }),
                "{damage:?}: {err:?}"
            );
            let err = store.by_id(&key.id).await.unwrap_err();
            assert!(
                matches!(err, StoreError::Corrupt { .. }),
                "{damage:?}: {err:?}"
            );
            keys.push(key);
        }
        let q = ListQuery {
            business_id: Some("biz-bad".into()),
            ..ListQuery::default()
        };
        assert!(matches!(
            store.list(&q).await,
            Err(StoreError::Corrupt { .. })
        ));
        // A damaged hash is still revocable; the reply says Corrupt.
        let err = store.revoke(&keys[1].id, Timestamp(5)).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        let at = server.cli_text(&["HGET", &record_key(&keys[1].hash.to_hex()), "revoked_at"]);
        assert_eq!(at.trim(), "5");
        // A wrong-type value stays refused; record_use skips it without failing the batch.
        store
            .record_use(&[
                (keys[0].id.clone(), Timestamp(1)),
                (keys[2].id.clone(), Timestamp(1)),
            ])
            .await
            .unwrap();
        server.cli_text(&["LPUSH", AUDIT_ALL, "{not json"]);
        assert!(matches!(
            store.audit(None, 5).await,
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn members_sort_like_the_sql_order() {
        let mut members = [
            index_member(Timestamp(-5), "b", "00"),
            index_member(Timestamp(3), "ab", "00"),
            index_member(Timestamp(3), "a", "00"),
            index_member(Timestamp(3), "a-", "00"),
            index_member(Timestamp(i64::MAX), "z", "00"),
            index_member(Timestamp(0), "z", "00"),
        ];
        members.sort();
        let keys: Vec<_> = members
            .iter()
            .map(|m| m.split(|b| *b == 0).nth(1).unwrap().to_vec())
            .collect();
        assert_eq!(
            keys,
            vec![
                b"b".to_vec(),
                b"z".to_vec(),
                b"a".to_vec(),
                b"a-".to_vec(),
                b"ab".to_vec(),
                b"z".to_vec()
            ]
        );
    }

    #[test]
    fn malformed_replies_are_corrupt_not_panics() {
        let h = KeyHash([7; 32]);
        for reply in [
            Value::Int(5),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![
                Value::BulkString(b"id".to_vec()),
                Value::BulkString(vec![0xff]),
            ]),
            Value::Array(vec![
                Value::BulkString(b"id".to_vec()),
                Value::BulkString(b"x".to_vec()),
            ]),
        ] {
            let err = decode_reply(reply, h, "r").unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        }
        assert!(decode_reply(Value::Nil, h, "r").unwrap().is_none());
        assert!(
            decode_reply(Value::Array(vec![]), h, "r")
                .unwrap()
                .is_none()
        );
        assert_eq!(parse_invalidation(b"*"), Invalidation::All);
        assert_eq!(parse_invalidation(b"zz"), Invalidation::All);
        assert_eq!(
            parse_invalidation(h.to_hex().as_bytes()),
            Invalidation::Key(h)
        );
        assert!(parse_member(b"junk").is_err());
    }
}
