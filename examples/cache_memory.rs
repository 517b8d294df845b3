//! Memory per cached key, and the bound under a flood of made-up keys.
//!
//! ```text
//! cargo run --release --example cache_memory -- [--keys 100000] [--flood 1000000]
//! ```
//! 1. fills a [`Cache`] (`max_entries` = `--keys`) with `--keys` distinct known keys and
//!    reports the RSS growth per key (`/proc/self/statm`);
//! 2. sends `--flood` random well-formed (valid checksum) but unknown keys through the
//!    full cache: it must stay at `max_entries`, and RSS must not grow;
//! 3. the same flood through an empty cache: it fills up to `max_entries` and stops.
//!
//! The store is synthetic (it answers every hash from memory) so the figure is the
//! cache's own, not the store's page cache. Records have the shape `keys create` makes:
//! a generated id and display prefix, a name, user, business, one scope.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::FutureExt;
use keygate::cache::Cache;
use keygate::config::CacheSettings;
use keygate::keys::{self, KeyHash, KeyRecord, Timestamp};
use keygate::store::{AuditEvent, Invalidation, KeyStore, ListQuery, Page, StoreError};

// The allocator the binary uses (src/main.rs): RSS per key depends on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Knows every hash (`known`) or none.
struct Synthetic {
    known: bool,
}

fn unused<T>() -> Result<T, StoreError> {
    Err(StoreError::unavailable("not used by this example"))
}

#[async_trait::async_trait]
impl KeyStore for Synthetic {
    async fn by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.known.then(|| KeyRecord {
            identity: keygate::headers::Memo::default(),
            id: keys::new_id("kg_"),
            hash: *hash,
            name: "load-3-14159".into(),
            description: String::new(),
            prefix: "kg_AbCdEfGh".into(),
            user_id: "user-42".into(),
            business_id: "acme".into(),
            scopes: vec!["items:read".into()],
            locations: vec![],
            grants: vec![],
            created_at: Timestamp::now(),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            created_by: "bulk_keys".into(),
            enabled: true,
            metadata: keygate::keys::Metadata::new(),
            allowed_ips: Vec::new(),
            updated_at: None,
            limits: keygate::keys::KeyLimits::new(),
            plan: None,
            quota: None,
            quota_counter: String::new(),
        }))
    }
    async fn by_id(&self, _: &str) -> Result<Option<KeyRecord>, StoreError> {
        unused()
    }
    async fn insert(&self, _: &KeyRecord) -> Result<(), StoreError> {
        unused()
    }
    async fn list(&self, _: &ListQuery) -> Result<Page, StoreError> {
        unused()
    }
    async fn revoke(&self, _: &str, _: Timestamp) -> Result<Option<KeyRecord>, StoreError> {
        unused()
    }
    async fn rotate(
        &self,
        _: &str,
        _: &KeyRecord,
        _: Timestamp,
    ) -> Result<Option<KeyRecord>, StoreError> {
        unused()
    }
    async fn replace(&self, _: &KeyRecord, _: &KeyRecord) -> Result<Option<KeyRecord>, StoreError> {
        unused()
    }
    async fn record_use(&self, _: &[(String, Timestamp)]) -> Result<(), StoreError> {
        unused()
    }
    async fn append_audit(&self, _: &AuditEvent) -> Result<(), StoreError> {
        unused()
    }
    async fn audit(&self, _: Option<&str>, _: usize) -> Result<Vec<AuditEvent>, StoreError> {
        unused()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn quota_take(
        &self,
        _: &str,
        _: u64,
        _: u64,
        _: Option<Timestamp>,
    ) -> Result<keygate::store::QuotaGrant, StoreError> {
        unused()
    }
    async fn quota_give_back(&self, _: &str, _: u64) -> Result<(), StoreError> {
        unused()
    }
    async fn quota_used(&self, _: &str) -> Result<u64, StoreError> {
        unused()
    }
    async fn add_usage(
        &self,
        _: &[keygate::usage::Count],
        _: std::time::Duration,
    ) -> Result<(), StoreError> {
        unused()
    }
    async fn usage(
        &self,
        _: &keygate::store::UsageSeries,
        _: i64,
        _: i64,
    ) -> Result<Vec<(i64, String, u64)>, StoreError> {
        unused()
    }
    async fn push_event(
        &self,
        _: &keygate::events::Event,
        _: Option<&keygate::events::Once>,
    ) -> Result<Option<u64>, StoreError> {
        unused()
    }
    async fn events_after(&self, _: u64, _: usize) -> Result<keygate::events::Page, StoreError> {
        unused()
    }
    async fn recent_events(
        &self,
        _: Option<&str>,
        _: usize,
    ) -> Result<Vec<keygate::events::Stored>, StoreError> {
        unused()
    }
    async fn event_cursor(&self, _: &str) -> Result<Option<u64>, StoreError> {
        unused()
    }
    async fn set_event_cursor(&self, _: &str, _: u64) -> Result<(), StoreError> {
        unused()
    }
    async fn record_delivery(
        &self,
        _: u64,
        _: &keygate::events::Delivery,
    ) -> Result<(), StoreError> {
        unused()
    }
    async fn lease(&self, _: &str, _: &str, _: std::time::Duration) -> Result<bool, StoreError> {
        unused()
    }
    fn invalidations(&self) -> tokio::sync::broadcast::Receiver<Invalidation> {
        tokio::sync::broadcast::channel(1).1
    }
}

/// Resident set size in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Looks `n` fresh well-formed keys up (each a real secret: valid checksum, never issued).
fn look_up_new_keys(cache: &Cache, store: &Synthetic, n: usize) {
    for _ in 0..n {
        let secret = keys::generate("kg_");
        let hash = keys::parse(secret.expose(), "kg_").unwrap();
        cache.lookup(&hash, store).now_or_never().unwrap().unwrap();
    }
}

fn main() {
    let mut n = 100_000usize;
    let mut flood = 1_000_000usize;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v: usize = it.next().and_then(|v| v.parse().ok()).unwrap();
        match flag.as_str() {
            "--keys" => n = v,
            "--flood" => flood = v,
            other => panic!("unknown argument {other}"),
        }
    }
    let settings = CacheSettings {
        ttl: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(3600),
        max_entries: n,
        stale_if_error: Duration::ZERO,
    };
    let known = Synthetic { known: true };
    let unknown = Synthetic { known: false };

    let cache = Cache::new(&settings);
    let before = rss();
    look_up_new_keys(&cache, &known, n);
    let after = rss();
    #[allow(clippy::cast_precision_loss)]
    let per_key = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "known keys: {n} cached, RSS {:.1} MiB -> {:.1} MiB: {per_key:.0} bytes per cached key",
        mib(before),
        mib(after)
    );

    look_up_new_keys(&cache, &unknown, flood);
    let flooded = rss();
    println!(
        "flood of {flood} unknown keys into the full cache: {} entries (max {n}), RSS {:+.1} MiB",
        cache.len(),
        mib(flooded) - mib(after)
    );
    assert!(cache.len() <= n);

    let empty = Cache::new(&settings);
    let before = rss();
    look_up_new_keys(&empty, &unknown, flood);
    println!(
        "flood of {flood} unknown keys into an empty cache: {} entries (max {n}), RSS {:+.1} MiB",
        empty.len(),
        mib(rss()) - mib(before)
    );
    assert!(empty.len() <= n);
}

#[allow(clippy::cast_precision_loss)]
fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}
