//! Warnings for keys that are in use and about to expire, so ops can rotate them before
//! clients break.
//!
//! Invariants: a key is noted when an allowed request uses it within its warning window:
//! the last tenth of its own lifetime (`created_at` to `expires_at`), at most
//! `keys.expiry_warning`. So a 1-year key warns 7 days ahead (the default cap) and a 1-hour
//! key 6 minutes ahead, never at its first use. Each key is logged once (a warning naming its id,
//! name, business and expiry, never its secret) and counted in the
//! `keygate_keys_expiring_soon` gauge until it expires or is swept. The hot path pays one
//! comparison for keys far from expiry. Why at use time rather than by scanning the
//! registry: a registry of a million keys should not be listed every minute, and a key
//! nobody uses breaks nobody.

use std::time::Duration;

use dashmap::DashMap;

use crate::keys::{KeyRecord, Timestamp};

/// A key warns in the last `1 / LIFETIME_SHARE` of its lifetime (10 %).
const LIFETIME_SHARE: i64 = 10;

/// Keys seen in use that expire within the window, by id → expiry.
pub struct Expiring {
    window: Duration,
    soon: DashMap<String, Timestamp>,
}

impl Expiring {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            soon: DashMap::new(),
        }
    }

    /// Called for every allowed keyed request; true the first time this process notes
    /// the key (the time to tell webhooks, `key.expiring`).
    pub fn note(&self, key: &KeyRecord, now: Timestamp) -> bool {
        let Some(expires) = key.expires_at else {
            return false;
        };
        let left = expires.0.saturating_sub(now.0);
        if left > self.window_for(key.created_at, expires) || self.soon.contains_key(&key.id) {
            return false;
        }
        self.soon.insert(key.id.clone(), expires);
        tracing::warn!(
            key_id = %key.id,
            name = %key.name,
            business_id = %key.business_id,
            user_id = %key.user_id,
            expires_at = %expires.to_rfc3339(),
            in_seconds = expires.0.saturating_sub(now.0),
            "a key in use expires soon; rotate it (keygate keys rotate ID --grace 1h)"
        );
        true
    }

    /// The warning window of a key living from `created` to `expires`, in seconds: the last
    /// `1 / LIFETIME_SHARE` of its lifetime, at most `keys.expiry_warning`.
    fn window_for(&self, created: Timestamp, expires: Timestamp) -> i64 {
        let lifetime = expires.0.saturating_sub(created.0).max(0);
        let cap = i64::try_from(self.window.as_secs()).unwrap_or(i64::MAX);
        (lifetime / LIFETIME_SHARE).min(cap)
    }

    /// Forgets keys that have expired.
    pub fn sweep(&self, now: Timestamp) {
        self.soon.retain(|_, expires| *expires > now);
    }

    /// Keys in use that expire within the window.
    pub fn count(&self) -> usize {
        self.soon.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(created: i64, expires: i64) -> KeyRecord {
        KeyRecord {
            identity: crate::headers::Memo::default(),
            expires_at: Some(Timestamp(expires)),
            ..crate::store::contract::record("k1", "b", "u", created)
        }
    }

    const WEEK: Duration = Duration::from_secs(7 * 86_400);

    #[test]
    fn a_one_hour_key_warns_only_in_its_last_six_minutes() {
        let e = Expiring::new(WEEK);
        let k = key(0, 3600);
        e.note(&k, Timestamp(0));
        e.note(&k, Timestamp(3600 - 361));
        assert_eq!(
            e.count(),
            0,
            "a 1h key must not warn with more than 6 minutes left"
        );
        e.note(&k, Timestamp(3600 - 360));
        assert_eq!(e.count(), 1);
    }

    #[test]
    fn a_long_key_warns_at_most_expiry_warning_ahead() {
        let e = Expiring::new(WEEK);
        let year = 365 * 86_400;
        let k = key(0, year);
        e.note(&k, Timestamp(year - 7 * 86_400 - 1));
        assert_eq!(e.count(), 0, "10 % of a year is 36 days: capped at 7 days");
        e.note(&k, Timestamp(year - 7 * 86_400));
        assert_eq!(e.count(), 1);
    }
}
