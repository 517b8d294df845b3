//! The key registry: the [`KeyStore`] trait every back end implements, and the types
//! it speaks ([`ListQuery`], [`Page`], [`AuditEvent`], [`Invalidation`], [`StoreError`]).
//!
//! Job: hold key records by hash and by id, list them for the admin API, keep the
//! audit trail, and tell caches which hashes changed — in this process or any other
//! writing to the same registry.
//!
//! Invariants:
//! - Only [`KeyHash`]es are stored or looked up; a secret never crosses this boundary.
//! - Every mutation that changes what a hash maps to (insert, revoke, rotate) is
//!   announced on [`KeyStore::invalidations`]; `record_use` is not (it changes no
//!   decision the proxy makes).
//! - A store that cannot answer says [`StoreError::Unavailable`]; nothing here decides
//!   to fail open. A row that does not decode is [`StoreError::Corrupt`], never a panic.
//! - No HTTP types: callers map errors to statuses (`proxy/refusal.rs`, `admin/error.rs`).
//!
//! Why a trait object (`Arc<dyn KeyStore>`, via `async-trait`): the embedded `SQLite`
//! back end and the Redis fleet back end are chosen at start-up from the config, and
//! callers (proxy, cache, admin, CLI) must not know which one they hold. The shared
//! contract tests ([`contract_suite`], test builds only) pin the behaviour both give.

pub mod deferred;
pub mod embedded;
pub mod redis;

use crate::keys::{KeyHash, KeyRecord, Status, Timestamp};

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

    /// Cache invalidations from every writer, other processes included, within about
    /// a second of the write (this process's own writes: at once).
    ///
    /// The same hash may be announced more than once. A receiver that reports
    /// `RecvError::Lagged` has lost invalidations and must treat that as
    /// [`Invalidation::All`]; `RecvError::Closed` means the store was dropped.
    fn invalidations(&self) -> tokio::sync::broadcast::Receiver<Invalidation>;
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
pub(crate) use contract::contract_suite;

/// The behaviour every [`KeyStore`] must show; each back end runs it on a fresh store.
#[cfg(test)]
mod contract {
    #![allow(clippy::unwrap_used, clippy::too_many_lines)]

    use super::{AuditEvent, Cursor, KeyStore, ListQuery, StoreError};
    use crate::keys::{Grant, KeyRecord, Status, Timestamp, hash};

    /// Runs every contract check against `store`, which should be empty. Every id and
    /// business is made unique per run, so a shared back end works too.
    pub(crate) async fn contract_suite(store: &dyn KeyStore) {
        let run = crate::keys::new_id("x_");
        store.ping().await.unwrap();
        round_trip(store, &run).await;
        conflicts(store, &run).await;
        revoke(store, &run).await;
        rotate(store, &run).await;
        record_use(store, &run).await;
        list(store, &run).await;
        audit(store, &run).await;
    }

