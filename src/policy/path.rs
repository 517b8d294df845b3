//! Request-path normalisation and route-pattern matching.
//!
//! Job: turn the raw path of a request into the one canonical [`NormalPath`] that is both
//! matched against the policy and forwarded upstream, refusing every path whose meaning an
//! upstream could read differently (encoded slashes, backslashes, control bytes, bad escapes,
//! `..;x` tricks, climbing above the root).
//!
//! Invariants:
//! - A [`NormalPath`] exists only as the output of [`normalise`]: it starts with `/`, holds
//!   only ASCII, no empty segment except a trailing one, no `.`/`..` segment (with or without
//!   `;parameters`), no escape of an unreserved character, every other escape upper-case, no
//!   `%2F`, `\`, `%5C` or control byte. Normalising it again gives it back unchanged.
//! - [`normalise`] allocates once (the output, sized to the input, never longer);
//!   [`Pattern::matches`] does not allocate.
//!
//! Why not `matchit`: the policy needs first match in file order with fall-through to later
//! routes when the method differs, and a catch-all `{*rest}` that also matches zero segments
//! (`/v1/items` for `/v1/items/{*rest}`); a radix router answers "the best route" instead and
//! has no empty catch-all. Policies hold tens of routes, so a compiled segment list scanned in
//! order is simple, predictable and fast enough.

use std::fmt;
use std::ops::Range;

/// A path that passed [`normalise`]. The only kind of path that is matched or forwarded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NormalPath(String);

