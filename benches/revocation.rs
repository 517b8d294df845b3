//! The fleet registry on a real local `redis-server`: how long a revoke made through one
//! `RedisStore` takes to reach another's invalidation feed (p50/p99/max over 200
//! revokes), and what a cache-miss look-up (`by_hash`: one `HGETALL`) costs.
//! Run with `cargo bench --bench revocation`. Under `cargo test --benches` it measures
//! 5 revokes and runs each criterion bench once, as a smoke test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use keygate::keys::{self, KeyRecord, Timestamp};
use keygate::store::redis::testing::RedisServer;
use keygate::store::redis::{RedisStore, Target};
use keygate::store::{Invalidation, KeyStore};
use tokio::sync::broadcast;

fn record(n: usize) -> KeyRecord {
    KeyRecord {
        identity: keygate::headers::Memo::default(),
        id: keys::new_id("kg_"),
        hash: keys::hash(&format!("bench-secret-{n}-{}", keys::new_id("x_"))),
        name: format!("bench {n}"),
        description: String::new(),
        prefix: "kg_bench".to_owned(),
        user_id: "u".to_owned(),
        business_id: "bench".to_owned(),
        scopes: vec!["items:read".to_owned()],
        locations: vec!["*".to_owned()],
        grants: vec![],
        created_at: Timestamp::now(),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        created_by: "bench".to_owned(),
        enabled: true,
        metadata: keygate::keys::Metadata::new(),
        allowed_ips: Vec::new(),
        updated_at: None,
        limits: keygate::keys::KeyLimits::new(),
        plan: None,
        quota: None,
        quota_counter: String::new(),
    }
}

async fn heard(rx: &mut broadcast::Receiver<Invalidation>, want: &Invalidation) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while rx.recv().await.ok().as_ref() != Some(want) {}
    })
    .await
    .expect("invalidation not heard within 5 s");
}

async fn ready(store: &RedisStore) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "redis never became ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let i = (sorted.len() * p).div_ceil(100).saturating_sub(1);
    sorted.get(i).copied().unwrap_or_default()
}

/// Revoke through `a`, measure until `b`'s feed names the hash.
async fn revocation_lag(a: &RedisStore, b: &RedisStore, n: usize) {
    let mut rx = b.invalidations();
    let mut lags = Vec::with_capacity(n);
    for i in 0..n {
        let key = record(i);
        a.insert(&key).await.unwrap();
        heard(&mut rx, &Invalidation::Key(key.hash)).await;
        let started = Instant::now();
        a.revoke(&key.id, Timestamp::now()).await.unwrap().unwrap();
        heard(&mut rx, &Invalidation::Key(key.hash)).await;
        lags.push(started.elapsed());
    }
    lags.sort();
    println!(
        "fleet revocation lag over {n} revokes (store A revoke → store B feed): p50 {:?}  p99 {:?}  max {:?}",
        percentile(&lags, 50),
        percentile(&lags, 99),
        lags.last().copied().unwrap_or_default()
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = RedisServer::start();
    let target = Target::Single(server.url());
    let timeout = Duration::from_millis(500);
    let (a, b, key) = rt.block_on(async {
        let a = RedisStore::open(&target, timeout).unwrap();
        let b = RedisStore::open(&target, timeout).unwrap();
        ready(&a).await;
        ready(&b).await;
        revocation_lag(&a, &b, if full { 200 } else { 5 }).await;
        let key = record(0);
        a.insert(&key).await.unwrap();
        (a, b, key)
    });

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("redis: cache-miss look-up (by_hash, found)", |bench| {
        bench.iter(|| black_box(rt.block_on(b.by_hash(&key.hash)).unwrap()));
    });
    let unknown = keys::hash("never stored");
    c.bench_function("redis: cache-miss look-up (by_hash, unknown)", |bench| {
        bench.iter(|| black_box(rt.block_on(b.by_hash(&unknown)).unwrap()));
    });
    c.final_summary();
    drop((a, b));
    drop(server);
}
