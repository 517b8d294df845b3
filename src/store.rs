//! The key registry: the [`KeyStore`] trait every back end implements, and the types
//! it speaks ([`ListQuery`], [`Page`], [`AuditEvent`], [`Invalidation`], [`StoreError`]).
//!
//! Job: hold key records by hash and by id, list them for the admin API, keep the
//! audit trail, and tell caches which hashes changed — in this process or any other
//! writing to the same registry.
//!
//! Invariants:
//! - Only [`KeyHash`]es are stored or looked up; a secret never crosses this boundary.
//! - Every mutation that changes what a hash maps to (insert, revoke, rotate, replace) is
//!   announced on [`KeyStore::invalidations`]; `record_use` is not (it changes no
//!   decision the proxy makes).
//! - A store that cannot answer says [`StoreError::Unavailable`]; nothing here decides
//!   to fail open. A row that does not decode is [`StoreError::Corrupt`], never a panic.
//! - No HTTP types: callers map errors to statuses (`proxy/refusal.rs`, `admin/error.rs`).
//!
//! Why a trait object (`Arc<dyn KeyStore>`, via `async-trait`): the embedded `SQLite`
//! back end and the Redis fleet back end are chosen at start-up from the config, and
//! callers (proxy, cache, admin, CLI) must not know which one they hold. The shared
//! contract tests (`store/contract.rs`, test builds only) pin the behaviour both give,
//! and `store/codec.rs` holds what their record codecs share.

mod codec;
#[cfg(test)]
pub(crate) mod contract;
pub mod deferred;
pub mod embedded;
pub mod redis;

pub use codec::Undecodable;

use crate::keys::{KeyHash, KeyRecord, Status, Timestamp};

/// Invalidations buffered per subscriber before it lags (and must assume
/// [`Invalidation::All`]): the capacity of every back end's broadcast channel.
pub(crate) const CHANNEL_CAPACITY: usize = 1024;

