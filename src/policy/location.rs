//! Where a request's location comes from: a path parameter, a header or a query
//! parameter, as the route says; and the one value it must have.
//!
//! Invariants: exactly one value, compared exact-case after percent-decoding (a query
//! name or value), declared in the policy; anything else is a `location_forbidden`
//! denial, never a guess.

use std::ops::Range;

use super::path::{NormalPath, hex};
use super::{Denial, Facts, LocationSource, Policy};

impl Policy {
    /// The request's location, read from where the route says, and declared in the policy.
    pub(super) fn resolve_location(
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
                "`{}` is not a location of the policy{}",
                value.escape_debug(),
                crate::yaml::suggestion(&value, self.locations.iter().map(String::as_str))
            )))
        }
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
