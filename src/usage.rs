//! Last-use times and request counts ([`counts`]), batched: the hot path notes a use in
//! memory, a background task writes them to the store every few seconds (the contract
//! allows 10 s for last use), and once more on shutdown.
//!
//! Invariants: at most one pending entry per key id, holding its counts and its newest
//! use (one look-up per request for both); a failed
//! flush puts its entries back, so a store outage delays `last_used_at` but loses nothing
//! that a later flush can still write. Why not a write per request: the registry would
//! take one write for every proxied call.

mod counts;
mod report;
pub use counts::{Count, Counts, Drained, OUTCOMES};

use crate::keys::Timestamp;

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

/// Pending request counts and last-use times ([`Counts`]), and how long counts are kept.
pub struct Usage {
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
            counts: Counts::default(),
            retention,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(id: &str) -> crate::keys::KeyRecord {
        crate::store::contract::record(id, "acme", "u", 1)
    }

    #[test]
    fn keeps_the_newest_use_per_key_and_drains_once() {
        let u = Usage::default();
        let (a, b) = (key("a"), key("b"));
        u.counts.note(&a, None, Timestamp(5), true);
        u.counts.note(&a, None, Timestamp(3), true);
        u.counts.note_use(&b, Timestamp(1));
        let mut got = u.counts.drain().uses;
        got.sort();
        assert_eq!(
            got,
            vec![
                ("a".to_owned(), Timestamp(5)),
                ("b".to_owned(), Timestamp(1))
            ]
        );
        assert!(u.counts.drain().uses.is_empty());
        u.counts.restore_uses(got);
        u.counts.note(&b, None, Timestamp(7200), false);
        let again = u.counts.drain();
        assert_eq!(again.uses.len(), 2);
        assert_eq!(
            again.counts[0].business_id, "acme",
            "a put-back use learns its key's business from the next count"
        );
    }
}
