//! What the back ends' record codecs share: why a stored value does not decode
//! ([`Undecodable`]), the JSON text of a record's lists, and the one place a
//! [`KeyRecord`] is assembled from its stored fields.
//!
//! Job: turn a record's lists into the JSON text every back end stores, and a back
//! end's stored fields (an SQL row, a Redis hash) back into a [`KeyRecord`].
//!
//! Invariants:
//! - Decoding never panics: an absent, mistyped or malformed field is an
//!   [`Undecodable`], which the back end wraps in [`StoreError::Corrupt`] naming the
//!   record.
//! - Lists and maps (`scopes`, `locations`, `grants`, `metadata`, `allowed_ips`, `limits`,
//!   `quota`) are JSON text in every back end.
//! - The fields added after the first schema (`enabled`, `metadata`, `allowed_ips`,
//!   `updated_at`, `limits`, `plan`, `quota`, `quota_counter`) may be absent from a
//!   record written before them: absent reads as enabled, no metadata, anywhere, never
//!   edited, the route's own limits, no plan, no quota, counted under the key's id. A
//!   stored `plan` of `""` is no plan; a stored `quota` of `null`, none.
//!
//! Why a [`Fields`] trait rather than a decoder per back end: a record's twenty-one fields,
//! their order and which of them are optional are stated once, here; a back end only
//! says how it reads one text, one time and the hash from what it stores.

use serde::de::DeserializeOwned;

use super::{BoxError, StoreError};
use crate::keys::{KeyHash, KeyRecord, Timestamp};

