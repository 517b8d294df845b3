//! Last-use times and request counts ([`counts`]), batched: the hot path notes a use in
//! memory, a background task writes them to the store every few seconds (the contract
//! allows 10 s for last use), and once more on shutdown.
//!
//! Invariants: at most one pending entry per key id (the newest time wins); a failed
//! flush puts its entries back, so a store outage delays `last_used_at` but loses nothing
//! that a later flush can still write. Why not a write per request: the registry would
//! take one write for every proxied call.

mod counts;
mod report;
pub use counts::{Count, Counts, OUTCOMES};

/// A series' usage over a range: every bucket, and the totals.
pub struct Report {
    pub range: Range,
    pub buckets: Vec<Bucket>,
    pub allowed: u64,
    pub refused: u64,
}

impl Report {
    /// Reads `series` over `range` from `store`.
    pub async fn read(
        store: &dyn crate::store::KeyStore,
        series: &crate::store::UsageSeries,
        range: Range,
    ) -> Result<Self, crate::store::StoreError> {
        let (from, to) = range.hours();
        let rows = store.usage(series, from, to).await?;
        let buckets = range.buckets(&rows);
        let (allowed, refused) = buckets
            .iter()
            .fold((0, 0), |(a, r), b| (a + b.allowed, r + b.refused));
        Ok(Self {
            range,
            buckets,
            allowed,
            refused,
        })
    }

    /// As the admin API answers it (and `keys usage --json` prints it).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "granularity": self.range.granularity,
            "from": Timestamp(self.range.from).to_rfc3339(),
            "to": Timestamp(self.range.to).to_rfc3339(),
            "allowed": self.allowed,
            "refused": self.refused,
            "buckets": self.buckets,
        })
    }
}

/// Counts written to the store per call of a flush.
pub const FLUSH_CHUNK: usize = 128;
pub use report::{Bucket, Granularity, MAX_BUCKETS, Range};

use dashmap::DashMap;

use crate::keys::Timestamp;

/// Pending last-use times by key id, and pending request counts ([`Counts`]).
pub struct Usage {
    pending: DashMap<String, Timestamp, foldhash::fast::RandomState>,
    pub counts: Counts,
    /// How long the store keeps the counts (`usage.retention`).
    pub retention: std::time::Duration,
}

impl Default for Usage {
    fn default() -> Self {
        Self::keeping(std::time::Duration::from_secs(90 * 86_400))
    }
}

impl Usage {
    /// Counts kept in the store for `retention`.
    pub fn keeping(retention: std::time::Duration) -> Self {
        Self {
            pending: DashMap::default(),
            counts: Counts::default(),
            retention,
        }
    }

    /// Notes that key `id` was used at `at`. Allocates only for a key's first use since the last flush.
    pub fn note(&self, id: &str, at: Timestamp) {
        if let Some(mut t) = self.pending.get_mut(id) {
            if *t < at {
                *t = at;
            }
            return;
        }
        self.pending.insert(id.to_owned(), at);
    }

    /// Takes every pending use, for one flush.
    pub fn drain(&self) -> Vec<(String, Timestamp)> {
        let ids: Vec<String> = self.pending.iter().map(|e| e.key().clone()).collect();
        ids.into_iter()
            .filter_map(|id| self.pending.remove(&id))
            .collect()
    }

    /// Puts back uses a failed flush could not write (keeping any newer time).
    pub fn restore(&self, uses: Vec<(String, Timestamp)>) {
        for (id, at) in uses {
            self.note(&id, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_time_per_key_and_drains_once() {
        let u = Usage::default();
        u.note("a", Timestamp(5));
        u.note("a", Timestamp(3));
        u.note("b", Timestamp(1));
        let mut got = u.drain();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("a".to_owned(), Timestamp(5)),
                ("b".to_owned(), Timestamp(1))
            ]
        );
        assert!(u.drain().is_empty());
        u.restore(got);
        assert_eq!(u.drain().len(), 2);
    }
}
