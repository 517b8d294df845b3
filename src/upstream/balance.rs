//! Picking a target: round robin or least requests, among the targets in rotation; and
//! [`Chosen`], a request's hold on the target it was given (its in-flight count).
//!
//! Invariants: a target out of rotation is never picked (when none is left, `None`: the
//! caller answers 502 at once); a single-target upstream costs one relaxed load.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Service, Target};
use crate::config::Balance;

impl Service {
    /// A target in rotation for the next request, if any.
    pub fn pick(&self) -> Option<&Target> {
        if let [only] = self.targets.as_slice() {
            return only.health.is_up().then_some(only);
        }
        self.choose(None)
    }

    /// A target in rotation other than `tried` (a request that could not be sent there).
    pub fn pick_other(&self, tried: &Target) -> Option<&Target> {
        self.choose(Some(tried.index))
    }

    fn choose(&self, skip: Option<u16>) -> Option<&Target> {
        let n = self.targets.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut candidates = (0..n)
            .map(|i| &self.targets[(start + i) % n])
            .filter(|t| Some(t.index) != skip && t.health.is_up());
        match self.balance {
            Balance::RoundRobin => candidates.next(),
            // First of the least busy, starting at the turn: ties go round.
            Balance::LeastRequests => {
                candidates.min_by_key(|t| t.in_flight.load(Ordering::Relaxed))
            }
        }
    }
}

/// The target a request went to (the last one tried), counted in flight while held.
#[derive(Default)]
pub struct Chosen<'u>(Option<&'u Target>);

impl<'u> Chosen<'u> {
    /// The request goes to `target` now (instead of any earlier choice).
    pub fn set(&mut self, target: &'u Target) {
        target.in_flight.fetch_add(1, Ordering::Relaxed);
        if let Some(old) = self.0.replace(target) {
            old.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub fn get(&self) -> Option<&'u Target> {
        self.0
    }
}

impl Drop for Chosen<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            t.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The round-robin turn (shared by both rules, so least-requests ties go round).
pub type Turn = AtomicUsize;
