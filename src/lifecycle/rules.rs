//! The rules a key's fields meet, at creation, import and every edit alike: names,
//! descriptions, ids, metadata, allowlists, and the active policy's scopes, locations
//! and grants (grants only at the key's own locations).
//!
//! Invariants: each check names the admin API's field; a list comes back trimmed and
//! without repeats, in the order given.

use super::{LifecycleError, invalid};
use crate::keys::{self, Grant, Metadata};
use crate::policy::{BUILT_IN_SCOPES, Policy};

/// A key's name, trimmed: 1 to 200 characters.
pub(super) fn check_name(name: &str) -> Result<String, LifecycleError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(invalid("name", "must be 1 to 200 characters"));
    }
    Ok(name.to_owned())
}

/// A key's description: at most 2000 characters.
pub(super) fn check_description(description: &str) -> Result<(), LifecycleError> {
    if description.chars().count() > 2000 {
        return Err(invalid("description", "must be at most 2000 characters"));
    }
    Ok(())
}

/// [`keys::check_metadata`], as the `metadata` field's refusal.
pub(super) fn check_metadata(metadata: &Metadata) -> Result<(), LifecycleError> {
    keys::check_metadata(metadata).map_err(|why| invalid("metadata", why))
}

/// Most allowlist entries a key may carry.
const MAX_ALLOWED_IPS: usize = 64;

/// De-duplicated, at most [`MAX_ALLOWED_IPS`].
pub(super) fn check_allowed_ips(
    ips: Vec<ipnet::IpNet>,
) -> Result<Vec<ipnet::IpNet>, LifecycleError> {
    let mut out: Vec<ipnet::IpNet> = Vec::with_capacity(ips.len());
    for ip in ips {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    if out.len() > MAX_ALLOWED_IPS {
        return Err(invalid(
            "allowed_ips",
            format!(
                "has {} entries; at most {MAX_ALLOWED_IPS} are allowed (use CIDRs)",
                out.len()
            ),
        ));
    }
    Ok(out)
}

/// Ids end up in `X-Keygate-*` headers and logs: keep them to a safe, visible alphabet.
pub(super) fn check_id(field: &'static str, value: &str) -> Result<(), LifecycleError> {
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

pub(super) fn check_scopes(
    policy: &Policy,
    scopes: Vec<String>,
) -> Result<Vec<String>, LifecycleError> {
    let mut out: Vec<String> = Vec::with_capacity(scopes.len());
    for s in scopes {
        if !policy.has_scope(&s) && !BUILT_IN_SCOPES.contains(&s.as_str()) {
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

pub(super) fn check_locations(
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

pub(super) fn check_grants(
    policy: &Policy,
    grants: Vec<Grant>,
) -> Result<Vec<Grant>, LifecycleError> {
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

/// A role granted at a location the key may not act at would never apply: the request is
/// refused at that location before any scope is looked at. Refused here, with the fix.
/// A grant at `*` applies wherever the key may act, so it always fits.
pub(super) fn check_grants_within(
    locations: &[String],
    grants: &[Grant],
) -> Result<(), LifecycleError> {
    for g in grants {
        if let Some(l) = g
            .locations
            .iter()
            .find(|l| *l != "*" && !crate::policy::locations_include(locations, l))
        {
            return Err(LifecycleError::GrantOutsideLocations {
                role: g.role.clone(),
                location: l.clone(),
                held: locations.to_vec(),
            });
        }
    }
    Ok(())
}

/// "it may act at `a`, `b`" or "it has no locations".
pub(crate) fn held_locations(held: &[String]) -> String {
    if held.is_empty() {
        "it has no locations".to_owned()
    } else {
        format!("it may act at {}", quoted(held))
    }
}

/// `a`, `b` → "`a`, `b`".
pub(super) fn quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn hint<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    crate::yaml::suggestion(word, candidates)
}
