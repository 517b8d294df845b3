//! Parsing and validating a policy file into a [`Policy`].
//!
//! Job: strict YAML (unknown fields, duplicate keys and wrong types are errors, via
//! [`crate::yaml::parse`]), then every semantic check of the contract's section 4, each
//! reported at the line of the offending item. All semantic errors are collected, not just the
//! first, so one `keygate check` run shows everything to fix.
//!
//! Invariants: a [`Policy`] only comes out of here fully valid; names that keys, the CLI and
//! headers carry are restricted to characters that survive those channels unambiguously
//! (locations: `A-Z a-z 0-9 - . _ ~`, so a path segment, a query value and a header value all
//! spell a location the same way; roles: no `@` or `,`, the CLI's `ROLE@LOC,LOC` separators).

use std::path::Path;

use http::Method;
use serde::Deserialize;

use super::path::{Pattern, PatternError, is_unreserved};
use super::{BUILT_IN_PREFIX, DEFAULT_ROUTE, DefaultRule, Policy, Role, Route, RouteName};
use crate::yaml::{self, Diagnostic, Diagnostics, Ordered, Positions, Seg};

mod limit;
mod location;
mod plans;

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: Option<i64>,
    scopes: Option<Ordered<Option<String>>>,
    roles: Option<Ordered<Vec<String>>>,
    locations: Option<Vec<String>>,
    businesses: Option<Ordered<String>>,
    routes: Option<Vec<RawRoute>>,
    plans: Option<Ordered<plans::RawPlan>>,
    default: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Option<String>,
    path: Option<String>,
    methods: Option<Vec<String>>,
    public: Option<bool>,
    scopes: Option<Vec<String>>,
    roles: Option<Vec<String>>,
    location: Option<location::RawLocation>,
    rate_limit: Option<limit::RawRateLimit>,
    upstream: Option<String>,
    strip_prefix: Option<String>,
}

/// Collects diagnostics with positions.
struct Check<'a> {
    file: &'a Path,
    pos: &'a Positions,
    errors: Vec<Diagnostic>,
}

impl Check<'_> {
    /// An error about the value at `path`.
    fn at(&mut self, path: &[Seg], message: impl Into<String>) {
        self.errors.push(self.pos.diag(self.file, path, message));
    }

    /// An error about the mapping key at `path` (its line, even when the value is a block).
    fn at_key(&mut self, path: &[Seg], message: impl Into<String>) {
        let mut d = self.pos.diag(self.file, path, message);
        if let Some((line, col)) = self.pos.key(path) {
            (d.line, d.col) = (line, col);
        }
        self.errors.push(d);
    }
}

fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    yaml::did_you_mean(word, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

/// Parses and validates `text`; `file` names the file in diagnostics; `upstreams` are the
/// config's named upstreams, in order (a route's `upstream: NAME` becomes its position
/// + 1; 0 is the default upstream).
pub fn parse(file: &Path, text: &str, upstreams: &[&str]) -> Result<Policy, Diagnostics> {
    let (raw, pos): (RawPolicy, Positions) = yaml::parse(file, text)?;
    let mut check = Check {
        file,
        pos: &pos,
        errors: Vec::new(),
    };
    let policy = build(raw, upstreams, &mut check);
    let mut errors = check.errors;
    if errors.is_empty() {
        Ok(policy)
    } else {
        errors.sort_by_key(|d| (d.line, d.col));
        Err(Diagnostics(errors))
    }
}

fn build(raw: RawPolicy, upstreams: &[&str], c: &mut Check<'_>) -> Policy {
    match raw.version {
        Some(1) => {}
        Some(v) => c.at(
            &[Seg::Key("version")],
            format!("unsupported policy version {v}: this keygate reads `version: 1`"),
        ),
        None => c.at(&[], "missing `version: 1`"),
    }

    let scopes = check_scopes(raw.scopes.map(|o| o.0).unwrap_or_default(), c);
    let scope_names: Vec<&str> = scopes.iter().map(|(n, _)| n.as_str()).collect();
    let roles = check_roles(raw.roles.map(|o| o.0).unwrap_or_default(), &scope_names, c);
    let locations = check_locations(raw.locations.unwrap_or_default(), c);

    let mut businesses = Vec::new();
    let mut business_default = true;
    for (name, value) in raw.businesses.map(|o| o.0).unwrap_or_default() {
        let on = match value.as_str() {
            "enabled" => true,
            "disabled" => false,
            other => {
                c.at(
                    &[Seg::Key("businesses"), Seg::Key(&name)],
                    format!(
                        "business `{name}` is `{other}`: use `enabled` or `disabled`{}",
                        suggest(other, ["enabled", "disabled"])
                    ),
                );
                continue;
            }
        };
        if name == "default" {
            business_default = on;
        } else {
            businesses.push((name, on));
        }
    }

    let default = match raw.default.as_deref() {
        None | Some("deny") => DefaultRule::Deny,
        Some("allow_authenticated") => DefaultRule::AllowAuthenticated,
        Some(other) => {
            c.at(
                &[Seg::Key("default")],
                format!(
                    "`default: {other}` is not a rule: use `deny` or `allow_authenticated`{}",
                    suggest(other, ["deny", "allow_authenticated"])
                ),
            );
            DefaultRule::Deny
        }
    };

    let role_names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
    let mut routes: Vec<Route> = Vec::new();
    let mut seen_names: Vec<String> = Vec::new();
    for (i, r) in raw.routes.unwrap_or_default().into_iter().enumerate() {
        let known = Known {
            scopes: &scope_names,
            roles: &roles,
            role_names: &role_names,
            upstreams,
        };
        if let Some(route) = check_route(i, r, &known, &mut seen_names, c) {
            routes.push(route);
        }
    }

    let mut route_names: Vec<&str> = routes.iter().map(|r| &*r.name).collect();
    route_names.push(DEFAULT_ROUTE);
    let plans = plans::check(raw.plans.map(|o| o.0).unwrap_or_default(), &route_names, c);
    let index = super::index::RouteIndex::new(routes.iter().map(|r| r.pattern.first_literal()));
    Policy {
        plans,
        scopes,
        roles,
        locations,
        businesses,
        business_default,
        routes,
        index,
        default,
        default_name: RouteName::new(DEFAULT_ROUTE),
    }
}

/// A name people and tools pass around: visible ASCII, no `,` (lists on the command line).
fn bad_name(name: &str, extra_forbidden: &[char]) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".to_owned());
    }
    if let Some(ch) = name
        .chars()
        .find(|ch| !ch.is_ascii_graphic() || *ch == ',' || extra_forbidden.contains(ch))
    {
        return Some(format!("may not contain {ch:?}"));
    }
    None
}

fn check_scopes(raw: Vec<(String, Option<String>)>, c: &mut Check<'_>) -> Vec<(String, String)> {
    let mut scopes = Vec::with_capacity(raw.len());
    for (name, description) in raw {
        let at = [Seg::Key("scopes"), Seg::Key(&name)];
        if name.starts_with(BUILT_IN_PREFIX) {
            c.at_key(
                &at,
                format!(
                    "scope `{name}` cannot be declared: scopes beginning `{BUILT_IN_PREFIX}` are built in for the admin API"
                ),
            );
            continue;
        }
        if let Some(why) = bad_name(&name, &[]) {
            c.at_key(&at, format!("scope name `{name}` {why}"));
            continue;
        }
        scopes.push((name, description.unwrap_or_default()));
    }
    scopes
}

/// Why `scope` may not be used in a role or a route, if it may not.
fn scope_problem(scope: &str, declared: &[&str]) -> Option<String> {
    if scope.starts_with(BUILT_IN_PREFIX) {
        Some(format!(
            "scope `{scope}` is built in for the admin API: no role or route may use a scope beginning `{BUILT_IN_PREFIX}`"
        ))
    } else if declared.contains(&scope) {
        None
    } else {
        Some(format!(
            "scope `{scope}` is not declared in `scopes`{}",
            suggest(scope, declared.iter().copied())
        ))
    }
}

fn check_roles(raw: Vec<(String, Vec<String>)>, declared: &[&str], c: &mut Check<'_>) -> Vec<Role> {
    let mut roles = Vec::with_capacity(raw.len());
    for (name, scopes) in raw {
        if let Some(why) = bad_name(&name, &['@']) {
            c.at_key(
                &[Seg::Key("roles"), Seg::Key(&name)],
                format!("role name `{name}` {why}"),
            );
        }
        for (j, s) in scopes.iter().enumerate() {
            if let Some(problem) = scope_problem(s, declared) {
                c.at(
                    &[Seg::Key("roles"), Seg::Key(&name), Seg::Index(j)],
                    format!("role `{name}`: {problem}"),
                );
            }
        }
        roles.push(Role { name, scopes });
    }
    roles
}