/// A boxed cause, so [`StoreError`] names no back end's error type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The key registry. Implemented by [`embedded::EmbeddedStore`] and [`redis::RedisStore`].
///
/// All methods are cancellation-safe in the sense that a dropped future never leaves
/// a half-applied mutation: each mutation is one back-end transaction.
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// The record whose secret hashes to `hash`: the proxy's cache-miss path, one query.
    async fn by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError>;

    /// The record with this id.
    async fn by_id(&self, id: &str) -> Result<Option<KeyRecord>, StoreError>;

    /// Adds a record. A record with the same id or the same hash → [`StoreError::Conflict`].
    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError>;

    /// One page of records matching `query`, newest first (see [`ListQuery`]).
    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError>;

    /// Sets `revoked_at` (keeps the first revocation time if already revoked); returns
    /// the record after, `None` if no such id. The revocation lands even when the stored
    /// row no longer decodes (the reply is then [`StoreError::Corrupt`]): a damaged key
    /// must still be stoppable.
    async fn revoke(&self, id: &str, at: Timestamp) -> Result<Option<KeyRecord>, StoreError>;

    /// Atomically inserts `new` and ends the old key at `old_expires_at` (rotation with
    /// grace). Returns the old record after, `None` (and nothing inserted) if `old_id`
    /// is unknown. Rotation never extends the old key: if it already expires before
    /// `old_expires_at`, its expiry is kept. A `new` clashing with an existing id or
    /// hash → [`StoreError::Conflict`], and the old key is left untouched.
    async fn rotate(
        &self,
        old_id: &str,
        new: &KeyRecord,
        old_expires_at: Timestamp,
    ) -> Result<Option<KeyRecord>, StoreError>;

    /// Writes `after`'s editable fields (name, description, scopes, locations, grants,
    /// `expires_at`, `enabled`, metadata, `allowed_ips`) and its `updated_at` over key
    /// `before.id`, only if the stored key is not revoked and its editable fields still
    /// equal `before`'s (compare-and-set, so two admins editing at once cannot merge
    /// into a record neither checked). Returns the record after; `None` if no such id;
    /// [`StoreError::Conflict`] if the key changed or was revoked since `before` was read.
    /// Announced as an invalidation, like a revocation.
    async fn replace(
        &self,
        before: &KeyRecord,
        after: &KeyRecord,
    ) -> Result<Option<KeyRecord>, StoreError>;

    /// Batched last-use times: sets `last_used_at = max(existing, t)` per key id.
    /// Unknown ids are ignored. Not announced as an invalidation.
    async fn record_use(&self, uses: &[(String, Timestamp)]) -> Result<(), StoreError>;

    /// Appends to the audit trail.
    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;

    /// The newest `limit` audit events (of one business, if given), newest first.
    async fn audit(
        &self,
        business_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// Readiness: a real round trip to the back end.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Takes up to `want` units of the quota window `window` (a [`keys::Window`] name)
    /// such that at most `limit` are ever used, in one atomic step; the window's count
    /// may be forgotten after `expires_at` (`None`: kept, as credits are).
    ///
    /// [`keys::Window`]: crate::keys::Window
    async fn quota_take(
        &self,
        window: &str,
        limit: u64,
        want: u64,
        expires_at: Option<Timestamp>,
    ) -> Result<QuotaGrant, StoreError>;

    /// Gives back `n` units taken from `window` and never spent (a gateway stopping
    /// with part of a lease), never below zero.
    async fn quota_give_back(&self, window: &str, n: u64) -> Result<(), StoreError>;

    /// Units used of `window` so far (taken by gateways, spent or leased); 0 if none.
    async fn quota_used(&self, window: &str) -> Result<u64, StoreError>;

    /// Adds batched request counts to each key's and each business's hourly series, and
    /// forgets hours older than `retention` (counts for such hours are dropped).
    async fn add_usage(
        &self,
        counts: &[crate::usage::Count],
        retention: std::time::Duration,
    ) -> Result<(), StoreError>;

    /// The counts of `series` for the hours starting in `from..=to` (Unix seconds, hour
    /// starts): `(hour, outcome, n)`, in no particular order.
    async fn usage(
        &self,
        series: &UsageSeries,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, String, u64)>, StoreError>;

    /// Appends `event` to the key-event outbox and returns its number (numbers only grow),
    /// unless `once` names an event queued within its ttl: then nothing (`None`). Keeps
    /// the newest [`EVENTS_KEPT`] events and every event a webhook's cursor has not
    /// passed, up to [`EVENTS_HELD`].
    async fn push_event(
        &self,
        event: &crate::events::Event,
        once: Option<&crate::events::Once>,
    ) -> Result<Option<u64>, StoreError>;

    /// Up to `limit` outbox entries numbered above `after`, oldest first: the readable
    /// ones as events (without deliveries), and the highest number read.
    async fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<crate::events::Page, StoreError>;

    /// The newest `limit` events (of one business, if given), newest first, each with
    /// where it stands with each webhook.
    async fn recent_events(
        &self,
        business_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<crate::events::Stored>, StoreError>;

    /// The number of the last event webhook `url` is done with; `None` before its first.
    async fn event_cursor(&self, url: &str) -> Result<Option<u64>, StoreError>;

    /// Moves webhook `url`'s cursor to `seq`, never back.
    async fn set_event_cursor(&self, url: &str, seq: u64) -> Result<(), StoreError>;

    /// Records where event `seq` stands with webhook `delivery.url`; a final delivery
    /// (delivered or failed) also moves that webhook's cursor to `seq` (never back).
    async fn record_delivery(
        &self,
        seq: u64,
        delivery: &crate::events::Delivery,
    ) -> Result<(), StoreError>;

    /// Takes lease `name` for `holder` until `ttl` from now if it is free, expired or
    /// already `holder`'s; whether `holder` holds it now.
    async fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError>;

    /// Cache invalidations from every writer, other processes included, within about
    /// a second of the write (this process's own writes: at once).
    ///
    /// The same hash may be announced more than once. A receiver that reports
    /// `RecvError::Lagged` has lost invalidations and must treat that as
    /// [`Invalidation::All`]; `RecvError::Closed` means the store was dropped.
    fn invalidations(&self) -> tokio::sync::broadcast::Receiver<Invalidation>;
}

/// Token buckets that every gateway sharing a registry counts together: the fleet half
/// of `rate_limit: … scope: fleet` (`crate::limits` keeps the local leases). Only the
/// Redis back end has them; a single node's embedded store counts on its own.
///
/// A bucket is a GCRA bucket: one token back every `interval`, at most `burst` held.
/// Its clock is the back end's, so gateways whose clocks differ still agree.
#[async_trait::async_trait]
pub trait SharedBuckets: Send + Sync + 'static {
    /// Takes up to `want` tokens from the bucket named `bucket` (a name `limits` makes
    /// from the route, its rate and whose bucket it is) in one atomic step.
    async fn take(
        &self,
        bucket: &str,
        interval: std::time::Duration,
        burst: u32,
        want: u32,
    ) -> Result<Grant, StoreError>;
}

