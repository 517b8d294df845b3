//! Requests per key and per business, by outcome and hour, and each key's last use:
//! counted in memory as they are answered (one map entry per key holds both, so a
//! request costs one look-up), written to the store in batches.
//!
//! Invariants:
//! - No store write per request: the hot path adds one to a counter in a sharded map
//!   (allocating only for a key's first request of a flush interval); a flush every few
//!   seconds writes them all, and a failed flush puts its counts back (a store outage
//!   delays counts, it loses none that a later flush can write).
//! - Each count is for one key (and so one business) in one UTC hour and one outcome:
//!   `allowed` or a refusal's code. Requests without a known key (no key, a bad one) are
//!   not any key's and are counted by the Prometheus metrics only.

use dashmap::DashMap;

use crate::keys::{KeyRecord, Timestamp};

/// Every outcome a keyed request can have: `allowed`, then each refusal's code.
pub const OUTCOMES: [&str; 20] = [
    "allowed",
    "ambiguous_api_key",
    "bad_path",
    "bad_request",
    "ambiguous_request",
    "missing_api_key",
    "invalid_api_key",
    "expired_api_key",
    "disabled_api_key",
    "ip_forbidden",
    "insufficient_scope",
    "location_forbidden",
    "business_disabled",
    "no_route",
    "payload_too_large",
    "rate_limited",
    "quota_exceeded",
    "auth_unavailable",
    "upstream_unavailable",
    "upstream_timeout",
];

/// One count to write: requests of `key_id` (of `business_id`) in the hour starting at
/// `hour` (Unix seconds) with `outcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    pub key_id: String,
    pub business_id: String,
    pub hour: i64,
    pub outcome: &'static str,
    pub n: u64,
}

impl Count {
    /// The store's names of the two series this count adds to: its key's and its
    /// business's (`UsageSeries::name`).
    pub fn series(&self) -> [String; 2] {
        [
            crate::store::UsageSeries::Key(self.key_id.clone()).name(),
            crate::store::UsageSeries::Business(self.business_id.clone()).name(),
        ]
    }
}

/// A key's counts and last use since the last flush.
struct Pending {
    business_id: String,
    /// `(hour, counts by outcome index)`: one entry, two across an hour's turn.
    hours: Vec<(i64, [u32; OUTCOMES.len()])>,
    /// The latest request the policy allowed (`last_used_at`), if any.
    last_used: Option<Timestamp>,
}

/// What one flush writes: the counts, and each key's latest use.
#[derive(Debug, Default)]
pub struct Drained {
    pub counts: Vec<Count>,
    pub uses: Vec<(String, Timestamp)>,
}

/// Counts waiting for the next flush, by key id.
#[derive(Default)]
pub struct Counts {
    pending: DashMap<String, Pending, foldhash::fast::RandomState>,
}

impl Counts {
    /// Counts one request of `key` answered with `code` (`None`: allowed) at `now`;
    /// `used`: the policy allowed it, so it is the key's latest use (`last_used_at`).
    /// One map look-up for both.
    pub fn note(&self, key: &KeyRecord, code: Option<&str>, now: Timestamp, used: bool) {
        let outcome = code.map_or(0, outcome_index);
        let hour = now.0 - now.0.rem_euclid(3600);
        let used = used.then_some(now);
        if let Some(mut p) = self.pending.get_mut(key.id.as_str()) {
            if p.business_id.is_empty() {
                // Made by a put-back last use, which does not know the business.
                p.business_id.clone_from(&key.business_id);
            }
            p.add(hour, outcome, 1);
            p.last_used = p.last_used.max(used);
            return;
        }
        let mut p = Pending {
            business_id: key.business_id.clone(),
            hours: Vec::with_capacity(1),
            last_used: used,
        };
        p.add(hour, outcome, 1);
        // Another request may have inserted it meanwhile: merge, never overwrite.
        self.pending
            .entry(key.id.clone())
            .and_modify(|e| {
                e.add(hour, outcome, 1);
                e.last_used = e.last_used.max(used);
            })
            .or_insert(p);
    }

    /// Notes a use of `key` that is not a proxied request (an admin API call).
    pub fn note_use(&self, key: &KeyRecord, at: Timestamp) {
        if let Some(mut p) = self.pending.get_mut(key.id.as_str()) {
            p.last_used = p.last_used.max(Some(at));
            return;
        }
        self.pending
            .entry(key.id.clone())
            .or_insert_with(|| Pending {
                business_id: key.business_id.clone(),
                hours: Vec::new(),
                last_used: None,
            })
            .last_used = Some(at);
    }

