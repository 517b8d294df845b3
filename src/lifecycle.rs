//! Key lifecycle: the rules for creating, rotating and revoking keys, shared by the CLI
//! and the admin API so both refuse the same things with the same messages.
//!
//! Invariants: a key is only ever created with scopes, roles and locations the active
//! policy declares (plus the built-in `keygate:` scopes); its lifetime respects
//! `keys.max_ttl`; the secret leaves this module exactly once, in the return value of
//! `create`/`rotate`, and only its hash goes to the store; every change is audited.
//! Writes go only through [`KeyStore`].

use std::time::Duration;

mod edit;
pub mod import;
mod limits;
mod rules;
mod shared_quota;

pub(crate) use rules::held_locations;

use rules::{
    check_allowed_ips, check_description, check_grants, check_grants_within, check_id,
    check_locations, check_metadata, check_name, check_scopes, hint,
};

pub use edit::{Edit, update};

use crate::events::{self, Kind};
use crate::keys::{self, Grant, KeyRecord, Metadata, Secret, Timestamp};
use crate::policy::Policy;
use crate::store::{AuditEvent, KeyStore, StoreError};

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
        if t.starts_with('-') {
            return Err(past(t));
        }
        crate::config::parse_duration(t).map(Self::In).map_err(|_| {
            format!(
                "`{t}` is not `never`, a duration like 1h, 12h, 1d, 5d or 1y, or an RFC 3339 time"
            )
        })
    }

    /// The admin API's `expires_in`: `never` or a duration (`1h`, `12h`, `1d`, `5d`, `1y`, `90m`, …).
    pub fn parse_in(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("never") {
            return Ok(Self::Never);
        }
        if t.starts_with('-') {
            return Err(past(t));
        }
        crate::config::parse_duration(t)
            .map(Self::In)
            .map_err(|_| format!("`{t}` is not `never` or a duration like 1h, 12h, 1d, 5d or 1y"))
    }

    /// The admin API's `expires_at`: an RFC 3339 time.
    pub fn parse_at(text: &str) -> Result<Self, String> {
        Timestamp::parse_rfc3339(text.trim())
            .map(Self::At)
            .ok_or_else(|| format!("`{text}` is not an RFC 3339 time like 2030-01-31T12:00:00Z"))
    }
}

/// A negative lifetime (`-1h`): a key cannot be made already expired.
fn past(text: &str) -> String {
    format!(
        "`{text}` is negative; a key's lifetime counts forward from now: write it like 1h, \
         12h, 1d, 5d or 1y (or an RFC 3339 time in the future)"
    )
}

/// The latest expiry a key may have (9999-12-31T23:59:59Z): every time we show must be RFC 3339.
const LATEST: Timestamp = Timestamp(253_402_300_799);

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
    /// Sent upstream as `X-Keygate-Meta-<name>`; checked by [`keys::check_metadata`].
    pub metadata: Metadata,
    /// Where the key may be used from; empty: anywhere.
    pub allowed_ips: Vec<ipnet::IpNet>,
    /// Per-route rates replacing the routes' own for this key.
    pub limits: crate::keys::KeyLimits,
    /// A plan of the policy's `plans`.
    pub plan: Option<String>,
    /// The key's own quota.
    pub quota: Option<keys::QuotaSpec>,
    /// The quota and counter of the admin-API key creating this one, which its new keys
    /// share: keys it mints spend its quota rather than add to it. `None`: `quota`.
    pub shared_quota: Option<(Option<keys::Quota>, String)>,
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
    /// A grant at a location the key does not hold (it would never apply). The message
    /// says the fix in admin-API words; the CLI words it with its flags.
    #[error(
        "grants: the role `{role}` is granted at `{location}`, where the key may not act ({}), \
         so the grant would never apply: add `{location}` to `locations` as well, or grant \
         the role only at the key's locations",
        held_locations(.held)
    )]
    GrantOutsideLocations {
        role: String,
        location: String,
        held: Vec<String>,
    },
    #[error("no key with this id")]
    NotFound,
    /// Other edits of the same key won the compare-and-set every time.
    #[error(
        "the key was changed by other edits at the same moment, {tries} times in a row; send \
         the edit again"
    )]
    Contended { tries: u32 },
    /// An edit of a revoked key: revocation is final.
    #[error(
        "the key is revoked; a revoked key cannot be edited, suspended or resumed (create a new one)"
    )]
    Revoked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, message: impl Into<String>) -> LifecycleError {
    LifecycleError::Invalid {
        field,
        message: message.into(),
    }
}

/// A [`NewKey`] that passed every rule of the active policy and of `keys.max_ttl`:
/// trimmed, de-duplicated, with its expiry resolved. Only [`prepare`] builds one.
#[derive(Clone, Debug)]
pub struct Prepared {
    key: NewKey,
    expires_at: Option<Timestamp>,
    now: Timestamp,
}

impl Prepared {
    /// The checked request (scopes, locations and grants de-duplicated).
    pub fn key(&self) -> &NewKey {
        &self.key
    }
}

