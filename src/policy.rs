//! The route policy and the authorisation decision.
//!
//! Job: hold one validated, immutable policy (scopes, roles, locations, businesses, routes in
//! file order, the default rule) and answer two questions for the proxy: which route a
//! request matches ([`Policy::route`]) and whether a key may use it ([`Policy::decide`]).
//! The rule under that decision is public, so the admin API asks it rather than keeping
//! a copy: whether a key may be used at all ([`Policy::admit`]), holds a scope at a
//! location ([`Policy::holds`]) and may act at a location ([`holds_location`]).
//!
//! Invariants:
//! - Pure: no I/O except [`Policy::load`] reading the file, no HTTP server types
//!   (`http::Method` and `http::HeaderMap` only).
//! - A [`Permitted`] can only be built here, and carries the [`NormalPath`] that was matched,
//!   so the path authorised is the path forwarded.
//! - Decision order is fixed: revoked, expired, disabled, business, location, scopes.
//! - The allow path of [`Policy::decide`] allocates only the location string and clones Arcs;
//!   the list of missing scopes is built only to deny.
//! - A policy that loaded is valid: every scope and role a route needs is declared, every
//!   pattern compiled, every location source resolvable.

mod index;
mod limit;
pub mod load;
mod location;
pub mod path;
mod permit;
mod reach;
pub mod watch;

pub use limit::{Per, Plan, RateLimit, RouteLimit, Scope};
use permit::Target;
pub use permit::{Matched, Permitted, RouteName};
pub use reach::Reach;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{HeaderName, Method};

use crate::keys::{KeyRecord, Status, Timestamp};
use crate::yaml;
use path::{NormalPath, Pattern};

/// The name of the pseudo-route that `default: allow_authenticated` permits.
pub const DEFAULT_ROUTE: &str = "default";

/// Scopes beginning with this are built in for the admin API: a policy never declares
/// them, and no role or route may use them (`load` refuses it).
pub const BUILT_IN_PREFIX: &str = "keygate:";
/// The built-in scope of an admin key: every user of its own business (admin API).
pub const ADMIN_SCOPE: &str = "keygate:admin";
/// The built-in scope of a self key: only its own user's keys (admin API).
pub const SELF_SCOPE: &str = "keygate:self";
/// Every built-in scope: a key may hold these though no policy declares them.
pub const BUILT_IN_SCOPES: [&str; 2] = [ADMIN_SCOPE, SELF_SCOPE];

/// A loaded, validated policy. Immutable; share it behind an `Arc`.
#[derive(Debug)]
pub struct Policy {
    /// (name, description), file order.
    scopes: Vec<(String, String)>,
    roles: Vec<Role>,
    locations: Vec<String>,
    /// Listed businesses, except the `default` entry; `true` = enabled.
    businesses: Vec<(String, bool)>,
    /// The `default` entry of `businesses`; unlisted businesses are enabled without it.
    business_default: bool,
    routes: Vec<Route>,
    /// Which routes may match a path (by first segment), so matching is not a full scan.
    index: index::RouteIndex,
    default: DefaultRule,
    default_name: RouteName,
    /// `plans:`, file order.
    plans: Vec<Plan>,
}

/// What happens to a request no route matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultRule {
    /// Refused with `no_route`.
    Deny,
    /// Any valid key of an enabled business, no scope needed.
    AllowAuthenticated,
}

impl DefaultRule {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::AllowAuthenticated => "allow_authenticated",
        }
    }
}

#[derive(Debug)]
struct Role {
    name: String,
    scopes: Vec<String>,
}

#[derive(Debug)]
struct Route {
    name: RouteName,
    pattern: Pattern,
    /// `None`: every method.
    methods: Option<Vec<Method>>,
    public: bool,
    /// Every scope required: the route's `scopes`, then those of its `roles`, no repeats.
    scopes: Vec<String>,
    /// The route's `roles`, as written (for display).
    roles: Vec<String>,
    location: Option<LocationSource>,
    rate_limit: Option<RouteLimit>,
    /// Which upstream: 0 the default, `n` the config's n-th named upstream.
    upstream: u16,
    /// Literal leading segments removed from the path before it is forwarded.
    strip_prefix: Option<String>,
}

