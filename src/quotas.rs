//! Spending keys' quotas (`quota:` on a key or its plan) without a store round trip per
//! request.
//!
//! How: the count of each quota window lives in the store
//! ([`KeyStore::quota_take`]). Each gateway holds a *lease* per window: a few units
//! taken from the store in one atomic step ([`batch`]: a hundredth of the limit, 1 to
//! 100). A request spends one unit of the lease (an atomic decrement); when the lease
//! is down to half a batch, one background task takes another batch, so in the common
//! case no request waits on the store. Only a request that finds the lease empty waits,
//! for the one take in flight. When the store says the window is used up, the lease
//! remembers it (at that limit: an admin raising the limit makes it ask again).
//!
//! Invariants:
//! - Never more than the limit: every unit served was taken from the store's count
//!   first. At most the units gateways hold unspent are missing from what is served
//!   (each holds at most one and a half batches per window); a gateway stopping
//!   (SIGTERM) gives its unspent units back ([`Quotas::give_back`]); one killed loses at
//!   most its lease.
//! - Store unreachable and the lease spent: refused with 503 (the default,
//!   `store.quotas_fail: closed`) or served uncounted (`open`), one warning per outage.
//! - No global lock: dashmap shards and atomics; one take per window at a time (the
//!   lease's mutex), so a burst at an empty lease costs one round trip, not one each.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

use dashmap::DashMap;

use crate::config::QuotasFail;
use crate::keys::{Quota, Timestamp, Window};
use crate::store::{KeyStore, StoreError};

/// Every quota window this gateway holds a lease of, by window name.
pub struct Quotas {
    store: Arc<dyn KeyStore>,
    fail: QuotasFail,
    leases: DashMap<String, Arc<Lease>, foldhash::fast::RandomState>,
    /// For one warning when an outage starts and one when it ends.
    down: AtomicBool,
    /// After a failed take, the store is not asked again before then (ms since the
    /// epoch): a store that hangs costs one `store.timeout`, not one per request.
    quiet_until: AtomicI64,
    /// Set by [`Quotas::give_back`]: no take after it (checked under a lease's lock).
    closing: AtomicBool,
}

/// How long the store is not asked after a take failed.
const QUIET_AFTER_FAILURE_MS: i64 = 1000;

/// Why a request may not spend its key's quota.
#[derive(Debug)]
pub enum Refused {
    /// Used up; refills at `resets_at` (`None`: credits, refilled only by an admin).
    Exceeded { resets_at: Option<Timestamp> },
    /// The store cannot be asked and the lease is spent (`store.quotas_fail: closed`).
    Unavailable(StoreError),
}

/// What this gateway holds of one window.
#[derive(Default)]
struct Lease {
    units: AtomicU64,
    /// The store said the window is used up at this limit (0: it did not).
    spent_at: AtomicU64,
    /// When the window refills (Unix seconds; 0: never, credits).
    resets_at: AtomicU64,
    /// A background take is under way.
    topping_up: AtomicBool,
    one_take: tokio::sync::Mutex<()>,
}

impl Quotas {
    pub fn new(store: Arc<dyn KeyStore>, fail: QuotasFail) -> Self {
        Self {
            store,
            fail,
            leases: DashMap::default(),
            down: AtomicBool::new(false),
            quiet_until: AtomicI64::new(0),
            closing: AtomicBool::new(false),
        }
    }

