//! What an edit gives, and the no-escalation rule for what creation's scopes, locations
//! and grants do not cover: metadata, IP allowlists and resumption.
//!
//! Invariants: an edit is checked on what it adds ([`added`]), so a caller can rename,
//! narrow or suspend a key that holds more than it does, but cannot widen it past its own
//! power; creation is the edit from nothing. Metadata is the upstream's plan data, so a
//! `keygate:self` key cannot set any its own key does not carry; an allowlist is power
//! too (none means anywhere), so a key with one can only give allowlists inside it; and
//! lifting a suspension is an admin's act, not a self key's.

use super::auth::Caller;
use super::error::AdminError;
use crate::keys::{Grant, KeyRecord, Metadata};

/// The scopes, locations and grants `new` holds that `old` did not. A grant at `*`
/// counts as added again when locations are added, since it then covers them too.
pub(super) fn added(old: &KeyRecord, new: &KeyRecord) -> (Vec<String>, Vec<String>, Vec<Grant>) {
    let scopes: Vec<String> = new
        .scopes
        .iter()
        .filter(|s| !old.scopes.contains(s))
        .cloned()
        .collect();
    let locations: Vec<String> = new
        .locations
        .iter()
        .filter(|l| !old.locations.contains(l))
        .cloned()
        .collect();
    let held = |role: &str, at: &str| {
        old.grants
            .iter()
            .any(|g| g.role == role && g.locations.iter().any(|l| l == at))
    };
    let grants = new
        .grants
        .iter()
        .filter_map(|g| {
            let fresh: Vec<String> = g
                .locations
                .iter()
                .filter(|l| !held(&g.role, l) || (*l == "*" && !locations.is_empty()))
                .cloned()
                .collect();
            (!fresh.is_empty()).then(|| Grant {
                role: g.role.clone(),
                locations: fresh,
            })
        })
        .collect();
    (scopes, locations, grants)
}

/// A key caller setting a quota: refused, as limits are.
pub(super) fn quota_forbidden() -> AdminError {
    AdminError::Forbidden(
        "quota: only the operator (the admin token or the CLI) sets a key's quota; an \
         admin-API key's keys spend its own"
            .to_owned(),
    )
}

impl Caller {
    /// The rule for limits and plans: they are the operator's (the bootstrap token, the
    /// CLI). A key caller's keys keep its own limits and plan (new keys get them), so no
    /// customer can lift their own limit by minting or editing a key.
    pub(super) fn check_limits(
        &self,
        limits: &crate::keys::KeyLimits,
        plan: Option<&str>,
        old: Option<&KeyRecord>,
    ) -> Result<(), AdminError> {
        let Some(k) = self.key() else {
            return Ok(());
        };
        let (want_limits, want_plan) = match old {
            Some(o) => (&o.limits, o.plan.as_deref()),
            None => (&k.limits, k.plan.as_deref()),
        };
        if limits != want_limits {
            return Err(AdminError::Forbidden(
                "limits: only the operator (the admin token or the CLI) sets a key's own \
                 limits; an admin-API key's keys keep its own"
                    .to_owned(),
            ));
        }
        if plan != want_plan {
            return Err(AdminError::Forbidden(
                "plan: only the operator (the admin token or the CLI) puts a key on a plan; \
                 an admin-API key's keys keep its own"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    /// The rule for metadata, allowlists and resumption on a key going from `old` (`None`:
    /// being created) to `metadata`, `allowed_ips` and `enabled`.
    pub(super) fn check_extras(
        &self,
        old: Option<&KeyRecord>,
        metadata: &Metadata,
        allowed_ips: &[ipnet::IpNet],
        enabled: bool,
    ) -> Result<(), AdminError> {
        let Some(k) = self.key() else {
            return Ok(());
        };
        let deny = |what: &str| Err(AdminError::Forbidden(what.to_owned()));
        let own_user = matches!(self, Self::OwnUser(_));
        let metadata_changed = old.is_none_or(|o| o.metadata != *metadata);
        if own_user
            && metadata_changed
            && metadata.iter().any(|(n, v)| k.metadata.get(n) != Some(v))
        {
            return deny(
                "metadata: a keygate:self key cannot set metadata its own key does not carry \
                 (the upstream reads plans from it); ask an admin",
            );
        }
        let ips_changed = old.is_none_or(|o| o.allowed_ips != allowed_ips);
        if !k.allowed_ips.is_empty() && ips_changed {
            let inside = |n: &ipnet::IpNet| k.allowed_ips.iter().any(|mine| mine.contains(n));
            if allowed_ips.is_empty() || !allowed_ips.iter().all(inside) {
                return deny(
                    "allowed_ips: a key with an IP allowlist can only give allowlists inside \
                     its own (an empty one means anywhere)",
                );
            }
        }
        if own_user && enabled && old.is_some_and(|o| !o.enabled) {
            return deny("enabled: a keygate:self key cannot resume a suspended key; ask an admin");
        }
        Ok(())
    }
}
