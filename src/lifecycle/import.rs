//! `keygate keys import`: keys already in use elsewhere, from JSON Lines, one key per line.
//!
//! Job: read each line's secret (`key`, the plaintext, hashed here and then dropped) or
//! its hash (`sha256`), owner and any record field; check it by the same rules as
//! creation ([`super::prepare`]); store it unless its hash is already there; report each
//! line's result.
//!
//! Invariants: a plaintext secret is never stored, printed or logged, only its SHA-256;
//! a bad line names its line number and field and does not stop the others; a second
//! run of the same file changes nothing (a hash already stored is `exists`); a dry run
//! writes nothing; a plaintext key without keygate's prefix and checksum is refused
//! unless `keys.accept_imported` is on (the gateway could not authenticate it).

use std::collections::HashMap;

use serde::Deserialize;

use super::{Expiry, NewKey, Rules, assemble, audit, prepare};
use crate::keys::{self, Grant, KeyHash, KeyRecord, Metadata};
use crate::store::{KeyStore, StoreError};

/// One line of an import file. Unknown fields are refused, with a did-you-mean.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    key: Option<String>,
    sha256: Option<String>,
    name: Option<String>,
    description: Option<String>,
    user_id: Option<String>,
    business_id: Option<String>,
    scopes: Option<Vec<String>>,
    locations: Option<Vec<String>>,
    grants: Option<Vec<Grant>>,
    expires_at: Option<String>,
    metadata: Option<Metadata>,
    allowed_ips: Option<Vec<String>>,
    limits: Option<keys::KeyLimits>,
    plan: Option<String>,
    quota: Option<keys::QuotaInput>,
    enabled: Option<bool>,
}

/// What happened to one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored under this id.
    Created(String),
    /// A dry run: it would be stored.
    WouldCreate,
    /// Its hash is already stored, under this id: nothing changed.
    Exists(String),
    /// Refused: `<field>: <why>`.
    Failed(String),
}

/// One line's result; `line` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineResult {
    pub line: usize,
    pub outcome: Outcome,
    /// The line gave only the secret's hash, so its shape could not be checked.
    pub only_hash: bool,
}

/// How an import runs.
pub struct Options<'a> {
    pub rules: &'a Rules<'a>,
    /// `keys.accept_imported`.
    pub accept_foreign: bool,
    pub dry_run: bool,
    pub actor: &'a str,
}

/// Imports every line of `bytes` (UTF-8; a leading byte-order mark and `\r\n` endings
/// are fine); blank lines are skipped. A store that stops answering ends the run with its
/// error (what was stored stays stored; run it again).
pub async fn import(
    store: &dyn KeyStore,
    opts: &Options<'_>,
    bytes: &[u8],
) -> Result<Vec<LineResult>, StoreError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut out = Vec::new();
    // The first line of this run that carried each hash: a second one is a duplicate.
    let mut seen: HashMap<KeyHash, usize> = HashMap::new();
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let (outcome, only_hash) = match std::str::from_utf8(raw) {
            Err(e) => (
                Outcome::Failed(format!(
                    "line: not UTF-8 (a byte that is not UTF-8 at column {}); save the file as UTF-8",
                    e.valid_up_to() + 1
                )),
                false,
            ),
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => {
                let text = text.trim_end_matches('\r');
                match one(store, opts, text, &mut seen, i + 1).await {
                    Ok(o) => o,
                    Err(Refused::Line(why)) => (Outcome::Failed(why), false),
                    Err(Refused::Store(e)) => return Err(e),
                }
            }
        };
        out.push(LineResult {
            line: i + 1,
            outcome,
            only_hash,
        });
    }
    Ok(out)
}

enum Refused {
    Line(String),
    Store(StoreError),
}

fn bad(field: &str, why: impl std::fmt::Display) -> Refused {
    Refused::Line(format!("{field}: {why}"))
}