    /// Waits (at most `within`) for `want` on `rx`, skipping other invalidations. Shared by
    /// every back end's own tests.
    pub(crate) async fn expect_invalidation(
        rx: &mut tokio::sync::broadcast::Receiver<super::Invalidation>,
        want: &super::Invalidation,
        within: std::time::Duration,
    ) {
        use tokio::sync::broadcast::error::RecvError;
        tokio::time::timeout(within, async {
            loop {
                match rx.recv().await {
                    Ok(got) if got == *want => return,
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => panic!("channel closed"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {want:?} within {within:?}"));
    }

    pub(crate) fn record(id: &str, business: &str, user: &str, created: i64) -> KeyRecord {
        KeyRecord {
            id: id.to_owned(),
            hash: hash(&format!("secret-of-{id}")),
            name: format!("name of {id}"),
            description: String::new(),
            prefix: "kg_abcdef".to_owned(),
            user_id: user.to_owned(),
            business_id: business.to_owned(),
            scopes: vec![],
            locations: vec!["*".to_owned()],
            grants: vec![],
            created_at: Timestamp(created),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            created_by: "test".to_owned(),
        }
    }

    async fn round_trip(store: &dyn KeyStore, run: &str) {
        let full = KeyRecord {
            id: format!("kid_full_{run}"),
            hash: hash(&format!("full-{run}")),
            name: "Ünïcode name ✓".to_owned(),
            description: "with \"quotes\" and\nnewlines".to_owned(),
            prefix: "kg_Ab12Cd".to_owned(),
            user_id: "user-1".to_owned(),
            business_id: format!("biz-rt-{run}"),
            scopes: vec!["items:read".to_owned(), "items:write".to_owned()],
            locations: vec!["hq".to_owned(), "plant-1".to_owned()],
            grants: vec![
                Grant {
                    role: "editor".to_owned(),
                    locations: vec!["hq".to_owned()],
                },
                Grant {
                    role: "viewer".to_owned(),
                    locations: vec!["*".to_owned()],
                },
            ],
            created_at: Timestamp(1_700_000_000),
            expires_at: Some(Timestamp(1_800_000_000)),
            revoked_at: Some(Timestamp(1_750_000_000)),
            last_used_at: Some(Timestamp(1_740_000_000)),
            created_by: "admin-token".to_owned(),
        };
        store.insert(&full).await.unwrap();
        assert_eq!(store.by_hash(&full.hash).await.unwrap(), Some(full.clone()));
        assert_eq!(store.by_id(&full.id).await.unwrap(), Some(full.clone()));

        let mut sparse = record(&format!("kid_sparse_{run}"), &full.business_id, "u", 5);
        sparse.scopes = vec![];
        sparse.locations = vec![];
        store.insert(&sparse).await.unwrap();
        assert_eq!(store.by_id(&sparse.id).await.unwrap(), Some(sparse.clone()));

        assert_eq!(store.by_hash(&hash("never-stored")).await.unwrap(), None);
        assert_eq!(store.by_id("kid_never_stored").await.unwrap(), None);
    }

    async fn conflicts(store: &dyn KeyStore, run: &str) {
        let original = record(&format!("kid_conf_{run}"), "biz-conf", "u", 10);
        store.insert(&original).await.unwrap();

        let mut same_id = record(&original.id, "biz-conf", "u", 11);
        same_id.hash = hash(&format!("other-{run}"));
        let err = store.insert(&same_id).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict), "same id: {err:?}");

        let mut same_hash = record(&format!("kid_conf2_{run}"), "biz-conf", "u", 12);
        same_hash.hash = original.hash;
        let err = store.insert(&same_hash).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict), "same hash: {err:?}");

        assert_eq!(
            store.by_id(&original.id).await.unwrap(),
            Some(original.clone())
        );
        assert_eq!(store.by_id(&same_hash.id).await.unwrap(), None);
        assert_eq!(store.by_hash(&same_id.hash).await.unwrap(), None);
    }

    async fn revoke(store: &dyn KeyStore, run: &str) {
        let key = record(&format!("kid_rev_{run}"), "biz-rev", "u", 20);
        store.insert(&key).await.unwrap();

        let after = store
            .revoke(&key.id, Timestamp(100))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(after.revoked_at, Some(Timestamp(100)));
        assert_eq!(
            KeyRecord {
                revoked_at: None,
                ..after.clone()
            },
            key,
            "revoke changes nothing but revoked_at"
        );

        let again = store
            .revoke(&key.id, Timestamp(200))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            again.revoked_at,
            Some(Timestamp(100)),
            "first revocation kept"
        );
        let seen = store.by_hash(&key.hash).await.unwrap().unwrap();
        assert_eq!(seen.revoked_at, Some(Timestamp(100)));
        assert_eq!(seen.status(Timestamp(0)), Status::Revoked);

        assert_eq!(
            store.revoke("kid_unknown", Timestamp(1)).await.unwrap(),
            None
        );
    }

