//! A route's `location:` as written (`{from: path|header|query, name}`), and its checks.
//!
//! Invariants: a path location names one `{param}` segment of the route's own pattern
//! (not a catch-all); a header location is a valid header name; a query location's name
//! is unreserved characters only, so it is spelt one way however it is encoded.

use http::HeaderName;
use serde::Deserialize;

use super::{Check, suggest};
use crate::policy::LocationSource;
use crate::policy::path::{Pattern, is_unreserved};
use crate::yaml::Seg;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLocation {
    pub(super) from: String,
    pub(super) name: String,
}

pub(super) fn check(
    i: usize,
    label: &str,
    loc: RawLocation,
    pattern: Option<&Pattern>,
    c: &mut Check<'_>,
) -> Option<LocationSource> {
    let at = |f: &'static str| {
        [
            Seg::Key("routes"),
            Seg::Index(i),
            Seg::Key("location"),
            Seg::Key(f),
        ]
    };
    let name = loc.name;
    match loc.from.as_str() {
        "path" => {
            // Without a valid pattern (already reported) the name cannot be checked.
            if let Some(p) = pattern {
                if p.has_catch_all(&name) {
                    c.at(
                        &at("name"),
                        format!(
                            "{label}: location parameter `{name}` is a catch-all; a location must be one `{{{name}}}` segment"
                        ),
                    );
                    return None;
                }
                if !p.has_param(&name) {
                    c.at(
                        &at("name"),
                        format!(
                            "{label}: location parameter `{name}` is not in path `{}`",
                            p.as_str()
                        ),
                    );
                    return None;
                }
            }
            Some(LocationSource::Path(name))
        }
        "header" => {
            if let Ok(h) = HeaderName::from_bytes(name.as_bytes()) {
                Some(LocationSource::Header(h))
            } else {
                c.at(
                    &at("name"),
                    format!("{label}: `{name}` is not a valid header name"),
                );
                None
            }
        }
        "query" => {
            if name.is_empty() || !name.bytes().all(is_unreserved) {
                c.at(
                    &at("name"),
                    format!(
                        "{label}: query parameter name `{}` may use only letters, digits, `-`, `.`, `_` and `~`",
                        name.escape_debug()
                    ),
                );
                return None;
            }
            Some(LocationSource::Query(name))
        }
        other => {
            c.at(
                &at("from"),
                format!(
                    "{label}: unknown `location.from: {other}`: use `path`, `header` or `query`{}",
                    suggest(other, ["path", "header", "query"])
                ),
            );
            None
        }
    }
}