impl NormalPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for NormalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for NormalPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Why a path cannot be normalised safely (the proxy answers 400 `bad_path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    #[error("the path does not start with `/`")]
    NotAbsolute,
    #[error("the path contains an encoded slash (%2F)")]
    EncodedSlash,
    #[error("the path contains a backslash, raw or encoded")]
    Backslash,
    #[error("the path contains a control character, raw or encoded")]
    ControlByte,
    #[error("the path contains an invalid percent escape")]
    InvalidEscape,
    #[error("percent-encoded bytes in the path are not valid UTF-8")]
    InvalidUtf8,
    #[error("the path contains raw non-ASCII characters")]
    NonAscii,
    #[error("a path segment is `.` or `..` followed by `;parameters`")]
    DotSegmentWithParameters,
    #[error("the path's `..` segments climb above the root")]
    EscapesRoot,
}

/// Normalises a request's path component (without the query).
///
/// Percent-decodes unreserved characters only (`A-Z a-z 0-9 - . _ ~`), upper-cases the hex
/// of every other escape, removes `.` segments, resolves `..`, collapses repeated `/`, keeps
/// a trailing `/` and `;parameters` on ordinary segments; refuses what [`BadPath`] lists.
pub fn normalise(raw: &str) -> Result<NormalPath, BadPath> {
    let rest = raw.strip_prefix('/').ok_or(BadPath::NotAbsolute)?;
    // Never longer than the input: decoding, collapsing and dot removal only shrink it.
    let mut out = String::with_capacity(raw.len());
    let mut segments = segments(rest).peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if seg.is_empty() {
            if last {
                out.push('/');
            }
            continue;
        }
        let start = out.len();
        out.push('/');
        decode_segment(seg, &mut out)?;
        let decoded = out.get(start + 1..).unwrap_or("");
        if !decoded.starts_with('.') {
            continue; // the usual segment: no dot segment, whatever its parameters
        }
        let (core, params) = match decoded.split_once(';') {
            Some((core, _)) => (core, true),
            None => (decoded, false),
        };
        let dots = match core {
            "." => 1,
            ".." => 2,
            _ => continue,
        };
        if params {
            return Err(BadPath::DotSegmentWithParameters);
        }
        out.truncate(start);
        if dots == 2 {
            // Drop the previous segment; there must be one.
            let prev = out.rfind('/').ok_or(BadPath::EscapesRoot)?;
            out.truncate(prev);
        }
        if last {
            out.push('/');
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(NormalPath(out))
}

/// The `/`-separated segments of `s`. A per-character test: segments are a few bytes
/// long, and for those `split('/')`'s `CharSearcher` (a `memchr` call per segment) costs
/// several times more.
#[allow(clippy::manual_pattern_char_comparison)] // the closure is the point: see above
pub(crate) fn segments(s: &str) -> std::str::Split<'_, impl Fn(char) -> bool> {
    s.split(|c: char| c == '/')
}

/// Appends one raw segment to `out`, decoded per the rules of [`normalise`].
fn decode_segment(seg: &str, out: &mut String) -> Result<(), BadPath> {
    let bytes = seg.as_bytes();
    let mut utf8 = Utf8Run::default();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let v = match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(&h), Some(&l)) => match (hex(h), hex(l)) {
                    (Some(h), Some(l)) => h << 4 | l,
                    _ => return Err(BadPath::InvalidEscape),
                },
                _ => return Err(BadPath::InvalidEscape),
            };
            i += 3;
            match v {
                b'/' => return Err(BadPath::EncodedSlash),
                b'\\' => return Err(BadPath::Backslash),
                _ if is_control(v) => return Err(BadPath::ControlByte),
                _ => {}
            }
            utf8.feed(v)?;
            if is_unreserved(v) {
                out.push(char::from(v));
            } else {
                out.push('%');
                out.push(hex_digit(v >> 4));
                out.push(hex_digit(v & 0xF));
            }
        } else {
            utf8.end()?;
            match b {
                b'\\' => return Err(BadPath::Backslash),
                _ if is_control(b) => return Err(BadPath::ControlByte),
                _ if !b.is_ascii() => return Err(BadPath::NonAscii),
                _ => out.push(char::from(b)),
            }
            i += 1;
        }
    }
    utf8.end()
}

/// The upper-case hex digit of a nibble.
fn hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16).map_or('0', |c| c.to_ascii_uppercase())
}

/// The value of one hex digit (either case), or `None`. Shared with the query-location
/// decoder in `policy`.
pub(super) fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7F
}

/// RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`): the ones normalisation decodes,
/// and the only ones `policy::load` allows in declared locations and query-parameter names.
pub(super) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Validates a run of percent-decoded bytes as UTF-8, byte by byte (RFC 3629 table 3-7:
/// no overlong forms, no surrogates, nothing above U+10FFFF).
#[derive(Default)]
struct Utf8Run {
    /// Continuation bytes still expected.
    need: u8,
    /// The allowed range of the next continuation byte.
    lo: u8,
    hi: u8,
}

impl Utf8Run {
    fn feed(&mut self, b: u8) -> Result<(), BadPath> {
        if self.need > 0 {
            if !(self.lo..=self.hi).contains(&b) {
                return Err(BadPath::InvalidUtf8);
            }
            self.need -= 1;
            (self.lo, self.hi) = (0x80, 0xBF);
            return Ok(());
        }
        (self.need, self.lo, self.hi) = match b {
            0x00..=0x7F => return Ok(()),
            0xC2..=0xDF | 0xE1..=0xEC | 0xEE..=0xEF | 0xF1..=0xF3 => {
                let need = match b {
                    0xC2..=0xDF => 1,
                    0xF1..=0xF3 => 3,
                    _ => 2,
                };
                (need, 0x80, 0xBF)
            }
            0xE0 => (2, 0xA0, 0xBF),
            0xED => (2, 0x80, 0x9F),
            0xF0 => (3, 0x90, 0xBF),
            0xF4 => (3, 0x80, 0x8F),
            _ => return Err(BadPath::InvalidUtf8),
        };
        Ok(())
    }

    /// The run of escapes ended: no character may be left half-written.
    fn end(&mut self) -> Result<(), BadPath> {
        if self.need == 0 {
            Ok(())
        } else {
            Err(BadPath::InvalidUtf8)
        }
    }
}

/// Why a route's `path` is not a valid pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("the path must start with `/`")]
    NotAbsolute,
    #[error("segment `{0}` has a `{{` without its `}}`")]
    Unclosed(String),
    #[error("segment `{0}` has a `}}` without its `{{`")]
    Unopened(String),
    #[error("`{{}}` names no parameter")]
    EmptyParam,
    #[error("parameter `{0}` must be a whole segment, like `/{{{0}}}/`")]
    NotWholeSegment(String),
    #[error("parameter name `{0}` may use only letters, digits and `_`")]
    BadParamName(String),
    #[error("parameter `{0}` appears twice")]
    DuplicateParam(String),
    #[error("`{{*{0}}}` must be the last segment")]
    CatchAllNotLast(String),
    #[error("the path has an empty segment (`//`), so no request could match it")]
    EmptySegment,
    #[error("segment `{seg}` is not in normal form, so no request could match it{hint}", seg = .0, hint = hint(.1.as_deref()))]
    NotNormal(String, Option<String>),
}

