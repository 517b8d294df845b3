//! The `SQLite` schema: its tables and indexes, its version, and creating it.
//!
//! Job: create the schema on first open, refuse a file written by a newer keygate, and
//! name the `keys` columns in the one order every query and the codec use.
//!
//! Invariants: creation runs inside one `BEGIN IMMEDIATE`, so two processes starting
//! together cannot race; `IF NOT EXISTS` everywhere, so a later version can add to it;
//! a file whose version is newer than [`SCHEMA_VERSION`] is never written to.
//!
//! Why these indexes: `by_hash` is one lookup on `hash`; each listing filter (none,
//! business, user) has an index in `(created_at, id)` order, so a page is a walk of
//! one index, never a full scan or a sort (`tests::queries_use_indexes` checks the plans).

use rusqlite::{Connection, TransactionBehavior};

use super::{OpenError, classify};
use crate::store::StoreError;

/// The schema this code writes. Opening a file with a newer one is refused.
pub const SCHEMA_VERSION: i64 = 4;

/// Created on first open, inside one `BEGIN IMMEDIATE` so two processes starting
/// together cannot race. `IF NOT EXISTS` everywhere so a later version can add to it.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    id           TEXT PRIMARY KEY NOT NULL,
    hash         BLOB NOT NULL UNIQUE,      -- SHA-256 of the secret, 32 bytes
    name         TEXT NOT NULL,
    description  TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    business_id  TEXT NOT NULL,
    scopes       TEXT NOT NULL,             -- JSON array of strings
    locations    TEXT NOT NULL,             -- JSON array of strings
    grants       TEXT NOT NULL,             -- JSON array of {role, locations}
    created_at   INTEGER NOT NULL,          -- Unix seconds
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER,
    created_by   TEXT NOT NULL,
    enabled      INTEGER NOT NULL DEFAULT 1, -- 0: suspended (version 2 on)
    metadata     TEXT NOT NULL DEFAULT '{}', -- JSON object of strings
    allowed_ips  TEXT NOT NULL DEFAULT '[]', -- JSON array of addresses and CIDRs
    updated_at   INTEGER,
    limits       TEXT NOT NULL DEFAULT '{}', -- JSON object route -> rate (version 3 on)
    plan         TEXT NOT NULL DEFAULT '',   -- '' : no plan
    quota        TEXT NOT NULL DEFAULT 'null', -- JSON quota or null (version 4 on)
    quota_counter TEXT NOT NULL DEFAULT ''   -- '' : the key's id
);
CREATE INDEX IF NOT EXISTS keys_by_created  ON keys (created_at, id);
CREATE INDEX IF NOT EXISTS keys_by_business ON keys (business_id, created_at, id);
CREATE INDEX IF NOT EXISTS keys_by_user     ON keys (user_id, created_at, id);
CREATE TABLE IF NOT EXISTS changes (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    hash BLOB NOT NULL,
    at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_by_at ON changes (at);
CREATE TABLE IF NOT EXISTS audit (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    business_id TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_at       ON audit (at);
CREATE INDEX IF NOT EXISTS audit_by_business ON audit (business_id, at);
CREATE TABLE IF NOT EXISTS quota_use (
    name       TEXT PRIMARY KEY NOT NULL,   -- a quota window (keys::Window::name)
    used       INTEGER NOT NULL,
    expires_at INTEGER                      -- Unix seconds; NULL: credits, kept
);
CREATE INDEX IF NOT EXISTS quota_use_by_expiry ON quota_use (expires_at);
CREATE TABLE IF NOT EXISTS usage (
    series  TEXT NOT NULL,                  -- k:<key id> or b:<business id>
    hour    INTEGER NOT NULL,               -- the hour's start, Unix seconds (UTC)
    outcome TEXT NOT NULL,                  -- allowed, or a refusal's code
    n       INTEGER NOT NULL,
    PRIMARY KEY (series, hour, outcome)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_by_hour ON usage (hour);
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT, -- numbers only grow, never reused
    business_id TEXT NOT NULL,
    body        TEXT NOT NULL                      -- the event as JSON (events::Event)
);
CREATE INDEX IF NOT EXISTS events_by_business ON events (business_id, seq);
CREATE TABLE IF NOT EXISTS event_once (
    name  TEXT PRIMARY KEY NOT NULL,        -- events::Once::name
    until INTEGER NOT NULL                  -- Unix ms; after it, the name is free again
);
CREATE INDEX IF NOT EXISTS event_once_by_until ON event_once (until);
CREATE TABLE IF NOT EXISTS event_deliveries (
    seq   INTEGER NOT NULL,                 -- events.seq (dropped with its event)
    url   TEXT NOT NULL,                    -- the webhook
    state TEXT NOT NULL,                    -- events::Delivery as JSON
    PRIMARY KEY (seq, url)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS event_cursors (
    url TEXT PRIMARY KEY NOT NULL,          -- the webhook
    seq INTEGER NOT NULL                    -- the last event it is done with
);
CREATE TABLE IF NOT EXISTS leases (
    name   TEXT PRIMARY KEY NOT NULL,
    holder TEXT NOT NULL,
    until  INTEGER NOT NULL                 -- Unix ms
);
";

/// Columns of `keys` in the order the codec reads them (`codec::decode_key`).
pub(super) const KEY_COLUMNS: &str = "id, hash, name, description, prefix, user_id, business_id, \
     scopes, locations, grants, created_at, expires_at, revoked_at, last_used_at, created_by, \
     enabled, metadata, allowed_ips, updated_at, limits, plan, quota, quota_counter";
pub(super) const KEY_COLUMN_COUNT: usize = 23;

/// Version 1 → 2: suspension, metadata, IP allowlists and the edit time. `ADD COLUMN`
/// with defaults: existing keys stay enabled, without metadata, usable anywhere.
const TO_VERSION_2: &str = "
ALTER TABLE keys ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1;
ALTER TABLE keys ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
ALTER TABLE keys ADD COLUMN allowed_ips TEXT NOT NULL DEFAULT '[]';
ALTER TABLE keys ADD COLUMN updated_at INTEGER;
UPDATE schema_version SET version = 2;
";

/// Version 2 → 3: per-key rate limits and plans. Existing keys keep the routes' limits.
const TO_VERSION_3: &str = "
ALTER TABLE keys ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
ALTER TABLE keys ADD COLUMN plan TEXT NOT NULL DEFAULT '';
UPDATE schema_version SET version = 3;
";

/// Version 3 → 4: quotas. Existing keys have none and count under their own id.
const TO_VERSION_4: &str = "
ALTER TABLE keys ADD COLUMN quota TEXT NOT NULL DEFAULT 'null';
ALTER TABLE keys ADD COLUMN quota_counter TEXT NOT NULL DEFAULT '';
UPDATE schema_version SET version = 4;
";

/// Creates the schema if the file has none; checks the version of one it has.
pub(super) fn create_schema(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(classify)?;
    tx.execute_batch(SCHEMA).map_err(classify)?;
    let found: Option<i64> = tx
        .query_row("SELECT max(version) FROM schema_version", [], |row| {
            row.get(0)
        })
        .map_err(classify)?;
    match found {
        None => {
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [SCHEMA_VERSION],
            )
            .map_err(classify)?;
        }
        Some(v) if v > SCHEMA_VERSION => {
            return Err(StoreError::unavailable(OpenError::NewerSchema { found: v }));
        }
        // Older versions are migrated here, step by step, in this transaction.
        Some(1) => {
            tx.execute_batch(TO_VERSION_2).map_err(classify)?;
            tx.execute_batch(TO_VERSION_3).map_err(classify)?;
            tx.execute_batch(TO_VERSION_4).map_err(classify)?;
        }
        Some(2) => {
            tx.execute_batch(TO_VERSION_3).map_err(classify)?;
            tx.execute_batch(TO_VERSION_4).map_err(classify)?;
        }
        Some(3) => tx.execute_batch(TO_VERSION_4).map_err(classify)?,
        Some(_) => {}
    }
    tx.commit().map_err(classify)
}
