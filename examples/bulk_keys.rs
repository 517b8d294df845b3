//! Creates many real keys for load tests and scale measurements, the way
//! `keygate keys create` does (same `lifecycle::create`: validation against the policy,
//! a fresh secret, the record and its audit event), without starting a process per key.
//!
//! ```text
//! cargo run --release --example bulk_keys -- --config A.yaml [--config B.yaml]... \
//!     --count 1000 --out keys.txt [--scope items:read]... [--concurrency 8] [--direct]
//! ```
//! `--direct` (for the 1,000,000-key scale runs) skips `lifecycle::create`'s audit event:
//! the key is checked and built by the same `lifecycle` functions (`prepare`, `mint`) and
//! only `KeyStore::insert` writes it: half the writes per key.
//! Each key is created in the first config's store; the very same record (same hash)
//! is then inserted with `KeyStore::insert` into every further config's store, so one
//! secret works against an embedded and a Redis gateway alike. The secrets are written
//! to `--out`, one per line (mode 0600): this is a test tool, the keys are throwaway.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use keygate::config::Config;
use keygate::lifecycle::{self, NewKey, Rules};
use keygate::policy::Policy;
use keygate::store::KeyStore;

struct Args {
    configs: Vec<PathBuf>,
    count: usize,
    out: PathBuf,
    scopes: Vec<String>,
    concurrency: usize,
    direct: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        configs: Vec::new(),
        count: 1000,
        out: PathBuf::from("keys.txt"),
        scopes: Vec::new(),
        concurrency: 8,
        direct: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--config" => a.configs.push(value()?.into()),
            "--count" => a.count = value()?.parse()?,
            "--out" => a.out = value()?.into(),
            "--scope" => a.scopes.push(value()?),
            "--direct" => a.direct = true,
            "--concurrency" => a.concurrency = value()?.parse::<usize>()?.max(1),
            other => bail!("unknown argument {other}"),
        }
    }
    if a.configs.is_empty() {
        bail!("at least one --config");
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let mut stores: Vec<Arc<dyn KeyStore>> = Vec::new();
    let mut first: Option<(Config, Policy)> = None;
    for path in &a.configs {
        let cfg = Config::load(path).with_context(|| format!("{}", path.display()))?;
        stores.push(keygate::app::open_store(&cfg.store)?);
        if first.is_none() {
            let policy = Policy::load(&cfg.policy)?;
            first = Some((cfg, policy));
        }
    }
    let (cfg, policy) = first.context("no config")?;
    let stores = Arc::new(stores);
    let cfg = Arc::new(cfg);
    let policy = Arc::new(policy);
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1024);
    let mut workers = Vec::new();
    for w in 0..a.concurrency {
        let (stores, cfg, policy, tx) = (stores.clone(), cfg.clone(), policy.clone(), tx.clone());
        let scopes = a.scopes.clone();
        let direct = a.direct;
        let n = a.count / a.concurrency + usize::from(w < a.count % a.concurrency);
        workers.push(tokio::spawn(async move {
            let rules = Rules {
                policy: &policy,
                prefix: &cfg.keys.prefix,
                max_ttl: cfg.keys.max_ttl,
            };
            for i in 0..n {
                let new = NewKey {
                    name: format!("load-{w}-{i}"),
                    description: String::new(),
                    user_id: format!("user-{}", i % 100),
                    business_id: "acme".into(),
                    scopes: scopes.clone(),
                    locations: Vec::new(),
                    grants: Vec::new(),
                    expiry: None,
                    ..NewKey::default()
                };
                let (record, secret) = if direct {
                    let prepared = lifecycle::prepare(&rules, new)?;
                    let (record, secret) = lifecycle::mint(&cfg.keys.prefix, prepared, "bulk_keys");
                    stores[0].insert(&record).await?;
                    (record, secret)
                } else {
                    lifecycle::create(&*stores[0], &rules, new, "bulk_keys").await?
                };
                for other in &stores[1..] {
                    other.insert(&record).await?;
                }
                if tx.send(secret.expose().to_owned()).await.is_err() {
                    break;
                }
            }
            anyhow::Ok(())
        }));
    }
    drop(tx);
    let mut out = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&a.out)
            .with_context(|| format!("{}", a.out.display()))?,
    );
    let mut written = 0usize;
    while let Some(secret) = rx.recv().await {
        writeln!(out, "{secret}")?;
        written += 1;
        if written.is_multiple_of(100_000) {
            eprintln!("bulk_keys: {written} keys, {:.1?}", started.elapsed());
        }
    }
    out.flush()?;
    for w in workers {
        w.await??;
    }
    eprintln!(
        "bulk_keys: {written} keys in {} store(s) in {:.1?}",
        stores.len(),
        started.elapsed()
    );
    Ok(())
}