    /// Spends one unit of `quota`, counted under `counter`, at `now`.
    pub async fn spend(
        self: &Arc<Self>,
        counter: &str,
        quota: &Quota,
        now: Timestamp,
    ) -> Result<(), Refused> {
        let window = quota.window(counter, now);
        let lease = self.lease(&window);
        if let Some(verdict) = self.served_by_lease(&lease, &window, quota) {
            return verdict;
        }
        // Nothing held: ask the store, one take per window at a time; those behind it
        // find what it brought.
        let _one = lease.one_take.lock().await;
        if let Some(verdict) = self.served_by_lease(&lease, &window, quota) {
            return verdict;
        }
        let taken = if self.quiet() {
            Err(StoreError::unavailable(
                "the store failed a quota take less than a second ago",
            ))
        } else {
            // One unit of what comes is this request's own: a request arriving meanwhile
            // cannot spend the batch and leave this one refused with quota left.
            self.take(&lease, &window, quota, true).await
        };
        match taken {
            Ok(true) => Ok(()),
            Ok(false) => Err(Refused::Exceeded {
                resets_at: window.resets_at,
            }),
            Err(_) if self.fail == QuotasFail::Open => Ok(()),
            Err(e) => Err(Refused::Unavailable(e)),
        }
    }

    /// Gives every unspent unit back to the store (on shutdown), so a restart loses
    /// none. Windows that have reset are dropped: their units are worth nothing now.
    pub async fn give_back(&self) {
        self.closing.store(true, Relaxed);
        let now = Timestamp::now();
        let held: Vec<(String, Arc<Lease>)> = self
            .leases
            .iter()
            .filter(|e| !e.value().ended(now))
            .map(|e| (e.key().clone(), Arc::clone(e.value())))
            .collect();
        for (window, lease) in held {
            // A take in flight holds the lock: what it brings is given back too.
            let _one = lease.one_take.lock().await;
            let n = lease.units.swap(0, Relaxed);
            if n == 0 {
                continue;
            }
            if let Err(e) = self.store.quota_give_back(&window, n).await {
                tracing::warn!(error = %crate::report::Chain(&e), units = n, "could not give back a quota lease; those units stay spent");
            }
        }
    }

    /// Forgets leases of windows that have reset, and empty ones no take is filling (a
    /// take in flight holds the lease's lock: its units must land in the map's lease).
    pub fn sweep(&self) {
        let now = Timestamp::now();
        self.leases.retain(|_, l| {
            let busy = l.topping_up.load(Relaxed) || l.one_take.try_lock().is_err();
            busy || (!l.ended(now) && l.units.load(Relaxed) > 0)
        });
        self.leases.shrink_to_fit();
    }

    /// Leases held (for tests).
    pub fn tracked(&self) -> usize {
        self.leases.len()
    }

    fn quiet(&self) -> bool {
        crate::keys::now_ms() < self.quiet_until.load(Relaxed)
    }

    fn lease(&self, window: &Window) -> Arc<Lease> {
        if let Some(l) = self.leases.get(&window.name) {
            return Arc::clone(&l);
        }
        let entry = self.leases.entry(window.name.clone()).or_insert_with(|| {
            let l = Lease::default();
            let at = window
                .resets_at
                .map_or(0, |t| u64::try_from(t.0).unwrap_or(0));
            l.resets_at.store(at, Relaxed);
            Arc::new(l)
        });
        Arc::clone(&entry)
    }

    /// The verdict the lease alone can give; `None` when the store must be asked.
    /// Starts a top-up when the lease runs low.
    fn served_by_lease(
        self: &Arc<Self>,
        lease: &Arc<Lease>,
        window: &Window,
        quota: &Quota,
    ) -> Option<Result<(), Refused>> {
        if lease.try_spend() {
            if lease.units.load(Relaxed) <= batch(quota.limit) / 2 {
                self.top_up(lease, window, quota);
            }
            return Some(Ok(()));
        }
        let spent_at = lease.spent_at.load(Relaxed);
        (spent_at != 0 && quota.limit <= spent_at).then_some(Err(Refused::Exceeded {
            resets_at: window.resets_at,
        }))
    }

