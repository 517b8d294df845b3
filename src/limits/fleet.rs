//! Buckets the whole fleet counts together (`scope: fleet`, the default on Redis),
//! without a Redis round trip per request.
//!
//! How: the bucket itself lives in Redis ([`SharedBuckets`], GCRA on Redis's clock).
//! Each gateway holds a *lease* per bucket: a few tokens taken from it in one batch
//! ([`batch`]: a tenth of the limit, and at most 100 ms of its rate). A request takes
//! one token from the lease (an atomic decrement); when the lease is down to half a
//! batch, one background task tops it up to a batch again, so in the common case no
//! request waits on Redis. Only a request that finds the lease empty waits, for the one
//! fetch in flight for that bucket. When Redis says the bucket is empty, the lease
//! remembers until when, and refuses locally till then.
//!
//! Invariants:
//! - A gateway never holds more than one batch of a bucket, so the fleet lets through at
//!   most one batch per gateway more than the limit in any window (tokens taken from
//!   Redis earlier and spent later), and at most as many fewer (tokens a gateway holds
//!   and does not spend).
//! - Held tokens are void one period after they were taken, so a lease left idle cannot
//!   carry an old burst into a new one.
//! - One fetch per bucket at a time (the lease's mutex): a burst of requests to an empty
//!   lease costs one Redis round trip, not one each.
//! - No global lock: dashmap shards and atomics, as in `local`.
//! - A failed take keeps every request off Redis for a second (`Outage`), so a Redis
//!   that hangs costs one `store.timeout`, not one per request in line.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::routes::Routes;
use super::{Bucket, Exceeded, Seeded, Standing};
use crate::policy::RateLimit;
use crate::store::{Grant, SharedBuckets, StoreError};

/// Every route's leases, by route name.
pub struct Fleet {
    shared: Arc<dyn SharedBuckets>,
    outage: Arc<Outage>,
    routes: Routes<RouteLeases>,
    /// Lease times are microseconds since this.
    epoch: Instant,
}

/// Whether Redis answers takes. After a failed take, no request asks again for
/// [`RETRY_AFTER_FAILURE`]: a Redis that hangs would otherwise cost every request behind
/// a lease's fetch lock a whole `store.timeout`, one after another.
#[derive(Default)]
struct Outage {
    /// No take before then (µs since the epoch).
    quiet_until: AtomicU64,
    /// For one warning when the outage starts and one when it ends.
    down: AtomicBool,
}

/// How long the fleet is not asked after a take failed.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

impl Outage {
    fn failed(&self, e: &StoreError, now: u64) {
        self.quiet_until
            .store(now + micros(RETRY_AFTER_FAILURE), Relaxed);
        if !self.down.swap(true, Relaxed) {
            tracing::warn!(error = %crate::report::Chain(e), "fleet rate limits cannot be counted in Redis; each gateway counts its own until it is back");
        }
    }

    fn answered(&self) {
        if self.down.load(Relaxed) && self.down.swap(false, Relaxed) {
            tracing::warn!("fleet rate limits are counted in Redis again");
        }
    }

    fn quiet(&self, now: u64) -> bool {
        now < self.quiet_until.load(Relaxed)
    }
}

/// One route's leases at one rate.
struct RouteLeases {
    rate: RateLimit,
    batch: u32,
    /// `<route>:<count>/<period ms>`: the front of each of its buckets' names, so a
    /// changed rate counts in a fresh bucket.
    name: String,
    leases: DashMap<Bucket, Arc<Lease>, Seeded>,
}

/// What this gateway holds of one fleet bucket.
#[derive(Default)]
struct Lease {
    tokens: AtomicU32,
    /// From then on (µs since the epoch) the held tokens are void.
    void_at: AtomicU64,
    /// Redis said empty: refuse locally until then (µs since the epoch).
    empty_until: AtomicU64,
    /// The bucket's tokens left in Redis at the last take, and when it is full again:
    /// for the `RateLimit-*` headers.
    fleet_left: AtomicU32,
    full_at: AtomicU64,
    /// A background top-up is under way.
    topping_up: AtomicBool,
    one_fetch: tokio::sync::Mutex<()>,
}