/// Checks `new` against the rules without writing anything, so a caller (the admin API)
/// can apply its own permission checks to exactly what will be created.
pub fn prepare(rules: &Rules<'_>, new: NewKey) -> Result<Prepared, LifecycleError> {
    let now = Timestamp::now();
    let name = check_name(&new.name)?;
    check_description(&new.description)?;
    check_id("user_id", &new.user_id)?;
    check_id("business_id", &new.business_id)?;
    let scopes = check_scopes(rules.policy, new.scopes)?;
    let locations = check_locations(rules.policy, "locations", new.locations)?;
    let grants = check_grants(rules.policy, new.grants)?;
    check_grants_within(&locations, &grants)?;
    let expires_at = resolve_expiry(new.expiry, rules.max_ttl, now)?;
    check_metadata(&new.metadata)?;
    let allowed_ips = check_allowed_ips(new.allowed_ips)?;
    limits::check_limits(rules.policy, &new.limits)?;
    limits::check_plan(rules.policy, new.plan.as_deref())?;
    Ok(Prepared {
        key: NewKey {
            name,
            description: new.description,
            user_id: new.user_id,
            business_id: new.business_id,
            scopes,
            locations,
            grants,
            expiry: new.expiry,
            metadata: new.metadata,
            allowed_ips,
            limits: new.limits,
            plan: new.plan,
            quota: new.quota,
            shared_quota: new.shared_quota,
        },
        expires_at,
        now,
    })
}

/// Creates a key; returns its record and its secret (shown once by the caller).
pub async fn create(
    store: &dyn KeyStore,
    rules: &Rules<'_>,
    new: NewKey,
    actor: &str,
) -> Result<(KeyRecord, Secret), LifecycleError> {
    let prepared = prepare(rules, new)?;
    create_prepared(store, rules.prefix, prepared, actor).await
}

/// Creates the key [`prepare`] checked; returns its record and its secret.
pub async fn create_prepared(
    store: &dyn KeyStore,
    prefix: &str,
    prepared: Prepared,
    actor: &str,
) -> Result<(KeyRecord, Secret), LifecycleError> {
    let (record, secret) = mint(prefix, prepared, actor);
    store.insert(&record).await?;
    audit(store, actor, "created", &record, String::new()).await;
    events::emit(store, Kind::Created, &record, serde_json::Value::Null).await;
    Ok((record, secret))
}

/// The record and fresh secret for the key [`prepare`] checked, not yet stored. Only
/// [`create_prepared`] and bulk loaders (which skip the audit trail) call it.
pub fn mint(prefix: &str, prepared: Prepared, actor: &str) -> (KeyRecord, Secret) {
    let secret = keys::generate(prefix);
    let shown = keys::display_prefix(&secret, prefix);
    let record = assemble(prepared, keys::new_id(prefix), secret.hash(), shown, actor);
    (record, secret)
}

/// The record for the key [`prepare`] checked, with this id, hash and shown prefix.
fn assemble(
    prepared: Prepared,
    id: String,
    hash: keys::KeyHash,
    shown_prefix: String,
    actor: &str,
) -> KeyRecord {
    let Prepared {
        key: new,
        expires_at,
        now,
    } = prepared;
    let (quota, quota_counter) = match new.shared_quota {
        Some(shared) => shared,
        None => (
            new.quota.map(|q| q.to_quota(keys::now_ms(), None)),
            id.clone(),
        ),
    };
    KeyRecord {
        identity: crate::headers::Memo::default(),
        id,
        hash,
        name: new.name,
        description: new.description,
        prefix: shown_prefix,
        user_id: new.user_id,
        business_id: new.business_id,
        scopes: new.scopes,
        locations: new.locations,
        grants: new.grants,
        created_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
        created_by: actor.to_owned(),
        enabled: true,
        metadata: new.metadata,
        allowed_ips: new.allowed_ips,
        updated_at: None,
        limits: new.limits,
        plan: new.plan,
        quota,
        quota_counter,
    }
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
        identity: crate::headers::Memo::default(),
        id: keys::new_id(rules.prefix),
        hash: secret.hash(),
        prefix: keys::display_prefix(&secret, rules.prefix),
        created_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
        created_by: actor.to_owned(),
        updated_at: None,
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
    let data = serde_json::json!({"previous_key_id": old.id, "previous_expires_at": old_expires});
    events::emit(store, Kind::Rotated, &new, data).await;
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
    events::emit(store, Kind::Revoked, &record, serde_json::Value::Null).await;
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
        tracing::error!(error = %crate::report::Chain(&e), key_id = %record.id, action, "could not write the audit log");
    }
}

fn resolve_expiry(
    expiry: Option<Expiry>,
    max_ttl: Option<Duration>,
    now: Timestamp,
) -> Result<Option<Timestamp>, LifecycleError> {
    let latest = max_ttl.map(|m| now.plus(m));
    let too_long = |field: &'static str, m: Duration| {
        invalid(
            field,
            format!(
                "keys may not live longer than keys.max_ttl ({})",
                humantime::format_duration(m)
            ),
        )
    };
    let (field, at) = match expiry {
        None => return Ok(latest),
        Some(Expiry::Never) => {
            return match max_ttl {
                Some(m) => Err(too_long("expires_in", m)),
                None => Ok(None),
            };
        }
        Some(Expiry::In(d)) => {
            if d.as_secs() == 0 {
                return Err(invalid("expires_in", "must be at least one second"));
            }
            ("expires_in", now.plus(d))
        }
        Some(Expiry::At(t)) => {
            if t <= now {
                return Err(invalid("expires_at", "must be in the future"));
            }
            ("expires_at", t)
        }
    };
    if let (Some(latest), Some(m)) = (latest, max_ttl)
        && at > latest
    {
        return Err(too_long(field, m));
    }
    if at > LATEST {
        return Err(invalid(field, "must end before the year 10000"));
    }
    Ok(Some(at))
}
