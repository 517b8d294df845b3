//! Key-record cache in front of the [`KeyStore`].
//!
//! Invariants:
//! - keyed by the SHA-256 [`KeyHash`], never by secret;
//! - read-only towards the store: it asks, it never writes;
//! - a found record is served for `ttl`, an unknown key is remembered for `negative_ttl`;
//! - an invalidation (revoke, rotate, insert: from this process, the CLI or another
//!   gateway) removes the entry at once, and a look-up that was already in flight when it
//!   arrived does not put the stale answer back (the epoch check in [`Cache::lookup`]);
//! - at most `max_entries` entries: unknown keys are not remembered past the bound, a
//!   known key evicts an arbitrary entry, so a flood of made-up keys cannot grow memory;
//! - store errors are not cached: the next request asks again. While the store errs, a
//!   known key fetched less than `ttl + stale_if_error` ago is still served (serve-stale,
//!   off by default); an unknown or uncached key is an error, so the caller fails closed.
//! - stale answers are counted ([`CacheStats::stale_served`]); store errors are counted
//!   by the proxy, which also sees look-ups its `store.timeout` cut off.
//!
//! Why dashmap: sharded locks, so concurrent hits never contend on one global lock.
//! Why foldhash: the keys are SHA-256 digests, hashed on every request; foldhash costs
//! a fraction of std's `SipHash` and is seeded at random per process, so nobody can aim
//! keys at one bucket.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::config::CacheSettings;
use crate::keys::{KeyHash, KeyRecord};
use crate::store::{Invalidation, KeyStore, StoreError};

/// What a look-up found.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The registry knows this hash (the record may still be revoked or expired).
    Found(Arc<KeyRecord>),
    /// The registry does not know this hash.
    Unknown,
}

struct Entry {
    record: Option<Arc<KeyRecord>>,
    fetched: Instant,
}

/// Counters a caller may export; cheap relaxed atomics.
#[derive(Default, Debug)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Of those, the ones answered from a stale entry (`stale_if_error`).
    pub stale_served: AtomicU64,
}

/// The shared cache. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Cache {
    map: DashMap<KeyHash, Entry, foldhash::fast::RandomState>,
    ttl: Duration,
    negative_ttl: Duration,
    max_entries: usize,
    stale_if_error: Duration,
    /// Bumped by every invalidation; a miss only fills the cache if it did not move.
    epoch: AtomicU64,
    pub stats: CacheStats,
}

impl Cache {
    /// An empty cache with the `cache:` settings (`stale_if_error`: how long past its
    /// ttl a known key may be served while the store errs).
    pub fn new(settings: &CacheSettings) -> Self {
        Self {
            map: DashMap::default(),
            ttl: settings.ttl,
            negative_ttl: settings.negative_ttl,
            max_entries: settings.max_entries.max(1),
            stale_if_error: settings.stale_if_error,
            epoch: AtomicU64::new(0),
            stats: CacheStats::default(),
        }
    }

    /// The record for `hash`, from the cache while fresh, else from `store`.
    ///
    /// A corrupt record is logged and treated as unknown (refused, never a crash);
    /// an unreachable store is an error (after [`Cache::on_store_error`] found no stale
    /// entry to serve), so the caller fails closed.
    pub async fn lookup(&self, hash: &KeyHash, store: &dyn KeyStore) -> Result<Lookup, StoreError> {
        match self.cached(hash) {
            Some(hit) => Ok(hit),
            None => self.fetch(hash, store).await,
        }
    }

    /// The fresh cached answer for `hash`, if there is one: no await, so a caller can
    /// skip what only a store look-up needs (its timeout timer).
    pub fn cached(&self, hash: &KeyHash) -> Option<Lookup> {
        let hit = self.fresh(hash, Instant::now())?;
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        Some(hit)
    }

    /// Asks `store` for `hash` (after [`Cache::cached`] found nothing) and caches the answer.
    pub async fn fetch(&self, hash: &KeyHash, store: &dyn KeyStore) -> Result<Lookup, StoreError> {
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let epoch = self.epoch.load(Ordering::Acquire);
        let record = match store.by_hash(hash).await {
            Ok(r) => r.map(Arc::new),
            Err(StoreError::Corrupt { .. }) => {
                tracing::warn!(key_hash = ?hash, "registry entry does not decode; treating the key as unknown");
                None
            }
            Err(e) => return self.on_store_error(hash).ok_or(e),
        };
        if self.epoch.load(Ordering::Acquire) == epoch {
            self.fill(*hash, record.clone(), Instant::now());
        }
        Ok(record.map_or(Lookup::Unknown, Lookup::Found))
    }