fn check_locations(raw: Vec<String>, c: &mut Check<'_>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for (i, l) in raw.into_iter().enumerate() {
        let at = [Seg::Key("locations"), Seg::Index(i)];
        if l == "*" {
            c.at(
                &at,
                "`*` cannot be declared: on a key it already means every location",
            );
        } else if l.is_empty() || l == "." || l == ".." || !l.bytes().all(is_unreserved) {
            c.at(
                &at,
                format!(
                    "location `{}` may use only letters, digits, `-`, `.`, `_` and `~` (and is not `.` or `..`)",
                    l.escape_debug()
                ),
            );
        } else if out.contains(&l) {
            c.at(&at, format!("location `{l}` is declared twice"));
        } else {
            out.push(l);
        }
    }
    out
}

/// What routes may refer to.
struct Known<'a> {
    scopes: &'a [&'a str],
    roles: &'a [Role],
    role_names: &'a [&'a str],
    /// The config's named upstreams, in order.
    upstreams: &'a [&'a str],
}

/// The path of field `f` of route `i`, and of item `j` of that field.
fn route_field(i: usize, f: &str) -> [Seg<'_>; 3] {
    [Seg::Key("routes"), Seg::Index(i), Seg::Key(f)]
}

fn route_item(i: usize, f: &str, j: usize) -> [Seg<'_>; 4] {
    [
        Seg::Key("routes"),
        Seg::Index(i),
        Seg::Key(f),
        Seg::Index(j),
    ]
}

/// One route's checks, in the order of the contract's list; `None` if any failed.
fn check_route(
    i: usize,
    raw: RawRoute,
    known: &Known<'_>,
    seen_names: &mut Vec<String>,
    c: &mut Check<'_>,
) -> Option<Route> {
    let errors_before = c.errors.len();
    let name = check_route_name(i, raw.name, seen_names, c);
    let label = name
        .as_deref()
        .map_or_else(|| format!("route {}", i + 1), |n| format!("route `{n}`"));

    let pattern = match &raw.path {
        None => {
            c.at(
                &[Seg::Key("routes"), Seg::Index(i)],
                format!("{label} has no `path`"),
            );
            None
        }
        Some(p) => match Pattern::parse(p) {
            Ok(pattern) => Some(pattern),
            Err(e) => {
                let hint = if e == PatternError::NotAbsolute {
                    ""
                } else {
                    " (patterns: `/literal`, `{name}` for one segment, `{*name}` for the rest)"
                };
                c.at(
                    &route_field(i, "path"),
                    format!("{label}: path `{p}`: {e}{hint}"),
                );
                None
            }
        },
    };

    let methods = raw.methods.map(|ms| check_methods(i, &label, &ms, c));

    let public = raw.public.unwrap_or(false);
    if public {
        let present = [
            (raw.scopes.is_some(), "`scopes`"),
            (raw.roles.is_some(), "`roles`"),
            (raw.location.is_some(), "`location`"),
        ];
        let contradictions: Vec<&str> = present
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, f)| *f)
            .collect();
        if !contradictions.is_empty() {
            c.at_key(
                &route_field(i, "public"),
                format!(
                    "{label} is `public: true` but has {}: a public route needs no key, so it cannot require anything",
                    contradictions.join(" and ")
                ),
            );
        }
    }

    let roles = raw.roles.unwrap_or_default();
    let scopes = check_required(i, &label, raw.scopes.unwrap_or_default(), &roles, known, c);
    let location = raw
        .location
        .and_then(|loc| location::check(i, &label, loc, pattern.as_ref(), c));
    let rate_limit = raw
        .rate_limit
        .and_then(|l| limit::check(i, &label, l, public, c));

    let upstream = raw
        .upstream
        .and_then(|u| check_upstream(i, &label, &u, known.upstreams, c));
    let strip_prefix = raw
        .strip_prefix
        .and_then(|s| check_strip(i, &label, s, pattern.as_ref(), c));

    if c.errors.len() > errors_before {
        return None;
    }
    Some(Route {
        upstream: upstream.unwrap_or(0),
        strip_prefix,
        name: RouteName::new(&name?),
        pattern: pattern?,
        methods,
        public,
        scopes,
        roles,
        location,
        rate_limit,
    })
}

