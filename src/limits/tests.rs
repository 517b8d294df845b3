#![allow(clippy::unwrap_used)]
//! The façade's choices (which bucket, who counts it, what happens when Redis is away);
//! the fleet's bound against a shared bucket with Redis's arithmetic. The real Redis
//! runs in `tests/it/limits.rs`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::*;
use crate::policy::RateLimit;
use crate::store::contract::record;
use crate::store::{Grant, StoreError};

fn limit(count: u32, per_secs: u64, per: Per, scope: Option<Scope>) -> RouteLimit {
    RouteLimit {
        rate: RateLimit {
            count,
            per: Duration::from_secs(per_secs),
        },
        per,
        scope,
    }
}

fn keyed(id: &str, business: &str, user: &str, per: Per) -> Bucket {
    let r = Arc::new(record(id, business, user, 0));
    Bucket::Key(r.hash).widened(per, Some(&r))
}

#[tokio::test]
async fn user_and_business_buckets_are_shared_by_their_keys() {
    let limits = Limits::default();
    let by_user = limit(2, 3600, Per::User, None);
    assert!(
        limits
            .check("r", by_user, keyed("a", "acme", "ann", Per::User))
            .await
            .is_ok()
    );
    assert!(
        limits
            .check("r", by_user, keyed("b", "acme", "ann", Per::User))
            .await
            .is_ok()
    );
    assert!(
        limits
            .check("r", by_user, keyed("c", "acme", "ann", Per::User))
            .await
            .is_err(),
        "three keys of one user share two tokens"
    );
    assert!(
        limits
            .check("r", by_user, keyed("d", "acme", "bob", Per::User))
            .await
            .is_ok(),
        "another user has their own"
    );
    assert!(
        limits
            .check("r", by_user, keyed("e", "other", "ann", Per::User))
            .await
            .is_ok(),
        "so has the same user id in another business"
    );
    let by_business = limit(1, 3600, Per::Business, None);
    assert!(
        limits
            .check("s", by_business, keyed("a", "acme", "ann", Per::Business))
            .await
            .is_ok()
    );
    assert!(
        limits
            .check("s", by_business, keyed("f", "acme", "cat", Per::Business))
            .await
            .is_err()
    );
}

#[test]
fn bucket_names_are_unambiguous_and_hold_no_secret() {
    let a = keyed("a", "x:y", "z", Per::User);
    let b = keyed("b", "x", "y:z", Per::User);
    assert_ne!(a.name(), b.name());
    assert_ne!(a, b);
    let k = keyed("k", "acme", "ann", Per::Key);
    assert_eq!(k.name().len(), 2 + 32, "{}", k.name());
    assert!(!k.name().contains("secret-of"), "{}", k.name());
}

/// Redis's take script, in memory: the same GCRA arithmetic on this process's clock.
struct Memory {
    tat: Mutex<Option<Instant>>,
    calls: std::sync::atomic::AtomicU32,
    down: AtomicBool,
}

impl Memory {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            tat: Mutex::new(None),
            calls: 0.into(),
            down: false.into(),
        })
    }
}

#[async_trait::async_trait]
impl SharedBuckets for Memory {
    async fn take(
        &self,
        _bucket: &str,
        interval: Duration,
        burst: u32,
        want: u32,
    ) -> Result<Grant, StoreError> {
        self.calls.fetch_add(1, Relaxed);
        if self.down.load(Relaxed) {
            return Err(StoreError::unavailable("down"));
        }
        let now = Instant::now();
        let mut tat = self.tat.lock().unwrap();
        let t = tat.unwrap_or(now).max(now);
        let avail = u32::try_from((now + interval * burst - t).as_nanos() / interval.as_nanos())
            .unwrap_or(u32::MAX);
        let n = want.min(avail);
        let t = t + interval * n;
        *tat = Some(t);
        Ok(Grant {
            granted: n,
            remaining: avail - n,
            wait: if n == 0 {
                (t + interval) - (now + interval * burst)
            } else {
                Duration::ZERO
            },
            full_in: t - now,
        })
    }
}

#[tokio::test]
async fn three_gateways_on_one_fleet_bucket_let_the_limit_through_not_three_times_it() {
    let shared = Memory::new();
    let gateways: Vec<Limits> = (0..3).map(|_| Limits::fleet(shared.clone())).collect();
    let per_business = limit(100, 3600, Per::Business, None);
    let mut allowed = 0;
    for i in 0..600 {
        let g = &gateways[i % 3];
        if g.check(
            "r",
            per_business,
            keyed(&format!("k{i}"), "acme", "ann", Per::Business),
        )
        .await
        .is_ok()
        {
            allowed += 1;
        }
        tokio::task::yield_now().await; // let top-ups run
    }
    let batch = fleet::batch(per_business.rate);
    assert!(
        (100 - 3 * batch..=100).contains(&allowed),
        "{allowed} of 600 through three gateways sharing 100 (batch {batch})"
    );
    assert!(
        shared.calls.load(Relaxed) < 600,
        "refusals are answered from the lease, not by asking Redis each time"
    );
}

#[tokio::test]
async fn a_lease_serves_most_requests_without_asking_redis() {
    let shared = Memory::new();
    let limits = Limits::fleet(shared.clone());
    let fast = limit(1_000_000, 1, Per::Key, None);
    let bucket = keyed("k", "acme", "ann", Per::Key);
    for _ in 0..10_000 {
        assert!(limits.check("r", fast, bucket.clone()).await.is_ok());
        tokio::task::yield_now().await;
    }
    let calls = shared.calls.load(Relaxed);
    assert!(
        calls <= 10_000 / (fleet::batch(fast.rate) / 2) + 2,
        "{calls} takes for 10,000 requests"
    );
}

#[tokio::test]
async fn scope_gateway_is_counted_here_and_an_unreachable_redis_falls_back_to_here() {
    let shared = Memory::new();
    let limits = Limits::fleet(shared.clone());
    let here = limit(1, 3600, Per::Key, Some(Scope::Gateway));
    let bucket = keyed("k", "acme", "ann", Per::Key);
    assert!(limits.check("r", here, bucket.clone()).await.is_ok());
    assert!(limits.check("r", here, bucket.clone()).await.is_err());
    assert_eq!(
        shared.calls.load(Relaxed),
        0,
        "scope: gateway never asks Redis"
    );

    shared.down.store(true, Relaxed);
    let fleet = limit(2, 3600, Per::Key, None);
    let mut verdicts = Vec::new();
    for _ in 0..3 {
        verdicts.push(limits.check("s", fleet, bucket.clone()).await.is_ok());
    }
    assert_eq!(
        verdicts,
        [true, true, false],
        "counted by this gateway meanwhile"
    );
}

#[tokio::test]
async fn the_standing_counts_down_and_a_refusal_says_when() {
    let limits = Limits::default();
    let l = limit(3, 60, Per::Key, None);
    let b = keyed("k", "acme", "ann", Per::Key);
    let first = limits.check("r", l, b.clone()).await.unwrap();
    assert_eq!((first.limit, first.remaining), (3, 2));
    assert_eq!(first.reset, Duration::from_secs(20));
    limits.check("r", l, b.clone()).await.unwrap();
    limits.check("r", l, b.clone()).await.unwrap();
    let over = limits.check("r", l, b).await.unwrap_err();
    assert_eq!(over.standing.remaining, 0);
    assert!(over.wait > Duration::from_secs(19) && over.wait <= Duration::from_secs(20));
}