/// Where a route reads its location from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LocationSource {
    /// A `{name}` parameter of the route's pattern.
    Path(String),
    Header(HeaderName),
    /// A query parameter (names are compared after percent-decoding).
    Query(String),
}

impl Route {
    fn strip_len(&self) -> usize {
        self.strip_prefix.as_ref().map_or(0, String::len)
    }
}

impl LocationSource {
    fn source_name(&self) -> &'static str {
        match self {
            Self::Path(_) => "path",
            Self::Header(_) => "header",
            Self::Query(_) => "query",
        }
    }

    fn name(&self) -> &str {
        match self {
            Self::Path(n) | Self::Query(n) => n,
            Self::Header(h) => h.as_str(),
        }
    }
}

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {file}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(yaml::Diagnostics),
}

/// Why a request is refused by the policy. Display is a one-sentence message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("no route of the policy allows this request")]
    NoRoute,
    #[error("the API key has been revoked")]
    Revoked,
    #[error("the API key has expired")]
    Expired,
    #[error("the API key is suspended")]
    Disabled,
    #[error("API access is switched off for this key's business")]
    BusinessDisabled,
    #[error("{reason}")]
    LocationForbidden { reason: String },
    #[error("the API key lacks the required {}: {}", plural(.missing.len(), "scope"), Quoted(.missing))]
    InsufficientScope { missing: Vec<String> },
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_owned()
    } else {
        format!("{word}s")
    }
}

/// `a`, `b` → "`a`, `b`".
struct Quoted<'a>(&'a [String]);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "`{s}`")?;
        }
        Ok(())
    }
}

/// The request facts a decision may read besides the path: where locations come from.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub headers: &'a http::HeaderMap,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
}

impl<'a> Facts<'a> {
    pub fn of<B>(req: &'a http::Request<B>) -> Facts<'a> {
        Facts {
            headers: req.headers(),
            query: req.uri().query(),
        }
    }
}

impl Policy {
    pub fn load(file: &Path) -> Result<Policy, PolicyError> {
        Self::load_with_text(file).map(|(policy, _)| policy)
    }

    /// [`Policy::load`], also returning the text it was parsed from (the reloader keeps
    /// it, to tell a real change from a file event that changed nothing).
    pub fn load_with_text(file: &Path) -> Result<(Policy, String), PolicyError> {
        let text = Self::read(file)?;
        Ok((Self::parse(file, &text)?, text))
    }

    /// The policy file's text.
    pub fn read(file: &Path) -> Result<String, PolicyError> {
        std::fs::read_to_string(file).map_err(|source| PolicyError::Read {
            file: file.to_path_buf(),
            source,
        })
    }

    /// Parses and validates policy text; `file` is only used in messages.
    pub fn parse(file: &Path, text: &str) -> Result<Policy, PolicyError> {
        Self::parse_for(file, text, &[])
    }

    /// [`Policy::parse`] for a config with these named upstreams (in order), which routes
    /// may name in `upstream:`.
    pub fn parse_for(file: &Path, text: &str, upstreams: &[&str]) -> Result<Policy, PolicyError> {
        load::parse(file, text, upstreams).map_err(PolicyError::Invalid)
    }

    /// [`Policy::load_with_text`] for a config with these named upstreams.
    pub fn load_for(file: &Path, upstreams: &[&str]) -> Result<(Policy, String), PolicyError> {
        let text = Self::read(file)?;
        Ok((Self::parse_for(file, &text, upstreams)?, text))
    }

    /// One line for `keygate check` and reload logs.
    pub fn summary(&self) -> String {
        let count = |n: usize, word: &str| format!("{n} {}", plural(n, word));
        format!(
            "{}, {}, {}, {}, default {}",
            count(self.routes.len(), "route"),
            count(self.scopes.len(), "scope"),
            count(self.roles.len(), "role"),
            count(self.locations.len(), "location"),
            self.default.as_str()
        )
    }

