//! The route policy and the authorisation decision.
//!
//! Job: hold one validated, immutable policy (scopes, roles, locations, businesses, routes in
//! file order, the default rule) and answer two questions for the proxy: which route a
//! request matches ([`Policy::route`]) and whether a key may use it ([`Policy::decide`]).
//!
//! Invariants:
//! - Pure: no I/O except [`Policy::load`] reading the file, no HTTP server types
//!   (`http::Method` and `http::HeaderMap` only).
//! - A [`Permitted`] can only be built here, and carries the [`NormalPath`] that was matched,
//!   so the path authorised is the path forwarded.
//! - Decision order is fixed: revoked, expired, business, location, scopes.
//! - The allow path of [`Policy::decide`] allocates only the location string and clones Arcs;
//!   the list of missing scopes is built only to deny.
//! - A policy that loaded is valid: every scope and role a route needs is declared, every
//!   pattern compiled, every location source resolvable.

mod index;
pub mod load;
pub mod path;
pub mod watch;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method};

use crate::keys::{KeyRecord, Status, Timestamp};
use crate::yaml;
use path::{NormalPath, Pattern};

/// The name of the pseudo-route that `default: allow_authenticated` permits.
pub const DEFAULT_ROUTE: &str = "default";

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
    default_name: Arc<str>,
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
    name: Arc<str>,
    pattern: Pattern,
    /// `None`: every method.
    methods: Option<Vec<Method>>,
    public: bool,
    /// Every scope required: the route's `scopes`, then those of its `roles`, no repeats.
    scopes: Vec<String>,
    /// The route's `roles`, as written (for display).
    roles: Vec<String>,
    location: Option<LocationSource>,
    rate_limit: Option<RateLimit>,
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

/// A route's `rate_limit`: `count` requests per `per`, per key, per gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

impl RateLimit {
    /// Parses `N/s`, `N/m` or `N/h` with N ≥ 1.
    pub fn parse(text: &str) -> Result<RateLimit, String> {
        let shape = || format!("rate limit `{text}` must look like `100/s`, `10/m` or `1000/h`");
        let (count, unit) = text.split_once('/').ok_or_else(shape)?;
        let per = match unit {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(shape()),
        };
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(shape());
        }
        let count: u32 = count
            .parse()
            .map_err(|_| format!("rate limit `{text}` is too large"))?;
        if count == 0 {
            return Err(format!(
                "rate limit `{text}` must allow at least 1 request per period"
            ));
        }
        Ok(RateLimit { count, per })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            3600 => "h",
            other => return write!(f, "{}/{other}s", self.count),
        };
        write!(f, "{}/{unit}", self.count)
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

/// The route a request matched (or the `allow_authenticated` default). Borrowed from the
/// policy it came from; hand it back, with the path it matched, to that same policy's
/// `decide` or `permit_public`. It holds no position in the path: `decide` re-matches the
/// path it is given (allocation-free) and reads a `from: path` location from that, so the
/// location checked always comes from the path forwarded.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'p> {
    policy: &'p Policy,
    target: Target<'p>,
}

#[derive(Debug, Clone, Copy)]
enum Target<'p> {
    Route(&'p Route),
    Default,
}

impl<'p> Matched<'p> {
    pub fn is_public(&self) -> bool {
        matches!(self.target, Target::Route(r) if r.public)
    }

    /// Whether this is the `default: allow_authenticated` pseudo-route.
    pub fn is_default(&self) -> bool {
        matches!(self.target, Target::Default)
    }

    pub fn route_name(&self) -> &'p str {
        match self.target {
            Target::Route(r) => &r.name,
            Target::Default => DEFAULT_ROUTE,
        }
    }

    /// The route name as a shared string (for the access log; no copy).
    pub fn route_name_shared(&self) -> Arc<str> {
        match self.target {
            Target::Route(r) => Arc::clone(&r.name),
            Target::Default => Arc::clone(&self.policy.default_name),
        }
    }

    /// Every scope a key needs here (the route's `scopes` and those of its `roles`).
    pub fn required_scopes(&self) -> &'p [String] {
        match self.target {
            Target::Route(r) => &r.scopes,
            Target::Default => &[],
        }
    }

    pub fn rate_limit(&self) -> Option<RateLimit> {
        match self.target {
            Target::Route(r) => r.rate_limit,
            Target::Default => None,
        }
    }

    /// Where the route reads its location from: (`path`|`header`|`query`, name).
    pub fn location_source(&self) -> Option<(&'static str, &'p str)> {
        match self.target {
            Target::Route(r) => r.location.as_ref().map(|l| (l.source_name(), l.name())),
            Target::Default => None,
        }
    }
}

