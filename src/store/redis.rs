//! The fleet key registry: every gateway of a fleet (and the CLI) shares one Redis, or
//! one Redis Cluster, through this [`KeyStore`].
//!
//! Job: implement [`KeyStore`] on Redis (`store.kind: redis`, `store.url` or
//! `store.cluster`), and turn every writer's changes into [`Invalidation`]s in every
//! process, fast (Redis pub/sub). The pieces, one idea each:
//! - `redis/schema.rs`: the data layout: key names, the channel, index members;
//! - `redis/scripts.rs`: the Lua scripts that make each mutation step atomic;
//! - `redis/buckets.rs`: fleet rate-limit buckets ([`super::SharedBuckets`]);
//! - `redis/codec.rs`: records and audit events ↔ Redis values, on `store::codec`;
//! - `redis/link.rs`: the data connection, backoff, and bounded round trips;
//! - `redis/health.rs`: the error counter and the outage log lines;
//! - `redis/subscriber.rs`: the invalidation feed, one subscription per node;
//! - `redis/testing.rs`: real `redis-server`s for tests (hidden from the docs);
//! - this file: opening a store, and each [`KeyStore`] call as a sequence of steps.
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

mod buckets;
mod codec;
mod events;
mod health;
mod link;
mod quotas;
mod schema;
mod scripts;
mod subscriber;
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;
mod usage;

pub use link::LinkError;
pub use schema::{AUDIT_KEPT, CHANNEL};

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use ::redis::Value;
use futures_util::future::join_all;
use tokio::sync::broadcast;

use self::codec::{decode_audit, decode_reply, encode, encode_audit, named};
use self::link::Link;
use self::schema::{
    AUDIT_ALL, audit_biz, id_key, index_for, index_keys, index_member, member_prefix, parse_hash,
    parse_member, record_key,
};
use self::scripts::Scripts;
use super::codec::{EDITABLE, corrupt, editable};
use super::{
    AuditEvent, CHANNEL_CAPACITY, Cursor, Invalidation, KeyStore, ListQuery, Page, QuotaGrant,
    StoreError, Undecodable,
};
use crate::keys::{KeyHash, KeyRecord, Timestamp};

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

/// What the store's calls and its subscribers share.
struct Inner {
    link: Link,
    /// This process's subscribers.
    tx: broadcast::Sender<Invalidation>,
    scripts: Scripts,
}

