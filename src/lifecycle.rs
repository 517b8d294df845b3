//! Key lifecycle: the rules for creating, rotating and revoking keys, shared by the CLI
//! and the admin API so both refuse the same things with the same messages.
//!
//! Invariants: a key is only ever created with scopes, roles and locations the active
//! policy declares (plus the built-in `keygate:` scopes); its lifetime respects
//! `keys.max_ttl`; the secret leaves this module exactly once, in the return value of
//! `create`/`rotate`, and only its hash goes to the store; every change is audited.
//! Writes go only through [`KeyStore`].

use std::time::Duration;

use crate::keys::{self, Grant, KeyRecord, Secret, Timestamp};
use crate::policy::Policy;
use crate::store::{AuditEvent, KeyStore, StoreError};

/// Scopes the admin API understands; no policy declares them.
pub const BUILTIN_SCOPES: [&str; 2] = ["keygate:admin", "keygate:self"];

/// When a new key stops working.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    In(Duration),
    At(Timestamp),
    Never,
}

impl Expiry {
    /// `never`, a duration (`1h`, `12h`, `1d`, `5d`, `1y`, `90m`, …) or an RFC 3339 time.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("never") {
            return Ok(Self::Never);
        }
        if let Some(at) = Timestamp::parse_rfc3339(t) {
            return Ok(Self::At(at));
        }
        crate::config::parse_duration(t).map(Self::In).map_err(|_| {
            format!(
                "`{t}` is not `never`, a duration like 1h, 12h, 1d, 5d or 1y, or an RFC 3339 time"
            )
        })
    }
}

/// What a caller asks for when creating a key.
#[derive(Clone, Debug, Default)]
pub struct NewKey {
    pub name: String,
    pub description: String,
    pub user_id: String,
    pub business_id: String,
    pub scopes: Vec<String>,
    pub locations: Vec<String>,
    pub grants: Vec<Grant>,
    /// `None`: `keys.max_ttl` if configured, else never.
    pub expiry: Option<Expiry>,
}

/// The settings creation depends on.
pub struct Rules<'a> {
    pub policy: &'a Policy,
    pub prefix: &'a str,
    pub max_ttl: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// Bad input; `field` is the admin API's field name.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("no key with this id")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, message: impl Into<String>) -> LifecycleError {
    LifecycleError::Invalid {
        field,
        message: message.into(),
    }
}

/// Creates a key; returns its record and its secret (shown once by the caller).
pub async fn create(
    store: &dyn KeyStore,
    rules: &Rules<'_>,
    new: NewKey,
    actor: &str,
) -> Result<(KeyRecord, Secret), LifecycleError> {
    let now = Timestamp::now();
    let name = new.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(invalid("name", "must be 1 to 200 characters"));
    }
    if new.description.chars().count() > 2000 {
        return Err(invalid("description", "must be at most 2000 characters"));
    }
    check_id("user_id", &new.user_id)?;
    check_id("business_id", &new.business_id)?;
    let scopes = check_scopes(rules.policy, new.scopes)?;
    let locations = check_locations(rules.policy, "locations", new.locations)?;
    let grants = check_grants(rules.policy, new.grants)?;
    let expires_at = resolve_expiry(new.expiry, rules.max_ttl, now)?;

    let secret = keys::generate(rules.prefix);
    let record = KeyRecord {
        id: keys::new_id(rules.prefix),
        hash: secret.hash(),
        name,
        description: new.description,
        prefix: keys::display_prefix(&secret, rules.prefix),
        user_id: new.user_id,
        business_id: new.business_id,
        scopes,
        locations,
        grants,
        created_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
        created_by: actor.to_owned(),
    };
    store.insert(&record).await?;
    audit(store, actor, "created", &record, String::new()).await;
    Ok((record, secret))
}

/// Replaces key `id` with a new secret: same name, owner, scopes, locations and grants;
/// the old key stops working after `grace`. The new lifetime is `expiry` if given, else
/// the old key's lifetime counted from now.
pub async fn rotate(
    store: &dyn KeyStore,
    rules: &Rules<'_>,
    id: &str,
    grace: Duration,
    expiry: Option<Expiry>,
    actor: &str,
) -> Result<(KeyRecord, Secret), LifecycleError> {
    let now = Timestamp::now();
    let old = store.by_id(id).await?.ok_or(LifecycleError::NotFound)?;
    if old.revoked_at.is_some() {
        return Err(invalid("id", "the key is revoked and cannot be rotated"));
    }
    let expiry = expiry.or_else(|| {
        Some(match old.expires_at {
            None => Expiry::Never,
            Some(e) => Expiry::In(Duration::from_secs(
                u64::try_from(e.0.saturating_sub(old.created_at.0))
                    .unwrap_or(0)
                    .max(1),
            )),
        })
    });
    let expires_at = resolve_expiry(expiry, rules.max_ttl, now)?;
    let secret = keys::generate(rules.prefix);
    let new = KeyRecord {
        id: keys::new_id(rules.prefix),
        hash: secret.hash(),
        prefix: keys::display_prefix(&secret, rules.prefix),
        created_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
        created_by: actor.to_owned(),
        ..old.clone()
    };
    let grace_end = now.plus(grace);
    let old_expires = old.expires_at.map_or(grace_end, |e| e.min(grace_end));
    store
        .rotate(&old.id, &new, old_expires)
        .await?
        .ok_or(LifecycleError::NotFound)?;
    audit(
        store,
        actor,
        "rotated",
        &old,
        format!(
            "replaced by {}; old key expires {}",
            new.id,
            old_expires.to_rfc3339()
        ),
    )
    .await;
    audit(
        store,
        actor,
        "created",
        &new,
        format!("rotation of {}", old.id),
    )
    .await;
    Ok((new, secret))
}

