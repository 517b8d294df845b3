//! The connection cap, `limits.max_connections`, for all listeners together, with a few
//! slots only the admin listener may use.
//!
//! Why the reserve: under a connection flood on the proxy (or forward-auth) listener the
//! cap fills up, and operators then still need `/healthz`, `/metrics` and the admin API.
//! The proxy and forward-auth listeners draw from the shared slots only; the admin
//! listener takes a reserved slot first and a shared one when the reserve is used up.
//! Each listener waits for its own slots, so a full proxy side never stops the admin
//! listener from accepting.
//!
//! Invariant: never more than `max_connections` connections are open at once.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The cap's slots; a permit is held for the life of a connection.
pub struct Slots {
    shared: Arc<Semaphore>,
    admin: Arc<Semaphore>,
}

impl Slots {
    pub fn new(max_connections: usize) -> Self {
        let reserve = admin_reserve(max_connections);
        Self {
            shared: Arc::new(Semaphore::new(max_connections - reserve)),
            admin: Arc::new(Semaphore::new(reserve)),
        }
    }

    /// A slot for a proxy or forward-auth connection; `None` once closed (never, today).
    pub async fn public(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.shared).acquire_owned().await.ok()
    }

    /// A slot for an admin connection: a reserved one, else a shared one.
    pub async fn admin(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = Arc::clone(&self.admin).try_acquire_owned() {
            return Some(p);
        }
        tokio::select! {
            p = Arc::clone(&self.admin).acquire_owned() => p.ok(),
            p = Arc::clone(&self.shared).acquire_owned() => p.ok(),
        }
    }
}

/// The admin listener's own slots: 5 % of the cap, at most 16; none under a cap of 20
/// (a cap that small is a test or a tiny box, where halving the proxy's share would
/// surprise more than it helps).
pub fn admin_reserve(max_connections: usize) -> usize {
    (max_connections / 20).min(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_small_and_never_the_whole_cap() {
        assert_eq!(admin_reserve(1), 0);
        assert_eq!(admin_reserve(19), 0);
        assert_eq!(admin_reserve(20), 1);
        assert_eq!(admin_reserve(50), 2);
        assert_eq!(admin_reserve(10_000), 16);
    }

    #[tokio::test]
    async fn a_full_public_side_leaves_the_admin_its_reserve_and_the_total_holds() {
        let slots = Slots::new(50);
        let mut held = Vec::new();
        for _ in 0..48 {
            held.push(slots.public().await.expect("slot"));
        }
        assert_eq!(slots.shared.available_permits(), 0);
        let a = slots.admin().await.expect("reserved slot");
        let b = slots.admin().await.expect("reserved slot");
        // 50 in use: the next admin connection waits for any slot to free.
        let third = tokio::time::timeout(std::time::Duration::from_millis(20), slots.admin());
        assert!(third.await.is_err(), "the cap must hold");
        drop(held.pop());
        assert!(
            slots.admin().await.is_some(),
            "a freed shared slot serves the admin"
        );
        drop((a, b));
    }
}
