//! A store the server opens on first use, and keeps trying to open until it can.
//!
//! Job: let `keygate serve` start when its embedded store cannot be opened yet (a
//! missing mount, a full or read-only disk): public routes serve, keyed requests get
//! 503 `auth_unavailable`, `/readyz` says not ready, and the moment the file can be
//! opened the gateway recovers without a restart.
//!
//! Invariants: while closed, every call is [`StoreError::Unavailable`] (never a made-up
//! answer, so the proxy fails closed); open attempts are spaced by [`RETRY_EVERY`] so a
//! flood of requests does not become a flood of `open` calls; once open, the inner
//! store's invalidations are forwarded and an [`Invalidation::All`] is sent first, since
//! nothing cached before the store opened can be trusted to be current.
//! The CLI does not use this: a command that cannot open its store should fail at once.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::embedded::EmbeddedStore;
use super::{
    AuditEvent, CHANNEL_CAPACITY, Invalidation, KeyStore, ListQuery, Page, QuotaGrant, StoreError,
};
use crate::keys::{KeyHash, KeyRecord, Timestamp};
use crate::report::Chain;

/// The shortest gap between two attempts to open the store.
pub const RETRY_EVERY: Duration = Duration::from_millis(250);

/// What the last failed attempt said, and when it was made.
struct Attempt {
    at: Instant,
    error: Arc<StoreError>,
}

/// The last attempt's error, handed to every call until the next attempt: the cause of
/// each call's [`StoreError::Unavailable`], so the open error stays a `source()`, not a string.
#[derive(Debug)]
struct Failed(Arc<StoreError>);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the last attempt to open it failed")
    }
}

impl std::error::Error for Failed {
    /// Below the open error's own "the key store is unavailable", which the call's error
    /// already says: the chain prints it once.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.0 {
            StoreError::Unavailable { source } => Some(&**source),
            other => Some(other),
        }
    }
}

/// An [`EmbeddedStore`] opened lazily, with retries.
pub struct DeferredEmbedded {
    path: PathBuf,
    inner: OnceLock<EmbeddedStore>,
    last: Mutex<Option<Attempt>>,
    tx: broadcast::Sender<Invalidation>,
}

impl DeferredEmbedded {
    /// Tries to open `path` now; a failure is logged and retried on later calls.
    pub fn new(path: PathBuf) -> Self {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        let store = Self {
            path,
            inner: OnceLock::new(),
            last: Mutex::new(None),
            tx,
        };
        if let Err(e) = store.get() {
            tracing::warn!(path = %store.path.display(), error = %Chain(&e), "cannot open the key store yet; keyed requests get 503 until it opens");
        }
        store
    }

    fn get(&self) -> Result<&EmbeddedStore, StoreError> {
        if let Some(s) = self.inner.get() {
            return Ok(s);
        }
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = self.inner.get() {
            return Ok(s);
        }
        if let Some(a) = last.as_ref()
            && a.at.elapsed() < RETRY_EVERY
        {
            return Err(StoreError::unavailable(Failed(Arc::clone(&a.error))));
        }
        match EmbeddedStore::open(&self.path) {
            Ok(opened) => {
                let store = self.inner.get_or_init(|| opened);
                self.forward(store);
                if last.is_some() {
                    tracing::info!(path = %self.path.display(), "key store opened");
                }
                *last = None;
                Ok(store)
            }
            Err(e) => {
                let e = Arc::new(e);
                *last = Some(Attempt {
                    at: Instant::now(),
                    error: Arc::clone(&e),
                });
                Err(StoreError::unavailable(Failed(e)))
            }
        }
    }

    /// Relays the opened store's invalidations, after an `All` for anything cached before.
    fn forward(&self, store: &EmbeddedStore) {
        let _ = self.tx.send(Invalidation::All);
        let mut rx = store.invalidations();
        let tx = self.tx.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(inv) => {
                            let _ = tx.send(inv);
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let _ = tx.send(Invalidation::All);
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            });
        }
    }
}