    /// After a store failure for `hash` (an error, or the caller's timeout), returns
    /// the stale answer `stale_if_error` allows, if any: a known key only, never an
    /// unknown one, so an outage can never make an unknown key pass.
    pub fn on_store_error(&self, hash: &KeyHash) -> Option<Lookup> {
        let entry = self.map.get(hash)?;
        let record = entry.record.as_ref()?;
        let age = Instant::now().saturating_duration_since(entry.fetched);
        if age < self.ttl.saturating_add(self.stale_if_error) {
            self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
            Some(Lookup::Found(Arc::clone(record)))
        } else {
            None
        }
    }

    fn fresh(&self, hash: &KeyHash, now: Instant) -> Option<Lookup> {
        let entry = self.map.get(hash)?;
        let age = now.saturating_duration_since(entry.fetched);
        match &entry.record {
            Some(r) if age < self.ttl => Some(Lookup::Found(Arc::clone(r))),
            None if age < self.negative_ttl => Some(Lookup::Unknown),
            _ => None,
        }
    }

    fn fill(&self, hash: KeyHash, record: Option<Arc<KeyRecord>>, now: Instant) {
        if self.map.len() >= self.max_entries && !self.map.contains_key(&hash) {
            if record.is_none() {
                return; // never let unknown keys push known ones out
            }
            let victim = self.map.iter().next().map(|e| *e.key());
            if let Some(v) = victim {
                self.map.remove(&v);
            }
        }
        self.map.insert(
            hash,
            Entry {
                record,
                fetched: now,
            },
        );
    }

    /// Applies an invalidation from the store.
    pub fn invalidate(&self, what: &Invalidation) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        match what {
            Invalidation::Key(hash) => {
                self.map.remove(hash);
            }
            Invalidation::All => self.map.clear(),
        }
    }

    /// Drops expired entries; run periodically so idle keys do not hold memory.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.map.retain(|_, e| {
            let age = now.saturating_duration_since(e.fetched);
            if e.record.is_some() {
                age < self.ttl.saturating_add(self.stale_if_error)
            } else {
                age < self.negative_ttl
            }
        });
    }

    /// Entries held now (known and unknown keys).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::keys::{self, Timestamp};
    use crate::store::embedded::EmbeddedStore;

    fn record(secret: &keys::Secret) -> KeyRecord {
        KeyRecord {
            identity: crate::headers::Memo::default(),
            id: keys::new_id("kg_"),
            hash: secret.hash(),
            name: "t".into(),
            description: String::new(),
            prefix: keys::display_prefix(secret, "kg_"),
            user_id: "u".into(),
            business_id: "b".into(),
            scopes: vec![],
            locations: vec![],
            grants: vec![],
            created_at: Timestamp::now(),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            created_by: "test".into(),
            enabled: true,
            metadata: crate::keys::Metadata::new(),
            allowed_ips: Vec::new(),
            updated_at: None,
            limits: crate::keys::KeyLimits::new(),
            plan: None,
            quota: None,
            quota_counter: String::new(),
        }
    }

    #[tokio::test]
    async fn a_flood_of_unknown_keys_never_grows_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("k.db")).unwrap();
        let cache = Cache::new(&CacheSettings {
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(60),
            max_entries: 10,
            stale_if_error: Duration::ZERO,
        });
        for _ in 0..200 {
            let hash = keys::generate("kg_").hash();
            assert!(matches!(
                cache.lookup(&hash, &store).await.unwrap(),
                Lookup::Unknown
            ));
            assert!(cache.len() <= 10);
        }
        // Known keys still get in (evicting), so a flood cannot lock real clients out.
        let secret = keys::generate("kg_");
        store.insert(&record(&secret)).await.unwrap();
        assert!(matches!(
            cache.lookup(&secret.hash(), &store).await.unwrap(),
            Lookup::Found(_)
        ));
        assert!(cache.len() <= 10);
        let misses = cache.stats.misses.load(Ordering::Relaxed);
        assert!(matches!(
            cache.lookup(&secret.hash(), &store).await.unwrap(),
            Lookup::Found(_)
        ));
        assert_eq!(
            cache.stats.misses.load(Ordering::Relaxed),
            misses,
            "the second look-up is a hit"
        );
    }

    #[tokio::test]
    async fn an_invalidation_drops_the_entry_even_a_negative_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("k.db")).unwrap();
        let cache = Cache::new(&CacheSettings {
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(60),
            max_entries: 100,
            stale_if_error: Duration::ZERO,
        });
        let secret = keys::generate("kg_");
        assert!(matches!(
            cache.lookup(&secret.hash(), &store).await.unwrap(),
            Lookup::Unknown
        ));
        store.insert(&record(&secret)).await.unwrap();
        // Still remembered as unknown until the insert's invalidation arrives.
        assert!(matches!(
            cache.lookup(&secret.hash(), &store).await.unwrap(),
            Lookup::Unknown
        ));
        cache.invalidate(&Invalidation::Key(secret.hash()));
        assert!(matches!(
            cache.lookup(&secret.hash(), &store).await.unwrap(),
            Lookup::Found(_)
        ));
        cache.invalidate(&Invalidation::All);
        assert!(cache.is_empty());
    }
}