/// Proof that a request may go upstream: only this module builds one.
#[derive(Debug, Clone)]
pub struct Permitted {
    route: Arc<str>,
    path: NormalPath,
    who: Option<Arc<KeyRecord>>,
    location: Option<String>,
    rate_limit: Option<RateLimit>,
}

impl Permitted {
    pub fn route_name(&self) -> &str {
        &self.route
    }

    /// The path that was authorised: the one to forward.
    pub fn path(&self) -> &NormalPath {
        &self.path
    }

    /// The key's record; `None` on a public route.
    pub fn who(&self) -> Option<&KeyRecord> {
        self.who.as_deref()
    }

    /// The location the request acts at, when the route has one.
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
    }
}

impl Policy {
    pub fn load(file: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(file).map_err(|source| PolicyError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Self::parse(file, &text)
    }

    /// Parses and validates policy text; `file` is only used in messages.
    pub fn parse(file: &Path, text: &str) -> Result<Policy, PolicyError> {
        load::parse(file, text).map_err(PolicyError::Invalid)
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
        let (route, rate_limit) = match m.target {
            Target::Route(r) => (r.name.clone(), r.rate_limit),
            Target::Default => (self.default_name.clone(), None),
        };
        Permitted {
            route,
            path,
            who: None,
            location: None,
            rate_limit,
        }
    }

    /// The full decision for a keyed request matched by [`Policy::route`] on this policy and
    /// this `path`. Order: revoked, expired (at `now`), business disabled, location, scopes.
    pub fn decide(
        &self,
        m: Matched<'_>,
        path: NormalPath,
        key: &Arc<KeyRecord>,
        facts: &Facts<'_>,
        now: Timestamp,
    ) -> Result<Permitted, Denial> {
        match key.status(now) {
            Status::Revoked => return Err(Denial::Revoked),
            Status::Expired => return Err(Denial::Expired),
            Status::Active => {}
        }
        if !self.business_enabled(&key.business_id) {
            return Err(Denial::BusinessDisabled);
        }
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
                    rate_limit: None,
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
                if !key.locations.iter().any(|l| l == "*" || *l == at) {
                    return Err(Denial::LocationForbidden {
                        reason: format!("the API key may not act at location `{at}`"),
                    });
                }
                Some(at)
            }
        };
        let at = location.as_deref();
        if !route.scopes.iter().all(|s| self.key_holds(key, s, at)) {
            let missing = route
                .scopes
                .iter()
                .filter(|s| !self.key_holds(key, s, at))
                .cloned()
                .collect();
            return Err(Denial::InsufficientScope { missing });
        }
        Ok(Permitted {
            route: route.name.clone(),
            path,
            who: Some(Arc::clone(key)),
            location,
            rate_limit: route.rate_limit,
        })
    }

    /// The key holds `scope` directly, or through a role granted at `at` or at `*`.
    fn key_holds(&self, key: &KeyRecord, scope: &str, at: Option<&str>) -> bool {
        key.scopes.iter().any(|s| s == scope)
            || key.grants.iter().any(|g| {
                g.locations
                    .iter()
                    .any(|l| l == "*" || Some(l.as_str()) == at)
                    && self
                        .roles
                        .iter()
                        .find(|r| r.name == g.role)
                        .is_some_and(|r| r.scopes.iter().any(|s| s == scope))
            })
    }

    /// The request's location, read from where the route says, and declared in the policy.
    fn resolve_location(
        &self,
        source: &LocationSource,
        at: Option<(usize, usize)>,
        path: &NormalPath,
        facts: &Facts<'_>,
    ) -> Result<String, Denial> {
        let forbid = |reason: String| Denial::LocationForbidden { reason };
        let value = match source {
            LocationSource::Path(name) => at
                .and_then(|(s, e)| path.as_str().get(Range { start: s, end: e }))
                .map(str::to_owned)
                .ok_or_else(|| forbid(format!("the request names no location in `{{{name}}}`")))?,
            LocationSource::Header(name) => {
                let first = crate::headers::at_most_one(facts.headers, name)
                    .map_err(|_| {
                        forbid(format!(
                            "the location is ambiguous: more than one `{name}` header"
                        ))
                    })?
                    .ok_or_else(|| {
                        forbid(format!(
                            "the request names no location (no `{name}` header)"
                        ))
                    })?;
                std::str::from_utf8(first.as_bytes())
                    .map_err(|_| forbid(format!("the `{name}` header is not valid UTF-8")))?
                    .to_owned()
            }
            LocationSource::Query(name) => query_location(facts.query, name)?,
        };
        if self.has_location(&value) {
            Ok(value)
        } else {
            Err(forbid(format!(
                "`{}` is not a location of the policy",
                value.escape_debug()
            )))
        }
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
                    "rate_limit": r.rate_limit.map(|l| l.to_string()),
                })
            })
            .collect();
        json!({
            "scopes": self.scopes.iter().map(|(n, d)| json!({"name": n, "description": d})).collect::<Vec<_>>(),
            "roles": self.roles.iter().map(|r| json!({"name": r.name, "scopes": r.scopes})).collect::<Vec<_>>(),
            "locations": self.locations,
            "routes": routes,
            "default": self.default.as_str(),
        })
    }
}

