//! The one rule every "this header, once" reader shares: the key header, admin
//! credentials, forward-auth's original-request headers and header locations.
//!
//! Invariant: a header sent more than once is never resolved by picking one of the
//! values; it is [`Repeated`], and each caller refuses it with its own error.
//!
//! Also [`Memo`]: header values derived from a record once, kept with it.

use std::sync::OnceLock;

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

/// Header values built from a record the first time a request needs them, then kept with
/// the record (the cache's copy, behind an `Arc`), so each request clones a few shared
/// values instead of checking and copying the same strings again. What is not a valid
/// header value is `None` (it is left out, as it would be if built per request).
///
/// Not part of the data it is kept with: a clone starts empty, and two memos are always
/// equal. It must only be filled on a record that no longer changes.
#[derive(Default)]
pub struct Memo<const N: usize>(OnceLock<[Option<HeaderValue>; N]>);

impl<const N: usize> Memo<N> {
    /// The values of `texts`, built on the first call.
    pub fn get<'t>(&self, texts: impl FnOnce() -> [&'t str; N]) -> &[Option<HeaderValue>; N] {
        self.0
            .get_or_init(|| texts().map(|t| HeaderValue::from_str(t).ok()))
    }
}

impl<const N: usize> Clone for Memo<N> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<const N: usize> PartialEq for Memo<N> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<const N: usize> Eq for Memo<N> {}

impl<const N: usize> std::fmt::Debug for Memo<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Memo")
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

    #[test]
    fn a_memo_is_built_once_and_is_not_part_of_its_record() {
        let memo = Memo::<2>::default();
        let mut built = 0;
        let mut get = || {
            memo.get(|| {
                built += 1;
                ["a", "bad\nvalue"]
            })
            .clone()
        };
        let first = get();
        assert_eq!(first[0].as_ref().unwrap(), "a");
        assert!(first[1].is_none(), "an invalid value is left out");
        assert_eq!(get(), first);
        assert_eq!(built, 1);
        let copy = memo.clone();
        assert!(copy.0.get().is_none(), "a clone starts empty");
        assert_eq!(copy, memo);
    }
}
