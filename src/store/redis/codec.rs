//! Records and audit events ↔ Redis values: how the shared codec's fields are read
//! from a hash.
//!
//! Job: turn a [`KeyRecord`] into a hash's fields and an `HGETALL` reply (or a script's
//! copy of one) back into a record, on the shared `store::codec`; audit events are JSON.
//!
//! Invariants: a reply of the wrong shape, a missing field, a time that is not a whole
//! number or a list that is not the expected JSON is [`StoreError::Corrupt`] naming the
//! record, never a panic. An absent optional time is an absent field, never an empty one.

use std::collections::HashMap;

use ::redis::Value;

use crate::keys::{KeyHash, KeyRecord, Timestamp};
use crate::store::codec::{Fields, JsonLists, corrupt, decode_record, flag_text};
use crate::store::{AuditEvent, StoreError, Undecodable};

/// A record as the `(field, value)` pairs of its hash.
pub(super) fn encode(r: &KeyRecord) -> Result<Vec<(&'static str, String)>, StoreError> {
    let JsonLists {
        scopes,
        locations,
        grants,
        metadata,
        allowed_ips,
        limits,
        quota,
    } = JsonLists::of(r)?;
    let mut f = vec![
        ("id", r.id.clone()),
        ("name", r.name.clone()),
        ("description", r.description.clone()),
        ("prefix", r.prefix.clone()),
        ("user_id", r.user_id.clone()),
        ("business_id", r.business_id.clone()),
        ("scopes", scopes),
        ("locations", locations),
        ("grants", grants),
        ("created_at", r.created_at.0.to_string()),
        ("created_by", r.created_by.clone()),
        ("enabled", flag_text(r.enabled).to_owned()),
        ("metadata", metadata),
        ("allowed_ips", allowed_ips),
        ("limits", limits),
        ("plan", r.plan.clone().unwrap_or_default()),
        ("quota", quota),
        ("quota_counter", r.quota_counter.clone()),
    ];
    for (name, t) in [
        ("expires_at", r.expires_at),
        ("revoked_at", r.revoked_at),
        ("last_used_at", r.last_used_at),
        ("updated_at", r.updated_at),
    ] {
        if let Some(t) = t {
            f.push((name, t.0.to_string()));
        }
    }
    Ok(f)
}

/// A `HGETALL` reply (or a script's copy of one): empty or nil = no record.
pub(super) fn decode_reply(
    reply: Value,
    hash: KeyHash,
    name: &str,
) -> Result<Option<KeyRecord>, StoreError> {
    let fields = match reply {
        Value::Nil => return Ok(None),
        Value::Array(items) => pairs(items),
        Value::Map(items) => items
            .into_iter()
            .map(|(k, v)| Some((text(k)?, text(v)?)))
            .collect(),
        _ => None,
    }
    .ok_or_else(|| corrupt(name, Undecodable::Shape))?;
    if fields.is_empty() {
        return Ok(None);
    }
    decode_record(&mut HashFields { fields, hash })
        .map(Some)
        .map_err(|e| corrupt(name, e))
}

fn pairs(items: Vec<Value>) -> Option<HashMap<String, String>> {
    if !items.len().is_multiple_of(2) {
        return None;
    }
    let mut it = items.into_iter();
    let mut out = HashMap::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.insert(text(k)?, text(v)?);
    }
    Some(out)
}

fn text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// A record's hash fields; the hash itself is the key's name, known before the reply.
struct HashFields {
    fields: HashMap<String, String>,
    hash: KeyHash,
}

impl Fields for HashFields {
    fn text(&mut self, field: &'static str) -> Result<String, Undecodable> {
        self.fields.remove(field).ok_or(Undecodable::Missing(field))
    }

    fn optional_text(&mut self, field: &'static str) -> Result<Option<String>, Undecodable> {
        Ok(self.fields.remove(field))
    }

    fn flag(&mut self, field: &'static str) -> Result<Option<bool>, Undecodable> {
        match self.fields.get(field).map(String::as_str) {
            None => Ok(None),
            Some("0") => Ok(Some(false)),
            Some("1") => Ok(Some(true)),
            Some(_) => Err(Undecodable::Flag { field }),
        }
    }

    fn time(&mut self, field: &'static str) -> Result<Option<Timestamp>, Undecodable> {
        self.fields
            .get(field)
            .map(|v| {
                v.parse::<i64>()
                    .map(Timestamp)
                    .map_err(|_| Undecodable::Number {
                        field,
                        value: v.clone(),
                    })
            })
            .transpose()
    }

    fn hash(&mut self) -> Result<KeyHash, Undecodable> {
        Ok(self.hash)
    }
}

/// An audit event as the JSON its lists hold; `Corrupt` names its key.
pub(super) fn encode_audit(event: &AuditEvent) -> Result<String, StoreError> {
    serde_json::to_string(event).map_err(|source| {
        corrupt(
            &event.key_id,
            Undecodable::Json {
                field: "audit",
                source,
            },
        )
    })
}

/// One entry of the audit list `list`.
pub(super) fn decode_audit(list: &str, json: &[u8]) -> Result<AuditEvent, StoreError> {
    serde_json::from_slice(json).map_err(|source| {
        corrupt(
            list,
            Undecodable::Json {
                field: "audit",
                source,
            },
        )
    })
}

/// Names the record in a `Corrupt` error that the round-trip helper could not name.
pub(super) fn named(e: StoreError, name: &str) -> StoreError {
    match e {
        StoreError::Corrupt { record, source } if record.is_empty() => StoreError::Corrupt {
            record: name.to_owned(),
            source,
        },
        other => other,
    }
}
