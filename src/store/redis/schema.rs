//! The Redis data layout: every key name, the pub/sub channel, and the listing
//! indexes' members.
//!
//! Layout (the key name's `{…}` is the Cluster hash tag, so keys spread over slots):
//! - `kg:key:{<sha256 hex>}`: a hash, one per key: the record's fields (lists as JSON,
//!   times as Unix seconds, absent optional times = no field). `by_hash` is one `HGETALL`.
//! - `kg:id:{<id>}`: a string, the record's hash hex (id → hash).
//! - `kg:idx:all`, `kg:idx:biz:{<business>}`, `kg:idx:user:{<user>}`: sorted sets of
//!   `<created_at as 16 hex>\0<id>\0<hash hex>` members, all score 0, read with
//!   `ZREVRANGEBYLEX`: newest first, id tiebreak, and the cursor is a lex bound.
//! - `kg:audit`, `kg:audit:biz:{<business>}`: lists of JSON events, newest first, capped
//!   at [`AUDIT_KEPT`].
//! - channel [`CHANNEL`]: the hash hex of each changed record (`*` = everything).
//!
//! Invariants: every name of one record's data carries its own hash tag, so each step
//! of a mutation touches one key (one slot); an index member's byte order is the
//! listing order (`created_at` descending, then `id` descending, read in reverse), so
//! Redis sorts as the SQL back end does.

use super::ListQuery;
use crate::keys::{KeyHash, Timestamp};
use crate::store::Undecodable;

/// The pub/sub channel every writer publishes changed hashes on.
pub const CHANNEL: &str = "kg:invalidate";
/// Audit events kept (per list); older ones are trimmed.
pub const AUDIT_KEPT: usize = 100_000;

const ALL_INDEX: &str = "kg:idx:all";
/// Every business's audit events.
pub(super) const AUDIT_ALL: &str = "kg:audit";

/// A record's hash: its fields.
pub(super) fn record_key(hash_hex: &str) -> String {
    format!("kg:key:{{{hash_hex}}}")
}
/// A record's id: its hash hex.
pub(super) fn id_key(id: &str) -> String {
    format!("kg:id:{{{id}}}")
}
fn biz_index(business: &str) -> String {
    format!("kg:idx:biz:{{{business}}}")
}
fn user_index(user: &str) -> String {
    format!("kg:idx:user:{{{user}}}")
}
/// One business's audit events.
pub(super) fn audit_biz(business: &str) -> String {
    format!("kg:audit:biz:{{{business}}}")
}
/// Every index a record is listed in.
pub(super) fn index_keys(business: &str, user: &str) -> [String; 3] {
    [ALL_INDEX.to_owned(), biz_index(business), user_index(user)]
}
/// The narrowest index that holds every record `query` can match.
pub(super) fn index_for(query: &ListQuery) -> String {
    match (&query.business_id, &query.user_id) {
        (Some(b), _) => biz_index(b),
        (None, Some(u)) => user_index(u),
        (None, None) => ALL_INDEX.to_owned(),
    }
}

/// `<created_at>\0<id>`: the sort key. `created_at` is flipped to unsigned and written as
/// 16 hex digits so byte order is numeric order, negatives included.
pub(super) fn member_prefix(created_at: Timestamp, id: &str) -> Vec<u8> {
    #[allow(clippy::cast_sign_loss)] // a bit flip, not a conversion: order-preserving
    let sortable = (created_at.0 as u64) ^ (1 << 63);
    let mut m = format!("{sortable:016x}").into_bytes();
    m.push(0);
    m.extend_from_slice(id.as_bytes());
    m
}

/// A record's member in every index: its sort key, then its hash hex.
pub(super) fn index_member(created_at: Timestamp, id: &str, hash_hex: &str) -> Vec<u8> {
    let mut m = member_prefix(created_at, id);
    m.push(0);
    m.extend_from_slice(hash_hex.as_bytes());
    m
}

/// The record hash an index member points at.
pub(super) fn parse_member(member: &[u8]) -> Result<(KeyHash, String), Undecodable> {
    let hex = member
        .rsplit(|b| *b == 0)
        .next()
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or(Undecodable::Member)?;
    let hash = parse_hash(hex).map_err(|_| Undecodable::Member)?;
    Ok((hash, hex.to_owned()))
}

/// A hash hex, as key names, members, the id index and the channel hold it.
pub(super) fn parse_hash(hex_text: &str) -> Result<KeyHash, Undecodable> {
    let bytes = hex::decode(hex_text).map_err(|_| Undecodable::Shape)?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map(KeyHash)
        .map_err(|_| Undecodable::Shape)
}