async fn one(
    store: &dyn KeyStore,
    opts: &Options<'_>,
    raw: &str,
    seen: &mut HashMap<KeyHash, usize>,
    line_no: usize,
) -> Result<(Outcome, bool), Refused> {
    let line = parse_line(raw)?;
    let only_hash = line.sha256.is_some();
    let (hash, shown) = secret_hash(&line, opts)?;
    if let Some(&first) = seen.get(&hash) {
        return Err(bad(
            "key",
            format!("the same key as line {first}: a key is imported once, for one owner"),
        ));
    }
    seen.insert(hash, line_no);
    let required = |field: &str, v: Option<String>| v.ok_or_else(|| bad(field, "is required"));
    let user_id = required("user_id", line.user_id)?;
    let business_id = required("business_id", line.business_id)?;
    if let Some(existing) = store.by_hash(&hash).await.map_err(Refused::Store)? {
        return already_there(&existing, &user_id, &business_id).map(|o| (o, only_hash));
    }
    let expiry = line
        .expires_at
        .as_deref()
        .map(Expiry::parse_at)
        .transpose()
        .map_err(|m| bad("expires_at", m))?;
    let allowed_ips = line
        .allowed_ips
        .unwrap_or_default()
        .iter()
        .map(|a| keys::parse_ip_net(a))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| bad("allowed_ips", m))?;
    let new = NewKey {
        name: line.name.unwrap_or_else(|| "imported key".to_owned()),
        description: line.description.unwrap_or_default(),
        user_id,
        business_id,
        scopes: line.scopes.unwrap_or_default(),
        locations: line.locations.unwrap_or_default(),
        grants: line.grants.unwrap_or_default(),
        expiry,
        metadata: line.metadata.unwrap_or_default(),
        allowed_ips,
        limits: line.limits.unwrap_or_default(),
        plan: line.plan.and_then(keys::plan_named),
        quota: line
            .quota
            .map(|q| q.check())
            .transpose()
            .map_err(|m| bad("quota", m))?
            .flatten(),
        shared_quota: None,
    };
    let prepared = prepare(opts.rules, new).map_err(|e| Refused::Line(e.to_string()))?;
    if opts.dry_run {
        return Ok((Outcome::WouldCreate, only_hash));
    }
    let mut record = assemble(
        prepared,
        keys::new_id(opts.rules.prefix),
        hash,
        shown,
        opts.actor,
    );
    record.enabled = line.enabled.unwrap_or(true);
    match store.insert(&record).await {
        Ok(()) => {}
        // Stored by someone else since the look-up: the same as found.
        Err(StoreError::Conflict) => {
            let id = store
                .by_hash(&hash)
                .await
                .map_err(Refused::Store)?
                .map_or_else(String::new, |r| r.id);
            return Ok((Outcome::Exists(id), only_hash));
        }
        Err(e) => return Err(Refused::Store(e)),
    }
    audit(store, opts.actor, "imported", &record, String::new()).await;
    Ok((Outcome::Created(record.id), only_hash))
}

/// A key already stored: fine (`exists`) if it is live and has this line's owner; else
/// the line fails saying what is in the way, so "already there" never hides a key that
/// will not work.
fn already_there(existing: &KeyRecord, user: &str, business: &str) -> Result<Outcome, Refused> {
    if existing.revoked_at.is_some() {
        return Err(bad(
            "key",
            format!(
                "already stored as {}, which is revoked: a revoked key stays revoked; give \
                 this client a new key",
                existing.id
            ),
        ));
    }
    if existing.user_id != user || existing.business_id != business {
        return Err(bad(
            "key",
            format!(
                "already stored as {} for user `{}` of business `{}`, not for this line's owner",
                existing.id, existing.user_id, existing.business_id
            ),
        ));
    }
    Ok(Outcome::Exists(existing.id.clone()))
}

/// The line as JSON; an unknown field is named with a did-you-mean.
fn parse_line(raw: &str) -> Result<Line, Refused> {
    crate::json::object(raw.as_bytes(), "line").map_err(|(field, why)| bad(&field, why))
}

/// The hash to store and the prefix to show, from `key` or `sha256` (exactly one).
fn secret_hash(line: &Line, opts: &Options<'_>) -> Result<(KeyHash, String), Refused> {
    match (&line.key, &line.sha256) {
        (Some(_), Some(_)) => Err(bad("sha256", "give `key` or `sha256`, not both")),
        (None, None) => Err(bad(
            "key",
            "is required: the plaintext secret (`key`) or its SHA-256 in hex (`sha256`)",
        )),
        (Some(secret), None) => {
            let secret = secret.trim();
            match keys::parse(secret, opts.rules.prefix) {
                Ok(hash) => {
                    let end = (opts.rules.prefix.len() + 6).min(secret.len());
                    return Ok((hash, secret[..end].to_owned()));
                }
                Err(keys::Malformed::Checksum) if !opts.accept_foreign => {
                    return Err(bad(
                        "key",
                        "has keygate's prefix and shape but its checksum does not match: it \
                         was mistyped or cut (or set `keys.accept_imported: true` if it was \
                         made elsewhere)",
                    ));
                }
                Err(_) if !opts.accept_foreign => {
                    return Err(bad(
                        "key",
                        format!(
                            "is not shaped like a keygate key (prefix `{}`, 22 + 6 base62 \
                             characters with a checksum), so the gateway would refuse it \
                             unasked: set `keys.accept_imported: true` in the config to \
                             accept keys made elsewhere",
                            opts.rules.prefix
                        ),
                    ));
                }
                Err(_) => {}
            }
            // What the proxy reads as one key: visible ASCII, no comma (a comma-joined
            // header value is refused as ambiguous).
            if secret.is_empty()
                || secret.len() > 512
                || !secret.bytes().all(|b| b.is_ascii_graphic() && b != b',')
            {
                return Err(bad(
                    "key",
                    "must be 1 to 512 visible ASCII characters without a comma (the gateway \
                     reads a comma as two keys)",
                ));
            }
            // Four characters are shown only of a long key: a short one would give
            // too much of itself away.
            let shown: String = if secret.len() >= 16 {
                secret.chars().take(4).collect()
            } else {
                String::new()
            };
            Ok((keys::hash(secret), format!("{shown}…")))
        }
        (None, Some(hex)) => {
            let hash = KeyHash::from_hex(&hex.trim().to_ascii_lowercase()).ok_or_else(|| {
                bad(
                    "sha256",
                    "must be the 64 hex digits of the secret's SHA-256",
                )
            })?;
            Ok((hash, "sha256:…".to_owned()))
        }
    }
}
