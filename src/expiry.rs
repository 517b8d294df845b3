//! Warnings for keys that are in use and about to expire, so ops can rotate them before
//! clients break.
//!
//! Invariants: a key is noted when an allowed request uses it within
//! `keys.expiry_warning` of its expiry; each key is logged once (a warning naming its id,
//! name, business and expiry, never its secret) and counted in the
//! `keygate_keys_expiring_soon` gauge until it expires or is swept. The hot path pays one
//! comparison for keys far from expiry. Why at use time rather than by scanning the
//! registry: a registry of a million keys should not be listed every minute, and a key
//! nobody uses breaks nobody.

use std::time::Duration;

use dashmap::DashMap;

use crate::keys::{KeyRecord, Timestamp};

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

    /// Called for every allowed keyed request.
    pub fn note(&self, key: &KeyRecord, now: Timestamp) {
        let Some(expires) = key.expires_at else {
            return;
        };
        if expires > now.plus(self.window) || self.soon.contains_key(&key.id) {
            return;
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