    async fn rotate(store: &dyn KeyStore, run: &str) {
        // Plain rotation with grace.
        let old = record(&format!("kid_rot_old_{run}"), "biz-rot", "u", 30);
        store.insert(&old).await.unwrap();
        let new = record(&format!("kid_rot_new_{run}"), "biz-rot", "u", 31);
        let after = store
            .rotate(&old.id, &new, Timestamp(500))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(after.expires_at, Some(Timestamp(500)));
        assert_eq!(
            KeyRecord {
                expires_at: None,
                ..after.clone()
            },
            old
        );
        assert_eq!(store.by_hash(&new.hash).await.unwrap(), Some(new.clone()));
        assert_eq!(store.by_hash(&old.hash).await.unwrap(), Some(after));

        // Unknown old id: nothing inserted.
        let orphan = record(&format!("kid_rot_orphan_{run}"), "biz-rot", "u", 32);
        assert_eq!(
            store
                .rotate("kid_unknown", &orphan, Timestamp(1))
                .await
                .unwrap(),
            None
        );
        assert_eq!(store.by_id(&orphan.id).await.unwrap(), None);

        // A clashing new record: conflict, and the old key is untouched (atomic).
        let mut keep = record(&format!("kid_rot_keep_{run}"), "biz-rot", "u", 33);
        keep.expires_at = Some(Timestamp(9_000));
        store.insert(&keep).await.unwrap();
        let mut clash = record(&format!("kid_rot_clash_{run}"), "biz-rot", "u", 34);
        clash.hash = new.hash;
        let err = store
            .rotate(&keep.id, &clash, Timestamp(600))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict), "{err:?}");
        assert_eq!(store.by_id(&keep.id).await.unwrap(), Some(keep.clone()));
        assert_eq!(store.by_id(&clash.id).await.unwrap(), None);

        // Rotation never extends the old key's life.
        let next = record(&format!("kid_rot_next_{run}"), "biz-rot", "u", 35);
        let after = store
            .rotate(&keep.id, &next, Timestamp(50_000))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(after.expires_at, Some(Timestamp(9_000)));
        let next2 = record(&format!("kid_rot_next2_{run}"), "biz-rot", "u", 36);
        let after = store
            .rotate(&keep.id, &next2, Timestamp(700))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(after.expires_at, Some(Timestamp(700)));
    }

    async fn record_use(store: &dyn KeyStore, run: &str) {
        let a = record(&format!("kid_use_a_{run}"), "biz-use", "u", 40);
        let b = record(&format!("kid_use_b_{run}"), "biz-use", "u", 41);
        store.insert(&a).await.unwrap();
        store.insert(&b).await.unwrap();
        let last =
            |id: String| async move { store.by_id(&id).await.unwrap().unwrap().last_used_at };

        store
            .record_use(&[(a.id.clone(), Timestamp(100))])
            .await
            .unwrap();
        assert_eq!(last(a.id.clone()).await, Some(Timestamp(100)));
        assert_eq!(last(b.id.clone()).await, None);

        store
            .record_use(&[
                (a.id.clone(), Timestamp(50)),
                ("kid_unknown".to_owned(), Timestamp(70)),
                (b.id.clone(), Timestamp(300)),
                (b.id.clone(), Timestamp(250)),
            ])
            .await
            .unwrap();
        assert_eq!(
            last(a.id.clone()).await,
            Some(Timestamp(100)),
            "never goes back"
        );
        assert_eq!(
            last(b.id.clone()).await,
            Some(Timestamp(300)),
            "max within a batch"
        );
        assert_eq!(store.by_id("kid_unknown").await.unwrap(), None);

        store
            .record_use(&[(a.id.clone(), Timestamp(200))])
            .await
            .unwrap();
        assert_eq!(last(a.id.clone()).await, Some(Timestamp(200)));
        store.record_use(&[]).await.unwrap();
    }

    /// Every page of `query`, following cursors; checks pages are full but the last.
    async fn all_pages(store: &dyn KeyStore, query: &ListQuery) -> Vec<KeyRecord> {
        let mut query = query.clone();
        let mut out = Vec::new();
        for _ in 0..1000 {
            let page = store.list(&query).await.unwrap();
            assert!(page.keys.len() <= query.page_size());
            out.extend(page.keys.iter().cloned());
            match page.next_cursor {
                Some(cursor) => {
                    assert_eq!(
                        page.keys.len(),
                        query.page_size(),
                        "only the last page is short"
                    );
                    query.cursor = Some(cursor);
                }
                None => return out,
            }
        }
        panic!("pagination does not end");
    }

    async fn list(store: &dyn KeyStore, run: &str) {
        let biz = format!("biz-list-{run}");
        let other = format!("biz-other-{run}");
        let now = Timestamp(10_000);
        let mut made = Vec::new();
        for i in 0..23_i64 {
            // Several records share a created_at, so the id tiebreak matters.
            let mut r = record(
                &format!("kid_l{i:02}_{run}"),
                &biz,
                ["ann", "bob", "cy"][usize::try_from(i % 3).unwrap()],
                1_000 + i / 3,
            );
            r.name = format!("Key number {i}");
            match i % 4 {
                1 => r.revoked_at = Some(Timestamp(5_000)),
                2 => r.expires_at = Some(Timestamp(if i % 8 == 2 { 10_000 } else { 9_999 })),
                3 => r.expires_at = Some(Timestamp(10_001)),
                _ => {}
            }
            made.push(r);
        }
        made[4].name = "50% off".to_owned();
        made[5].name = "500 things".to_owned();
        made[6].description = "a_b in the description".to_owned();
        made[7].description = "axb in the description".to_owned();
        made[8].name = r"back\slash".to_owned();
        made[9].name = "MiXeD Case Findme".to_owned();
        for r in &made {
            store.insert(r).await.unwrap();
        }
        let stranger = record(&format!("kid_stranger_{run}"), &other, "ann", 1_003);
        store.insert(&stranger).await.unwrap();
        made.push(stranger);

        let mut expected_order = made.clone();
        expected_order.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        let base = ListQuery {
            now,
            limit: 500,
            ..ListQuery::default()
        };

        // Unfiltered: newest first, restricted to this run's records.
        let everything: Vec<KeyRecord> = all_pages(store, &base)
            .await
            .into_iter()
            .filter(|r| r.id.ends_with(run))
            .filter(|r| r.business_id == biz || r.business_id == other)
            .collect();
        assert_eq!(
            ids(&everything),
            ids(&expected_order),
            "newest first, id tiebreak"
        );

        // Each filter, alone and combined, against the in-memory model.
        let queries = [
            ListQuery {
                business_id: Some(biz.clone()),
                ..base.clone()
            },
            ListQuery {
                business_id: Some(other.clone()),
                ..base.clone()
            },
            ListQuery {
                business_id: Some(biz.clone()),
                user_id: Some("bob".into()),
                ..base.clone()
            },
            ListQuery {
                business_id: Some(biz.clone()),
                status: Some(Status::Active),
                ..base.clone()
            },
            ListQuery {
                business_id: Some(biz.clone()),
                status: Some(Status::Expired),
                ..base.clone()
            },
            ListQuery {
                business_id: Some(biz.clone()),
                status: Some(Status::Revoked),
                ..base.clone()
            },
            ListQuery {
                business_id: Some(biz.clone()),
                user_id: Some("cy".into()),
                status: Some(Status::Active),
                ..base.clone()
            },
            ListQuery {
                business_id: Some(biz.clone()),
                search: Some("findme".into()),
                ..base.clone()
            },
            ListQuery {
                business_id: Some(biz.clone()),
                search: Some("KEY NUMBER 1".into()),
                ..base.clone()
            },
            ListQuery {
                business_id: Some(biz.clone()),
                search: Some("50%".into()),
                ..base.clone()
            },
            ListQuery {
                business_id: Some(biz.clone()),
                search: Some("a_b".into()),
                ..base.clone()
            },
            ListQuery {
                business_id: Some(biz.clone()),
                search: Some("%".into()),
                ..base.clone()
            },
            ListQuery {
                business_id: Some(biz.clone()),
                search: Some("_".into()),
                ..base.clone()
            },
            ListQuery {
                business_id: Some(biz.clone()),
                search: Some(r"\".into()),
                ..base.clone()
            },
            ListQuery {
                business_id: Some(biz.clone()),
                search: Some(format!("L07_{run}").to_lowercase()),
                ..base.clone()
            },
            ListQuery {
                business_id: Some(biz.clone()),
                search: Some("nothing matches this".into()),
                ..base.clone()
            },
            ListQuery {
                user_id: Some("ann".into()),
                search: Some(run.to_owned()),
                ..base.clone()
            },
        ];
        for q in &queries {
            let got = all_pages(store, q).await;
            let want: Vec<KeyRecord> = expected_order
                .iter()
                .filter(|r| q.matches(r))
                .cloned()
                .collect();
            assert_eq!(ids(&got), ids(&want), "query {q:?}");
            assert_eq!(got, want, "whole records, query {q:?}");
        }

        // Spot checks the model itself must get right.
        let status = |s| ListQuery {
            business_id: Some(biz.clone()),
            status: Some(s),
            ..base.clone()
        };
        let n = |q: ListQuery| made.iter().filter(|r| q.matches(r)).count();
        assert_eq!(n(status(Status::Revoked)), 6);
        assert_eq!(
            n(status(Status::Expired)),
            6,
            "expires_at <= now is expired"
        );
        assert_eq!(n(status(Status::Active)), 11);
        let search = |s: &str| {
            let q = ListQuery {
                business_id: Some(biz.clone()),
                search: Some(s.into()),
                ..base.clone()
            };
            made.iter()
                .filter(|r| q.matches(r))
                .map(|r| r.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(search("50%"), vec![made[4].id.clone()], "% is literal");
        assert_eq!(search("a_b"), vec![made[6].id.clone()], "_ is literal");
        assert_eq!(search(r"\"), vec![made[8].id.clone()], r"\ is literal");

        // Pagination: several pages, no duplicates, no gaps, at every page size.
        let in_biz: Vec<KeyRecord> = expected_order
            .iter()
            .filter(|r| r.business_id == biz)
            .cloned()
            .collect();
        for limit in [1, 2, 4, 5, 22, 23, 24] {
            let q = ListQuery {
                business_id: Some(biz.clone()),
                limit,
                ..base.clone()
            };
            assert_eq!(
                ids(&all_pages(store, &q).await),
                ids(&in_biz),
                "limit {limit}"
            );
        }
        let q = ListQuery {
            business_id: Some(biz.clone()),
            limit: 23,
            ..base.clone()
        };
        assert_eq!(
            store.list(&q).await.unwrap().next_cursor,
            None,
            "exact fit: no next page"
        );
        let q = ListQuery {
            business_id: Some(biz.clone()),
            limit: 0,
            ..base.clone()
        };
        assert_eq!(
            store.list(&q).await.unwrap().keys.len(),
            1,
            "limit 0 is taken as 1"
        );

        // A cursor from one filter used with another still means "after this row".
        let first = store
            .list(&ListQuery {
                business_id: Some(biz.clone()),
                limit: 3,
                ..base.clone()
            })
            .await
            .unwrap();
        assert_eq!(first.next_cursor, Some(Cursor::after(&in_biz[2]).encode()));

        // Malformed cursors.
        for bad in [
            "",
            "zz",
            "not hex at all",
            &hex::encode("1:abc:kid"),
            &hex::encode("2:5:kid"),
            &hex::encode("1:5:"),
            &hex::encode("1:5"),
        ] {
            let q = ListQuery {
                cursor: Some(bad.to_owned()),
                ..base.clone()
            };
            let err = store.list(&q).await.unwrap_err();
            assert!(
                matches!(err, StoreError::BadCursor),
                "cursor {bad:?}: {err:?}"
            );
        }
    }

    fn ids(records: &[KeyRecord]) -> Vec<&str> {
        records.iter().map(|r| r.id.as_str()).collect()
    }

    async fn audit(store: &dyn KeyStore, run: &str) {
        let a = format!("biz-audit-a-{run}");
        let b = format!("biz-audit-b-{run}");
        let event = |at: i64, action: &str, business: &str, n: u32| AuditEvent {
            at: Timestamp(at),
            actor: "admin-token".to_owned(),
            action: action.to_owned(),
            key_id: format!("kid_{n}_{run}"),
            business_id: business.to_owned(),
            detail: format!("detail {n}"),
        };
        let events = [
            event(100, "created", &a, 1),
            event(200, "created", &b, 2),
            event(300, "rotated", &a, 3),
            event(300, "revoked", &a, 4), // same second: later append is newer
            event(400, "revoked", &b, 5),
        ];
        for e in &events {
            store.append_audit(e).await.unwrap();
        }
        let only_a = store.audit(Some(&a), 10).await.unwrap();
        assert_eq!(
            only_a,
            vec![events[3].clone(), events[2].clone(), events[0].clone()]
        );
        let only_b = store.audit(Some(&b), 1).await.unwrap();
        assert_eq!(only_b, vec![events[4].clone()]);
        let all: Vec<AuditEvent> = store
            .audit(None, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.key_id.ends_with(run))
            .collect();
        assert_eq!(
            all,
            vec![
                events[4].clone(),
                events[3].clone(),
                events[2].clone(),
                events[1].clone(),
                events[0].clone()
            ]
        );
        assert_eq!(store.audit(None, 2).await.unwrap().len(), 2);
        assert!(
            store
                .audit(Some("biz-nobody"), 10)
                .await
                .unwrap()
                .is_empty()
        );
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
