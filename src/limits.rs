//! Per-route rate limits: `rate_limit:` on a route allows each bucket N requests per
//! period with a burst of N (GCRA). Whose requests share a bucket is the route's `per`
//! (the key, the key's user, or its business; the client address on public routes);
//! who counts it is its `scope`: each gateway on its own ([`local`]), or the whole fleet
//! through the Redis registry ([`fleet`], the default when the store is Redis).
//!
//! Invariants:
//! - A fleet bucket that cannot be counted because Redis is unreachable (and its lease
//!   is spent) is counted by this gateway alone meanwhile: the key look-up has already
//!   failed closed or been served from the cache, and a limit that degrades to
//!   per-gateway is better than refusing every request or none. One warning per outage
//!   (`fleet`).
//! - Checking takes no global lock and, in the common case, waits on nothing.
//! - A request learns where its bucket stands ([`Standing`]) for the `RateLimit-*`
//!   headers, refused or not.

pub mod fleet;
pub mod local;
mod routes;

/// The limits' maps' hasher: seeded per process and far cheaper than `SipHash` on the
/// route names and key hashes looked up per request (as in `cache`).
type Seeded = foldhash::fast::RandomState;

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::keys::{KeyHash, KeyRecord};
use crate::policy::{Per, RouteLimit, Scope};
use crate::store::SharedBuckets;

/// Whose bucket a request takes its token from. (Not the admin API's
/// `admin::auth::Caller`, who is authenticated; this is only what a limit counts by.)
/// The user and business buckets hold the key's record, and compare by its ids.
#[derive(Clone, Debug)]
pub enum Bucket {
    Key(KeyHash),
    /// Every key of the record's user (in its business).
    User(Arc<KeyRecord>),
    /// Every key of the record's business.
    Business(Arc<KeyRecord>),
    /// Public routes: the client's address.
    Address(IpAddr),
}

impl Bucket {
    /// The bucket `per` counts a keyed request in: its key's, or wider.
    #[must_use]
    pub fn widened(self, per: Per, record: Option<&Arc<KeyRecord>>) -> Self {
        match (per, record, &self) {
            (Per::User, Some(r), Self::Key(_)) => Self::User(Arc::clone(r)),
            (Per::Business, Some(r), Self::Key(_)) => Self::Business(Arc::clone(r)),
            _ => self,
        }
    }

    /// The bucket's part of its fleet-wide name: unambiguous (lengths before ids that
    /// may hold the separator), and no secret (a key is named by its hash's first half).
    pub fn name(&self) -> String {
        match self {
            Self::Key(h) => format!("k:{}", hex::encode(&h.0[..16])),
            Self::User(r) => format!("u:{}:{}:{}", r.business_id.len(), r.business_id, r.user_id),
            Self::Business(r) => format!("b:{}", r.business_id),
            Self::Address(ip) => format!("a:{ip}"),
        }
    }
}

impl PartialEq for Bucket {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Key(a), Self::Key(b)) => a == b,
            (Self::User(a), Self::User(b)) => {
                a.business_id == b.business_id && a.user_id == b.user_id
            }
            (Self::Business(a), Self::Business(b)) => a.business_id == b.business_id,
            (Self::Address(a), Self::Address(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Bucket {}

impl Hash for Bucket {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Self::Key(h) => h.hash(state),
            Self::User(r) => (&r.business_id, &r.user_id).hash(state),
            Self::Business(r) => r.business_id.hash(state),
            Self::Address(ip) => ip.hash(state),
        }
    }
}

/// Where a bucket stands after a request: the `RateLimit-*` headers' values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub limit: u32,
    pub remaining: u32,
    /// Until the bucket is full again (refused: until the next token).
    pub reset: Duration,
}

/// Refused: the bucket is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub standing: Standing,
    /// Until the next token.
    pub wait: Duration,
}

impl Exceeded {
    fn after(limit: u32, wait: Duration) -> Self {
        Self {
            standing: Standing {
                limit,
                remaining: 0,
                reset: wait,
            },
            wait,
        }
    }
}

/// Every route's buckets: this gateway's, and the fleet's when the store is shared.
#[derive(Default)]
pub struct Limits {
    local: local::Local,
    fleet: Option<fleet::Fleet>,
}

impl Limits {
    /// Limits whose `scope: fleet` buckets (the default) are counted in `shared`.
    pub fn fleet(shared: Arc<dyn SharedBuckets>) -> Self {
        Self {
            local: local::Local::default(),
            fleet: Some(fleet::Fleet::new(shared)),
        }
    }

    /// Takes one token of `bucket` for `route`, or says how long until there is one.
    pub async fn check(
        &self,
        route: &str,
        limit: RouteLimit,
        bucket: Bucket,
    ) -> Result<Standing, Exceeded> {
        if let Some(fleet) = &self.fleet
            && limit.scope != Some(Scope::Gateway)
            && let Some(verdict) = fleet.check(route, limit.rate, &bucket).await
        {
            return verdict;
        }
        self.local.check(route, limit.rate, &bucket)
    }

    /// Forgets buckets that are full again, leases that hold nothing, and routes
    /// nobody uses.
    pub fn sweep(&self) {
        self.local.sweep();
        if let Some(fleet) = &self.fleet {
            fleet.sweep();
        }
    }

    /// Buckets and leases with live state, across routes (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.local.tracked() + self.fleet.as_ref().map_or(0, fleet::Fleet::tracked)
    }
}

#[cfg(test)]
mod tests;
