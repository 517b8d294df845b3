//! A target's health: consecutive failures (requests and checks alike) take it out of
//! rotation at `unhealthy_after`; consecutive successful checks bring it back at
//! `healthy_after`. One warning line per transition, with the reason; the
//! `keygate_upstream_up` gauge follows.
//!
//! Invariants: a request's success costs one relaxed load when the target had no recent
//! failure (no lock on the hot path); transitions happen under the target's own lock, so
//! each is logged exactly once; a target out of rotation is only brought back by checks
//! (the active `GET`, or without one a connection tried after a back-off), never by a
//! request, since none is sent to it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

/// One target's health (see the module docs).
pub struct Health {
    up: AtomicBool,
    /// A failure since the last success: the next success takes the lock to clear it.
    failing: AtomicBool,
    streak: Mutex<Streak>,
    /// Woken when the target is taken out (the passive prober waits for it).
    pub(super) went_down: Notify,
    unhealthy_after: u32,
    healthy_after: u32,
    gauge: metrics::Gauge,
}

#[derive(Default)]
struct Streak {
    failures: u32,
    successes: u32,
    last_error: Option<String>,
    /// When the target last went down or came back (`None`: up since start).
    changed: Option<SystemTime>,
}

/// Who a log line is about.
pub struct Who<'a> {
    pub upstream: &'a str,
    pub target: &'a str,
}

/// What `/v1/upstreams` shows of a target's health.
pub struct Snapshot {
    pub up: bool,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub changed: Option<SystemTime>,
}

impl Health {
    pub fn new(unhealthy_after: u32, healthy_after: u32, gauge: metrics::Gauge) -> Self {
        gauge.set(1.0);
        Self {
            up: AtomicBool::new(true),
            failing: AtomicBool::new(false),
            streak: Mutex::new(Streak::default()),
            went_down: Notify::new(),
            unhealthy_after,
            healthy_after,
            gauge,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn streak(&self) -> std::sync::MutexGuard<'_, Streak> {
        self.streak
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A request was answered: clears the failure streak of a target in rotation.
    pub fn answered(&self) {
        if !self.failing.load(Ordering::Relaxed) {
            return;
        }
        let mut s = self.streak();
        if self.is_up() {
            s.failures = 0;
            self.failing.store(false, Ordering::Relaxed);
        }
    }

    /// A request or a check failed with `reason`.
    pub fn failed(&self, who: &Who<'_>, reason: &str) {
        let mut s = self.streak();
        self.failing.store(true, Ordering::Relaxed);
        s.successes = 0;
        s.failures = s.failures.saturating_add(1);
        s.last_error = Some(reason.to_owned());
        if self.is_up() && s.failures >= self.unhealthy_after {
            self.up.store(false, Ordering::Relaxed);
            s.changed = Some(SystemTime::now());
            self.gauge.set(0.0);
            tracing::warn!(
                upstream = who.upstream,
                target = who.target,
                failures = s.failures,
                reason,
                "upstream target is down; taken out of rotation"
            );
            self.went_down.notify_one();
        }
    }

    /// A check passed.
    pub fn check_passed(&self, who: &Who<'_>) {
        let mut s = self.streak();
        if self.is_up() {
            s.failures = 0;
            self.failing.store(false, Ordering::Relaxed);
            return;
        }
        s.successes = s.successes.saturating_add(1);
        if s.successes >= self.healthy_after {
            s.failures = 0;
            s.successes = 0;
            s.changed = Some(SystemTime::now());
            self.failing.store(false, Ordering::Relaxed);
            self.up.store(true, Ordering::Relaxed);
            self.gauge.set(1.0);
            tracing::warn!(
                upstream = who.upstream,
                target = who.target,
                reason = "health check passed",
                "upstream target is healthy again; back in rotation"
            );
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let s = self.streak();
        Snapshot {
            up: self.is_up(),
            consecutive_failures: s.failures,
            last_error: s.last_error.clone(),
            changed: s.changed,
        }
    }
}

/// The passive prober's wait before its next connection to a target out of rotation:
/// doubling from 500 ms to 30 s while it keeps failing.
pub fn back_off(previous: Option<Duration>) -> Duration {
    previous.map_or(Duration::from_millis(500), |d| {
        (d * 2).min(Duration::from_secs(30))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> Who<'static> {
        Who {
            upstream: "billing",
            target: "http://127.0.0.1:1",
        }
    }

    #[test]
    fn taken_out_after_unhealthy_after_and_back_after_healthy_after() {
        let h = Health::new(3, 2, metrics::Gauge::noop());
        h.failed(&who(), "connect refused");
        h.failed(&who(), "connect refused");
        assert!(h.is_up(), "two failures of three");
        h.answered();
        h.failed(&who(), "x");
        h.failed(&who(), "x");
        assert!(h.is_up(), "an answer restarted the count");
        h.failed(&who(), "x");
        assert!(!h.is_up());
        assert_eq!(h.snapshot().consecutive_failures, 3);
        h.answered();
        assert!(!h.is_up(), "an answer does not bring a target back");
        h.check_passed(&who());
        assert!(!h.is_up(), "one check of two");
        h.failed(&who(), "x");
        h.check_passed(&who());
        assert!(!h.is_up(), "a failure restarted the count");
        h.check_passed(&who());
        assert!(h.is_up());
        assert_eq!(h.snapshot().consecutive_failures, 0);
    }

    #[test]
    fn back_off_doubles_up_to_thirty_seconds() {
        assert_eq!(back_off(None), Duration::from_millis(500));
        assert_eq!(
            back_off(Some(Duration::from_secs(1))),
            Duration::from_secs(2)
        );
        assert_eq!(
            back_off(Some(Duration::from_secs(20))),
            Duration::from_secs(30)
        );
    }
}
