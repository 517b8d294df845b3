//! Editing a key in place: [`update`] with any [`Edit`], suspension and resumption
//! ([`Edit::switch`]) included.
//!
//! Invariants: an edit passes the same rules as creation (the active policy's scopes,
//! roles and locations, grants within the key's locations, `keys.max_ttl`, metadata and
//! allowlist limits) on the record it produces, and the caller's own check (`allow`,
//! the admin API's no-escalation rule) sees that record before anything is written; a
//! revoked key is never edited; the write is a compare-and-set
//! ([`KeyStore::replace`]), retried on a fresh read when another writer got there
//! first, so two concurrent edits never merge into a record nobody checked; every
//! change is audited with the names of the fields it changed (never their values).

use super::{
    LifecycleError, Rules, audit, check_allowed_ips, check_description, check_grants,
    check_grants_within, check_locations, check_metadata, check_name, check_scopes, resolve_expiry,
};
use crate::keys::{Grant, KeyLimits, KeyRecord, Metadata, QuotaSpec, Timestamp};
use crate::lifecycle::Expiry;
use crate::store::{KeyStore, StoreError};

/// Tries of the compare-and-set before giving up with [`LifecycleError::Contended`].
const TRIES: u32 = 16;

/// What an edit changes; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct Edit {
    pub name: Option<String>,
    pub description: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub locations: Option<Vec<String>>,
    pub grants: Option<Vec<Grant>>,
    pub expiry: Option<Expiry>,
    pub metadata: Option<Metadata>,
    pub allowed_ips: Option<Vec<ipnet::IpNet>>,
    pub enabled: Option<bool>,
    /// The key's own per-route rates, whole (`{}` clears them).
    pub limits: Option<KeyLimits>,
    /// `Some(None)` takes the key off its plan.
    pub plan: Option<Option<String>>,
    /// `Some(None)` removes the key's own quota. Credits set again are a refill: they
    /// count afresh.
    pub quota: Option<Option<QuotaSpec>>,
}

impl Edit {
    /// Suspends (`on = false`) or resumes (`on = true`) a key, and nothing else; doing it
    /// twice changes nothing.
    pub fn switch(on: bool) -> Self {
        Self {
            enabled: Some(on),
            ..Self::default()
        }
    }

    /// `old` with this edit applied and checked against `rules`, stamped `now`.
    fn apply(
        &self,
        rules: &Rules<'_>,
        old: &KeyRecord,
        now: Timestamp,
    ) -> Result<KeyRecord, LifecycleError> {
        let mut new = old.clone();
        if let Some(name) = &self.name {
            new.name = check_name(name)?;
        }
        if let Some(d) = &self.description {
            check_description(d)?;
            d.clone_into(&mut new.description);
        }
        if let Some(s) = &self.scopes {
            new.scopes = check_scopes(rules.policy, s.clone())?;
        }
        if let Some(l) = &self.locations {
            new.locations = check_locations(rules.policy, "locations", l.clone())?;
        }
        if let Some(g) = &self.grants {
            new.grants = check_grants(rules.policy, g.clone())?;
        }
        check_grants_within(&new.locations, &new.grants)?;
        if let Some(e) = self.expiry {
            new.expires_at = resolve_expiry(Some(e), rules.max_ttl, now)?;
        }
        if let Some(m) = &self.metadata {
            check_metadata(m)?;
            new.metadata.clone_from(m);
        }
        if let Some(ips) = &self.allowed_ips {
            new.allowed_ips = check_allowed_ips(ips.clone())?;
        }
        if let Some(on) = self.enabled {
            new.enabled = on;
        }
        if let Some(l) = &self.limits {
            super::limits::check_limits(rules.policy, l)?;
            new.limits.clone_from(l);
        }
        if let Some(p) = &self.plan {
            super::limits::check_plan(rules.policy, p.as_deref())?;
            new.plan.clone_from(p);
        }
        if let Some(q) = self.quota {
            new.quota = q.map(|q| q.to_quota(crate::keys::now_ms(), old.quota.as_ref()));
        }
        new.updated_at = Some(now);
        Ok(new)
    }
}

/// The names of the fields `new` changed from `old`, for the audit trail.
fn changed(old: &KeyRecord, new: &KeyRecord) -> Vec<&'static str> {
    [
        ("name", old.name != new.name),
        ("description", old.description != new.description),
        ("scopes", old.scopes != new.scopes),
        ("locations", old.locations != new.locations),
        ("grants", old.grants != new.grants),
        ("expires_at", old.expires_at != new.expires_at),
        ("metadata", old.metadata != new.metadata),
        ("allowed_ips", old.allowed_ips != new.allowed_ips),
        ("enabled", old.enabled != new.enabled),
        ("limits", old.limits != new.limits),
        ("plan", old.plan != new.plan),
        ("quota", old.quota != new.quota),
    ]
    .into_iter()
    .filter_map(|(f, differs)| differs.then_some(f))
    .collect()
}

/// Applies `edit` to key `id`; returns the record after. `allow(old, new)` is the
/// caller's own check of the record the edit would produce (the admin API's
/// no-escalation rule); it runs on every try. An edit that changes nothing writes nothing.
pub async fn update<E: From<LifecycleError>>(
    store: &dyn KeyStore,
    rules: &Rules<'_>,
    id: &str,
    edit: &Edit,
    actor: &str,
    allow: impl Fn(&KeyRecord, &KeyRecord) -> Result<(), E>,
) -> Result<KeyRecord, E> {
    for attempt in 0..TRIES {
        if attempt > 0 {
            // Other writers won the race: step aside a little, longer each time, with
            // jitter so the losers do not collide again in lockstep.
            let mut jitter = [0u8; 1];
            let _ = getrandom::fill(&mut jitter);
            let micros = (250 << attempt.min(4)) + u64::from(jitter[0]) * 20;
            tokio::time::sleep(std::time::Duration::from_micros(micros)).await;
        }
        let old = store
            .by_id(id)
            .await
            .map_err(LifecycleError::from)?
            .ok_or(LifecycleError::NotFound)?;
        if old.revoked_at.is_some() {
            return Err(LifecycleError::Revoked.into());
        }
        let new = edit.apply(rules, &old, Timestamp::now())?;
        allow(&old, &new)?;
        let fields = changed(&old, &new);
        if fields.is_empty() {
            return Ok(old);
        }
        match store.replace(&old, &new).await {
            Ok(Some(after)) => {
                let action = match (fields.as_slice(), new.enabled) {
                    (["enabled"], false) => "suspended",
                    (["enabled"], true) => "resumed",
                    _ => "updated",
                };
                let detail = format!("changed {}", fields.join(", "));
                audit(store, actor, action, &after, detail).await;
                let data = serde_json::json!({"change": action, "fields": fields});
                crate::events::emit(store, crate::events::Kind::Updated, &after, data).await;
                if fields.contains(&"quota") {
                    // The keys that spend the same quota get the same one.
                    super::shared_quota::spread(store, &after, actor).await?;
                }
                return Ok(after);
            }
            Ok(None) => return Err(LifecycleError::NotFound.into()),
            // Another writer changed (or revoked) the key since it was read: read again.
            Err(StoreError::Conflict) => {}
            Err(e) => return Err(LifecycleError::Store(e).into()),
        }
    }
    Err(LifecycleError::Contended { tries: TRIES }.into())
}