impl RedisStore {
    /// A store for `target`, answering within `timeout` per round trip. Does not wait for
    /// Redis: it may be down now (calls fail until it is back). Needs a tokio runtime.
    pub fn open(target: &Target, timeout: Duration) -> Result<Self, StoreError> {
        let (link, feeds) = Link::open(target, timeout)?;
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        let inner = Arc::new(Inner {
            link,
            tx,
            scripts: Scripts::new(),
        });
        let live = Arc::new(AtomicUsize::new(0));
        let subscribers = feeds
            .into_iter()
            .map(|client| {
                tokio::spawn(subscriber::subscribe_forever(
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
        self.inner.link.health.errors()
    }
}

impl Inner {
    /// The record hash the id index names, if any.
    async fn hash_of(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.link
            .cmd(::redis::cmd("GET").arg(id_key(id)).clone())
            .await
    }

    /// Tells this process's subscribers at once that `hash` changed.
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
            .link
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
            .link
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
            .link
            .script(&inner.scripts.insert, &record_key(&hex), &args)
            .await
            .map_err(|e| named(e, &record.id))?;
        if created == 0 {
            let _: i64 = inner
                .link
                .script(&inner.scripts.release_id, &id_key(&record.id), &[&hex])
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
        let _: Vec<i64> = inner.link.batch(zadds).await?;
        Ok(())
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let cursor = query.cursor.as_deref().map(Cursor::decode).transpose()?;
        let index = index_for(query);
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
                .link
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
                .link
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
            .link
            .script(
                &self.inner.scripts.update,
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
            .link
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
            .link
            .script(
                &self.inner.scripts.update,
                &record_key(&hex),
                &[CHANNEL, &hex, "MIN", "expires_at", &until],
            )
            .await
            .map_err(|e| named(e, old_id))?;
        self.inner.announce(&hash);
        decode_reply(after, hash, old_id)
    }

    async fn replace(
        &self,
        before: &KeyRecord,
        after: &KeyRecord,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let Some(hex) = self.inner.hash_of(&before.id).await? else {
            return Ok(None);
        };
        let hash = parse_hash(&hex).map_err(|e| corrupt(&before.id, e))?;
        let stored = |v: Option<String>| v.map_or_else(|| "-".to_owned(), |t| format!("={t}"));
        let (was, now) = (editable(before)?, editable(after)?);
        let mut pairs: Vec<(&str, String)> = vec![("revoked_at", "-".to_owned())];
        pairs.extend(EDITABLE.iter().copied().zip(was.into_iter().map(stored)));
        let compared = pairs.len().to_string();
        pairs.extend(EDITABLE.iter().copied().zip(now.into_iter().map(stored)));
        pairs.push((
            "updated_at",
            stored(after.updated_at.map(|t| t.0.to_string())),
        ));
        let mut args: Vec<&str> = vec![CHANNEL, &hex, &compared];
        for (f, v) in &pairs {
            args.push(f);
            args.push(v);
        }
        let after_reply: Value = self
            .inner
            .link
            .script(&self.inner.scripts.replace, &record_key(&hex), &args)
            .await
            .map_err(|e| named(e, &before.id))?;
        if matches!(after_reply, Value::Int(0)) {
            return Err(StoreError::Conflict);
        }
        self.inner.announce(&hash);
        decode_reply(after_reply, hash, &before.id)
    }

    async fn record_use(&self, uses: &[(String, Timestamp)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        // Two round trips for the whole batch: ids → hashes, then every touch at once.
        let hashes: Vec<Option<String>> = inner
            .link
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
            .link
            .run(|conn| async move {
                let replies = join_all(touches.iter().map(|(key, at)| {
                    let mut c = conn.clone();
                    async move {
                        inner
                            .scripts
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
        let json = encode_audit(event)?;
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
        let _: Vec<Value> = self.inner.link.batch(cmds).await?;
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
            .link
            .cmd(
                ::redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(limit - 1)
                    .clone(),
            )
            .await
            .map_err(|e| named(e, &key))?;
        raw.iter().map(|j| decode_audit(&key, j)).collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: Value = self.inner.link.cmd(::redis::cmd("PING")).await?;
        Ok(())
    }

    async fn quota_take(
        &self,
        window: &str,
        limit: u64,
        want: u64,
        expires_at: Option<Timestamp>,
    ) -> Result<QuotaGrant, StoreError> {
        self.take_quota(window, limit, want, expires_at).await
    }

    async fn quota_give_back(&self, window: &str, n: u64) -> Result<(), StoreError> {
        self.give_back_quota(window, n).await
    }

    async fn quota_used(&self, window: &str) -> Result<u64, StoreError> {
        self.quota_used_in(window).await
    }

    async fn add_usage(
        &self,
        counts: &[crate::usage::Count],
        retention: std::time::Duration,
    ) -> Result<(), StoreError> {
        self.write_usage(counts, retention).await
    }

    async fn usage(
        &self,
        series: &crate::store::UsageSeries,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, String, u64)>, StoreError> {
        self.read_usage(series, from, to).await
    }

    async fn push_event(
        &self,
        event: &crate::events::Event,
        once: Option<&crate::events::Once>,
    ) -> Result<Option<u64>, StoreError> {
        self.push_event_to_log(event, once).await
    }

    async fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<crate::events::Page, StoreError> {
        self.log_after(after, limit).await
    }

    async fn recent_events(
        &self,
        business_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<crate::events::Stored>, StoreError> {
        self.log_recent(business_id, limit).await
    }

    async fn event_cursor(&self, url: &str) -> Result<Option<u64>, StoreError> {
        self.cursor_of(url).await
    }

    async fn set_event_cursor(&self, url: &str, seq: u64) -> Result<(), StoreError> {
        self.move_cursor(url, seq).await
    }

    async fn record_delivery(
        &self,
        seq: u64,
        delivery: &crate::events::Delivery,
    ) -> Result<(), StoreError> {
        self.write_delivery(seq, delivery).await
    }

    async fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        self.take_lease(name, holder, ttl).await
    }

    fn invalidations(&self) -> broadcast::Receiver<Invalidation> {
        self.inner.tx.subscribe()
    }
}
