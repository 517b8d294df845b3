//! Whether the registry is reachable, as the store has seen it.
//!
//! Job: count failed round trips and lost subscriptions (the store error counter), and
//! log one line when an outage begins and one when it ends, with its length.
//!
//! Invariants: lock-free on the success path (one atomic load when up); a flood of
//! failures during an outage logs once, not once per failure.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Outage bookkeeping: an error counter and one log line when an outage starts and ends.
#[derive(Default)]
pub(super) struct Health {
    errors: AtomicU64,
    down: AtomicBool,
    since: Mutex<Option<Instant>>,
}

impl Health {
    /// Failures counted since start.
    pub(super) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// A round trip or subscription failed with `e`.
    pub(super) fn failed(&self, e: &dyn std::error::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if self.down.swap(true, Ordering::AcqRel) {
            return;
        }
        *self.since.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        tracing::warn!(error = %crate::report::Chain(e), "key registry unreachable: outage began; serving cached keys only");
    }

    /// Redis answered.
    pub(super) fn ok(&self) {
        if !self.down.load(Ordering::Acquire) || !self.down.swap(false, Ordering::AcqRel) {
            return;
        }
        let since = self
            .since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let ms = since.map_or(0, |s| s.elapsed().as_millis());
        tracing::info!(outage_ms = %ms, "key registry reachable again: outage ended");
    }
}