    pub fn default_rule(&self) -> DefaultRule {
        self.default
    }

    /// The first route, in file order, whose pattern matches `path` and whose methods include
    /// `method` (no `methods` = all); a path match with another method falls through. With no
    /// match: `default: deny` refuses with [`Denial::NoRoute`], `allow_authenticated` gives the
    /// `default` pseudo-route. Allocation-free; only the routes the index names as
    /// candidates (same first literal segment, or a parameter first) are tried, in file order.
    pub fn route<'p>(&'p self, method: &Method, path: &NormalPath) -> Result<Matched<'p>, Denial> {
        for route in self
            .index
            .candidates(path)
            .filter_map(|i| self.routes.get(i))
        {
            if route
                .methods
                .as_ref()
                .is_some_and(|ms| !ms.iter().any(|m| m == method))
            {
                continue;
            }
            if route.pattern.matches(path) {
                return Ok(Matched {
                    policy: self,
                    target: Target::Route(route),
                });
            }
        }
        match self.default {
            DefaultRule::Deny => Err(Denial::NoRoute),
            DefaultRule::AllowAuthenticated => Ok(Matched {
                policy: self,
                target: Target::Default,
            }),
        }
    }

    /// The permit for a public route: no key, no identity. Call it only when `m.is_public()`
    /// (the proxy branches on it), with the path that was matched; debug builds assert both.
    pub fn permit_public(&self, m: Matched<'_>, path: NormalPath) -> Permitted {
        debug_assert!(m.is_public(), "permit_public() on a route that needs a key");
        debug_assert!(
            matches!(m.target, Target::Route(r) if r.pattern.matches(&path)),
            "permit_public() got another path than route()"
        );
        let (route, rate_limit, upstream, strip) = match m.target {
            Target::Route(r) => (r.name.clone(), r.rate_limit, r.upstream, r.strip_len()),
            Target::Default => (self.default_name.clone(), None, 0, 0),
        };
        Permitted {
            route,
            path,
            who: None,
            location: None,
            rate_limit,
            upstream,
            strip,
        }
    }

    /// The full decision for a keyed request matched by [`Policy::route`] on this policy and
    /// this `path`. Order: revoked, expired (at `now`), suspended, business disabled, location,
    /// scopes.
    pub fn decide(
        &self,
        m: Matched<'_>,
        path: NormalPath,
        key: &Arc<KeyRecord>,
        facts: &Facts<'_>,
        now: Timestamp,
    ) -> Result<Permitted, Denial> {
        self.admit(key, now)?;
        if !std::ptr::eq(m.policy, self) {
            // A match made on another policy (a reload in between): its route is not ours.
            return Err(Denial::NoRoute);
        }
        let route = match m.target {
            Target::Route(r) => r,
            Target::Default => {
                return Ok(Permitted {
                    route: self.default_name.clone(),
                    path,
                    who: Some(Arc::clone(key)),
                    location: None,
                    rate_limit: self.limit_for(DEFAULT_ROUTE, None, key),
                    upstream: 0,
                    strip: 0,
                });
            }
        };
        // The path decided on must be the path that was matched: re-match it (no allocation)
        // so a `Matched` cannot authorise one path and forward another.
        let param = match &route.location {
            Some(LocationSource::Path(name)) => Some(name.as_str()),
            _ => None,
        };
        let location_at = match route.pattern.capture(&path, param) {
            Some(range) => range.map(|r| (r.start, r.end)),
            None => return Err(Denial::NoRoute),
        };
        let location = match &route.location {
            None => None,
            Some(source) => {
                let at = self.resolve_location(source, location_at, &path, facts)?;
                if !holds_location(key, &at) {
                    return Err(Denial::LocationForbidden {
                        reason: format!("the API key may not act at location `{at}`"),
                    });
                }
                Some(at)
            }
        };
        let at = location.as_deref();
        if self.missing_scopes(route, key, at).next().is_some() {
            let missing = self.missing_scopes(route, key, at).cloned().collect();
            return Err(Denial::InsufficientScope { missing });
        }
        Ok(Permitted {
            route: route.name.clone(),
            path,
            who: Some(Arc::clone(key)),
            location,
            rate_limit: self.limit_for(&route.name, route.rate_limit, key),
            upstream: route.upstream,
            strip: route.strip_len(),
        })
    }

    /// The limit `key` meets on the route named `route` whose own is `own`
    /// ([`RouteLimit::for_key`]). A key without limits or a plan costs one test.
    fn limit_for(
        &self,
        route: &str,
        own: Option<RouteLimit>,
        key: &KeyRecord,
    ) -> Option<RouteLimit> {
        if key.limits.is_empty() && key.plan.is_none() {
            return own;
        }
        let plan = key
            .plan
            .as_deref()
            .and_then(|p| self.plan(p))
            .and_then(|p| p.rate_on(route));
        RouteLimit::for_key(own, key.limits.get(route).copied(), plan)
    }

    /// The quota `key` spends: its own, else its plan's. A key with neither a quota nor
    /// a plan costs two tests.
    pub fn quota_for<'a>(&'a self, key: &'a KeyRecord) -> Option<&'a crate::keys::Quota> {
        if let Some(q) = &key.quota {
            return Some(q);
        }
        key.plan
            .as_deref()
            .and_then(|p| self.plan(p))
            .and_then(|p| p.quota.as_ref())
    }

    /// The plan named `name`; a key naming a plan the policy no longer has meets the
    /// routes' own limits.
    pub fn plan(&self, name: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.name == name)
    }

    /// Whether a route of this name exists (`default` always does: it names what
    /// `default: allow_authenticated` permits).
    pub fn has_route(&self, name: &str) -> bool {
        name == DEFAULT_ROUTE || self.routes.iter().any(|r| &*r.name == name)
    }

    /// The names of the plans, file order.
    pub fn plan_names(&self) -> impl Iterator<Item = &str> {
        self.plans.iter().map(|p| p.name.as_str())
    }

    /// Whether `key` may be used at all at `now`: not revoked, not expired, not
    /// suspended, and its business enabled; the denial names the first check that fails, in that order.
    /// The first step of [`Policy::decide`], and all the admin API asks before it looks
    /// at the built-in `keygate:` scopes, so a key is usable in both or in neither.
    pub fn admit(&self, key: &KeyRecord, now: Timestamp) -> Result<(), Denial> {
        match key.status(now) {
            Status::Revoked => return Err(Denial::Revoked),
            Status::Expired => return Err(Denial::Expired),
            Status::Disabled => return Err(Denial::Disabled),
            Status::Active => {}
        }
        if !self.business_enabled(&key.business_id) {
            return Err(Denial::BusinessDisabled);
        }
        Ok(())
    }

    /// THE permission rule (CONTRACT section 4): whether `key` holds `scope` at
    /// `location` — it is one of the key's scopes (valid everywhere), or it belongs to a
    /// role granted to the key at `location` or at `*`. `None` (a route without a
    /// location; "everywhere" for the admin API) counts only grants at `*`, and so does
    /// `Some("*")`. Roles are this policy's; a grant of a role it lacks gives nothing.
    /// Whether the key may act at `location` at all is [`holds_location`], asked first.
    ///
    /// [`Policy::decide`] and the admin API's no-escalation check both ask this; neither
    /// has a rule of its own.
    pub fn holds(&self, key: &KeyRecord, scope: &str, location: Option<&str>) -> bool {
        key.scopes.iter().any(|s| s == scope)
            || key.grants.iter().any(|g| {
                g.locations
                    .iter()
                    .any(|l| l == "*" || Some(l.as_str()) == location)
                    && self
                        .roles
                        .iter()
                        .find(|r| r.name == g.role)
                        .is_some_and(|r| r.scopes.iter().any(|s| s == scope))
            })
    }

    /// The scopes `route` requires that `key` does not hold at `at` ([`Policy::holds`]):
    /// none means the scope half of the rule allows. [`Policy::decide`] and
    /// [`Policy::reach`] both ask it.
    fn missing_scopes<'r>(
        &'r self,
        route: &'r Route,
        key: &'r KeyRecord,
        at: Option<&'r str>,
    ) -> impl Iterator<Item = &'r String> + 'r {
        route.scopes.iter().filter(move |s| !self.holds(key, s, at))
    }

    /// Businesses: the listed value, else the `default` entry, else enabled.
    pub fn business_enabled(&self, business: &str) -> bool {
        self.businesses
            .iter()
            .find(|(b, _)| b == business)
            .map_or(self.business_default, |(_, on)| *on)
    }

    /// Every route name, in file order, then the default pseudo-route's (metric labels).
    pub fn route_names(&self) -> impl Iterator<Item = &str> {
        self.routes
            .iter()
            .map(|r| &*r.name)
            .chain(std::iter::once(DEFAULT_ROUTE))
    }

    /// (name, description), in file order.
    pub fn scopes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.scopes.iter().map(|(n, d)| (n.as_str(), d.as_str()))
    }

    /// (name, scopes), in file order.
    pub fn roles(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.roles
            .iter()
            .map(|r| (r.name.as_str(), r.scopes.as_slice()))
    }

    pub fn locations(&self) -> &[String] {
        &self.locations
    }

    pub fn has_scope(&self, s: &str) -> bool {
        self.scopes.iter().any(|(n, _)| n == s)
    }

    pub fn has_role(&self, r: &str) -> bool {
        self.roles.iter().any(|role| role.name == r)
    }

    pub fn has_location(&self, l: &str) -> bool {
        self.locations.iter().any(|x| x == l)
    }

    /// The policy as `GET /v1/policy` shows it. A route's `scopes` are every scope it
    /// requires (its `roles` expanded); `roles` lists the roles as written.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let routes: Vec<_> = self
            .routes
            .iter()
            .map(|r| {
                json!({
                    "name": &*r.name,
                    "path": r.pattern.as_str(),
                    "methods": r.methods.as_ref().map(|ms| ms.iter().map(Method::as_str).collect::<Vec<_>>()),
                    "public": r.public,
                    "scopes": r.scopes,
                    "roles": r.roles,
                    "location": r.location.as_ref().map(|l| json!({"from": l.source_name(), "name": l.name()})),
                    "rate_limit": r.rate_limit.map(|l| l.rate.to_string()),
                    "rate_limit_per": r.rate_limit.map(|l| l.per.as_str()),
                    "rate_limit_scope": r.rate_limit.and_then(|l| l.scope).map(Scope::as_str),
                })
            })
            .collect();
        json!({
            "scopes": self.scopes.iter().map(|(n, d)| json!({"name": n, "description": d})).collect::<Vec<_>>(),
            "roles": self.roles.iter().map(|r| json!({"name": r.name, "scopes": r.scopes})).collect::<Vec<_>>(),
            "locations": self.locations,
            "routes": routes,
            "plans": self.plans.iter().map(|p| json!({
                "name": p.name,
                "rate": p.rate.map(|r| r.to_string()),
                "limits": p.limits.iter().map(|(r, l)| (r.as_str(), l)).collect::<std::collections::BTreeMap<_, _>>(),
                "quota": p.quota.as_ref().map(crate::keys::Quota::to_json),
            })).collect::<Vec<_>>(),
            "default": self.default.as_str(),
        })
    }
}

/// Whether `key` may act at `location`: it is one of the key's locations, or the key's
/// locations include `*` (only such a key holds the location `*` itself). The location
/// half of the permission rule; [`Policy::holds`] is the scope half.
pub fn holds_location(key: &KeyRecord, location: &str) -> bool {
    locations_include(&key.locations, location)
}

/// [`holds_location`] for a key not yet made: whether a key with `locations` may act at
/// `location` (key creation asks it of every grant).
pub fn locations_include(locations: &[String], location: &str) -> bool {
    locations.iter().any(|l| l == "*" || l == location)
}

#[cfg(test)]
mod tests;
