//! A route's `rate_limit:` as written, and its checks: the short form `100/s`, or the
//! mapping `{rate: 100/s, per: key|user|business, scope: gateway|fleet}`.
//!
//! Invariants: every error is reported at the line of the field it is about, and names
//! the values that would be accepted.

use std::fmt;

use serde::de::{self, MapAccess, Visitor, value::MapAccessDeserializer};
use serde::{Deserialize, Deserializer};

use super::{Check, suggest};
use crate::policy::{Per, RateLimit, RouteLimit, Scope};
use crate::yaml::Seg;

/// `rate_limit:` as written.
pub(super) enum RawRateLimit {
    Short(String),
    Full(RawFull),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFull {
    rate: Option<String>,
    per: Option<String>,
    scope: Option<String>,
}

impl<'de> Deserialize<'de> for RawRateLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> Visitor<'de> for Either {
            type Value = RawRateLimit;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a rate such as `100/s`, or a mapping with `rate`, `per` and `scope`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawRateLimit, E> {
                Ok(RawRateLimit::Short(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawRateLimit, A::Error> {
                RawFull::deserialize(MapAccessDeserializer::new(map)).map(RawRateLimit::Full)
            }
        }
        d.deserialize_any(Either)
    }
}

/// Route `i`'s limit, or `None` with the errors recorded. `public`: the route needs no
/// key, so there is no user or business to count by.
pub(super) fn check(
    i: usize,
    label: &str,
    raw: RawRateLimit,
    public: bool,
    c: &mut Check<'_>,
) -> Option<RouteLimit> {
    let at = |field: &'static str| {
        let mut path = vec![Seg::Key("routes"), Seg::Index(i), Seg::Key("rate_limit")];
        if !field.is_empty() {
            path.push(Seg::Key(field));
        }
        path
    };
    let full = match raw {
        RawRateLimit::Short(text) => {
            return rate(&text, &at(""), label, c).map(RouteLimit::of);
        }
        RawRateLimit::Full(full) => full,
    };
    let errors_before = c.errors.len();
    let rate = if let Some(text) = &full.rate {
        rate(text, &at("rate"), label, c)
    } else {
        c.at_key(
            &at(""),
            format!("{label}: `rate_limit` needs a `rate`, such as `rate: 100/s`"),
        );
        None
    };
    let per = full.per.as_deref().map_or(Some(Per::Key), |text| {
        one_of(text, "per", &Per::NAMES, Per::parse, &at("per"), label, c)
    });
    if public && per.is_some_and(|p| p != Per::Key) {
        c.at(
            &at("per"),
            format!(
                "{label} is public: it has no key, so no user or business to count by; \
                 drop `per` (a public route is limited per client address)"
            ),
        );
    }
    let scope = full.scope.as_deref().and_then(|text| {
        one_of(
            text,
            "scope",
            &Scope::NAMES,
            Scope::parse,
            &at("scope"),
            label,
            c,
        )
    });
    if c.errors.len() > errors_before {
        return None;
    }
    Some(RouteLimit {
        rate: rate?,
        per: per?,
        scope,
    })
}

/// `text` as one of `names` (`parse` reads it), or an error naming them.
fn one_of<T>(
    text: &str,
    field: &str,
    names: &[&'static str],
    parse: impl Fn(&str) -> Option<T>,
    at: &[Seg<'_>],
    label: &str,
    c: &mut Check<'_>,
) -> Option<T> {
    let value = parse(text);
    if value.is_none() {
        c.at(
            at,
            format!(
                "{label}: unknown `{field}: {text}`: one of {}{}",
                names.join(", "),
                suggest(text, names.iter().copied())
            ),
        );
    }
    value
}

fn rate(text: &str, at: &[Seg<'_>], label: &str, c: &mut Check<'_>) -> Option<RateLimit> {
    RateLimit::parse(text)
        .map_err(|e| c.at(at, format!("{label}: {e}")))
        .ok()
}