#[async_trait::async_trait]
impl KeyStore for DeferredEmbedded {
    async fn by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        self.get()?.by_hash(hash).await
    }

    async fn by_id(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.get()?.by_id(id).await
    }

    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
        self.get()?.insert(record).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        self.get()?.list(query).await
    }

    async fn revoke(&self, id: &str, at: Timestamp) -> Result<Option<KeyRecord>, StoreError> {
        self.get()?.revoke(id, at).await
    }

    async fn rotate(
        &self,
        old_id: &str,
        new: &KeyRecord,
        old_expires_at: Timestamp,
    ) -> Result<Option<KeyRecord>, StoreError> {
        self.get()?.rotate(old_id, new, old_expires_at).await
    }

    async fn replace(
        &self,
        before: &KeyRecord,
        after: &KeyRecord,
    ) -> Result<Option<KeyRecord>, StoreError> {
        self.get()?.replace(before, after).await
    }

    async fn record_use(&self, uses: &[(String, Timestamp)]) -> Result<(), StoreError> {
        self.get()?.record_use(uses).await
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.get()?.append_audit(event).await
    }

    async fn audit(
        &self,
        business_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.get()?.audit(business_id, limit).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.get()?.ping().await
    }

    async fn quota_take(
        &self,
        window: &str,
        limit: u64,
        want: u64,
        expires_at: Option<Timestamp>,
    ) -> Result<QuotaGrant, StoreError> {
        self.get()?
            .quota_take(window, limit, want, expires_at)
            .await
    }

    async fn quota_give_back(&self, window: &str, n: u64) -> Result<(), StoreError> {
        self.get()?.quota_give_back(window, n).await
    }

    async fn quota_used(&self, window: &str) -> Result<u64, StoreError> {
        self.get()?.quota_used(window).await
    }

    async fn add_usage(
        &self,
        counts: &[crate::usage::Count],
        retention: std::time::Duration,
    ) -> Result<(), StoreError> {
        self.get()?.add_usage(counts, retention).await
    }

    async fn usage(
        &self,
        series: &crate::store::UsageSeries,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, String, u64)>, StoreError> {
        self.get()?.usage(series, from, to).await
    }

    async fn push_event(
        &self,
        event: &crate::events::Event,
        once: Option<&crate::events::Once>,
    ) -> Result<Option<u64>, StoreError> {
        self.get()?.push_event(event, once).await
    }

    async fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<crate::events::Page, StoreError> {
        self.get()?.events_after(after, limit).await
    }

    async fn recent_events(
        &self,
        business_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<crate::events::Stored>, StoreError> {
        self.get()?.recent_events(business_id, limit).await
    }

    async fn event_cursor(&self, url: &str) -> Result<Option<u64>, StoreError> {
        self.get()?.event_cursor(url).await
    }

    async fn set_event_cursor(&self, url: &str, seq: u64) -> Result<(), StoreError> {
        self.get()?.set_event_cursor(url, seq).await
    }

    async fn record_delivery(
        &self,
        seq: u64,
        delivery: &crate::events::Delivery,
    ) -> Result<(), StoreError> {
        self.get()?.record_delivery(seq, delivery).await
    }

    async fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        self.get()?.lease(name, holder, ttl).await
    }

    fn invalidations(&self) -> broadcast::Receiver<Invalidation> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::DeferredEmbedded;
    use crate::report::Chain;

    /// The first call attempts the open; the next, inside `RETRY_EVERY`, gets the same
    /// failure again. Either way the chain names the cause once, and says "unavailable" once.
    #[test]
    fn a_failed_open_is_reported_once_per_chain_first_time_and_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").expect("write a file");
        let store = DeferredEmbedded::new(file.join("sub").join("keygate.db"));
        for _ in 0..2 {
            let e = store
                .get()
                .err()
                .expect("a folder under a file cannot open");
            let line = Chain(&e).to_string();
            assert_eq!(
                line.matches("the key store is unavailable").count(),
                1,
                "{line}"
            );
            assert_eq!(line.matches("Not a directory").count(), 1, "{line}");
            assert!(line.contains(&file.display().to_string()), "{line}");
        }
    }
}