/// Why a stored value does not decode (the cause inside [`StoreError::Corrupt`]).
/// `field` names the record's field: an SQL column, a Redis hash field.
#[derive(Debug, thiserror::Error)]
pub enum Undecodable {
    /// A required field is absent.
    #[error("field `{0}` is missing")]
    Missing(&'static str),
    /// A field is absent or holds another type than its own (an SQL column).
    #[error("field `{field}` is missing or has the wrong type")]
    Type { field: &'static str },
    /// A time stored as text is not a whole number (a Redis hash field).
    #[error("field `{field}` is not a whole number: `{value}`")]
    Number { field: &'static str, value: String },
    /// A list field (or an audit event) is not the JSON its type expects.
    #[error("field `{field}` is not the expected JSON")]
    Json {
        field: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A stored hash is not 32 bytes long.
    #[error("field `hash` holds {len} bytes, not 32")]
    HashLength { len: usize },
    /// A Redis value is not a hash of UTF-8 fields, or a hash hex does not decode.
    #[error("the value is not a hash of UTF-8 fields")]
    Shape,
    /// A Redis listing index member is not `<sort key>\0<hash hex>`.
    #[error("an index member is malformed")]
    Member,
    /// Redis answered `WRONGTYPE`: the key holds another kind of value.
    #[error("Redis refused the value's type")]
    WrongType {
        #[source]
        source: BoxError,
    },
    /// An `allowed_ips` entry is not an address or CIDR.
    #[error("field `allowed_ips` holds `{0}`, which is not an address or CIDR")]
    Address(String),
    /// A flag is neither 0 nor 1.
    #[error("field `{field}` is not 0 or 1")]
    Flag { field: &'static str },
    /// The id → hash index names a record whose own id is another.
    #[error("the id index points at a record with another id")]
    IdMismatch,
}

/// `Corrupt`, naming `record` (its id, its hash, or the value that holds it).
pub(crate) fn corrupt(record: &str, e: Undecodable) -> StoreError {
    StoreError::Corrupt {
        record: record.to_owned(),
        source: Box::new(e),
    }
}

/// A stored record's fields as one back end reads them. [`decode_record`] asks for
/// them in the record's column order: `id`, `hash`, `name`, `description`, `prefix`,
/// `user_id`, `business_id`, `scopes`, `locations`, `grants`, `created_at`,
/// `expires_at`, `revoked_at`, `last_used_at`, `created_by`, `enabled`, `metadata`,
/// `allowed_ips`, `updated_at`, `limits`, `plan`, `quota`, `quota_counter`; a back end reading positionally relies
/// on that order.
pub(crate) trait Fields {
    /// A text field.
    fn text(&mut self, field: &'static str) -> Result<String, Undecodable>;
    /// A text field a record written before it existed may lack.
    fn optional_text(&mut self, field: &'static str) -> Result<Option<String>, Undecodable>;
    /// A 0/1 flag; `None` if the record has none.
    fn flag(&mut self, field: &'static str) -> Result<Option<bool>, Undecodable>;
    /// A time in Unix seconds; `None` if the record has none.
    fn time(&mut self, field: &'static str) -> Result<Option<Timestamp>, Undecodable>;
    /// The record's hash.
    fn hash(&mut self) -> Result<KeyHash, Undecodable>;
}

/// The record `fields` hold.
pub(crate) fn decode_record(f: &mut impl Fields) -> Result<KeyRecord, Undecodable> {
    // Field by field in the documented order (a struct literal evaluates in source order).
    let mut r = KeyRecord {
        identity: crate::headers::Memo::default(),
        id: f.text("id")?,
        hash: f.hash()?,
        name: f.text("name")?,
        description: f.text("description")?,
        prefix: f.text("prefix")?,
        user_id: f.text("user_id")?,
        business_id: f.text("business_id")?,
        scopes: json("scopes", &f.text("scopes")?)?,
        locations: json("locations", &f.text("locations")?)?,
        grants: json("grants", &f.text("grants")?)?,
        created_at: required("created_at", f.time("created_at")?)?,
        expires_at: f.time("expires_at")?,
        revoked_at: f.time("revoked_at")?,
        last_used_at: f.time("last_used_at")?,
        created_by: f.text("created_by")?,
        enabled: f.flag("enabled")?.unwrap_or(true),
        metadata: f
            .optional_text("metadata")?
            .map(|t| json("metadata", &t))
            .transpose()?
            .unwrap_or_default(),
        allowed_ips: match f.optional_text("allowed_ips")? {
            None => Vec::new(),
            Some(t) => json::<Vec<String>>("allowed_ips", &t)?
                .iter()
                .map(|a| crate::keys::parse_ip_net(a).map_err(|_| Undecodable::Address(a.clone())))
                .collect::<Result<_, _>>()?,
        },
        updated_at: f.time("updated_at")?,
        limits: f
            .optional_text("limits")?
            .map(|t| json("limits", &t))
            .transpose()?
            .unwrap_or_default(),
        plan: f.optional_text("plan")?.and_then(crate::keys::plan_named),
        quota: f
            .optional_text("quota")?
            .map(|t| json("quota", &t))
            .transpose()?
            .flatten(),
        quota_counter: f.optional_text("quota_counter")?.unwrap_or_default(),
    };
    if r.quota_counter.is_empty() {
        r.quota_counter.clone_from(&r.id);
    }
    Ok(r)
}

/// A record's lists as the JSON text every back end stores them as.
pub(crate) struct JsonLists {
    pub(crate) scopes: String,
    pub(crate) locations: String,
    pub(crate) grants: String,
    pub(crate) metadata: String,
    pub(crate) allowed_ips: String,
    pub(crate) limits: String,
    pub(crate) quota: String,
}

impl JsonLists {
    /// `r`'s lists; a list that does not serialise is `Corrupt`, naming `r`.
    pub(crate) fn of(r: &KeyRecord) -> Result<Self, StoreError> {
        let json = |field: &'static str, v: Result<String, serde_json::Error>| {
            v.map_err(|source| corrupt(&r.id, Undecodable::Json { field, source }))
        };
        Ok(Self {
            scopes: json("scopes", serde_json::to_string(&r.scopes))?,
            locations: json("locations", serde_json::to_string(&r.locations))?,
            grants: json("grants", serde_json::to_string(&r.grants))?,
            metadata: json("metadata", serde_json::to_string(&r.metadata))?,
            allowed_ips: json(
                "allowed_ips",
                serde_json::to_string(
                    &r.allowed_ips
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>(),
                ),
            )?,
            limits: json("limits", serde_json::to_string(&r.limits))?,
            quota: json("quota", serde_json::to_string(&r.quota))?,
        })
    }
}

/// `text` as the JSON of a `T`.
pub(crate) fn json<T: DeserializeOwned>(field: &'static str, text: &str) -> Result<T, Undecodable> {
    serde_json::from_str(text).map_err(|source| Undecodable::Json { field, source })
}

/// A time the record must have.
pub(crate) fn required(
    field: &'static str,
    time: Option<Timestamp>,
) -> Result<Timestamp, Undecodable> {
    time.ok_or(Undecodable::Missing(field))
}

/// 32 stored bytes as a hash.
pub(crate) fn key_hash(bytes: &[u8]) -> Result<KeyHash, Undecodable> {
    <[u8; 32]>::try_from(bytes)
        .map(KeyHash)
        .map_err(|_| Undecodable::HashLength { len: bytes.len() })
}

/// The fields [`KeyStore::replace`](super::KeyStore::replace) compares and writes, as
/// the text a Redis hash holds them in (`None`: the field is absent).
pub(crate) const EDITABLE: [&str; 12] = [
    "name",
    "description",
    "scopes",
    "locations",
    "grants",
    "expires_at",
    "enabled",
    "metadata",
    "allowed_ips",
    "limits",
    "plan",
    "quota",
];

/// A flag as a Redis hash stores it (`SQLite` stores the integer).
pub(crate) fn flag_text(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

/// `r`'s [`EDITABLE`] fields, in that order, as stored text.
pub(crate) fn editable(r: &KeyRecord) -> Result<[Option<String>; 12], StoreError> {
    let JsonLists {
        scopes,
        locations,
        grants,
        metadata,
        allowed_ips,
        limits,
        quota,
    } = JsonLists::of(r)?;
    Ok([
        Some(r.name.clone()),
        Some(r.description.clone()),
        Some(scopes),
        Some(locations),
        Some(grants),
        r.expires_at.map(|t| t.0.to_string()),
        Some(flag_text(r.enabled).to_owned()),
        Some(metadata),
        Some(allowed_ips),
        Some(limits),
        Some(r.plan.clone().unwrap_or_default()),
        Some(quota),
    ])
}
