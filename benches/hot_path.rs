//! The per-request hot path, piece by piece and whole: key parse + checksum, SHA-256,
//! path normalisation, route match over 10/100/1,000 routes, cache hit, and the full
//! authorise decision on a cache hit, and the upstream request's header rewrite. Run with
//! `make bench` (`cargo bench --bench hot_path`).
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use keygate::cache::{Cache, Lookup};
use keygate::config::CacheSettings;
use keygate::keys::{self, KeyRecord, Timestamp};
use keygate::policy::path::normalise;
use keygate::policy::{Facts, Policy};
use keygate::proxy::rewrite::{Hop, rewrite_request_headers};
use keygate::store::KeyStore;
use keygate::store::embedded::EmbeddedStore;

// The allocator the binary uses (src/main.rs), so allocation costs are the real ones.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HEAD: &str = "version: 1\nscopes:\n  items:read: Read\nroles:\n  viewer: [items:read]\nlocations: [hq, plant-1]\nroutes:\n";

/// A policy with `n` routes; the one the benches hit is last, so matching scans them all.
fn policy(n: usize) -> Policy {
    let mut text = HEAD.to_owned();
    for i in 0..n.saturating_sub(1) {
        let _ = write!(
            text,
            "  - name: r{i}\n    path: /svc{i}/{{id}}/things\n    scopes: [items:read]\n"
        );
    }
    text.push_str("  - name: items\n    methods: [GET]\n    path: /v1/locations/{loc}/items/{*rest}\n    location: { from: path, name: loc }\n    scopes: [items:read]\ndefault: deny\n");
    Policy::parse(Path::new("bench.yaml"), &text).unwrap()
}

fn record(secret: &keys::Secret) -> KeyRecord {
    KeyRecord {
        identity: keygate::headers::Memo::default(),
        id: keys::new_id("kg_"),
        hash: secret.hash(),
        name: "bench".into(),
        description: String::new(),
        prefix: keys::display_prefix(secret, "kg_"),
        user_id: "u1".into(),
        business_id: "acme".into(),
        scopes: vec![],
        locations: vec!["hq".into()],
        grants: vec![keys::Grant {
            role: "viewer".into(),
            locations: vec!["hq".into()],
        }],
        created_at: Timestamp::now(),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        created_by: "bench".into(),
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

fn hot_path(c: &mut Criterion) {
    let secret = keys::generate("kg_");
    c.bench_function("key parse+checksum+sha256", |b| {
        b.iter(|| keys::parse(black_box(secret.expose()), "kg_"));
    });
    c.bench_function("sha256 only", |b| {
        b.iter(|| keys::hash(black_box(secret.expose())));
    });
    c.bench_function("normalise path", |b| {
        b.iter(|| normalise(black_box("/v1/locations/hq/items/a/./b/../c%7E")));
    });

    let mut group = c.benchmark_group("route match");
    for n in [10, 100, 1000] {
        let p = policy(n);
        let path = normalise("/v1/locations/hq/items/42").unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                p.route(black_box(&http::Method::GET), black_box(&path))
                    .map(|m| m.route_name().len())
            });
        });
    }
    group.finish();

    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("bench.db")).unwrap();
    let rec = record(&secret);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(store.insert(&rec)).ok();
    let cache = Cache::new(&CacheSettings {
        ttl: Duration::from_secs(3600),
        negative_ttl: Duration::from_secs(5),
        max_entries: 1_000_000,
        stale_if_error: Duration::ZERO,
    });
    let hash = secret.hash();
    rt.block_on(cache.lookup(&hash, &store)).unwrap();
    c.bench_function("cache hit", |b| {
        b.iter(|| {
            cache
                .lookup(black_box(&hash), &store)
                .now_or_never()
                .unwrap()
                .unwrap()
        });
    });

    let p = policy(10);
    let req = http::Request::get("/v1/locations/hq/items/42")
        .body(())
        .unwrap();
    let now = Timestamp::now();
    c.bench_function(
        "authorise on cache hit (parse, hash, lookup, normalise, match, decide)",
        |b| {
            b.iter(|| {
                let hash = keys::parse(black_box(secret.expose()), "kg_").unwrap();
                let Lookup::Found(record) =
                    cache.lookup(&hash, &store).now_or_never().unwrap().unwrap()
                else {
                    unreachable!()
                };
                let path = normalise(req.uri().path()).unwrap();
                let m = p.route(req.method(), &path).unwrap();
                let permit = p.decide(m, path, &record, &Facts::of(&req), now).unwrap();
                black_box(permit);
            });
        },
    );

    // What wrk sends in the load comparison, plus a browser-ish pair.
    let mut sent = http::HeaderMap::new();
    for (k, v) in [
        ("host", "127.0.0.1:8080"),
        ("x-api-key", secret.expose()),
        ("user-agent", "bench/1.0"),
        ("accept", "*/*"),
        ("connection", "keep-alive"),
    ] {
        sent.insert(
            http::HeaderName::from_static(k),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    let path = normalise(req.uri().path()).unwrap();
    let m = p.route(req.method(), &path).unwrap();
    let permit = p
        .decide(m, path, &std::sync::Arc::new(rec), &Facts::of(&req), now)
        .unwrap();
    let key_header = http::HeaderName::from_static("x-api-key");
    let peer_ip = keygate::proxy::rewrite::ip_value("127.0.0.1".parse().unwrap());
    let hop = Hop {
        peer_ip: &peer_ip,
        tls: false,
        trusted_peer: false,
    };
    c.bench_function(
        "header rewrite (strip key and hop-by-hop, add identity)",
        |b| {
            b.iter_batched_ref(
                || sent.clone(),
                |h| rewrite_request_headers(h, &key_header, &permit, hop, false),
                // Small batches: the prepared maps stay in cache, as a request's headers would.
                BatchSize::NumIterations(64),
            );
        },
    );
}

/// The per-connection answer timer against a `tokio::time::timeout` per request, around
/// an exchange that is already answered: what each keep-alive request pays for its timeout.
fn answer_timer(c: &mut Criterion) {
    use keygate::proxy::answer_timer::LazyTimer;
    use tokio::time::Instant;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let timeout = Duration::from_secs(30);
    let mut g = c.benchmark_group("answer timer");
    g.bench_function("tokio::time::timeout per request", |b| {
        b.iter(|| {
            rt.block_on(async {
                let deadline = Instant::now() + timeout;
                black_box(tokio::time::timeout_at(deadline, async { 1 }).await.ok())
            })
        });
    });
    let mut timer = rt.block_on(async { LazyTimer::new(Instant::now() + timeout) });
    g.bench_function("LazyTimer kept per connection", |b| {
        b.iter(|| {
            rt.block_on(async {
                let deadline = Instant::now() + timeout;
                black_box(timer.within(deadline, async { 1 }).await.ok())
            })
        });
    });
    g.finish();
}

criterion_group!(benches, hot_path, answer_timer);
criterion_main!(benches);
