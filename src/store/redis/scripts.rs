//! The Lua scripts that make each step of a mutation atomic on one key.
//!
//! Job: insert a record only if its hash is new, release an id claim, revoke or end a
//! record's life, compare-and-set its editable fields, and record a last use: each one script on one key (so it runs on a
//! Cluster), loaded by hash and resent only when Redis does not have it.
//!
//! Invariants: a script that changes what a hash maps to publishes that hash on
//! [`CHANNEL`](super::CHANNEL) in the same step, so no writer can change a record
//! without every subscriber hearing of it; `TOUCH` changes no decision and publishes
//! nothing. A key of the wrong type is refused (`WRONGTYPE`, or skipped by `TOUCH`),
//! never overwritten.

use ::redis::Script;

/// Inserts a record if its hash is new; publishes the hash. KEYS: record. ARGV: channel,
/// hash hex, field, value, …
const INSERT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1";

/// Frees an id claim, only if it still points at this hash. KEYS: id. ARGV: hash hex.
const RELEASE_ID: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1";

/// Sets a field unless set (`HSETNX`, for revocation) or to the minimum of old and new
/// (`MIN`, for rotation's end of life); publishes; returns the record after.
/// KEYS: record. ARGV: channel, hash hex, mode, field, value.
const UPDATE: &str = r"
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then return false end
if t ~= 'hash' then return redis.error_reply('WRONGTYPE keygate record is a ' .. t) end
if ARGV[3] == 'HSETNX' then
  redis.call('HSETNX', KEYS[1], ARGV[4], ARGV[5])
else
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[4]))
  if cur == nil or cur > tonumber(ARGV[5]) then redis.call('HSET', KEYS[1], ARGV[4], ARGV[5]) end
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return redis.call('HGETALL', KEYS[1])";

/// Compare-and-set of a record's fields (edit, suspend, resume); publishes; returns the
/// record after, `false` if there is none, `0` if a compared field differs. KEYS:
/// record. ARGV: channel, hash hex, n, then n pairs (field, expected), then pairs
/// (field, new value). A value is `=` and the text, or `-` for an absent field. A field
/// added after the first layout and absent from an older record compares as its default.
const REPLACE: &str = r"
local defaults = {enabled = '1', metadata = '{}', allowed_ips = '[]', limits = '{}', plan = '', quota = 'null'}
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then return false end
if t ~= 'hash' then return redis.error_reply('WRONGTYPE keygate record is a ' .. t) end
local n = tonumber(ARGV[3])
for i = 0, n - 1 do
  local cur = redis.call('HGET', KEYS[1], ARGV[4 + 2 * i])
  if not cur then cur = defaults[ARGV[4 + 2 * i]] end
  local want = ARGV[5 + 2 * i]
  if want == '-' then
    if cur then return 0 end
  elseif (not cur) or ('=' .. cur) ~= want then
    return 0
  end
end
for i = 4 + 2 * n, #ARGV, 2 do
  local v = ARGV[i + 1]
  if v == '-' then redis.call('HDEL', KEYS[1], ARGV[i])
  else redis.call('HSET', KEYS[1], ARGV[i], string.sub(v, 2)) end
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return redis.call('HGETALL', KEYS[1])";

/// `last_used_at = max(existing, t)` on a record that is a hash; no publish (it changes
/// no decision). KEYS: record. ARGV: t.
const TOUCH: &str = r"
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return 0 end
local cur = tonumber(redis.call('HGET', KEYS[1], 'last_used_at'))
if cur == nil or cur < tonumber(ARGV[1]) then redis.call('HSET', KEYS[1], 'last_used_at', ARGV[1]) end
return 1";

/// The scripts, loaded once per store.
pub(super) struct Scripts {
    pub(super) insert: Script,
    pub(super) release_id: Script,
    pub(super) update: Script,
    pub(super) replace: Script,
    pub(super) touch: Script,
    pub(super) take: Script,
    pub(super) quota_take: Script,
    pub(super) quota_give_back: Script,
    pub(super) event_push: Script,
    pub(super) lease: Script,
    pub(super) event_cursor: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let (quota_take, quota_give_back) = super::quotas::scripts();
        let (event_push, lease, event_cursor) = super::events::scripts();
        Self {
            insert: Script::new(INSERT),
            release_id: Script::new(RELEASE_ID),
            update: Script::new(UPDATE),
            replace: Script::new(REPLACE),
            touch: Script::new(TOUCH),
            take: super::buckets::take_script(),
            quota_take,
            quota_give_back,
            event_push,
            lease,
            event_cursor,
        }
    }
}