/// What [`SharedBuckets::take`] gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Tokens taken: `0..=want`.
    pub granted: u32,
    /// Tokens left in the bucket after this take.
    pub remaining: u32,
    /// When nothing was granted: how long until one token is back.
    pub wait: std::time::Duration,
    /// How long until the bucket is full again.
    pub full_in: std::time::Duration,
}

/// Whose counts [`KeyStore::usage`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageSeries {
    Key(String),
    Business(String),
}

impl UsageSeries {
    /// The series' name in the store: `k:<key id>` or `b:<business id>`.
    pub fn name(&self) -> String {
        match self {
            Self::Key(id) => format!("k:{id}"),
            Self::Business(b) => format!("b:{b}"),
        }
    }
}

/// Key events kept in the outbox once every webhook is past them (for `GET /v1/events`).
pub const EVENTS_KEPT: usize = 10_000;

/// Key events kept at most: past this many, the oldest go even if a webhook has not had
/// them (a receiver down for very long, or a webhook removed from the config, whose
/// cursor stays behind); the webhook logs how many it missed.
pub const EVENTS_HELD: usize = 50_000;

/// How long an event's deliveries are kept (Redis expires them; `SQLite` drops them with
/// their event).
pub(crate) const DELIVERIES_KEPT_SECS: i64 = 30 * 86_400;

/// How long a periodic quota window's count outlives its reset in either back end (so a
/// late give-back still finds it), in seconds.
pub(crate) const QUOTA_KEPT_AFTER_RESET: i64 = 86_400;

/// What [`KeyStore::quota_take`] gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaGrant {
    /// Units taken: `0..=want`.
    pub granted: u64,
    /// Units used of the window after this take.
    pub used: u64,
}

/// What a cache must forget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// The record for this hash changed (or now exists, or stopped existing).
    Key(KeyHash),
    /// Changes may have been missed: forget everything.
    All,
}

/// Which records [`KeyStore::list`] returns.
///
/// Order: `created_at` descending, then `id` descending. Filters combine with AND.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub business_id: Option<String>,
    pub user_id: Option<String>,
    /// ASCII-case-insensitive substring of name, description or id. `%`, `_` and `\`
    /// are plain characters here.
    pub search: Option<String>,
    /// Status at [`ListQuery::now`].
    pub status: Option<Status>,
    /// Page size; the caller clamps it. `0` is taken as `1`.
    pub limit: usize,
    /// `next_cursor` of the previous page; opaque.
    pub cursor: Option<String>,
    /// The moment statuses are computed at.
    pub now: Timestamp,
}

impl Default for ListQuery {
    /// No filters, the admin API's default page size (50), statuses as of now.
    fn default() -> Self {
        Self {
            business_id: None,
            user_id: None,
            search: None,
            status: None,
            limit: 50,
            cursor: None,
            now: Timestamp::now(),
        }
    }
}

