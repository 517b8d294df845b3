//! Cache-miss and cache-hit cost against a store of any size.
//!
//! ```text
//! cargo run --release --example store_scale -- --config FILE --keys keys.txt [--sample 5000]
//! ```
//! Takes the first `--sample` secrets of `--keys` (made by `bulk_keys`) and measures:
//! - a cache miss: `KeyStore::by_hash`, the one query (embedded: one indexed `SELECT`;
//!   Redis: one command) the proxy makes for an uncached key; p50, p99 per call;
//! - a cache hit: `Cache::lookup` once those keys are cached; mean per call.
//!
//! `benches/scale.sh` runs it at 1,000 and at 1,000,000 keys in the store.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use keygate::cache::{Cache, Lookup};
use keygate::config::{CacheSettings, Config};
use keygate::keys::{self, KeyHash};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut config = None;
    let mut keys_file = PathBuf::from("keys.txt");
    let mut sample = 5000usize;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap();
        match flag.as_str() {
            "--config" => config = Some(PathBuf::from(v)),
            "--keys" => keys_file = v.into(),
            "--sample" => sample = v.parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let cfg = Config::load(&config.unwrap())?;
    let store = keygate::app::open_store(&cfg.store)?;
    let hashes: Vec<KeyHash> = std::fs::read_to_string(&keys_file)?
        .lines()
        .take(sample)
        .map(|s| keys::parse(s, &cfg.keys.prefix).unwrap())
        .collect();

    let mut misses = Vec::with_capacity(hashes.len());
    for h in &hashes {
        let t = Instant::now();
        let found = store.by_hash(h).await?;
        misses.push(t.elapsed());
        assert!(found.is_some(), "a key of the file is not in the store");
    }
    misses.sort();
    let pct = |p: usize| misses[(misses.len() - 1) * p / 100];

    let cache = Cache::new(&CacheSettings {
        ttl: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(5),
        max_entries: 1_000_000,
        stale_if_error: Duration::ZERO,
    });
    for h in &hashes {
        cache.lookup(h, &*store).await?;
    }
    let rounds = 50;
    let t = Instant::now();
    for _ in 0..rounds {
        for h in &hashes {
            let hit = cache.lookup(black_box(h), &*store).await?;
            assert!(matches!(hit, Lookup::Found(_)));
        }
    }
    let per_hit = t.elapsed() / u32::try_from(rounds * hashes.len())?;
    println!(
        "{} sampled keys: cache miss (by_hash) p50 {:.1?} p99 {:.1?}; cache hit mean {per_hit:.0?}; misses counted {}",
        hashes.len(),
        pct(50),
        pct(99),
        cache
            .stats
            .misses
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    Ok(())
}
