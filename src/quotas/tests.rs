//! Leases against a real embedded store: two `Quotas` on one file stand for two
//! gateways of one registry.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use super::*;
use crate::keys::QuotaSpec;
use crate::store::embedded::EmbeddedStore;

fn two_gateways() -> (
    tempfile::TempDir,
    Arc<dyn KeyStore>,
    Arc<Quotas>,
    Arc<Quotas>,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keygate.db");
    let a: Arc<dyn KeyStore> = Arc::new(EmbeddedStore::open(&path).unwrap());
    let b: Arc<dyn KeyStore> = Arc::new(EmbeddedStore::open(&path).unwrap());
    let qa = Arc::new(Quotas::new(Arc::clone(&a), QuotasFail::Closed));
    let qb = Arc::new(Quotas::new(b, QuotasFail::Closed));
    (dir, a, qa, qb)
}

async fn served(q: &Arc<Quotas>, quota: &Quota, n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        if q.spend("kid_q", quota, Timestamp::now()).await.is_ok() {
            ok += 1;
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_serve_exactly_the_limit_and_a_stop_gives_its_lease_back() {
    let (_dir, store, a, b) = two_gateways();
    let quota = QuotaSpec::parse("1000/1d").unwrap().to_quota(0, None);
    // Alternating in steps, as a balancer would, until both refuse.
    let mut total = 0;
    for _ in 0..60 {
        total += served(&a, &quota, 10).await + served(&b, &quota, 10).await;
    }
    assert_eq!(total, 1000, "exact once every lease is spent");
    let refused = a.spend("kid_q", &quota, Timestamp::now()).await;
    let Err(Refused::Exceeded { resets_at }) = refused else {
        panic!("{refused:?}");
    };
    assert_eq!(resets_at, quota.window("kid_q", Timestamp::now()).resets_at);

    // A gateway holding part of a lease gives it back when it stops.
    let other = QuotaSpec::parse("1000/1h").unwrap().to_quota(0, None);
    assert_eq!(served(&a, &other, 3).await, 3);
    let window = other.window("kid_q", Timestamp::now()).name;
    assert!(
        store.quota_used(&window).await.unwrap() > 3,
        "a lease is held"
    );
    // A top-up in flight, if any, lands before the give-back (it waits for the take).
    a.give_back().await;
    assert_eq!(store.quota_used(&window).await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_never_refill_by_themselves_and_a_raised_limit_serves_again() {
    let (_dir, _store, a, _b) = two_gateways();
    let credits = QuotaSpec::credits(5).unwrap().to_quota(42, None);
    assert_eq!(served(&a, &credits, 8).await, 5);
    let refused = a.spend("kid_q", &credits, Timestamp::now()).await;
    assert!(
        matches!(refused, Err(Refused::Exceeded { resets_at: None })),
        "{refused:?}"
    );
    // Same window, higher limit (an admin's edit of a periodic quota): served again.
    let wider = Quota {
        limit: 8,
        ..credits.clone()
    };
    assert_eq!(served(&a, &wider, 5).await, 3);
    // Credits set again (a refill) count in a fresh window.
    let refilled = QuotaSpec::credits(5).unwrap().to_quota(43, Some(&credits));
    assert_eq!(served(&a, &refilled, 6).await, 5);
}

#[test]
fn batches_are_a_hundredth_of_the_limit_from_1_to_100() {
    assert_eq!(batch(1), 1);
    assert_eq!(batch(1000), 10);
    assert_eq!(batch(1_000_000), 100);
}