    /// Takes every pending count and last use, for one flush.
    pub fn drain(&self) -> Drained {
        let ids: Vec<String> = self.pending.iter().map(|e| e.key().clone()).collect();
        let mut out = Drained::default();
        for (key_id, p) in ids.into_iter().filter_map(|id| self.pending.remove(&id)) {
            for (hour, by) in p.hours {
                for (i, n) in by.iter().enumerate().filter(|(_, n)| **n > 0) {
                    out.counts.push(Count {
                        key_id: key_id.clone(),
                        business_id: p.business_id.clone(),
                        hour,
                        outcome: OUTCOMES[i],
                        n: u64::from(*n),
                    });
                }
            }
            if let Some(at) = p.last_used {
                out.uses.push((key_id, at));
            }
        }
        out
    }

    /// Puts back last uses a failed flush could not write (keeping any newer time).
    pub fn restore_uses(&self, uses: Vec<(String, Timestamp)>) {
        for (id, at) in uses {
            let mut p = self.pending.entry(id).or_insert_with(|| Pending {
                business_id: String::new(),
                hours: Vec::new(),
                last_used: None,
            });
            p.last_used = p.last_used.max(Some(at));
        }
    }

    /// Puts back counts a failed flush could not write.
    pub fn restore(&self, counts: Vec<Count>) {
        for c in counts {
            let i = outcome_index(c.outcome);
            let n = u32::try_from(c.n).unwrap_or(u32::MAX);
            self.pending
                .entry(c.key_id)
                .or_insert_with(|| Pending {
                    business_id: c.business_id.clone(),
                    hours: Vec::new(),
                    last_used: None,
                })
                .restored(c.business_id, c.hour, i, n);
        }
    }
}

impl Pending {
    /// Counts put back; an entry made by a last use alone learns its business here.
    fn restored(&mut self, business_id: String, hour: i64, outcome: usize, n: u32) {
        if self.business_id.is_empty() {
            self.business_id = business_id;
        }
        self.add(hour, outcome, n);
    }

    fn add(&mut self, hour: i64, outcome: usize, n: u32) {
        let at = if let Some(i) = self.hours.iter().position(|(h, _)| *h == hour) {
            i
        } else {
            self.hours.push((hour, [0; OUTCOMES.len()]));
            self.hours.len() - 1
        };
        if let Some(c) = self
            .hours
            .get_mut(at)
            .and_then(|(_, by)| by.get_mut(outcome))
        {
            *c = c.saturating_add(n);
        }
    }
}

/// The index of `code` in [`OUTCOMES`]; an unknown code counts as the last (never
/// happens: every refusal's code is listed, `tests` checks it).
fn outcome_index(code: &str) -> usize {
    OUTCOMES
        .iter()
        .position(|o| *o == code)
        .unwrap_or(OUTCOMES.len() - 1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(id: &str, business: &str) -> KeyRecord {
        let mut r = crate::store::contract::record(id, business, "u", 1);
        r.id = id.to_owned();
        r
    }

    #[test]
    fn counts_by_key_hour_and_outcome_and_a_failed_flush_loses_nothing() {
        let c = Counts::default();
        let (a, b) = (key("kid_a", "acme"), key("kid_b", "globex"));
        for _ in 0..3 {
            c.note(&a, None, Timestamp(7200 + 5), true);
        }
        c.note(&a, Some("rate_limited"), Timestamp(7200 + 3599), true);
        c.note(&a, None, Timestamp(10_800), true);
        c.note(&b, Some("insufficient_scope"), Timestamp(10_801), false);
        let drained = c.drain();
        assert_eq!(
            drained.uses,
            [("kid_a".to_owned(), Timestamp(10_800))],
            "the latest allowed use only; a refused-by-policy request is no use"
        );
        let mut got = drained.counts;
        got.sort_by_key(|x| (x.key_id.clone(), x.hour, x.outcome));
        let flat: Vec<_> = got
            .iter()
            .map(|x| {
                (
                    x.key_id.as_str(),
                    x.business_id.as_str(),
                    x.hour,
                    x.outcome,
                    x.n,
                )
            })
            .collect();
        assert_eq!(
            flat,
            [
                ("kid_a", "acme", 7200, "allowed", 3),
                ("kid_a", "acme", 7200, "rate_limited", 1),
                ("kid_a", "acme", 10_800, "allowed", 1),
                ("kid_b", "globex", 10_800, "insufficient_scope", 1),
            ]
        );
        assert!(c.drain().counts.is_empty(), "drained once");
        c.note(&a, None, Timestamp(10_805), true);
        c.restore(got);
        let again = c.drain().counts;
        let allowed_now: u64 = again
            .iter()
            .filter(|x| x.key_id == "kid_a" && x.hour == 10_800 && x.outcome == "allowed")
            .map(|x| x.n)
            .sum();
        assert_eq!(allowed_now, 2, "restored and new counts add up");
        assert_eq!(again.len(), 4);
    }
}