fn hint(normal: Option<&str>) -> String {
    normal
        .map(|n| format!(" (write `{n}`)"))
        .unwrap_or_default()
}

/// A route path compiled once at load: `/literal`, `{name}` (one non-empty segment),
/// `{*name}` (zero or more trailing segments, last only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    segments: Vec<PatSeg>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatSeg {
    /// Compared exactly; `""` is the root or a trailing `/`.
    Literal(String),
    Param(String),
    CatchAll(String),
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let rest = text.strip_prefix('/').ok_or(PatternError::NotAbsolute)?;
        let raw: Vec<&str> = rest.split('/').collect();
        let mut segments: Vec<PatSeg> = Vec::with_capacity(raw.len());
        for (i, seg) in raw.iter().enumerate() {
            let last = i + 1 == raw.len();
            if let Some(PatSeg::CatchAll(name)) = segments.last() {
                return Err(PatternError::CatchAllNotLast(name.clone()));
            }
            let compiled = parse_segment(seg, last)?;
            if let PatSeg::Param(name) | PatSeg::CatchAll(name) = &compiled
                && segments
                    .iter()
                    .any(|s| matches!(s, PatSeg::Param(n) | PatSeg::CatchAll(n) if n == name))
            {
                return Err(PatternError::DuplicateParam(name.clone()));
            }
            segments.push(compiled);
        }
        Ok(Pattern {
            text: text.to_owned(),
            segments,
        })
    }

    /// The pattern as written in the policy.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `name` is a `{name}` (single-segment) parameter of this pattern.
    pub fn has_param(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, PatSeg::Param(n) if n == name))
    }

    /// Whether `name` is the `{*name}` catch-all of this pattern.
    pub fn has_catch_all(&self, name: &str) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, PatSeg::CatchAll(n) if n == name))
    }

    /// Whether `prefix` (`/a/b`, no trailing `/`) is whole literal segments this pattern
    /// begins with, so that every path it matches begins with `prefix`, followed by `/` or
    /// nothing (a route's `strip_prefix`).
    pub fn starts_with_literals(&self, prefix: &str) -> bool {
        let Some(rest) = prefix.strip_prefix('/') else {
            return false;
        };
        if rest.is_empty() || rest.ends_with('/') {
            return false;
        }
        let wanted: Vec<&str> = rest.split('/').collect();
        wanted.len() <= self.segments.len()
            && wanted
                .iter()
                .zip(&self.segments)
                .all(|(w, s)| matches!(s, PatSeg::Literal(l) if l == w && !l.is_empty()))
    }

    /// The first segment when it is a literal (`""` for the root `/`); `None` when the
    /// pattern starts with a parameter or a catch-all. Used to index routes.
    pub fn first_literal(&self) -> Option<&str> {
        match self.segments.first()? {
            PatSeg::Literal(l) => Some(l),
            PatSeg::Param(_) | PatSeg::CatchAll(_) => None,
        }
    }

    /// Whether `path` matches. Allocation-free.
    pub fn matches(&self, path: &NormalPath) -> bool {
        self.capture(path, None).is_some()
    }

    /// Matches `path`; on success returns the byte range of parameter `param` in the path
    /// (`Some(None)` when no parameter is asked for). Allocation-free.
    pub fn capture(&self, path: &NormalPath, param: Option<&str>) -> Option<Option<Range<usize>>> {
        let text = path.as_str();
        // Segments of the path with their byte offsets; "/" is one empty segment.
        let mut offset = 1;
        let mut parts = segments(text.get(1..)?).map(|s| {
            let start = offset;
            offset += s.len() + 1;
            (start, s)
        });
        let mut found = None;
        for seg in &self.segments {
            match seg {
                PatSeg::CatchAll(_) => return Some(found),
                PatSeg::Literal(l) => {
                    let (_, s) = parts.next()?;
                    if s != l {
                        return None;
                    }
                }
                PatSeg::Param(name) => {
                    let (start, s) = parts.next()?;
                    if s.is_empty() {
                        return None;
                    }
                    if param == Some(name.as_str()) {
                        found = Some(start..start + s.len());
                    }
                }
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some(found)
    }
}

fn parse_segment(seg: &str, last: bool) -> Result<PatSeg, PatternError> {
    let open = seg.find('{');
    let close = seg.find('}');
    match (open, close) {
        (None, None) => {
            check_literal(seg, last)?;
            Ok(PatSeg::Literal(seg.to_owned()))
        }
        (Some(_), None) => Err(PatternError::Unclosed(seg.to_owned())),
        (None, Some(_)) => Err(PatternError::Unopened(seg.to_owned())),
        (Some(o), Some(c)) => {
            let inner = seg.get(o + 1..c).unwrap_or("");
            if c < o {
                return Err(PatternError::Unopened(seg.to_owned()));
            }
            let (catch_all, name) = match inner.strip_prefix('*') {
                Some(name) => (true, name),
                None => (false, inner),
            };
            if name.is_empty() {
                return Err(PatternError::EmptyParam);
            }
            if o != 0 || c + 1 != seg.len() {
                return Err(PatternError::NotWholeSegment(name.to_owned()));
            }
            if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(PatternError::BadParamName(name.to_owned()));
            }
            Ok(if catch_all {
                PatSeg::CatchAll(name.to_owned())
            } else {
                PatSeg::Param(name.to_owned())
            })
        }
    }
}

