//! The rules for a key's own rate limits and its plan, shared by creation and edits.
//!
//! Invariants: a key's `limits` name routes of the active policy (or `default`), at
//! most [`MAX_KEY_LIMITS`] of them; its `plan` is one the active policy declares. (A
//! later policy may drop either: the proxy then applies the routes' own limits.)

use super::{LifecycleError, hint, invalid};
use crate::keys::KeyLimits;
use crate::policy::Policy;

/// Per-route rates a key may carry.
pub const MAX_KEY_LIMITS: usize = 64;

pub(super) fn check_limits(policy: &Policy, limits: &KeyLimits) -> Result<(), LifecycleError> {
    if limits.len() > MAX_KEY_LIMITS {
        return Err(invalid(
            "limits",
            format!(
                "has {} routes; at most {MAX_KEY_LIMITS} are allowed (a plan serves many keys alike)",
                limits.len()
            ),
        ));
    }
    for route in limits.keys() {
        if !policy.has_route(route) {
            return Err(invalid(
                "limits",
                format!(
                    "no route is named `{route}`{}",
                    hint(route, policy.route_names())
                ),
            ));
        }
    }
    Ok(())
}

pub(super) fn check_plan(policy: &Policy, plan: Option<&str>) -> Result<(), LifecycleError> {
    let Some(name) = plan else {
        return Ok(());
    };
    if policy.plan(name).is_some() {
        return Ok(());
    }
    let declared: Vec<&str> = policy.plan_names().collect();
    let message = if declared.is_empty() {
        format!("no plan named `{name}`: the policy declares no `plans`")
    } else {
        format!(
            "no plan named `{name}`{} (the policy declares {})",
            hint(name, declared.iter().copied()),
            declared
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(invalid("plan", message))
}
