//! `plans:` as written, and its checks: reusable limit sets a key names with `plan:`.
//!
//! ```yaml
//! plans:
//!   trial:
//!     rate: 10/s          # replaces every route's rate for the plan's keys
//!     limits:             # or per route, by route name
//!       orders: 2/s
//! ```
//!
//! Invariants: a plan that loaded names only routes the policy has; every error is at
//! the line of its field.

use serde::Deserialize;

use super::{Check, bad_name, suggest};
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
        if p.quota.is_some() {
            c.at(
                &at("quota"),
                format!(
                    "plan `{name}`: quotas are not supported by this keygate yet; remove \
                     `quota` (rates work: `rate`, `limits`)"
                ),
            );
        }
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
        plans.push(Plan { name, rate, limits });
    }
    plans
}
