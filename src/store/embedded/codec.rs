//! `keys` and `audit` rows ↔ records: how the shared codec's fields are read from
//! `SQLite` values.
//!
//! Job: read a row into plain values, then decode them into a [`KeyRecord`] or an
//! [`AuditEvent`] with the shared `store::codec`; turn a `changes` hash into an
//! [`Invalidation`].
//!
//! Invariants: reading a row never fails on a column's type (every column is read as a
//! `Value`), so a wrongly typed column is [`StoreError::Corrupt`] naming the row, not a
//! query error and never a panic. Hashes are 32-byte BLOBs; lists are JSON text; times
//! are integer Unix seconds, `NULL` when absent.

use rusqlite::types::Value;

use super::schema::KEY_COLUMN_COUNT;
use crate::keys::{KeyHash, KeyRecord, Timestamp};
use crate::store::codec::{Fields, Undecodable, corrupt, decode_record, key_hash, required};
use crate::store::{AuditEvent, Invalidation, StoreError};

/// A `keys` row as `SQLite` holds it, in `KEY_COLUMNS` order.
pub(super) type RawRow = Vec<Value>;

/// Reads a `keys` row (selected with `KEY_COLUMNS`) without decoding it.
pub(super) fn raw_key_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    (0..KEY_COLUMN_COUNT)
        .map(|i| row.get::<_, Value>(i))
        .collect()
}

/// The raw `hash` column, for the `changes` table.
pub(super) fn raw_hash(raw: &RawRow) -> Vec<u8> {
    match raw.get(1) {
        Some(Value::Blob(b)) => b.clone(),
        _ => Vec::new(), // not a hash: the poller answers it with `All`
    }
}

/// A row's columns, read in order: a missing column reads as `NULL`.
struct Columns(std::vec::IntoIter<Value>);

impl Columns {
    fn next(&mut self) -> Value {
        self.0.next().unwrap_or(Value::Null)
    }
}

impl Fields for Columns {
    fn text(&mut self, field: &'static str) -> Result<String, Undecodable> {
        match self.next() {
            Value::Text(s) => Ok(s),
            _ => Err(Undecodable::Type { field }),
        }
    }

    fn optional_text(&mut self, field: &'static str) -> Result<Option<String>, Undecodable> {
        match self.next() {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s)),
            _ => Err(Undecodable::Type { field }),
        }
    }

    fn flag(&mut self, field: &'static str) -> Result<Option<bool>, Undecodable> {
        match self.next() {
            Value::Null => Ok(None),
            Value::Integer(0) => Ok(Some(false)),
            Value::Integer(1) => Ok(Some(true)),
            Value::Integer(_) => Err(Undecodable::Flag { field }),
            _ => Err(Undecodable::Type { field }),
        }
    }

    fn time(&mut self, field: &'static str) -> Result<Option<Timestamp>, Undecodable> {
        match self.next() {
            Value::Null => Ok(None),
            Value::Integer(n) => Ok(Some(Timestamp(n))),
            _ => Err(Undecodable::Type { field }),
        }
    }

    fn hash(&mut self) -> Result<KeyHash, Undecodable> {
        match self.next() {
            Value::Blob(b) => key_hash(&b),
            _ => Err(Undecodable::Type { field: "hash" }),
        }
    }
}

/// The record a `keys` row holds; `Corrupt` names it by its id.
pub(super) fn decode_key(raw: RawRow) -> Result<KeyRecord, StoreError> {
    let record = match raw.first() {
        Some(Value::Text(id)) => id.clone(),
        _ => "<row with a bad id>".to_owned(),
    };
    decode_record(&mut Columns(raw.into_iter())).map_err(|e| corrupt(&record, e))
}

/// The event an `audit` row holds (`seq` first, then the event's columns); `Corrupt`
/// names it by its `seq`.
pub(super) fn decode_audit(raw: Vec<Value>) -> Result<AuditEvent, StoreError> {
    let record = match raw.first() {
        Some(Value::Integer(n)) => format!("audit #{n}"),
        _ => "audit row".to_owned(),
    };
    let mut cols = Columns(raw.into_iter());
    let _seq = cols.next();
    let mut decode = || -> Result<AuditEvent, Undecodable> {
        Ok(AuditEvent {
            at: required("at", cols.time("at")?)?,
            actor: cols.text("actor")?,
            action: cols.text("action")?,
            key_id: cols.text("key_id")?,
            business_id: cols.text("business_id")?,
            detail: cols.text("detail")?,
        })
    };
    decode().map_err(|e| corrupt(&record, e))
}

/// What a `changes` row's hash means to a cache: that key, or `All` if it is no hash.
pub(super) fn invalidation_for(hash: &[u8]) -> Invalidation {
    key_hash(hash).map_or(Invalidation::All, Invalidation::Key)
}
