//! Metric names, the Prometheus recorder, and the `/metrics` text.
//!
//! Invariants: labels are bounded — route names (from the policy) and status codes,
//! never paths, key ids or secrets; every metric is registered at start-up, so a
//! scrape sees zeros before the first request; counters that live elsewhere as
//! atomics (cache hits and misses) are copied in at scrape time, costing the hot path
//! nothing.
//!
//! Why per-route handles ([`RouteSeries`]): `counter!` with labels builds a key (label
//! strings allocated) and looks it up in the recorder's registry on every call; a request
//! instead finds its route's handles in a map by `&str` and bumps atomics. The map holds
//! one entry per route name ever answered (names come from the policy), so it stays as
//! bounded as the labels themselves.

use std::sync::{Arc, LazyLock, OnceLock, PoisonError, RwLock};

use dashmap::DashMap;
use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "keygate_requests_total";
pub const REQUEST_DURATION: &str = "keygate_request_duration_seconds";
pub const UPSTREAM_DURATION: &str = "keygate_upstream_duration_seconds";
pub const CACHE_HITS: &str = "keygate_cache_hits_total";
pub const CACHE_MISSES: &str = "keygate_cache_misses_total";
pub const CACHE_ENTRIES: &str = "keygate_cache_entries";
pub const CACHE_STALE: &str = "keygate_cache_stale_served_total";
pub const EXPIRING_SOON: &str = "keygate_keys_expiring_soon";
pub const STORE_ERRORS: &str = "keygate_store_errors_total";
pub const POLICY_RELOADS: &str = "keygate_policy_reloads_total";

/// Seconds: from 100 µs (a cache hit) to 30 s (the default upstream timeout).
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0, 30.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once and registers every metric with a zero.
/// `routes` are the policy's route names (label values known at start).
pub fn install<'a>(routes: impl IntoIterator<Item = &'a str>) {
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .ok()
            .and_then(|b| b.install_recorder().ok());
        if handle.is_none() {
            tracing::warn!("could not install the metrics recorder; /metrics will be empty");
        }
        handle
    });
    describe_counter!(
        REQUESTS,
        "Requests answered by the proxy, by route and status"
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from request to response head, by route"
    );
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "Time the upstream took to answer, by route"
    );
    describe_counter!(CACHE_HITS, "Key look-ups answered by the cache");
    describe_counter!(CACHE_MISSES, "Key look-ups that went to the store");
    describe_gauge!(CACHE_ENTRIES, "Entries in the key cache");
    describe_counter!(
        CACHE_STALE,
        "Known keys served past their ttl while the store erred (stale_if_error)"
    );
    describe_gauge!(
        EXPIRING_SOON,
        "Keys in use within their expiry warning window (keys.expiry_warning)"
    );
    describe_counter!(STORE_ERRORS, "Store calls that failed or timed out");
    describe_counter!(POLICY_RELOADS, "Policy reloads, by result (ok or error)");
    counter!(CACHE_HITS).absolute(0);
    counter!(CACHE_MISSES).absolute(0);
    counter!(CACHE_STALE).absolute(0);
    counter!(STORE_ERRORS).increment(0);
    gauge!(CACHE_ENTRIES).set(0.0);
    gauge!(EXPIRING_SOON).set(0.0);
    for result in ["ok", "error"] {
        counter!(POLICY_RELOADS, "result" => result).increment(0);
    }
    // Handles taken before a recorder was installed would count into nothing.
    SERIES.clear();
    for route in routes {
        counter!(REQUESTS, "route" => route.to_owned(), "status" => "200").increment(0);
        let _ = histogram!(REQUEST_DURATION, "route" => route.to_owned());
        let _ = histogram!(UPSTREAM_DURATION, "route" => route.to_owned());
    }
}

/// The Prometheus text for a scrape (empty if the recorder could not be installed).
pub fn render() -> String {
    HANDLE
        .get()
        .and_then(Option::as_ref)
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// Drains the histograms' recent samples into their buckets. Each recorded sample waits
/// in a queue until this (or a scrape) runs, so without it a gateway nobody scrapes grows
/// by ~40 bytes per request; the gateway calls it every [`UPKEEP_EVERY`].
pub fn upkeep() {
    if let Some(handle) = HANDLE.get().and_then(Option::as_ref) {
        handle.run_upkeep();
    }
}

/// How often [`upkeep`] runs (the exporter's own default).
pub const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The registered series of one route: registered on its first request, then reused.
struct RouteSeries {
    duration: Histogram,
    upstream: Histogram,
    /// `keygate_requests_total` per status seen on this route (a handful).
    by_status: RwLock<Vec<(u16, Counter)>>,
}

impl RouteSeries {
    fn new(route: &str) -> Self {
        Self {
            duration: histogram!(REQUEST_DURATION, "route" => route.to_owned()),
            upstream: histogram!(UPSTREAM_DURATION, "route" => route.to_owned()),
            by_status: RwLock::new(Vec::new()),
        }
    }

    fn count(&self, route: &str, status: u16) {
        let seen = |list: &[(u16, Counter)]| {
            list.iter()
                .find(|(s, _)| *s == status)
                .map(|(_, c)| c.clone())
        };
        // A poisoned lock only means another thread panicked mid-push; the list is intact.
        let hit = seen(
            &self
                .by_status
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let counter = hit.unwrap_or_else(|| {
            let mut list = self
                .by_status
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            seen(&list).unwrap_or_else(|| {
                let c =
                    counter!(REQUESTS, "route" => route.to_owned(), "status" => status.to_string());
                list.push((status, c.clone()));
                c
            })
        });
        counter.increment(1);
    }
}

static SERIES: LazyLock<DashMap<Box<str>, Arc<RouteSeries>, foldhash::fast::RandomState>> =
    LazyLock::new(DashMap::default);

/// One answered request.
pub fn request(route: &str, status: u16, seconds: f64, upstream_seconds: Option<f64>) {
    let series = match SERIES.get(route) {
        Some(s) => Arc::clone(&s),
        None => Arc::clone(
            &SERIES
                .entry(route.into())
                .or_insert_with(|| Arc::new(RouteSeries::new(route))),
        ),
    };
    series.count(route, status);
    series.duration.record(seconds);
    if let Some(u) = upstream_seconds {
        series.upstream.record(u);
    }
}

pub fn store_error() {
    counter!(STORE_ERRORS).increment(1);
}

pub fn policy_reload(ok: bool) {
    counter!(POLICY_RELOADS, "result" => if ok { "ok" } else { "error" }).increment(1);
}

/// Copies the cache's own counters in, just before a scrape.
pub fn cache(hits: u64, misses: u64, stale: u64, entries: usize) {
    counter!(CACHE_HITS).absolute(hits);
    counter!(CACHE_MISSES).absolute(misses);
    counter!(CACHE_STALE).absolute(stale);
    #[allow(clippy::cast_precision_loss)] // a gauge; exact beyond 2^53 entries is moot
    gauge!(CACHE_ENTRIES).set(entries as f64);
}

/// Keys in use that expire soon, just before a scrape.
pub fn expiring_soon(keys: usize) {
    #[allow(clippy::cast_precision_loss)] // a gauge of key counts
    gauge!(EXPIRING_SOON).set(keys as f64);
}
