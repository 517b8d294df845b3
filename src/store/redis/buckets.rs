//! Fleet token buckets on Redis: [`SharedBuckets`] for [`RedisStore`].
//!
//! Job: take up to N tokens from a GCRA bucket in one atomic script, on Redis's own clock
//! (`TIME`), so every gateway of the fleet draws from the same bucket whatever its clock.
//!
//! Layout: `kg:rl:{<route>:<rate>:<bucket>}`, a string: the bucket's theoretical arrival
//! time in microseconds since the epoch (GCRA's one number), expiring when the bucket
//! is full again, so an idle bucket costs nothing. The whole name after `kg:rl:` is the
//! Cluster hash tag: one bucket, one key, one slot.
//!
//! Invariants: a take never grants more than the bucket holds; a refused take changes
//! nothing.

use std::time::Duration;

use ::redis::Script;

use super::RedisStore;
use crate::store::{Grant, SharedBuckets, StoreError};

/// KEYS: the bucket. ARGV: interval in µs, burst, want. Returns {granted, remaining,
/// µs until one token when nothing was granted, µs until full}.
const TAKE: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local t = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local avail = math.floor((now + burst * t - tat) / t)
if avail < 0 then avail = 0 end
local n = math.min(want, avail)
local wait = 0
if n > 0 then
  tat = tat + n * t
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
else
  wait = tat + t - (now + burst * t)
  if wait < 1 then wait = 1 end
end
return {n, avail - n, math.floor(wait), math.floor(tat - now)}";

pub(super) fn take_script() -> Script {
    Script::new(TAKE)
}

/// The key of the bucket `name`.
fn bucket_key(name: &str) -> String {
    format!("kg:rl:{{{name}}}")
}

#[async_trait::async_trait]
impl SharedBuckets for RedisStore {
    async fn take(
        &self,
        bucket: &str,
        interval: Duration,
        burst: u32,
        want: u32,
    ) -> Result<Grant, StoreError> {
        let micros = interval.as_micros().max(1).to_string();
        let (burst, want) = (burst.to_string(), want.to_string());
        let inner = &self.inner;
        let (granted, left, until_one, full): (u64, u64, u64, u64) = inner
            .link
            .script(
                &inner.scripts.take,
                &bucket_key(bucket),
                &[&micros, &burst, &want],
            )
            .await?;
        let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Grant {
            granted: count(granted),
            remaining: count(left),
            wait: Duration::from_micros(until_one),
            full_in: Duration::from_micros(full),
        })
    }
}