impl Fleet {
    pub fn new(shared: Arc<dyn SharedBuckets>) -> Self {
        Self {
            shared,
            outage: Arc::default(),
            routes: Routes::default(),
            epoch: Instant::now(),
        }
    }

    /// Takes one token of `bucket` for `route`: `None` when the lease is empty and Redis
    /// cannot be asked (the caller counts the bucket itself meanwhile).
    pub async fn check(
        &self,
        route: &str,
        rate: RateLimit,
        bucket: &Bucket,
    ) -> Option<Result<Standing, Exceeded>> {
        let leases = self.route(route, rate);
        let lease = leases.lease(bucket);
        if let Some(verdict) = self.served_by_lease(&leases, &lease, bucket) {
            return Some(verdict);
        }
        if self.outage.quiet(micros_since(self.epoch)) {
            return None;
        }
        // Nothing held: ask Redis, one request per bucket at a time; those behind it
        // find what it brought.
        let _one = lease.one_fetch.lock().await;
        if let Some(verdict) = self.served_by_lease(&leases, &lease, bucket) {
            return Some(verdict);
        }
        if !fetch(
            &*self.shared,
            &self.outage,
            &leases,
            &lease,
            bucket,
            self.epoch,
        )
        .await
        {
            return None;
        }
        let now = micros_since(self.epoch);
        Some(match lease.try_take(now) {
            Some(left) => Ok(leases.standing(&lease, left, now)),
            None => Err(leases.exceeded(lease.empty_for(now).unwrap_or(rate.interval()))),
        })
    }

    /// The verdict the lease alone can give: a token, or "empty until"; `None` when
    /// Redis must be asked. Starts a top-up when the lease runs low.
    fn served_by_lease(
        &self,
        leases: &Arc<RouteLeases>,
        lease: &Arc<Lease>,
        bucket: &Bucket,
    ) -> Option<Result<Standing, Exceeded>> {
        let now = micros_since(self.epoch);
        if let Some(left) = lease.try_take(now) {
            if left <= leases.batch / 2 {
                self.top_up(leases, lease, bucket);
            }
            return Some(Ok(leases.standing(lease, left, now)));
        }
        lease.empty_for(now).map(|wait| Err(leases.exceeded(wait)))
    }

    /// Tops the lease up to a batch in the background, unless that is under way.
    fn top_up(&self, leases: &Arc<RouteLeases>, lease: &Arc<Lease>, bucket: &Bucket) {
        if self.outage.quiet(micros_since(self.epoch)) || lease.topping_up.swap(true, Relaxed) {
            return;
        }
        let (shared, outage, leases, lease, bucket) = (
            Arc::clone(&self.shared),
            Arc::clone(&self.outage),
            Arc::clone(leases),
            Arc::clone(lease),
            bucket.clone(),
        );
        let epoch = self.epoch;
        tokio::spawn(async move {
            let one = lease.one_fetch.lock().await;
            // A failure is the outage's to note; the lease runs down meanwhile, and the
            // request that finds it empty is counted locally (see `Limits::check`).
            fetch(&*shared, &outage, &leases, &lease, &bucket, epoch).await;
            drop(one);
            lease.topping_up.store(false, Relaxed);
        });
    }

    /// The route's leases at `rate`.
    fn route(&self, route: &str, rate: RateLimit) -> Arc<RouteLeases> {
        self.routes.get(route, rate, |rate| RouteLeases {
            rate,
            batch: batch(rate),
            name: format!("{route}:{}/{}", rate.count, rate.per.as_millis()),
            leases: DashMap::default(),
        })
    }

    /// Forgets leases that hold nothing valid and say nothing, and routes without any.
    pub fn sweep(&self) {
        let now = micros_since(self.epoch);
        self.routes.sweep(|r| {
            r.leases.retain(|_, l| {
                now < l.void_at.load(Relaxed)
                    || now < l.empty_until.load(Relaxed)
                    || l.topping_up.load(Relaxed)
            });
            r.leases.shrink_to_fit();
            !r.leases.is_empty()
        });
    }

