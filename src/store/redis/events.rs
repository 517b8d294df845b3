//! The key-event outbox on Redis: [`KeyStore::push_event`](crate::store::KeyStore::push_event)
//! and its kin for [`RedisStore`].
//!
//! Layout, all under the hash tag `{ev}` (one Cluster slot: events are few, and a push
//! touches several of these keys in one script):
//! - `kg:{ev}:seq`: the last event number (`INCR`);
//! - `kg:{ev}:log`: a sorted set, score = number, member = `<number> <event JSON>`; an
//!   event goes once every cursor is past it and [`EVENTS_KEPT`] newer ones exist, or
//!   once [`EVENTS_HELD`] newer ones exist;
//! - `kg:{ev}:once:<name>`: set for a [`Once`]'s ttl;
//! - `kg:{ev}:d:<number>`: a hash, webhook URL → delivery JSON, expiring after
//!   [`DELIVERIES_KEPT_SECS`];
//! - `kg:{ev}:cursor`: a hash, webhook URL → the last number it is done with (moved
//!   forward only, by a script);
//! - `kg:{ev}:lease:<name>`: the delivering gateway's id, with a ttl.
//!
//! Invariants: a push (the once check, the number, the append, the trim) is one script,
//! so two gateways never queue the same once-event and numbers never repeat.

use std::time::Duration;

use super::RedisStore;
use crate::events::{Delivery, Event, Once, Page, Stored};
use crate::store::{DELIVERIES_KEPT_SECS, EVENTS_HELD, EVENTS_KEPT, StoreError};

const SEQ: &str = "kg:{ev}:seq";
const LOG: &str = "kg:{ev}:log";
const CURSOR: &str = "kg:{ev}:cursor";

/// KEYS: seq, log, once (or seq again), cursors. ARGV: event JSON, once ttl in ms (''
/// for none), events kept, events held. Returns the new number, or 0 if the once key
/// was set. Trims what every cursor has passed beyond the kept, and anything beyond the
/// held.
const PUSH: &str = r"
if ARGV[2] ~= '' then
  if not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then return 0 end
end
local n = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], n, n .. ' ' .. ARGV[1])
local floor = n - tonumber(ARGV[3])
for _, c in ipairs(redis.call('HVALS', KEYS[4])) do
  local v = tonumber(c)
  if v and v < floor then floor = v end
end
local hard = n - tonumber(ARGV[4])
if floor < hard then floor = hard end
if floor > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', floor) end
return n";

/// KEYS: the cursors. ARGV: webhook URL, number. Moves the cursor forward only.
const CURSOR_SCRIPT: &str = r"
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
if not cur or cur < tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1";

/// KEYS: the lease. ARGV: holder, ttl in ms. Returns 1 if the holder has it.
const LEASE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0";

pub(super) fn scripts() -> (::redis::Script, ::redis::Script, ::redis::Script) {
    (
        ::redis::Script::new(PUSH),
        ::redis::Script::new(LEASE),
        ::redis::Script::new(CURSOR_SCRIPT),
    )
}

fn deliveries_key(seq: u64) -> String {
    format!("kg:{{ev}}:d:{seq}")
}