/// `upstream: NAME`: `default`, or one of the config's named upstreams (its index + 1).
fn check_upstream(
    i: usize,
    label: &str,
    name: &str,
    upstreams: &[&str],
    c: &mut Check<'_>,
) -> Option<u16> {
    if name == crate::config::DEFAULT_UPSTREAM {
        return Some(0);
    }
    if let Some(at) = upstreams.iter().position(|u| *u == name) {
        return u16::try_from(at + 1).ok();
    }
    let known = if upstreams.is_empty() {
        " (the config declares no `upstreams:`)".to_owned()
    } else {
        let hint = suggest(name, upstreams.iter().copied());
        if hint.is_empty() {
            format!(" (declared: {})", upstreams.join(", "))
        } else {
            hint
        }
    };
    c.at(
        &route_field(i, "upstream"),
        format!("{label}: upstream `{name}` is not declared in the config's `upstreams:`{known}"),
    );
    None
}

/// `strip_prefix`: whole literal segments the route's pattern begins with, so every path
/// the route matches begins with it, byte for byte.
fn check_strip(
    i: usize,
    label: &str,
    prefix: String,
    pattern: Option<&Pattern>,
    c: &mut Check<'_>,
) -> Option<String> {
    let pattern = pattern?;
    if pattern.starts_with_literals(&prefix) {
        Some(prefix)
    } else {
        c.at(
            &route_field(i, "strip_prefix"),
            format!(
                "{label}: strip_prefix `{prefix}` is not a prefix of the route's path `{}`: write the path's leading literal segments, like `/billing`",
                pattern.as_str()
            ),
        );
        None
    }
}

fn check_route_name(
    i: usize,
    name: Option<String>,
    seen_names: &mut Vec<String>,
    c: &mut Check<'_>,
) -> Option<String> {
    let Some(name) = name else {
        c.at(
            &[Seg::Key("routes"), Seg::Index(i)],
            format!("route {} has no `name`", i + 1),
        );
        return None;
    };
    let at = route_field(i, "name");
    if name.is_empty()
        || name.trim() != name
        || !name.chars().all(|ch| ch == ' ' || ch.is_ascii_graphic())
    {
        c.at(
            &at,
            format!(
                "route name `{}` must be printable ASCII without leading or trailing spaces",
                name.escape_debug()
            ),
        );
    } else if name == DEFAULT_ROUTE {
        c.at(
            &at,
            format!("route name `{DEFAULT_ROUTE}` is reserved for the policy's `default`"),
        );
    } else if seen_names.contains(&name) {
        c.at(&at, format!("route name `{name}` is used twice"));
    } else {
        seen_names.push(name.clone());
    }
    Some(name)
}

fn check_methods(i: usize, label: &str, ms: &[String], c: &mut Check<'_>) -> Vec<Method> {
    if ms.is_empty() {
        c.at(
            &route_field(i, "methods"),
            format!(
                "{label}: `methods` is empty, so nothing could match; leave it out to allow every method"
            ),
        );
    }
    let mut out = Vec::with_capacity(ms.len());
    for (j, m) in ms.iter().enumerate() {
        if METHODS.contains(&m.as_str()) {
            if let Ok(method) = Method::from_bytes(m.as_bytes()) {
                out.push(method);
            }
        } else {
            let upper = m.to_ascii_uppercase();
            let hint = if METHODS.contains(&upper.as_str()) {
                format!(" (did you mean `{upper}`?)")
            } else {
                suggest(m, METHODS)
            };
            c.at(
                &route_item(i, "methods", j),
                format!(
                    "{label}: method `{m}` is not one of {}{hint}",
                    METHODS.join(", ")
                ),
            );
        }
    }
    out
}

/// Every scope the route requires: its `scopes`, then those of its `roles`, no repeats.
fn check_required(
    i: usize,
    label: &str,
    direct: Vec<String>,
    roles: &[String],
    known: &Known<'_>,
    c: &mut Check<'_>,
) -> Vec<String> {
    let mut scopes: Vec<String> = Vec::with_capacity(direct.len());
    for (j, s) in direct.into_iter().enumerate() {
        if let Some(problem) = scope_problem(&s, known.scopes) {
            c.at(&route_item(i, "scopes", j), format!("{label}: {problem}"));
        } else if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    for (j, name) in roles.iter().enumerate() {
        if let Some(role) = known.roles.iter().find(|role| role.name == *name) {
            // A role's undeclared scopes are reported under `roles`.
            for s in &role.scopes {
                if known.scopes.contains(&s.as_str()) && !scopes.contains(s) {
                    scopes.push(s.clone());
                }
            }
        } else {
            c.at(
                &route_item(i, "roles", j),
                format!(
                    "{label}: role `{name}` is not declared in `roles`{}",
                    suggest(name, known.role_names.iter().copied())
                ),
            );
        }
    }
    scopes
}

#[cfg(test)]
mod tests;