    /// Leases held, across routes.
    pub fn tracked(&self) -> usize {
        self.routes.total(|r| r.leases.len())
    }
}

/// Tops `lease` up to a batch from Redis; `false` if Redis could not be asked.
async fn fetch(
    shared: &dyn SharedBuckets,
    outage: &Outage,
    leases: &RouteLeases,
    lease: &Lease,
    bucket: &Bucket,
    epoch: Instant,
) -> bool {
    let held = lease.held(micros_since(epoch));
    let want = leases.batch.saturating_sub(held).max(1);
    let name = format!("{}:{}", leases.name, bucket.name());
    let rate = leases.rate;
    match shared.take(&name, rate.interval(), rate.count, want).await {
        Ok(grant) => {
            outage.answered();
            lease.apply(grant, micros_since(epoch), micros(rate.per));
            true
        }
        Err(e) => {
            outage.failed(&e, micros_since(epoch));
            false
        }
    }
}

impl RouteLeases {
    fn lease(&self, bucket: &Bucket) -> Arc<Lease> {
        if let Some(l) = self.leases.get(bucket) {
            return Arc::clone(&l);
        }
        Arc::clone(&self.leases.entry(bucket.clone()).or_default())
    }

    fn standing(&self, lease: &Lease, left: u32, now: u64) -> Standing {
        let fleet_left = lease.fleet_left.load(Relaxed);
        Standing {
            limit: self.rate.count,
            remaining: fleet_left.saturating_add(left).min(self.rate.count),
            reset: Duration::from_micros(lease.full_at.load(Relaxed).saturating_sub(now)),
        }
    }

    fn exceeded(&self, wait: Duration) -> Exceeded {
        Exceeded::after(self.rate.count, wait)
    }
}

impl Lease {
    /// One held token, if there is a valid one; how many are left after it.
    fn try_take(&self, now: u64) -> Option<u32> {
        if now >= self.void_at.load(Relaxed) {
            return None;
        }
        self.tokens
            .fetch_update(Relaxed, Relaxed, |t| t.checked_sub(1))
            .ok()
            .map(|before| before - 1)
    }

    fn held(&self, now: u64) -> u32 {
        if now >= self.void_at.load(Relaxed) {
            0
        } else {
            self.tokens.load(Relaxed)
        }
    }

    /// Redis said empty, and it is not time to ask again yet: how long to wait.
    fn empty_for(&self, now: u64) -> Option<Duration> {
        let until = self.empty_until.load(Relaxed);
        (now < until).then(|| Duration::from_micros(until - now))
    }

    fn apply(&self, grant: Grant, now: u64, period: u64) {
        if grant.granted > 0 {
            if now >= self.void_at.load(Relaxed) {
                self.tokens.store(grant.granted, Relaxed);
            } else {
                self.tokens.fetch_add(grant.granted, Relaxed);
            }
            self.void_at.store(now + period, Relaxed);
            self.empty_until.store(0, Relaxed);
        } else {
            self.empty_until
                .store(now + micros(grant.wait).max(1), Relaxed);
        }
        self.fleet_left.store(grant.remaining, Relaxed);
        self.full_at.store(now + micros(grant.full_in), Relaxed);
    }
}

/// Tokens taken from Redis at a time: a tenth of the limit, and at most 100 ms of its
/// rate, at least one. This is also the most a gateway holds, so the fleet's overshoot
/// is at most one batch per gateway.
pub fn batch(rate: RateLimit) -> u32 {
    let tenth = rate.count / 10;
    let per_100ms = u128::from(rate.count) * 100 / rate.per.as_millis().max(1);
    let per_100ms = u32::try_from(per_100ms).unwrap_or(u32::MAX);
    tenth.min(per_100ms).max(1)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn micros_since(epoch: Instant) -> u64 {
    // + 1: a lease never taken (`void_at` 0) is void even at the epoch itself.
    micros(epoch.elapsed()) + 1
}