/// The one value of query parameter `name` (names and values percent-decoded; `+` is left
/// as is: declared locations and query names cannot contain `+` or a space, so either reading
/// of `+` gives the same answer).
fn query_location(query: Option<&str>, name: &str) -> Result<String, Denial> {
    let forbid = |reason: String| Denial::LocationForbidden { reason };
    let mut found: Option<&str> = None;
    for pair in query.unwrap_or("").split('&') {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        if decoded_eq(n, name) {
            if found.is_some() {
                return Err(forbid(format!(
                    "the location is ambiguous: more than one `{name}` query parameter"
                )));
            }
            found = Some(v);
        }
    }
    let raw = found.ok_or_else(|| {
        forbid(format!(
            "the request names no location (no `{name}` query parameter)"
        ))
    })?;
    percent_decode(raw).ok_or_else(|| {
        forbid(format!(
            "the `{name}` query parameter is not valid percent-encoded UTF-8"
        ))
    })
}

/// Whether `raw`, percent-decoded, equals `want`; an invalid escape never equals. No allocation.
fn decoded_eq(raw: &str, want: &str) -> bool {
    let mut want = want.bytes();
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        let b = if b == b'%' {
            match (bytes.next().and_then(hex), bytes.next().and_then(hex)) {
                (Some(h), Some(l)) => h << 4 | l,
                _ => return false,
            }
        } else {
            b
        };
        if want.next() != Some(b) {
            return false;
        }
    }
    want.next().is_none()
}

fn percent_decode(raw: &str) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let h = bytes.next().and_then(hex)?;
            let l = bytes.next().and_then(hex)?;
            out.push(h << 4 | l);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::keys::{Grant, KeyHash};
    use http::{HeaderMap, HeaderValue};
    use path::normalise;

    const POLICY: &str = "version: 1
scopes:
  items:read: Read items
  items:write: Write items
  reports:read: Read reports
roles:
  viewer: [items:read]
  editor: [items:read, items:write]
  reporter: [reports:read]
locations: [hq, plant-1, plant-2]
businesses:
  default: enabled
  trial-co: disabled
routes:
  - name: health
    path: /health
    public: true
    rate_limit: 5/s
  - name: items-get
    methods: [GET, HEAD]
    path: /v1/items/{*rest}
    scopes: [items:read]
  - name: items-write
    path: /v1/items/{*rest}
    scopes: [items:write]
    rate_limit: 10/m
  - name: loc-path
    path: /v1/locations/{loc}/items
    location: { from: path, name: loc }
    scopes: [items:write]
  - name: loc-header
    path: /v1/header/items
    location: { from: header, name: X-Location }
    scopes: [items:read]
  - name: loc-query
    path: /v1/query/items
    location: { from: query, name: loc }
    scopes: [items:read]
  - name: reports
    path: /v1/reports
    roles: [reporter]
  - name: reports-at
    path: /v1/sites/{site}/reports
    location: { from: path, name: site }
    roles: [reporter, viewer]
  - name: open
    path: /v1/open