    fn top_up(self: &Arc<Self>, lease: &Arc<Lease>, window: &Window, quota: &Quota) {
        let spent = lease.spent_at.load(Relaxed);
        if (spent != 0 && quota.limit <= spent)
            || self.quiet()
            || lease.topping_up.swap(true, Relaxed)
        {
            return;
        }
        let (me, lease, window, quota) = (
            Arc::clone(self),
            Arc::clone(lease),
            window.clone(),
            quota.clone(),
        );
        tokio::spawn(async move {
            let one = lease.one_take.lock().await;
            // A failure is noted by `take`; the request that finds the lease empty
            // meets `quotas_fail`.
            let _ = me.take(&lease, &window, &quota, false).await;
            drop(one);
            lease.topping_up.store(false, Relaxed);
        });
    }

    /// Takes a batch from the store into `lease` (the caller holds `one_take`); with
    /// `one_for_me`, keeps one unit out of the lease for the caller and says whether
    /// there was one. After [`Quotas::give_back`] began, takes nothing: what it took
    /// would be lost with the process.
    async fn take(
        &self,
        lease: &Lease,
        window: &Window,
        quota: &Quota,
        one_for_me: bool,
    ) -> Result<bool, StoreError> {
        if self.closing.load(Relaxed) {
            return Err(StoreError::unavailable("the gateway is shutting down"));
        }
        let want = batch(quota.limit);
        match self
            .store
            .quota_take(&window.name, quota.limit, want, window.resets_at)
            .await
        {
            Ok(grant) => {
                if self.down.swap(false, Relaxed) {
                    tracing::warn!("quotas are counted in the store again");
                }
                let mine = one_for_me && grant.granted > 0;
                lease
                    .units
                    .fetch_add(grant.granted - u64::from(mine), Relaxed);
                if grant.granted < want && grant.used >= quota.limit {
                    lease.spent_at.store(quota.limit, Relaxed);
                } else {
                    lease.spent_at.store(0, Relaxed);
                }
                Ok(mine)
            }
            Err(e) => {
                self.quiet_until
                    .store(crate::keys::now_ms() + QUIET_AFTER_FAILURE_MS, Relaxed);
                if !self.down.swap(true, Relaxed) {
                    let then = match self.fail {
                        QuotasFail::Closed => "refused with 503 once a gateway's lease is spent",
                        QuotasFail::Open => "served uncounted once a gateway's lease is spent",
                    };
                    tracing::warn!(error = %crate::report::Chain(&e), "quotas cannot be counted in the store; keys with a quota are {then}");
                }
                Err(e)
            }
        }
    }
}

impl Lease {
    fn try_spend(&self) -> bool {
        self.units
            .fetch_update(Relaxed, Relaxed, |u| u.checked_sub(1))
            .is_ok()
    }

    fn ended(&self, now: Timestamp) -> bool {
        let at = self.resets_at.load(Relaxed);
        at != 0 && u64::try_from(now.0).unwrap_or(0) >= at
    }
}

/// `quota` as `GET /v1/keys/{id}` shows it: as set, plus `remaining` (what gateways
/// hold unspent counts as used) and `resets_at` (`null` for credits); `plan` names the
/// plan it comes from, if it is not the key's own.
pub async fn standing(
    store: &dyn KeyStore,
    quota: &Quota,
    key: &crate::keys::KeyRecord,
    now: Timestamp,
) -> Result<serde_json::Value, StoreError> {
    let window = quota.window(&key.quota_counter, now);
    let used = store.quota_used(&window.name).await?;
    let mut shown = quota.to_json();
    shown["remaining"] = quota.limit.saturating_sub(used).into();
    shown["resets_at"] = window.resets_at.map(Timestamp::to_rfc3339).into();
    if key.quota.is_none() {
        shown["plan"] = key.plan.clone().into();
    }
    Ok(shown)
}

/// Units taken from the store at a time: a hundredth of the limit, 1 to 100. A gateway
/// holds at most one and a half of them per window: the bound on what the fleet's
/// leases keep from being served until they are spent or given back.
pub fn batch(limit: u64) -> u64 {
    (limit / 100).clamp(1, 100)
}

#[cfg(test)]
mod tests;
