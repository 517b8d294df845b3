//! Reading admin-API input: size-limited JSON bodies and query strings, into typed
//! values or a 400 naming the field.
//!
//! Invariants: a body is read up to [`MAX_BODY`] bytes and no further (413 past it);
//! JSON types use `deny_unknown_fields`, so a misspelt field is an error, never a silent
//! default; every message is `<field>: <why>`, where the field is the JSON path
//! (`grants[0].role`, read by [`crate::json::object`]) or the query parameter.

use std::collections::HashMap;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use super::error::AdminError;

/// The largest request body the admin API reads.
pub const MAX_BODY: usize = 64 * 1024;
/// `limit` when none is given.
pub const DEFAULT_LIMIT: usize = 50;
/// Larger `limit`s are taken as this.
pub const MAX_LIMIT: usize = 500;

/// The whole body, at most [`MAX_BODY`] bytes.
pub async fn body<B>(body: B) -> Result<Bytes, AdminError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(AdminError::PayloadTooLarge { limit: MAX_BODY })
        }
        Err(_) => Err(AdminError::invalid("body", "could not be read")),
    }
}

/// Parses a JSON object; an empty body is `{}` when `empty_ok`.
pub fn json<T: DeserializeOwned>(bytes: &[u8], empty_ok: bool) -> Result<T, AdminError> {
    let bytes: &[u8] = if empty_ok && bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    crate::json::object(bytes, "body").map_err(|(field, why)| AdminError::invalid(field, why))
}

/// Query parameters by name; only `allowed` names, each at most once. An empty value
/// counts as absent.
pub fn query(raw: Option<&str>, allowed: &[&str]) -> Result<HashMap<String, String>, AdminError> {
    let mut out = HashMap::new();
    for (name, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if name.is_empty() && value.is_empty() {
            continue;
        }
        if !allowed.contains(&name.as_ref()) {
            return Err(AdminError::invalid(
                name.into_owned(),
                format!("unknown query parameter (known: {})", allowed.join(", ")),
            ));
        }
        if out.contains_key(name.as_ref()) {
            return Err(AdminError::invalid(
                name.into_owned(),
                "given more than once",
            ));
        }
        if !value.is_empty() {
            out.insert(name.into_owned(), value.into_owned());
        }
    }
    Ok(out)
}

/// `limit`: a whole number ≥ 1, default [`DEFAULT_LIMIT`], clamped to [`MAX_LIMIT`].
pub fn limit(value: Option<&str>) -> Result<usize, AdminError> {
    let Some(text) = value else {
        return Ok(DEFAULT_LIMIT);
    };
    let text = text.strip_prefix('+').unwrap_or(text);
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AdminError::invalid(
            "limit",
            format!(
                "must be a whole number from 1 (larger than {MAX_LIMIT} is taken as {MAX_LIMIT})"
            ),
        ));
    }
    // All digits: a parse failure can only be an overflow, which is "larger".
    let n = text.parse::<u64>().map_or(MAX_LIMIT, |n| {
        usize::try_from(n).map_or(MAX_LIMIT, |n| n.min(MAX_LIMIT))
    });
    if n == 0 {
        return Err(AdminError::invalid("limit", "must be at least 1"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        name: Option<String>,
        grants: Option<Vec<crate::keys::Grant>>,
    }

    fn msg(body: &str) -> String {
        json::<T>(body.as_bytes(), false).unwrap_err().to_string()
    }

    #[test]
    fn json_errors_name_the_field() {
        assert_eq!(
            msg(r#"{"nam": "x"}"#),
            "nam: unknown field (did you mean `name`?)"
        );
        assert_eq!(
            msg(r#"{"zzz": "x"}"#),
            "zzz: unknown field; expected `name` or `grants`"
        );
        assert_eq!(
            msg(r#"{"grants": [{"role": "r", "locations": [], "x": 1}]}"#),
            "grants[0].x: unknown field; expected `role` or `locations`"
        );
        assert!(
            msg(r#"{"name": 1}"#).starts_with("name: invalid type: integer `1`"),
            "{}",
            msg(r#"{"name": 1}"#)
        );
        assert!(
            msg(r#"{"grants": [{"role": 2, "locations": []}]}"#).starts_with("grants[0].role: ")
        );
        assert!(msg("{").starts_with("body: "), "{}", msg("{"));
        assert_eq!(msg("[]"), "body: must be a JSON object");
        assert_eq!(msg("\"x\""), "body: must be a JSON object");
        assert_eq!(msg(""), "body: must be a JSON object");
        assert!(msg(r"{} x").starts_with("body: trailing"));
        assert!(json::<T>(b"", true).is_ok());
    }

    #[test]
    fn limits_default_clamp_and_refuse() {
        assert_eq!(limit(None).unwrap(), 50);
        assert_eq!(limit(Some("7")).unwrap(), 7);
        assert_eq!(limit(Some("501")).unwrap(), 500);
        assert_eq!(limit(Some("99999999999999999999999")).unwrap(), 500);
        assert!(limit(Some("0")).is_err());
        assert!(limit(Some("-1")).is_err());
        assert!(limit(Some("x")).is_err());
    }

    #[test]
    fn query_is_strict() {
        let q = query(Some("search=a+b%21&status="), &["search", "status"]).unwrap();
        assert_eq!(q.get("search").map(String::as_str), Some("a b!"));
        assert!(!q.contains_key("status"));
        assert!(query(Some("x=1"), &["search"]).is_err());
        assert!(query(Some("search=1&search=2"), &["search"]).is_err());
    }
}
