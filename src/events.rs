//! Key events for webhooks: what happened to a key, queued in the store, delivered signed.
//!
//! Job: every lifecycle change (created, rotated, revoked, updated), a key in use entering
//! its expiry warning, and a key's first refusal for its rate limit or quota in a window
//! becomes an [`Event`] in the store's outbox; for each webhook one gateway of the fleet
//! (the holder of that webhook's store lease) POSTs each event it asked for, in order,
//! signed with HMAC-SHA256 ([`signature`]), retrying until `events.retry_for` after the
//! event.
//!
//! Invariants: an event carries the key's record as the admin API shows it, never a
//! secret or its hash; events are written by whoever made the change (CLI or gateway), so
//! a change made while no gateway runs is delivered when one starts; a webhook's cursor
//! (the last event it is done with) lives in the store, so a restart resends at most the
//! event in flight (at-least-once, never lost); one webhook's events go out one at a time,
//! oldest first, so they arrive in order per key; `rate_limited` and `quota_exceeded` are
//! queued at most once per key per window ([`Once`]), decided by the store, so a fleet
//! refusing the same key sends one.

pub mod deliver;
mod notices;

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub use notices::Notices;

use crate::keys::{KeyRecord, Timestamp};
use crate::store::KeyStore;

/// What happened to the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    #[serde(rename = "key.created")]
    Created,
    #[serde(rename = "key.rotated")]
    Rotated,
    #[serde(rename = "key.revoked")]
    Revoked,
    #[serde(rename = "key.updated")]
    Updated,
    #[serde(rename = "key.expiring")]
    Expiring,
    #[serde(rename = "key.rate_limited")]
    RateLimited,
    #[serde(rename = "key.quota_exceeded")]
    QuotaExceeded,
}

impl Kind {
    /// Every kind, in the order the README lists them.
    pub const ALL: [Kind; 7] = [
        Kind::Created,
        Kind::Rotated,
        Kind::Revoked,
        Kind::Updated,
        Kind::Expiring,
        Kind::RateLimited,
        Kind::QuotaExceeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Created => "key.created",
            Kind::Rotated => "key.rotated",
            Kind::Revoked => "key.revoked",
            Kind::Updated => "key.updated",
            Kind::Expiring => "key.expiring",
            Kind::RateLimited => "key.rate_limited",
            Kind::QuotaExceeded => "key.quota_exceeded",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One event as the outbox keeps it; the store gives it its sequence number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: Kind,
    pub time: Timestamp,
    pub key_id: String,
    pub business_id: String,
    /// The record as `GET /v1/keys/{id}` shows it, as it was when this happened.
    pub key: serde_json::Value,
    /// What else the kind says (`previous_key_id` of a rotation, the refused route…).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

impl Event {
    pub fn new(kind: Kind, record: &KeyRecord, data: serde_json::Value) -> Self {
        let now = Timestamp::now();
        Self {
            kind,
            time: now,
            key_id: record.id.clone(),
            business_id: record.business_id.clone(),
            key: record.to_json(now),
            data,
        }
    }

    /// The same event at another time (tests compare events made moments apart).
    #[cfg(test)]
    #[must_use]
    pub fn with_time(mut self, time: Timestamp) -> Self {
        self.time = time;
        self
    }
}

/// Queue the event only if no event under `name` was queued in the last `ttl`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Once {
    pub name: String,
    pub ttl: Duration,
}

/// What [`KeyStore::events_after`](crate::store::KeyStore::events_after) read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    /// The events, oldest first (without deliveries).
    pub events: Vec<Stored>,
    /// The highest number read, also of an entry that could not be read (a newer
    /// version's event type, skipped); `None`: nothing after the number asked for.
    pub last: Option<u64>,
}

/// An event in the outbox, with its number and (where asked) its deliveries.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    pub seq: u64,
    pub event: Event,
    pub deliveries: Vec<Delivery>,
}

impl Stored {
    /// The id receivers see (and may dedupe on): `evt_<seq>`.
    pub fn id(&self) -> String {
        format!("evt_{}", self.seq)
    }

    /// The body sent to a webhook.
    pub fn payload(&self) -> Vec<u8> {
        let e = &self.event;
        let mut body = serde_json::json!({
            "id": self.id(),
            "type": e.kind.as_str(),
            "time": e.time,
            "key": e.key,
        });
        if !e.data.is_null() {
            body["data"] = e.data.clone();
        }
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// As `GET /v1/events` shows it.
    pub fn to_json(&self) -> serde_json::Value {
        let e = &self.event;
        serde_json::json!({
            "id": self.id(),
            "type": e.kind.as_str(),
            "time": e.time,
            "key_id": e.key_id,
            "business_id": e.business_id,
            "data": e.data,
            "deliveries": self.deliveries,
        })
    }
}

/// Where one event stands with one webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub url: String,
    pub status: Status,
    pub attempts: u32,
    /// The receiver's last HTTP status, if it answered.
    pub response_status: Option<u16>,
    /// Why the last attempt failed, if it did.
    pub error: Option<String>,
    pub last_attempt_at: Option<Timestamp>,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not delivered yet; retried until `events.retry_for` has passed.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Retried for `events.retry_for` without a 2xx; the webhook went on to the next.
    Failed,
}

impl Delivery {
    /// Delivered or given up on: the webhook's cursor moves past the event.
    pub fn is_final(&self) -> bool {
        self.status != Status::Pending
    }
}

/// The `Keygate-Signature` header for `body` sent at Unix time `t`:
/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Queues `kind` for `record`. A failure is logged, not returned: the change itself has
/// already happened (as with the audit trail).
pub async fn emit(store: &dyn KeyStore, kind: Kind, record: &KeyRecord, data: serde_json::Value) {
    let event = Event::new(kind, record, data);
    if let Err(e) = store.push_event(&event, None).await {
        tracing::error!(error = %crate::report::Chain(&e), key_id = %record.id, event = kind.as_str(), "could not queue the key event for webhooks");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_value(k).ok(),
                Some(serde_json::json!(k.as_str()))
            );
        }
        assert_eq!(Kind::parse("key.deleted"), None);
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // Computed independently:
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
        let s = signature(b"whsec_test", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            s,
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
        assert_ne!(s, signature(b"whsec_other", 1_700_000_000, br#"{"a":1}"#));
        assert_ne!(s, signature(b"whsec_test", 1_700_000_001, br#"{"a":1}"#));
    }
}
