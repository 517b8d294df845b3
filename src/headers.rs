//! The one rule every "this header, once" reader shares: the key header, admin
//! credentials, forward-auth's original-request headers and header locations.
//!
//! Invariant: a header sent more than once is never resolved by picking one of the
//! values; it is [`Repeated`], and each caller refuses it with its own error.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header was sent more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeated;

/// The value of `name` if it was sent exactly once, `None` if not at all.
pub fn at_most_one<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h HeaderValue>, Repeated> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        Err(Repeated)
    } else {
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn none_one_or_repeated() {
        let name = HeaderName::from_static("x-a");
        let mut h = HeaderMap::new();
        assert_eq!(at_most_one(&h, &name), Ok(None));
        h.append(&name, HeaderValue::from_static("1"));
        assert_eq!(at_most_one(&h, &name).unwrap().unwrap(), "1");
        h.append(&name, HeaderValue::from_static("1"));
        assert_eq!(at_most_one(&h, &name), Err(Repeated));
    }
}
