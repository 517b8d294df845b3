//! Quota windows in `SQLite`: the `quota_use` table behind
//! [`KeyStore::quota_take`](crate::store::KeyStore::quota_take) for the embedded store.
//!
//! Invariants: a take is one `BEGIN IMMEDIATE` transaction, so processes sharing the
//! file never pass a limit together; counts survive restarts (the file is the count);
//! windows more than a day past their reset are deleted as takes come (credits, whose
//! windows have no end, are kept).

use rusqlite::OptionalExtension;

use super::{EmbeddedStore, classify};
use crate::keys::Timestamp;
use crate::store::{QuotaGrant, StoreError};

impl EmbeddedStore {
    pub(super) async fn take_quota(
        &self,
        window: &str,
        limit: u64,
        want: u64,
        expires_at: Option<Timestamp>,
    ) -> Result<QuotaGrant, StoreError> {
        let window = window.to_owned();
        let expires = expires_at.map(|t| t.0.saturating_add(crate::store::QUOTA_KEPT_AFTER_RESET));
        self.write(move |tx| {
            let now = Timestamp::now().0;
            tx.execute("DELETE FROM quota_use WHERE expires_at < ?1", [now])
                .map_err(classify)?;
            let used: u64 = tx
                .query_row(
                    "SELECT used FROM quota_use WHERE name = ?1",
                    [&window],
                    |r| r.get::<_, i64>(0),
                )
                .optional()
                .map_err(classify)?
                .map_or(0, |u| u64::try_from(u).unwrap_or(0));
            let granted = want.min(limit.saturating_sub(used));
            let used = used + granted;
            if granted > 0 {
                tx.execute(
                    "INSERT INTO quota_use (name, used, expires_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (name) DO UPDATE SET used = ?2, expires_at = ?3",
                    rusqlite::params![window, i64::try_from(used).unwrap_or(i64::MAX), expires],
                )
                .map_err(classify)?;
            }
            Ok((QuotaGrant { granted, used }, Vec::new()))
        })
        .await
    }

    pub(super) async fn give_back_quota(&self, window: &str, n: u64) -> Result<(), StoreError> {
        let window = window.to_owned();
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.write(move |tx| {
            tx.execute(
                "UPDATE quota_use SET used = max(0, used - ?2) WHERE name = ?1",
                rusqlite::params![window, n],
            )
            .map_err(classify)?;
            Ok(((), Vec::new()))
        })
        .await
    }

    pub(super) async fn quota_used_in(&self, window: &str) -> Result<u64, StoreError> {
        let window = window.to_owned();
        self.read(move |conn| {
            conn.query_row(
                "SELECT used FROM quota_use WHERE name = ?1",
                [&window],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map_err(classify)
            .map(|u| u.map_or(0, |u| u64::try_from(u).unwrap_or(0)))
        })
        .await
    }
}
