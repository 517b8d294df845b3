//! The gateway's own events: a key in use entering its expiry warning, and a key's first
//! refusal for its rate limit or its quota in a window.
//!
//! Invariants: the request path never waits on the store for these: it hands the event
//! to a bounded queue (dropped with a warning if the store has fallen far behind) that
//! one background task writes; a key already noted in this window is skipped in memory
//! (one map read on a refused request, nothing on an allowed one), and the store's
//! [`Once`] decides across the fleet and across restarts, so each key sends at most one
//! `key.rate_limited` per rate window (the rate's period, at least [`MIN_RATE_WINDOW`])
//! and one `key.quota_exceeded` per quota window (credits: per refill).

use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::mpsc;

use super::{Event, Kind, Once};
use crate::keys::{KeyRecord, RateLimit, Timestamp};
use crate::store::KeyStore;

/// Events waiting for the store; past this many, new ones are dropped (and said so).
const QUEUE: usize = 1024;

/// The shortest window of `key.rate_limited`: a key held at `100/s` all day sends one
/// event a minute, not one a second.
pub const MIN_RATE_WINDOW: Duration = Duration::from_secs(60);

/// How long a gateway skips a key whose credits ran out before asking the store again
/// (a refill changes the credits' window, so the store sends again after a refill).
const CREDITS_QUIET: Duration = Duration::from_secs(60);

/// An event waiting for the store, with its once-rule.
type Queued = (Event, Option<Once>);

/// Until when this gateway skips a key's refusal events, per kind.
#[derive(Default, Clone, Copy)]
struct Quiet {
    rate: Option<Instant>,
    quota: Option<Instant>,
}

pub struct Notices {
    quiet: DashMap<String, Quiet>,
    tx: mpsc::Sender<Queued>,
    /// Held by [`Notices::run`] while it runs, then by [`Notices::flush`].
    rx: tokio::sync::Mutex<mpsc::Receiver<Queued>>,
}

impl Default for Notices {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            quiet: DashMap::new(),
            tx,
            rx: tokio::sync::Mutex::new(rx),
        }
    }
}

impl Notices {
    /// A key was refused for `route`'s rate limit `rate`.
    pub fn rate_limited(&self, key: &KeyRecord, route: &str, rate: RateLimit) {
        let now = Instant::now();
        if self.quiet_for(&key.id, now, |q| q.rate) {
            return;
        }
        let window = rate.per.max(MIN_RATE_WINDOW);
        self.quiet.entry(key.id.clone()).or_default().rate = Some(now + window);
        let data = serde_json::json!({
            "route": route,
            "limit": rate.to_string(),
            "window_seconds": window.as_secs(),
        });
        let once = Once {
            name: format!("rl:{}", key.id),
            ttl: window,
        };
        self.queue(Event::new(Kind::RateLimited, key, data), Some(once));
    }

    /// A key was refused for its quota, which refills at `resets_at` (credits: never).
    pub fn quota_exceeded(&self, key: &KeyRecord, resets_at: Option<Timestamp>) {
        let now = Instant::now();
        if self.quiet_for(&key.id, now, |q| q.quota) {
            return;
        }
        let (window, ttl) = match resets_at {
            Some(at) => (
                at.0.to_string(),
                Duration::from_secs(u64::try_from(at.0 - Timestamp::now().0).unwrap_or(0) + 1),
            ),
            None => (
                format!("c{}", key.quota.as_ref().map_or(0, |q| q.set_ms)),
                Duration::from_secs(366 * 86_400),
            ),
        };
        let local = if resets_at.is_some() {
            ttl
        } else {
            CREDITS_QUIET
        };
        self.quiet.entry(key.id.clone()).or_default().quota = Some(now + local);
        let data = serde_json::json!({ "resets_at": resets_at });
        let once = Once {
            name: format!("q:{}:{window}", key.id),
            ttl,
        };
        self.queue(Event::new(Kind::QuotaExceeded, key, data), Some(once));
    }

    /// A key in use entered its expiry warning window (this process noted it first).
    pub fn expiring(&self, key: &KeyRecord) {
        let Some(expires) = key.expires_at else {
            return;
        };
        let left = u64::try_from(expires.0 - Timestamp::now().0).unwrap_or(0);
        let once = Once {
            name: format!("exp:{}:{}", key.id, expires.0),
            ttl: Duration::from_secs(left + 86_400),
        };
        let data = serde_json::json!({ "expires_at": expires });
        self.queue(Event::new(Kind::Expiring, key, data), Some(once));
    }

    fn quiet_for(&self, id: &str, now: Instant, pick: impl Fn(&Quiet) -> Option<Instant>) -> bool {
        self.quiet
            .get(id)
            .and_then(|q| pick(&q))
            .is_some_and(|until| until > now)
    }

    fn queue(&self, event: Event, once: Option<Once>) {
        if self.tx.try_send((event, once)).is_err() {
            tracing::warn!(
                "the key-event queue is full (the store is not keeping up); an event was dropped"
            );
        }
    }

    /// Forgets keys whose quiet time has passed.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.quiet
            .retain(|_, q| q.rate.is_some_and(|t| t > now) || q.quota.is_some_and(|t| t > now));
    }

    /// Writes queued events to the store until the gateway stops.
    pub async fn run(&self, store: std::sync::Arc<dyn KeyStore>) {
        let mut rx = self.rx.lock().await;
        while let Some(queued) = rx.recv().await {
            push(&*store, queued).await;
        }
    }

    /// Writes what is still queued (on shutdown, once `run` has been stopped).
    pub async fn flush(&self, store: &dyn KeyStore) {
        let mut rx = self.rx.lock().await;
        while let Ok(queued) = rx.try_recv() {
            push(store, queued).await;
        }
    }
}

async fn push(store: &dyn KeyStore, (event, once): Queued) {
    if let Err(e) = store.push_event(&event, once.as_ref()).await {
        tracing::warn!(error = %crate::report::Chain(&e), key_id = %event.key_id, event = event.kind.as_str(), "could not queue the key event for webhooks");
    }
}
