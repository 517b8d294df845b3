//! Which routes a key may use under a policy, location by location: what `keygate policy
//! diff` compares between two policies.
//!
//! Invariants: built only from the one permission rule ([`Policy::admit`],
//! [`holds_location`], [`Policy::holds`], through the same [`Policy::missing_scopes`] that
//! [`Policy::decide`] asks), never a copy of it; pure. A located route is tried at every
//! location the policy declares; public routes are left out (they need no key).

use std::collections::BTreeSet;

use super::{DefaultRule, Policy, holds_location};
use crate::keys::{KeyRecord, Timestamp};

/// One route a key may use: at `location` for a located route, else `None`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reach {
    pub route: String,
    pub location: Option<String>,
}

impl Policy {
    /// Every (route, location) at which `key` would be allowed at `now`, the default
    /// pseudo-route included under `default: allow_authenticated`.
    pub fn reach(&self, key: &KeyRecord, now: Timestamp) -> BTreeSet<Reach> {
        let mut out = BTreeSet::new();
        if self.admit(key, now).is_err() {
            return out;
        }
        for route in self.routes.iter().filter(|r| !r.public) {
            if route.location.is_none() {
                if self.missing_scopes(route, key, None).next().is_none() {
                    out.insert(Reach {
                        route: route.name.to_string(),
                        location: None,
                    });
                }
                continue;
            }
            for l in &self.locations {
                if holds_location(key, l)
                    && self.missing_scopes(route, key, Some(l)).next().is_none()
                {
                    out.insert(Reach {
                        route: route.name.to_string(),
                        location: Some(l.clone()),
                    });
                }
            }
        }
        if self.default == DefaultRule::AllowAuthenticated {
            out.insert(Reach {
                route: self.default_name.to_string(),
                location: None,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::Path;

    use super::*;
    use crate::keys::Grant;

    fn policy(text: &str) -> Policy {
        super::super::load::parse(Path::new("p.yaml"), text, &[]).unwrap()
    }

    const POLICY: &str = "version: 1
scopes:
  items:read: Read
  items:write: Write
roles:
  editor: [items:read, items:write]
locations: [hq, plant-1]
routes:
  - name: health
    path: /health
    public: true
  - name: items
    path: /v1/items
    scopes: [items:read]
  - name: located
    path: /v1/at/{loc}
    location: { from: path, name: loc }
    scopes: [items:write]
";

    fn reach(route: &str, location: Option<&str>) -> Reach {
        Reach {
            route: route.to_owned(),
            location: location.map(str::to_owned),
        }
    }

    #[test]
    fn reach_follows_scopes_locations_and_grants() {
        let p = policy(POLICY);
        let mut key = crate::store::contract::record("k", "b", "u", 0);
        key.scopes = vec!["items:read".to_owned()];
        key.locations = vec!["hq".to_owned()];
        key.grants = vec![Grant {
            role: "editor".to_owned(),
            locations: vec!["hq".to_owned()],
        }];
        let got = p.reach(&key, Timestamp(1));
        assert_eq!(
            got,
            [reach("items", None), reach("located", Some("hq"))]
                .into_iter()
                .collect()
        );
        key.revoked_at = Some(Timestamp(1));
        assert!(p.reach(&key, Timestamp(2)).is_empty());
    }
}