impl ListQuery {
    /// Whether `record` passes this query's filters (not the cursor). Back ends that
    /// filter in memory use this; the SQL back end must agree with it.
    pub fn matches(&self, record: &KeyRecord) -> bool {
        self.business_id
            .as_ref()
            .is_none_or(|b| *b == record.business_id)
            && self.user_id.as_ref().is_none_or(|u| *u == record.user_id)
            && self.status.is_none_or(|s| record.status(self.now) == s)
            && self.search.as_ref().is_none_or(|needle| {
                contains_ascii_ci(&record.name, needle)
                    || contains_ascii_ci(&record.description, needle)
                    || contains_ascii_ci(&record.id, needle)
            })
    }

    /// The page size actually used.
    pub fn page_size(&self) -> usize {
        self.limit.max(1)
    }
}

/// Substring test that folds ASCII letters only, as `SQLite`'s `LIKE` does.
fn contains_ascii_ci(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    pub keys: Vec<KeyRecord>,
    /// Pass back as [`ListQuery::cursor`] for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Who created, rotated or revoked which key, when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEvent {
    pub at: Timestamp,
    pub actor: String,
    /// `"created"`, `"rotated"` or `"revoked"`.
    pub action: String,
    pub key_id: String,
    pub business_id: String,
    pub detail: String,
}

/// Why a store call failed. The proxy answers 503 to anything but `Corrupt` (which
/// it treats as an unknown key, after logging) and never fails open.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The back end cannot be opened, reached or asked right now (I/O, busy, down).
    #[error("the key store is unavailable")]
    Unavailable {
        #[source]
        source: BoxError,
    },
    /// A record with the same id or hash already exists.
    #[error("a key with the same id or hash already exists")]
    Conflict,
    /// A stored row does not decode; `record` names it (its id, or its hash).
    #[error("stored record {record} does not decode")]
    Corrupt {
        record: String,
        #[source]
        source: BoxError,
    },
    /// The list cursor was not made by this store.
    #[error("the list cursor is malformed")]
    BadCursor,
}

impl StoreError {
    /// `Unavailable` with `source` as its cause.
    pub fn unavailable(source: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            source: source.into(),
        }
    }
}

/// The position after which the next page starts: the last row's sort key.
///
/// Encoded as hex of `1:<created_at>:<id>` (the `1` is the format's version) so it
/// is opaque to callers and safe in a query string. Shared by every back end, so
/// a cursor means the same thing whichever store answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) created_at: Timestamp,
    pub(crate) id: String,
}

impl Cursor {
    pub(crate) fn after(record: &KeyRecord) -> Self {
        Self {
            created_at: record.created_at,
            id: record.id.clone(),
        }
    }

    pub(crate) fn encode(&self) -> String {
        hex::encode(format!("1:{}:{}", self.created_at.0, self.id))
    }

    pub(crate) fn decode(text: &str) -> Result<Self, StoreError> {
        let bytes = hex::decode(text).map_err(|_| StoreError::BadCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| StoreError::BadCursor)?;
        let rest = text.strip_prefix("1:").ok_or(StoreError::BadCursor)?;
        let (secs, id) = rest.split_once(':').ok_or(StoreError::BadCursor)?;
        let secs = secs.parse::<i64>().map_err(|_| StoreError::BadCursor)?;
        if id.is_empty() {
            return Err(StoreError::BadCursor);
        }
        Ok(Self {
            created_at: Timestamp(secs),
            id: id.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn cursors_round_trip(secs in any::<i64>(), id in "\\PC{1,40}") {
            let c = Cursor { created_at: Timestamp(secs), id };
            prop_assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        }

        #[test]
        fn junk_cursors_never_panic(junk in "\\PC{0,80}") {
            let _ = Cursor::decode(&junk);
        }
    }

    #[test]
    fn ascii_case_folding_only() {
        assert!(contains_ascii_ci("Hello World", "o w"));
        assert!(contains_ascii_ci("abc", ""));
        assert!(!contains_ascii_ci("ab", "abc"));
        assert!(contains_ascii_ci("ÄBC", "Äbc"));
    }
}
