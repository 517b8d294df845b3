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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::Path;

    use crate::config::Config;
    use crate::upstream::Upstreams;
    use crate::upstream::health::Who;

    fn upstreams(balance: &str) -> Upstreams {
        let text = format!(
            "upstream:\n  url: http://127.0.0.1:9000\nupstreams:\n  s:\n    targets: [http://127.0.0.1:1, http://127.0.0.1:2, http://127.0.0.1:3]\n    balance: {balance}\n    health:\n      unhealthy_after: 1\n"
        );
        Upstreams::new(&Config::parse(Path::new("k.yaml"), &text).unwrap()).unwrap()
    }

    fn who() -> Who<'static> {
        Who {
            upstream: "s",
            target: "t",
        }
    }

    #[test]
    fn round_robin_takes_each_in_turn_and_skips_targets_out_of_rotation() {
        let u = upstreams("round_robin");
        let s = u.get(1);
        let picks: Vec<u16> = (0..6).map(|_| s.pick().unwrap().index()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        s.target(1).unwrap().health.failed(&who(), "refused");
        let picks: Vec<u16> = (0..4).map(|_| s.pick().unwrap().index()).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        let first = s.target(0).unwrap();
        assert_eq!(s.pick_other(first).unwrap().index(), 2);
        s.target(0).unwrap().health.failed(&who(), "refused");
        s.target(2).unwrap().health.failed(&who(), "refused");
        assert!(s.pick().is_none(), "every target down: nothing to pick");
        assert_eq!(u.get(0).pick().unwrap().index(), 0, "the default upstream");
        assert_eq!(
            u.get(9).name.as_ref(),
            "default",
            "an unknown index: the default"
        );
    }

    #[test]
    fn least_requests_picks_the_least_busy_and_a_choice_counts_while_held() {
        let u = upstreams("least_requests");
        let s = u.get(1);
        let mut busy0 = super::Chosen::default();
        busy0.set(s.target(0).unwrap());
        let mut busy1 = super::Chosen::default();
        busy1.set(s.target(1).unwrap());
        for _ in 0..3 {
            assert_eq!(s.pick().unwrap().index(), 2);
        }
        drop(busy0);
        let picks: Vec<u16> = (0..3).map(|_| s.pick().unwrap().index()).collect();
        assert!(
            !picks.contains(&1),
            "target 1 still has a request: {picks:?}"
        );
        busy1.set(s.target(2).unwrap());
        let picks: Vec<u16> = (0..4).map(|_| s.pick().unwrap().index()).collect();
        assert!(
            !picks.contains(&2),
            "moved: 2 is busy now, 0 and 1 take turns: {picks:?}"
        );
        assert!(picks.contains(&0) && picks.contains(&1), "{picks:?}");
    }
}
