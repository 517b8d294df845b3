//! `plans:` as written, and its checks: reusable limit sets a key names with `plan:`.
//!
//! ```yaml
//! plans:
//!   trial:
//!     rate: 10/s          # replaces every route's rate for the plan's keys
//!     limits:             # or per route, by route name
//!       orders: 2/s
//!     quota: 1000/1d      # or {limit: 1000, period: 1d}: per key, refilled each period
//! ```
//!
//! Invariants: a plan that loaded names only routes the policy has; every error is at
//! the line of its field.

use serde::Deserialize;

use super::{Check, bad_name, suggest};
use crate::keys::{Quota, QuotaInput, QuotaSpec};
use crate::policy::{Plan, RateLimit};
use crate::yaml::{Ordered, Seg};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlan {
    rate: Option<String>,
    limits: Option<Ordered<String>>,
    quota: Option<serde_yaml::Value>,
}

/// The plans, checked against the names of the routes that loaded.
pub(super) fn check(raw: Vec<(String, RawPlan)>, routes: &[&str], c: &mut Check<'_>) -> Vec<Plan> {
    let mut plans = Vec::with_capacity(raw.len());
    for (name, p) in raw {
        let at = |field: &'static str| [Seg::Key("plans"), Seg::Key(&name), Seg::Key(field)];
        if let Some(why) = bad_name(&name, &['=', '@']) {
            c.at_key(
                &[Seg::Key("plans"), Seg::Key(&name)],
                format!("plan name `{name}` {why}"),
            );
        }
        let quota = p.quota.and_then(|v| {
            plan_quota(v)
                .map_err(|e| c.at(&at("quota"), format!("plan `{name}`: {e}")))
                .ok()
                .flatten()
        });
        let rate = p.rate.and_then(|text| {
            RateLimit::parse(&text)
                .map_err(|e| c.at(&at("rate"), format!("plan `{name}`: {e}")))
                .ok()
        });
        let mut limits = Vec::new();
        for (route, text) in p.limits.map(|o| o.0).unwrap_or_default() {
            let here = [
                Seg::Key("plans"),
                Seg::Key(&name),
                Seg::Key("limits"),
                Seg::Key(&route),
            ];
            if !routes.contains(&route.as_str()) {
                c.at_key(
                    &here,
                    format!(
                        "plan `{name}`: no route is named `{route}`{}",
                        suggest(&route, routes.iter().copied())
                    ),
                );
                continue;
            }
            match RateLimit::parse(&text) {
                Ok(r) => limits.push((route, r)),
                Err(e) => c.at(&here, format!("plan `{name}`, route `{route}`: {e}")),
            }
        }
        plans.push(Plan {
            name,
            rate,
            limits,
            quota,
        });
    }
    plans
}

/// A plan's `quota`: `1000/1d` or `{limit: 1000, period: 1d}`; credits belong to keys.
fn plan_quota(v: serde_yaml::Value) -> Result<Option<Quota>, String> {
    let spec = match v {
        serde_yaml::Value::String(text) => Some(QuotaSpec::parse(&text)?),
        v @ serde_yaml::Value::Mapping(_) => serde_yaml::from_value::<QuotaInput>(v)
            .map_err(|e| format!("quota: {e}"))?
            .check()?,
        _ => {
            return Err("quota must look like `1000/1d` or `{limit: 1000, period: 1d}`".to_owned());
        }
    };
    match spec {
        Some(s) if s.period.is_none() => Err(
            "credits belong to a key (an admin refills them): give a plan `limit` per `period`, \
             and a key its credits with `--quota credits=N`"
                .to_owned(),
        ),
        s => Ok(s.map(|s| s.to_quota(0, None))),
    }
}
