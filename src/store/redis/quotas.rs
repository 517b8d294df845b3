//! Quota windows on Redis: [`KeyStore::quota_take`](crate::store::KeyStore::quota_take)
//! and its kin for [`RedisStore`].
//!
//! Layout: `kg:q:{<counter>}:<rest of the window's name>`, a string: the units used.
//! The hash tag is the key's quota counter, so all of one key's windows share a slot on
//! a Cluster; a periodic window expires a day after it resets (credits never).
//!
//! Invariants: a take never lets the count pass the limit (it grants what is left);
//! a give-back never takes the count below zero; both are one script, atomic.

use super::RedisStore;
use crate::keys::Timestamp;
use crate::store::{QuotaGrant, StoreError};

/// KEYS: the window. ARGV: limit, want, expire-at (Unix s, or ''). Returns {granted, used}.
const TAKE: &str = r"
local used = tonumber(redis.call('GET', KEYS[1])) or 0
local n = math.min(tonumber(ARGV[2]), tonumber(ARGV[1]) - used)
if n > 0 then
  -- INCRBY first would survive a failing EXPIREAT (scripts do not roll back): count
  -- nothing unless the whole take can land.
  used = used + n
  redis.call('SET', KEYS[1], string.format('%d', used), 'KEEPTTL')
  if ARGV[3] ~= '' then redis.call('EXPIREAT', KEYS[1], ARGV[3]) end
else
  n = 0
end
return {n, used}";

/// KEYS: the window. ARGV: units to give back.
const GIVE_BACK: &str = r"
local used = tonumber(redis.call('GET', KEYS[1]))
if not used then return 0 end
local left = used - tonumber(ARGV[1])
if left < 0 then left = 0 end
redis.call('SET', KEYS[1], string.format('%d', left), 'KEEPTTL')
return left";

pub(super) fn scripts() -> (::redis::Script, ::redis::Script) {
    (::redis::Script::new(TAKE), ::redis::Script::new(GIVE_BACK))
}

/// The key of the window `name` (`<counter>:<rest>`).
pub(super) fn window_key(name: &str) -> String {
    match name.split_once(':') {
        Some((counter, rest)) => format!("kg:q:{{{counter}}}:{rest}"),
        None => format!("kg:q:{{{name}}}"),
    }
}

impl RedisStore {
    pub(super) async fn take_quota(
        &self,
        window: &str,
        limit: u64,
        want: u64,
        expires_at: Option<Timestamp>,
    ) -> Result<QuotaGrant, StoreError> {
        let expire = expires_at.map_or_else(String::new, |t| {
            t.0.saturating_add(crate::store::QUOTA_KEPT_AFTER_RESET)
                .to_string()
        });
        let (granted, used): (u64, u64) = self
            .inner
            .link
            .script(
                &self.inner.scripts.quota_take,
                &window_key(window),
                &[&limit.to_string(), &want.to_string(), &expire],
            )
            .await?;
        Ok(QuotaGrant { granted, used })
    }

    pub(super) async fn give_back_quota(&self, window: &str, n: u64) -> Result<(), StoreError> {
        let _: i64 = self
            .inner
            .link
            .script(
                &self.inner.scripts.quota_give_back,
                &window_key(window),
                &[&n.to_string()],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn quota_used_in(&self, window: &str) -> Result<u64, StoreError> {
        let used: Option<u64> = self
            .inner
            .link
            .cmd(::redis::cmd("GET").arg(window_key(window)).clone())
            .await?;
        Ok(used.unwrap_or(0))
    }
}