";

    fn policy(text: &str) -> Policy {
        Policy::parse(Path::new("policy.yaml"), text).unwrap()
    }

    struct K {
        scopes: Vec<String>,
        locations: Vec<String>,
        grants: Vec<Grant>,
        business: String,
        expires_at: Option<Timestamp>,
        revoked_at: Option<Timestamp>,
    }

    fn k() -> K {
        K {
            scopes: vec![],
            locations: vec![],
            grants: vec![],
            business: "acme".into(),
            expires_at: None,
            revoked_at: None,
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    impl K {
        fn scopes(mut self, s: &[&str]) -> Self {
            self.scopes = strings(s);
            self
        }
        fn locations(mut self, l: &[&str]) -> Self {
            self.locations = strings(l);
            self
        }
        fn grant(mut self, role: &str, at: &[&str]) -> Self {
            self.grants.push(Grant {
                role: role.into(),
                locations: strings(at),
            });
            self
        }
        fn business(mut self, b: &str) -> Self {
            self.business = b.into();
            self
        }
        fn build(self) -> Arc<KeyRecord> {
            Arc::new(KeyRecord {
                id: "kid_test".into(),
                hash: KeyHash([0; 32]),
                name: "test".into(),
                description: String::new(),
                prefix: "kg_abc".into(),
                user_id: "u1".into(),
                business_id: self.business,
                scopes: self.scopes,
                locations: self.locations,
                grants: self.grants,
                created_at: Timestamp(0),
                expires_at: self.expires_at,
                revoked_at: self.revoked_at,
                last_used_at: None,
                created_by: "test".into(),
            })
        }
    }

    const NOW: Timestamp = Timestamp(1_000_000);

    /// Routes and decides `method path?query` with `headers` for `key`.
    fn ask(
        p: &Policy,
        method: &str,
        target: &str,
        headers: &HeaderMap,
        key: &Arc<KeyRecord>,
    ) -> Result<Permitted, Denial> {
        let (raw, query) = match target.split_once('?') {
            Some((path, q)) => (path, Some(q)),
            None => (target, None),
        };
        let path = normalise(raw).unwrap();
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let m = p.route(&method, &path)?;
        let facts = Facts { headers, query };
        p.decide(m, path, key, &facts, NOW)
    }

    fn get(p: &Policy, target: &str, key: &Arc<KeyRecord>) -> Result<Permitted, Denial> {
        ask(p, "GET", target, &HeaderMap::new(), key)
    }

    fn missing(v: &[&str]) -> Result<String, Denial> {
        Err(Denial::InsufficientScope {
            missing: strings(v),
        })
    }

    /// Ok(route name) or the denial.
    fn name(r: Result<Permitted, Denial>) -> Result<String, Denial> {
        r.map(|p| p.route_name().to_owned())
    }

    fn location_forbidden(r: Result<Permitted, Denial>, needle: &str) {
        match r {
            Err(Denial::LocationForbidden { reason }) => {
                assert!(reason.contains(needle), "{reason}");
            }
            other => panic!("expected LocationForbidden({needle}), got {other:?}"),
        }
    }

    #[test]
    fn direct_scopes_and_method_fall_through() {
        let p = policy(POLICY);
        let reader = k().scopes(&["items:read"]).build();
        let permit = get(&p, "/v1/items/a/b", &reader).unwrap();
        assert_eq!(permit.route_name(), "items-get");
        assert_eq!(permit.path().as_str(), "/v1/items/a/b");
        assert_eq!(permit.who().unwrap().id, "kid_test");
        assert_eq!(permit.location(), None);
        assert_eq!(name(get(&p, "/v1/items", &reader)), Ok("items-get".into()));
        // POST does not match items-get, falls through to items-write.
        let post = ask(&p, "POST", "/v1/items/x", &HeaderMap::new(), &reader);
        assert_eq!(name(post), missing(&["items:write"]));
        let writer = k().scopes(&["items:write"]).build();
        let permit = ask(&p, "POST", "/v1/items/x", &HeaderMap::new(), &writer).unwrap();
        assert_eq!(permit.route_name(), "items-write");
        assert_eq!(
            permit.rate_limit(),
            Some(RateLimit {
                count: 10,
                per: Duration::from_secs(60)
            })
        );
        // GET matches items-get first, even for a key that could use items-write.
        assert_eq!(
            name(get(&p, "/v1/items/x", &writer)),
            missing(&["items:read"])
        );
        // Unmatched under deny.
        assert_eq!(name(get(&p, "/v2/nothing", &writer)), Err(Denial::NoRoute));
        // Literal comparison is case-sensitive.
        assert_eq!(name(get(&p, "/V1/items", &reader)), Err(Denial::NoRoute));
    }

    #[test]
    fn grants_at_star_apply_everywhere_grants_at_a_location_only_there() {
        let p = policy(POLICY);
        let star = k().grant("viewer", &["*"]).build();
        assert_eq!(name(get(&p, "/v1/items/x", &star)), Ok("items-get".into()));
        // A route without a location ignores location-specific grants.
        let hq_only = k().locations(&["hq"]).grant("viewer", &["hq"]).build();
        assert_eq!(
            name(get(&p, "/v1/items/x", &hq_only)),
            missing(&["items:read"])
        );
        // A grant of an unknown role gives nothing.
        let ghost = k().grant("ghost", &["*"]).build();
        assert_eq!(
            name(get(&p, "/v1/items/x", &ghost)),
            missing(&["items:read"])
        );
    }

    #[test]
    fn location_from_path() {
        let p = policy(POLICY);
        let post =
            |target: &str, key: &Arc<KeyRecord>| ask(&p, "POST", target, &HeaderMap::new(), key);
        let k1 = k()
            .locations(&["plant-1"])
            .grant("editor", &["plant-1"])
            .build();
        let permit = post("/v1/locations/plant-1/items", &k1).unwrap();
        assert_eq!(permit.route_name(), "loc-path");
        assert_eq!(permit.location(), Some("plant-1"));
        location_forbidden(
            post("/v1/locations/plant-2/items", &k1),
            "may not act at location `plant-2`",
        );
        // Every location, but the role only at plant-1.
        let all = k().locations(&["*"]).grant("editor", &["plant-1"]).build();
        assert!(post("/v1/locations/plant-1/items", &all).is_ok());
        assert_eq!(
            name(post("/v1/locations/plant-2/items", &all)),
            missing(&["items:write"])
        );
        // The role everywhere; location hq is in the key's locations.
        let star = k()
            .locations(&["hq", "plant-2"])
            .grant("editor", &["*"])
            .build();
        assert!(post("/v1/locations/plant-2/items", &star).is_ok());
        // Key scopes are valid at every location the key may act at.
        let direct = k().locations(&["*"]).scopes(&["items:write"]).build();
        assert!(post("/v1/locations/hq/items", &direct).is_ok());
        // Undeclared location, even with `*`; comparison is case-sensitive.
        location_forbidden(
            post("/v1/locations/mars/items", &direct),
            "not a location of the policy",
        );
        location_forbidden(
            post("/v1/locations/HQ/items", &direct),
            "not a location of the policy",
        );
        location_forbidden(
            post("/v1/locations/hq;x/items", &direct),
            "not a location of the policy",
        );
        // No locations at all.
        let nowhere = k().scopes(&["items:write"]).build();
        location_forbidden(post("/v1/locations/hq/items", &nowhere), "may not act");
        // Percent-encoded unreserved characters are decoded before matching.
        assert_eq!(
            post("/v1/locations/%68q/items", &direct)
                .unwrap()
                .location(),
            Some("hq")
        );
    }

    #[test]
    fn location_from_header() {
        let p = policy(POLICY);
        let key = k().locations(&["hq"]).grant("viewer", &["hq"]).build();
        let with = |values: &[&[u8]]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("x-location", HeaderValue::from_bytes(v).unwrap());
            }
            ask(&p, "GET", "/v1/header/items", &h, &key)
        };
        let permit = with(&[b"hq"]).unwrap();
        assert_eq!(
            (permit.route_name(), permit.location()),
            ("loc-header", Some("hq"))
        );
        location_forbidden(with(&[]), "no location");
        location_forbidden(with(&[b"hq", b"hq"]), "ambiguous");
        location_forbidden(with(&[b"plant-1"]), "may not act at location `plant-1`");
        location_forbidden(with(&[b"nowhere"]), "not a location");
        location_forbidden(with(&[b"h\xffq"]), "not valid UTF-8");
    }

    #[test]
    fn location_from_query() {
        let p = policy(POLICY);
        let key = k().locations(&["hq"]).grant("viewer", &["hq"]).build();
        let q = |query: &str| get(&p, &format!("/v1/query/items{query}"), &key);
        assert_eq!(q("?loc=hq").unwrap().location(), Some("hq"));
        assert_eq!(q("?a=1&loc=hq&b").unwrap().location(), Some("hq"));
        assert_eq!(q("?l%6fc=hq").unwrap().location(), Some("hq"));
        assert_eq!(q("?loc=%68%71").unwrap().location(), Some("hq"));
        location_forbidden(q(""), "no location");
        location_forbidden(q("?"), "no location");
        location_forbidden(q("?lo=hq&locc=hq&LOC=hq"), "no location");
        location_forbidden(q("?loc=hq&loc=hq"), "ambiguous");
        location_forbidden(q("?loc=hq&l%6Fc=plant-1"), "ambiguous");
        location_forbidden(q("?loc=hq&loc"), "ambiguous");
        location_forbidden(q("?loc=plant-1"), "may not act");
        location_forbidden(q("?loc=HQ"), "not a location");
        location_forbidden(q("?loc=h%"), "not valid percent-encoded");
        location_forbidden(q("?loc=%ff"), "not valid percent-encoded");
        location_forbidden(q("?loc="), "not a location");
    }

    #[test]
    fn revoked_then_expired_then_business_then_location_then_scope() {
        let p = policy(POLICY);
        let mut key = k().business("trial-co");
        key.revoked_at = Some(Timestamp(10));
        key.expires_at = Some(Timestamp(20));
        assert_eq!(
            name(get(&p, "/v1/items/x", &key.build())),
            Err(Denial::Revoked)
        );
        let mut key = k().business("trial-co");
        key.expires_at = Some(NOW);
        assert_eq!(
            name(get(&p, "/v1/items/x", &key.build())),
            Err(Denial::Expired)
        );
        let mut key = k().scopes(&["items:read"]);
        key.expires_at = Some(Timestamp(NOW.0 + 1));
        assert!(get(&p, "/v1/items/x", &key.build()).is_ok());
        let key = k().business("trial-co").build();
        assert_eq!(
            name(get(&p, "/v1/items/x", &key)),
            Err(Denial::BusinessDisabled)
        );
        // Location is checked before scopes.
        let key = k().build();
        location_forbidden(get(&p, "/v1/query/items?loc=hq", &key), "may not act");
    }

    #[test]
    fn businesses_listed_then_default_entry_then_enabled() {
        let p = policy(POLICY);
        assert!(p.business_enabled("acme"));
        assert!(!p.business_enabled("trial-co"));
        let closed = policy(
            "version: 1\nbusinesses:\n  default: disabled\n  acme: enabled\nroutes:\n  - name: open\n    path: /open\n",
        );
        assert!(closed.business_enabled("acme"));
        assert!(!closed.business_enabled("other"));
        let other = k().business("other").build();
        assert_eq!(
            name(get(&closed, "/open", &other)),
            Err(Denial::BusinessDisabled)
        );
        assert_eq!(name(get(&closed, "/open", &k().build())), Ok("open".into()));
        assert!(policy("version: 1\n").business_enabled("anyone"));
    }

    #[test]
    fn allow_authenticated_default() {
        let p = policy(
            "version: 1\nbusinesses:\n  off: disabled\nroutes:\n  - name: r\n    path: /r\n    methods: [GET]\ndefault: allow_authenticated\n",
        );
        let key = k().build();
        let path = normalise("/anything/else").unwrap();
        let m = p.route(&Method::GET, &path).unwrap();
        assert!(m.is_default() && !m.is_public());
        assert_eq!(m.route_name(), "default");
        assert!(m.required_scopes().is_empty());
        let facts = Facts {
            headers: &HeaderMap::new(),
            query: None,
        };
        let permit = p.decide(m, path, &key, &facts, NOW).unwrap();
        assert_eq!(permit.route_name(), "default");
        assert_eq!(permit.rate_limit(), None);
        // A method no route allows falls through to the default too.
        assert_eq!(
            name(ask(&p, "POST", "/r", &HeaderMap::new(), &key)),
            Ok("default".into())
        );
        let off = k().business("off").build();
        assert_eq!(name(get(&p, "/x", &off)), Err(Denial::BusinessDisabled));
        assert!(p.summary().ends_with("default allow_authenticated"));
    }

    #[test]
    fn public_routes_permit_without_a_key() {
        let p = policy(POLICY);
        let path = normalise("/health").unwrap();
        let m = p.route(&Method::GET, &path).unwrap();
        assert!(m.is_public());
        assert_eq!(m.route_name(), "health");
        let permit = p.permit_public(m, path);
        assert_eq!(permit.route_name(), "health");
        assert!(permit.who().is_none() && permit.location().is_none());
        assert_eq!(permit.rate_limit().map(|r| r.count), Some(5));
        assert!(
            !p.route(&Method::GET, &normalise("/v1/open").unwrap())
                .unwrap()
                .is_public()
        );
    }

    #[test]
    fn roles_on_routes_require_their_scopes() {
        let p = policy(POLICY);
        let m = p
            .route(&Method::GET, &normalise("/v1/reports").unwrap())
            .unwrap();
        assert_eq!(m.required_scopes(), ["reports:read"]);
        assert!(get(&p, "/v1/reports", &k().scopes(&["reports:read"]).build()).is_ok());
        assert!(get(&p, "/v1/reports", &k().grant("reporter", &["*"]).build()).is_ok());
        assert_eq!(
            name(get(&p, "/v1/reports", &k().build())),
            missing(&["reports:read"])
        );
        // Two roles at a location: the union of their scopes, each from a grant there.
        let m = p
            .route(&Method::GET, &normalise("/v1/sites/hq/reports").unwrap())
            .unwrap();
        assert_eq!(m.required_scopes(), ["reports:read", "items:read"]);
        let key = k()
            .locations(&["hq"])
            .grant("reporter", &["hq"])
            .grant("viewer", &["*"])
            .build();
        assert_eq!(
            get(&p, "/v1/sites/hq/reports", &key).unwrap().location(),
            Some("hq")
        );
        let key = k()
            .locations(&["*"])
            .grant("reporter", &["plant-1"])
            .build();
        assert_eq!(
            name(get(&p, "/v1/sites/hq/reports", &key)),
            missing(&["reports:read", "items:read"])
        );
    }

    #[test]
    fn a_route_without_scopes_needs_only_a_valid_key() {
        let p = policy(POLICY);
        assert_eq!(name(get(&p, "/v1/open", &k().build())), Ok("open".into()));
    }

    #[test]
    fn a_match_from_another_policy_is_refused() {
        let a = policy(POLICY);
        let b = policy(POLICY);
        let path = normalise("/v1/open").unwrap();
        let m = a.route(&Method::GET, &path).unwrap();
        let facts = Facts {
            headers: &HeaderMap::new(),
            query: None,
        };
        assert_eq!(
            b.decide(m, path, &k().build(), &facts, NOW).map(|_| ()),
            Err(Denial::NoRoute)
        );
    }

    #[test]
    fn decide_refuses_a_path_other_than_the_matched_one() {
        let p = policy(POLICY);
        let m = p
            .route(&Method::GET, &normalise("/v1/open").unwrap())
            .unwrap();
        let facts = Facts {
            headers: &HeaderMap::new(),
            query: None,
        };
        let other = normalise("/v1/reports").unwrap();
        assert_eq!(
            p.decide(m, other, &k().build(), &facts, NOW).map(|_| ()),
            Err(Denial::NoRoute)
        );
    }

    #[test]
    fn denial_messages() {
        assert_eq!(
            Denial::InsufficientScope {
                missing: strings(&["items:read", "items:write"])
            }
            .to_string(),
            "the API key lacks the required scopes: `items:read`, `items:write`"
        );
        assert_eq!(
            Denial::InsufficientScope {
                missing: strings(&["a"])
            }
            .to_string(),
            "the API key lacks the required scope: `a`"
        );
        assert_eq!(
            Denial::NoRoute.to_string(),
            "no route of the policy allows this request"
        );
    }

    #[test]
    fn accessors_summary_and_json() {
        let p = policy(POLICY);
        assert_eq!(
            p.summary(),
            "9 routes, 3 scopes, 3 roles, 3 locations, default deny"
        );
        assert_eq!(
            p.scopes().collect::<Vec<_>>(),
            vec![
                ("items:read", "Read items"),
                ("items:write", "Write items"),
                ("reports:read", "Read reports")
            ]
        );
        let roles: Vec<_> = p.roles().map(|(n, s)| (n, s.len())).collect();
        assert_eq!(roles, vec![("viewer", 1), ("editor", 2), ("reporter", 1)]);
        assert_eq!(p.locations(), ["hq", "plant-1", "plant-2"]);
        assert!(p.has_scope("items:read") && !p.has_scope("items"));
        assert!(p.has_role("editor") && !p.has_role("admin"));
        assert!(p.has_location("hq") && !p.has_location("*"));
        let j = p.to_json();
        assert_eq!(j["default"], "deny");
        assert_eq!(
            j["scopes"][0],
            serde_json::json!({"name": "items:read", "description": "Read items"})
        );
        assert_eq!(
            j["roles"][1],
            serde_json::json!({"name": "editor", "scopes": ["items:read", "items:write"]})
        );
        assert_eq!(
            j["locations"],
            serde_json::json!(["hq", "plant-1", "plant-2"])
        );
        assert_eq!(
            j["routes"][1],
            serde_json::json!({
                "name": "items-get", "path": "/v1/items/{*rest}", "methods": ["GET", "HEAD"],
                "public": false, "scopes": ["items:read"], "roles": [], "location": null,
                "rate_limit": null,
            })
        );
        assert_eq!(
            j["routes"][3]["location"],
            serde_json::json!({"from": "path", "name": "loc"})
        );
        assert_eq!(j["routes"][2]["rate_limit"], "10/m");
        assert_eq!(j["routes"][2]["methods"], serde_json::Value::Null);
        assert_eq!(
            policy("version: 1\nroutes:\n  - name: a\n    path: /a\n").summary(),
            "1 route, 0 scopes, 0 roles, 0 locations, default deny"
        );
    }

    #[test]
    fn load_reads_files_and_reports_read_errors() {
        let dir = std::env::temp_dir().join(format!("keygate-policy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("policy.yaml");
        std::fs::write(&file, POLICY).unwrap();
        assert!(Policy::load(&file).is_ok());
        std::fs::write(&file, "version: 1\ndefault: nah\n").unwrap();
        match Policy::load(&file) {
            Err(PolicyError::Invalid(d)) => {
                assert_eq!(d.0[0].file, file);
                assert_eq!(d.0[0].line, 2);
            }
            other => panic!("{other:?}"),
        }
        let gone = dir.join("missing.yaml");
        let err = Policy::load(&gone).unwrap_err();
        assert!(matches!(err, PolicyError::Read { .. }));
        assert!(err.to_string().starts_with("cannot read "), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn policy_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Policy>();
        assert_send_sync::<Permitted>();
    }

    #[test]
    fn rate_limit_parse_and_display() {
        assert_eq!(RateLimit::parse("1/h").unwrap().to_string(), "1/h");
        assert_eq!(RateLimit::parse("100/s").unwrap().count, 100);
        assert!(RateLimit::parse("0/s").is_err());
        assert!(RateLimit::parse("+1/s").is_err());
    }

    /// The index must pick exactly the route a linear first-match scan in file order picks.
    #[test]
    fn indexed_match_is_the_linear_first_match() {
        let p = policy(
            "version: 1
routes:
  - name: root
    path: /
  - name: v1-get
    methods: [GET]
    path: /v1/{*rest}
  - name: any-id
    path: /{id}/x
  - name: v1-items
    path: /v1/items/{id}
  - name: all
    methods: [POST]
    path: /{*rest}
  - name: health
    path: /health
  - name: v1-post
    path: /v1/items
default: allow_authenticated
",
        );
        let linear = |method: &Method, path: &NormalPath| {
            p.routes
                .iter()
                .find(|r| {
                    r.methods.as_ref().is_none_or(|ms| ms.contains(method))
                        && r.pattern.matches(path)
                })
                .map_or(DEFAULT_ROUTE, |r| &*r.name)
        };
        let paths = [
            "/",
            "/v1",
            "/v1/",
            "/v1/items",
            "/v1/items/7",
            "/health",
            "/health/",
            "/a/x",
            "/v1/x",
            "/x",
            "/health/x",
            "/v2/items/7",
        ];
        for method in [Method::GET, Method::POST, Method::DELETE] {
            for raw in paths {
                let path = path::normalise(raw).unwrap();
                let got = p.route(&method, &path).unwrap().route_name();
                assert_eq!(got, linear(&method, &path), "{method} {raw}");
            }
        }
    }
}