fn millis(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

/// A log member (`<number> <event JSON>`): its number, and the event if it reads.
fn decode(member: &str) -> (Option<u64>, Option<Stored>) {
    let Some((seq, json)) = member.split_once(' ') else {
        return (None, None);
    };
    let Ok(seq) = seq.parse() else {
        return (None, None);
    };
    let stored = serde_json::from_str(json).ok().map(|event| Stored {
        seq,
        event,
        deliveries: Vec::new(),
    });
    (Some(seq), stored)
}

/// The readable events of `members`, and the highest number among them all.
fn decode_all(members: &[String]) -> Page {
    let mut page = Page::default();
    for m in members {
        let (seq, stored) = decode(m);
        page.last = page.last.max(seq);
        match stored {
            Some(s) => page.events.push(s),
            None => {
                tracing::warn!("skipping an unreadable entry of the key-event log (kg:{{ev}}:log)");
            }
        }
    }
    page
}

impl RedisStore {
    pub(super) async fn push_event_to_log(
        &self,
        event: &Event,
        once: Option<&Once>,
    ) -> Result<Option<u64>, StoreError> {
        let json = serde_json::to_string(event).map_err(StoreError::unavailable)?;
        let (once_key, ttl) = match once {
            Some(o) => (format!("kg:{{ev}}:once:{}", o.name), millis(o.ttl)),
            None => (SEQ.to_owned(), String::new()),
        };
        let script = &self.inner.scripts.event_push;
        let kept = EVENTS_KEPT.to_string();
        let held = EVENTS_HELD.to_string();
        let n: u64 = self
            .inner
            .link
            .run(|mut c| async move {
                script
                    .key(SEQ)
                    .key(LOG)
                    .key(&once_key)
                    .key(CURSOR)
                    .arg(&json)
                    .arg(&ttl)
                    .arg(&kept)
                    .arg(&held)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok((n > 0).then_some(n))
    }

    pub(super) async fn log_after(&self, after: u64, limit: usize) -> Result<Page, StoreError> {
        let members: Vec<String> = self
            .inner
            .link
            .cmd(
                ::redis::cmd("ZRANGEBYSCORE")
                    .arg(LOG)
                    .arg(format!("({after}"))
                    .arg("+inf")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .clone(),
            )
            .await?;
        Ok(decode_all(&members))
    }

    pub(super) async fn log_recent(
        &self,
        business_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Stored>, StoreError> {
        const PAGE: usize = 500;
        let mut found = Vec::new();
        let mut start = 0;
        while found.len() < limit && start < EVENTS_HELD {
            let members: Vec<String> = self
                .inner
                .link
                .cmd(
                    ::redis::cmd("ZREVRANGE")
                        .arg(LOG)
                        .arg(start)
                        .arg(start + PAGE - 1)
                        .clone(),
                )
                .await?;
            let done = members.len() < PAGE;
            found.extend(
                decode_all(&members)
                    .events
                    .into_iter()
                    .filter(|s| business_id.is_none_or(|b| s.event.business_id == b)),
            );
            if done {
                break;
            }
            start += PAGE;
        }
        found.truncate(limit);
        if found.is_empty() {
            return Ok(found);
        }
        let cmds = found
            .iter()
            .map(|s| ::redis::cmd("HGETALL").arg(deliveries_key(s.seq)).clone())
            .collect();
        let replies: Vec<Vec<(String, String)>> = self.inner.link.batch(cmds).await?;
        for (stored, fields) in found.iter_mut().zip(replies) {
            stored.deliveries = fields
                .iter()
                .filter_map(|(_, json)| serde_json::from_str(json).ok())
                .collect();
            stored
                .deliveries
                .sort_by(|a: &Delivery, b| a.url.cmp(&b.url));
        }
        Ok(found)
    }

    pub(super) async fn cursor_of(&self, url: &str) -> Result<Option<u64>, StoreError> {
        self.inner
            .link
            .cmd(::redis::cmd("HGET").arg(CURSOR).arg(url).clone())
            .await
    }

    pub(super) async fn move_cursor(&self, url: &str, seq: u64) -> Result<(), StoreError> {
        let _: i64 = self
            .inner
            .link
            .script(
                &self.inner.scripts.event_cursor,
                CURSOR,
                &[url, &seq.to_string()],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn write_delivery(
        &self,
        seq: u64,
        delivery: &Delivery,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(delivery).map_err(StoreError::unavailable)?;
        let key = deliveries_key(seq);
        let cmds = vec![
            ::redis::cmd("HSET")
                .arg(&key)
                .arg(&delivery.url)
                .arg(json)
                .clone(),
            ::redis::cmd("EXPIRE")
                .arg(&key)
                .arg(DELIVERIES_KEPT_SECS)
                .clone(),
        ];
        let _: Vec<::redis::Value> = self.inner.link.batch(cmds).await?;
        if delivery.is_final() {
            self.move_cursor(&delivery.url, seq).await?;
        }
        Ok(())
    }

    pub(super) async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let held: i64 = self
            .inner
            .link
            .script(
                &self.inner.scripts.lease,
                &format!("kg:{{ev}}:lease:{name}"),
                &[holder, &millis(ttl)],
            )
            .await?;
        Ok(held == 1)
    }
}