/// A literal segment must be what normalisation would produce, or no request could match it.
fn check_literal(seg: &str, last: bool) -> Result<(), PatternError> {
    if seg.is_empty() {
        // The root `/` or a trailing `/`; an empty segment in the middle never matches.
        return if last {
            Ok(())
        } else {
            Err(PatternError::EmptySegment)
        };
    }
    let as_path = format!("/{seg}");
    match normalise(&as_path) {
        Ok(n) if n.as_str() == as_path => Ok(()),
        Ok(n) => Err(PatternError::NotNormal(
            seg.to_owned(),
            n.as_str().strip_prefix('/').map(str::to_owned),
        )),
        Err(_) => Err(PatternError::NotNormal(seg.to_owned(), None)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalisation_table() {
        let ok = [
            ("/", "/"),
            ("/a", "/a"),
            ("/a/", "/a/"),
            ("//a///b//", "/a/b/"),
            ("/a/./b", "/a/b"),
            ("/a/.", "/a/"),
            ("/a/b/..", "/a/"),
            ("/a/..", "/"),
            ("/a/../b", "/b"),
            ("/a/b/../../c/", "/c/"),
            ("/./a", "/a"),
            ("/.", "/"),
            ("/%2e/a", "/a"),
            ("/a/%2E%2e/b", "/b"),
            ("/a/.%2e", "/"),
            ("/%41%62%7e%2D%5f", "/Ab~-_"),
            ("/%3a%3B%c3%a9", "/%3A%3B%C3%A9"),
            ("/%252e", "/%252e"),
            ("/%252E%252e", "/%252E%252e"),
            ("/%25", "/%25"),
            ("/a;b=c/d", "/a;b=c/d"),
            ("/..a/a..", "/..a/a.."),
            ("/.../x", "/.../x"),
            ("/%2e%2e%2e", "/..."),
            ("/a/%3B..", "/a/%3B.."),
            ("/%e2%82%ac", "/%E2%82%AC"),
            ("/%F0%9F%98%80", "/%F0%9F%98%80"),
            ("/%41%C3%A9%42", "/A%C3%A9B"),
            ("/v1/items?x", "/v1/items?x"),
        ];
        for (raw, want) in ok {
            assert_eq!(normalise(raw).map(|n| n.0), Ok(want.to_owned()), "{raw}");
        }
        let bad = [
            ("", BadPath::NotAbsolute),
            ("a/b", BadPath::NotAbsolute),
            ("*", BadPath::NotAbsolute),
            ("/a%2Fb", BadPath::EncodedSlash),
            ("/a%2fb", BadPath::EncodedSlash),
            ("/a\\b", BadPath::Backslash),
            ("/a%5Cb", BadPath::Backslash),
            ("/a%5cb", BadPath::Backslash),
            ("/a\0b", BadPath::ControlByte),
            ("/a%00b", BadPath::ControlByte),
            ("/a%0a", BadPath::ControlByte),
            ("/a%1F", BadPath::ControlByte),
            ("/a%7f", BadPath::ControlByte),
            ("/a\tb", BadPath::ControlByte),
            ("/a\x7f", BadPath::ControlByte),
            ("/a%", BadPath::InvalidEscape),
            ("/a%4", BadPath::InvalidEscape),
            ("/a%G1", BadPath::InvalidEscape),
            ("/a%%41", BadPath::InvalidEscape),
            ("/%C0%AE", BadPath::InvalidUtf8),
            ("/%C0%AE%C0%AE/x", BadPath::InvalidUtf8),
            ("/%E0%80%AE", BadPath::InvalidUtf8),
            ("/%ED%A0%80", BadPath::InvalidUtf8),
            ("/%F4%90%80%80", BadPath::InvalidUtf8),
            ("/%FF", BadPath::InvalidUtf8),
            ("/%C3", BadPath::InvalidUtf8),
            ("/%C3x", BadPath::InvalidUtf8),
            ("/%C3/%A9", BadPath::InvalidUtf8),
            ("/%A9", BadPath::InvalidUtf8),
            ("/%C3%41", BadPath::InvalidUtf8),
            ("/caf\u{e9}", BadPath::NonAscii),
            ("/..;x", BadPath::DotSegmentWithParameters),
            ("/a/.;x/b", BadPath::DotSegmentWithParameters),
            ("/a/%2e%2e;x", BadPath::DotSegmentWithParameters),
            ("/a/..;", BadPath::DotSegmentWithParameters),
            ("/..", BadPath::EscapesRoot),
            ("/../x", BadPath::EscapesRoot),
            ("/a/../../x", BadPath::EscapesRoot),
            ("/%2e%2e/x", BadPath::EscapesRoot),
            ("//../x", BadPath::EscapesRoot),
        ];
        for (raw, want) in bad {
            assert_eq!(normalise(raw), Err(want), "{raw:?}");
        }
    }

    #[test]
    fn output_is_never_longer_than_input() {
        for raw in ["/a/.", "/.", "/a//", "/%41", "/a/b/../"] {
            let n = normalise(raw).unwrap();
            assert!(n.as_str().len() <= raw.len(), "{raw}");
        }
    }

    #[test]
    fn bad_path_messages_are_sentences() {
        assert_eq!(
            BadPath::EncodedSlash.to_string(),
            "the path contains an encoded slash (%2F)"
        );
    }

    fn p(s: &str) -> NormalPath {
        normalise(s).unwrap()
    }

    #[test]
    fn pattern_matching() {
        let items = Pattern::parse("/v1/items/{*rest}").unwrap();
        for yes in ["/v1/items", "/v1/items/", "/v1/items/a", "/v1/items/a/b/"] {
            assert!(items.matches(&p(yes)), "{yes}");
        }
        for no in ["/v1/item", "/v1/itemsx", "/v1", "/V1/items", "/"] {
            assert!(!items.matches(&p(no)), "{no}");
        }
        let one = Pattern::parse("/v1/locations/{loc}/items").unwrap();
        let path = p("/v1/locations/plant-1/items");
        let range = one.capture(&path, Some("loc")).unwrap().unwrap();
        assert_eq!(path.as_str().get(range), Some("plant-1"));
        assert!(!one.matches(&p("/v1/locations//items")));
        assert!(!one.matches(&p("/v1/locations/items")));
        assert!(!one.matches(&p("/v1/locations/a/b/items")));
        assert!(!one.matches(&p("/v1/locations/a/items/")));

        let root = Pattern::parse("/").unwrap();
        assert!(root.matches(&p("/")));
        assert!(!root.matches(&p("/a")));
        let all = Pattern::parse("/{*all}").unwrap();
        assert!(all.matches(&p("/")) && all.matches(&p("/a/b")));
        let slash = Pattern::parse("/health/").unwrap();
        assert!(slash.matches(&p("/health/")) && !slash.matches(&p("/health")));
        let exact = Pattern::parse("/health").unwrap();
        assert!(!exact.matches(&p("/health/")));
        let param = Pattern::parse("/{x}").unwrap();
        assert!(!param.matches(&p("/")) && param.matches(&p("/a")));
        let semi = Pattern::parse("/a/{x}").unwrap();
        let path = p("/a/b;c=d");
        let r = semi.capture(&path, Some("x")).unwrap().unwrap();
        assert_eq!(path.as_str().get(r), Some("b;c=d"));
    }

    #[test]
    fn pattern_errors() {
        let cases = [
            ("v1/x", PatternError::NotAbsolute),
            ("/v1/{x", PatternError::Unclosed("{x".into())),
            ("/v1/x}", PatternError::Unopened("x}".into())),
            ("/v1/}x{", PatternError::Unopened("}x{".into())),
            ("/v1/{}", PatternError::EmptyParam),
            ("/v1/{*}", PatternError::EmptyParam),
            ("/v1/a{x}", PatternError::NotWholeSegment("x".into())),
            ("/v1/{x}.json", PatternError::NotWholeSegment("x".into())),
            ("/v1/{x-y}", PatternError::BadParamName("x-y".into())),
            ("/{x}/{x}", PatternError::DuplicateParam("x".into())),
            ("/{x}/{*x}", PatternError::DuplicateParam("x".into())),
            ("/{*r}/x", PatternError::CatchAllNotLast("r".into())),
            ("/{*r}/", PatternError::CatchAllNotLast("r".into())),
            ("/a//b", PatternError::EmptySegment),
            ("/a/../b", PatternError::NotNormal("..".into(), None)),
            (
                "/%7euser",
                PatternError::NotNormal("%7euser".into(), Some("~user".into())),
            ),
            ("/a%2Fb", PatternError::NotNormal("a%2Fb".into(), None)),
        ];
        for (text, want) in cases {
            assert_eq!(Pattern::parse(text), Err(want), "{text}");
        }
        assert!(Pattern::parse("/v1/items/{*rest}").is_ok());
    }

    fn segment() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "a", "admin", "public", ".", "..", "%2e", "%2E%2e", "x;y", "..;z", "%2F", "%41", "",
            "%2e%2e", ".%2E", "b;",
        ])
    }

    proptest! {
        #[test]
        fn idempotent_on_any_input(raw in "/[ -~]{0,40}") {
            if let Ok(n) = normalise(&raw) {
                prop_assert_eq!(normalise(n.as_str()), Ok(n.clone()));
            }
        }

        #[test]
        fn never_panics_and_output_is_ascii(raw in any::<String>()) {
            if let Ok(n) = normalise(&raw) {
                prop_assert!(n.as_str().is_ascii());
                prop_assert!(n.as_str().len() <= raw.len());
            }
        }

        #[test]
        fn idempotent_on_escape_heavy_input(
            parts in prop::collection::vec(
                prop::sample::select(vec![
                    "/", "a", ".", "%2e", "%2E", "%25", "%41", "%c3%a9", "%3b", ";", "~", "%7E",
                ]),
                0..16,
            )
        ) {
            let raw = format!("/{}", parts.concat());
            if let Ok(n) = normalise(&raw) {
                prop_assert_eq!(normalise(n.as_str()), Ok(n.clone()));
            }
        }

        #[test]
        fn never_widens(parts in prop::collection::vec(segment(), 0..10), trailing in any::<bool>()) {
            let mut raw = format!("/{}", parts.join("/"));
            if trailing {
                raw.push('/');
            }
            let public = Pattern::parse("/public/{*rest}").unwrap();
            if let Ok(n) = normalise(&raw) {
                let s = n.as_str();
                prop_assert!(s.starts_with('/'));
                for seg in s.split('/') {
                    let core = seg.split(';').next().unwrap();
                    prop_assert!(core != "." && core != "..", "{} -> {}", raw, s);
                }
                prop_assert!(!s.to_ascii_uppercase().contains("%2F"));
                prop_assert!(!s.to_ascii_uppercase().contains("%2E"));
                prop_assert!(!s.contains('\\'));
                prop_assert!(!s.bytes().any(|b| b < 0x20 || b == 0x7f));
                prop_assert!(!s.contains("//"));
                if public.matches(&n) {
                    prop_assert!(s == "/public" || s.starts_with("/public/"), "{} -> {}", raw, s);
                }
            }
        }
    }
}