/// Revokes key `id` everywhere; revoking twice keeps the first time.
pub async fn revoke(
    store: &dyn KeyStore,
    id: &str,
    actor: &str,
) -> Result<KeyRecord, LifecycleError> {
    let record = store
        .revoke(id, Timestamp::now())
        .await?
        .ok_or(LifecycleError::NotFound)?;
    audit(store, actor, "revoked", &record, String::new()).await;
    Ok(record)
}

/// Audit failures are logged, not fatal: the change itself has already happened.
async fn audit(
    store: &dyn KeyStore,
    actor: &str,
    action: &str,
    record: &KeyRecord,
    detail: String,
) {
    let event = AuditEvent {
        at: Timestamp::now(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        key_id: record.id.clone(),
        business_id: record.business_id.clone(),
        detail,
    };
    if let Err(e) = store.append_audit(&event).await {
        tracing::error!(error = %e, key_id = %record.id, action, "could not write the audit log");
    }
}

/// Ids end up in `X-Keygate-*` headers and logs: keep them to a safe, visible alphabet.
fn check_id(field: &'static str, value: &str) -> Result<(), LifecycleError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@:+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            "must be 1 to 128 characters from A-Z, a-z, 0-9 and . _ @ : + -",
        ))
    }
}

fn check_scopes(policy: &Policy, scopes: Vec<String>) -> Result<Vec<String>, LifecycleError> {
    let mut out: Vec<String> = Vec::with_capacity(scopes.len());
    for s in scopes {
        if !policy.has_scope(&s) && !BUILTIN_SCOPES.contains(&s.as_str()) {
            return Err(invalid(
                "scopes",
                format!(
                    "unknown scope `{s}`{}",
                    hint(&s, policy.scopes().map(|(n, _)| n))
                ),
            ));
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

fn check_locations(
    policy: &Policy,
    field: &'static str,
    locations: Vec<String>,
) -> Result<Vec<String>, LifecycleError> {
    let mut out: Vec<String> = Vec::with_capacity(locations.len());
    for l in locations {
        if l != "*" && !policy.has_location(&l) {
            return Err(invalid(
                field,
                format!(
                    "unknown location `{l}`{}",
                    hint(&l, policy.locations().iter().map(String::as_str))
                ),
            ));
        }
        if !out.contains(&l) {
            out.push(l);
        }
    }
    Ok(out)
}

fn check_grants(policy: &Policy, grants: Vec<Grant>) -> Result<Vec<Grant>, LifecycleError> {
    grants
        .into_iter()
        .map(|g| {
            if !policy.has_role(&g.role) {
                return Err(invalid(
                    "grants",
                    format!(
                        "unknown role `{}`{}",
                        g.role,
                        hint(&g.role, policy.roles().map(|(n, _)| n))
                    ),
                ));
            }
            if g.locations.is_empty() {
                return Err(invalid(
                    "grants",
                    format!(
                        "the grant of `{}` names no location (use `*` for all)",
                        g.role
                    ),
                ));
            }
            let locations = check_locations(policy, "grants", g.locations)?;
            Ok(Grant {
                role: g.role,
                locations,
            })
        })
        .collect()
}

fn hint<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    crate::yaml::did_you_mean(word, candidates)
        .map_or_else(String::new, |s| format!(" (did you mean `{s}`?)"))
}

fn resolve_expiry(
    expiry: Option<Expiry>,
    max_ttl: Option<Duration>,
    now: Timestamp,
) -> Result<Option<Timestamp>, LifecycleError> {
    let latest = max_ttl.map(|m| now.plus(m));
    let at = match expiry {
        None => return Ok(latest),
        Some(Expiry::Never) => {
            return match max_ttl {
                Some(m) => Err(invalid(
                    "expires_in",
                    format!(
                        "keys may not live longer than keys.max_ttl ({})",
                        humantime::format_duration(m)
                    ),
                )),
                None => Ok(None),
            };
        }
        Some(Expiry::In(d)) => {
            if d.is_zero() {
                return Err(invalid("expires_in", "must be longer than zero"));
            }
            now.plus(d)
        }
        Some(Expiry::At(t)) => {
            if t <= now {
                return Err(invalid("expires_at", "must be in the future"));
            }
            t
        }
    };
    if let (Some(latest), Some(m)) = (latest, max_ttl)
        && at > latest
    {
        return Err(invalid(
            "expires_in",
            format!(
                "keys may not live longer than keys.max_ttl ({})",
                humantime::format_duration(m)
            ),
        ));
    }
    Ok(Some(at))
}
