//! Strict YAML loading with source positions, shared by the config and the policy loaders.
//!
//! Job: turn a file's text into a typed value *and* a [`Positions`] table that says where
//! every mapping key and every value was written, so that semantic checks made after
//! deserialisation ("scope `x` is not declared") can still point at `FILE:LINE:COL`.
//!
//! Why two parsers: `serde_yaml` gives typed values and positions for its own errors only;
//! `yaml-rust2`'s event parser gives a marker for every node. We run the event parser first
//! (syntax errors, and duplicate keys anywhere, including inside maps that `serde_yaml` would
//! read into a type that keeps the last value), then `serde_yaml` for the types.
//!
//! Invariants: every line and column handed out is 1-based; a duplicate mapping key anywhere
//! in the document is an error, never a silent override; nothing here panics on input.

mod indent;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// One problem in a file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// Every problem found in a file; displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Lines(.0))]
pub struct Diagnostics(pub Vec<Diagnostic>);

/// Displays diagnostics one per line without building an intermediate string.
struct Lines<'a>(&'a [Diagnostic]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// One step of a path into a document: a mapping key or a sequence index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// A (line, col) pair, both 1-based.
type Pos = (usize, usize);

/// Where every mapping key and every value of a document was written.
#[derive(Debug, Clone, Default)]
pub struct Positions {
    root: Option<Node>,
}

#[derive(Debug, Clone)]
struct Node {
    at: Pos,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Leaf,
    Map(Vec<Entry>),
    Seq(Vec<Node>),
}

#[derive(Debug, Clone)]
struct Entry {
    /// `None` for a complex (non-scalar) key, which no path can name.
    key: Option<String>,
    key_at: Pos,
    value: Node,
}

impl Positions {
    /// Where the mapping key at this path is written (`None` for the root, sequence items
    /// and unknown paths).
    pub fn key(&self, path: &[Seg]) -> Option<(usize, usize)> {
        let (last, parent) = path.split_last()?;
        let Seg::Key(name) = last else { return None };
        match &self.node(parent)?.kind {
            Kind::Map(entries) => entries
                .iter()
                .find(|e| e.key.as_deref() == Some(*name))
                .map(|e| e.key_at),
            Kind::Leaf | Kind::Seq(_) => None,
        }
    }

    /// Where the value at this path starts.
    pub fn value(&self, path: &[Seg]) -> Option<(usize, usize)> {
        self.node(path).map(|n| n.at)
    }

    /// The best position for an error about the item at `path`: its value, else its key,
    /// else the nearest ancestor that exists, else 1:1.
    pub fn diag(&self, file: &Path, path: &[Seg], message: impl Into<String>) -> Diagnostic {
        let mut prefix = path;
        let (line, col) = loop {
            if let Some(at) = self.value(prefix).or_else(|| self.key(prefix)) {
                break at;
            }
            match prefix.split_last() {
                Some((_, parent)) => prefix = parent,
                None => break (1, 1),
            }
        };
        Diagnostic {
            file: file.to_path_buf(),
            line,
            col,
            message: message.into(),
        }
    }

    fn node(&self, path: &[Seg]) -> Option<&Node> {
        let mut node = self.root.as_ref()?;
        for seg in path {
            node = match (seg, &node.kind) {
                (Seg::Key(name), Kind::Map(entries)) => {
                    &entries
                        .iter()
                        .find(|e| e.key.as_deref() == Some(*name))?
                        .value
                }
                (Seg::Index(i), Kind::Seq(items)) => items.get(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }
}

/// A mapping kept in file order (duplicates were already refused by `yaml::parse`).
pub struct Ordered<V>(pub Vec<(String, V)>);

impl<'de, V: serde::Deserialize<'de>> serde::Deserialize<'de> for Ordered<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        use serde::de::Visitor;
        impl<'de, V: serde::Deserialize<'de>> Visitor<'de> for Visit<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// Strictly parses `text`: a YAML syntax error or any duplicate mapping key is an error (at
/// its position; every duplicate is reported), then `serde_yaml` deserialises into `T` (whose
/// types should use `#[serde(deny_unknown_fields)]`); its error is reported at its location.
///
/// An empty document reads as an empty mapping, so a `T` whose fields all have defaults
/// loads from an empty file; otherwise the error says the file is empty.
pub fn parse<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
) -> Result<(T, Positions), Diagnostics> {
    let diag = |line: usize, col: usize, message: String| Diagnostic {
        file: file.to_path_buf(),
        line,
        col,
        message,
    };

    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, false) {
        let m = e.marker();
        let (line, col) = (m.line().max(1), m.col() + 1);
        let d = match indent::explain(text, line, e.info()) {
            Some((line, col, hint)) => diag(
                line,
                col,
                format!("YAML syntax error: {} ({hint})", e.info()),
            ),
            None => diag(line, col, format!("YAML syntax error: {}", e.info())),
        };
        return Err(Diagnostics(vec![d]));
    }
    if !builder.duplicates.is_empty() {
        let all = builder
            .duplicates
            .into_iter()
            .map(|(name, (line, col))| diag(line, col, format!("duplicate key `{name}`")))
            .collect();
        return Err(Diagnostics(all));
    }
    let positions = Positions { root: builder.root };

    let empty = positions.root.is_none()
        || matches!(
            positions.root,
            Some(Node { kind: Kind::Leaf, .. }) if is_null_document(text)
        );
    let result = if empty {
        serde_yaml::from_str::<T>("{}")
            .map_err(|e| diag(1, 1, format!("the file is empty ({})", serde_message(&e))))
    } else {
        serde_path_to_error::deserialize::<_, T>(serde_yaml::Deserializer::from_str(text)).map_err(
            |e| {
                let path = e.path().to_string();
                let e = e.into_inner();
                let (line, col) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
                diag(line, col, with_full_path(&path, serde_message(&e)))
            },
        )
    };
    match result {
        Ok(value) => Ok((value, positions)),
        Err(d) => Err(Diagnostics(vec![d])),
    }
}

/// `serde_yaml` names only part of the path of a value that failed to deserialise
/// (`cache: invalid duration`): name the whole of it (`cache.ttl: invalid duration`), as
/// `serde_path_to_error` tracked it. An unknown field's path ends with the field itself,
/// which the message names already: there the parent is enough.
fn with_full_path(path: &str, message: String) -> String {
    let path = if message.contains("unknown field `") {
        path.rsplit_once('.').map_or("", |(parent, _)| parent)
    } else {
        path
    };
    if path.is_empty() || path == "." {
        return message;
    }
    let rest = match message.split_once(": ") {
        Some((named, rest)) if path.starts_with(named) && !named.contains(' ') => rest,
        _ => &message,
    };
    format!("{path}: {rest}")
}

/// A document holding only comments, `~` or `null` is as good as empty.
fn is_null_document(text: &str) -> bool {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty() && *l != "---" && *l != "...")
        .all(|l| l == "~" || l == "null")
}

/// `serde_yaml`'s message without its trailing " at line L column C" (we print our own), with
/// a "did you mean" for an unknown field or variant close to an expected one.
fn serde_message(e: &serde_yaml::Error) -> String {
    let mut text = e.to_string();
    if let Some(loc) = e.location() {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(stripped) = text.strip_suffix(&suffix) {
            text = stripped.to_owned();
        }
    }
    if let Some(hint) = unknown_name_hint(&text) {
        text.push_str(&hint);
    }
    text
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown variant", or
/// "expected `a` or `b`"): " (did you mean `a`?)" when `x` is close to one of them.
pub fn unknown_name_hint(message: &str) -> Option<String> {
    let rest = message
        .split_once("unknown field `")
        .or_else(|| message.split_once("unknown variant `"))?
        .1;
    let (word, expected) = rest.split_once("`, expected ")?;
    let candidates = expected.split('`').skip(1).step_by(2);
    did_you_mean(word, candidates).map(|c| format!(" (did you mean `{c}`?)"))
}

/// What to tell someone who wrote `word` where one of `candidates` belongs:
/// " (did you mean `a`?)" when `word` is close to one, else " (expected one of `a`, `b`)"
/// (at most ten named, then "…"), or nothing when there are no candidates.
pub fn suggestion<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    const SHOWN: usize = 10;
    let all: Vec<&str> = candidates.into_iter().collect();
    if let Some(c) = did_you_mean(word, all.iter().copied()) {
        return format!(" (did you mean `{c}`?)");
    }
    if all.is_empty() {
        return String::new();
    }
    let mut named: Vec<String> = all.iter().take(SHOWN).map(|c| format!("`{c}`")).collect();
    if all.len() > SHOWN {
        named.push("…".to_owned());
    }
    format!(" (expected one of {})", named.join(", "))
}

/// The closest of `candidates` to `word`, if any is close enough to be a likely typo.
///
/// Jaro-Winkler similarity (it favours a shared beginning, which suits names like
/// `items:read`), accepted at 0.8 and above.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    const THRESHOLD: f64 = 0.8;
    let mut best: Option<(f64, &'a str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(word, c);
        if score >= THRESHOLD && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

/// Builds the position tree from parser events and records duplicate keys.
#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    /// (key text, position of the duplicate).
    duplicates: Vec<(String, Pos)>,
}

enum Frame {
    Map {
        at: Pos,
        entries: Vec<Entry>,
        seen: HashSet<String>,
        /// A key read, waiting for its value.
        pending: Option<(Option<String>, Pos)>,
    },
    Seq {
        at: Pos,
        items: Vec<Node>,
    },
}

fn pos(mark: Marker) -> Pos {
    // yaml-rust2 markers: line is 1-based, col is 0-based (checked by a test below).
    (mark.line().max(1), mark.col() + 1)
}

impl Builder {
    /// A node is complete: it is a key, a value or an item of the innermost collection.
    fn finish(&mut self, node: Node, scalar: Option<String>) {
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq { at, items }) => {
                // A block sequence's start event is marked at its first item's content.
                if items.is_empty() {
                    *at = (*at).min(node.at);
                }
                items.push(node);
            }
            Some(Frame::Map {
                at,
                entries,
                seen,
                pending,
            }) => match pending.take() {
                None => {
                    // A block mapping's start event is marked after its first key: a mapping
                    // starts where its first key is written.
                    if entries.is_empty() {
                        *at = (*at).min(node.at);
                    }
                    *pending = Some((scalar, node.at));
                }
                Some((key, key_at)) => {
                    if let Some(k) = &key
                        && !seen.insert(k.clone())
                    {
                        self.duplicates.push((k.clone(), key_at));
                    }
                    entries.push(Entry {
                        key,
                        key_at,
                        value: node,
                    });
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let at = pos(mark);
        match ev {
            Event::Scalar(text, ..) => self.finish(
                Node {
                    at,
                    kind: Kind::Leaf,
                },
                Some(text),
            ),
            Event::Alias(_) => self.finish(
                Node {
                    at,
                    kind: Kind::Leaf,
                },
                None,
            ),
            Event::MappingStart(..) => self.stack.push(Frame::Map {
                at,
                entries: Vec::new(),
                seen: HashSet::new(),
                pending: None,
            }),
            Event::SequenceStart(..) => self.stack.push(Frame::Seq {
                at,
                items: Vec::new(),
            }),
            Event::MappingEnd | Event::SequenceEnd => {
                let node = match self.stack.pop() {
                    Some(Frame::Map { at, entries, .. }) => Node {
                        at,
                        kind: Kind::Map(entries),
                    },
                    Some(Frame::Seq { at, items }) => Node {
                        at,
                        kind: Kind::Seq(items),
                    },
                    None => return,
                };
                self.finish(node, None);
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        name: String,
        #[serde(default)]
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Item {
        id: u32,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(deny_unknown_fields)]
    struct AllOptional {
        #[serde(default)]
        name: Option<String>,
    }

    fn file() -> &'static Path {
        Path::new("t.yaml")
    }

    #[test]
    fn positions_are_one_based_for_keys_and_values() {
        let text = "name: x\nitems:\n  - id: 1\n    tags: [a, b]\n  - id: 2\n";
        let (doc, pos): (Doc, _) = parse(file(), text).unwrap();
        assert_eq!(doc.items.len(), 2);
        assert_eq!(pos.key(&[Seg::Key("name")]), Some((1, 1)));
        assert_eq!(pos.value(&[Seg::Key("name")]), Some((1, 7)));
        assert_eq!(pos.key(&[Seg::Key("items")]), Some((2, 1)));
        let id2 = [Seg::Key("items"), Seg::Index(1), Seg::Key("id")];
        assert_eq!(pos.key(&id2), Some((5, 5)));
        assert_eq!(pos.value(&id2), Some((5, 9)));
        let tag_b = [
            Seg::Key("items"),
            Seg::Index(0),
            Seg::Key("tags"),
            Seg::Index(1),
        ];
        assert_eq!(pos.value(&tag_b), Some((4, 15)));
        assert_eq!(pos.value(&[Seg::Key("nope")]), None);
        assert_eq!(pos.key(&[]), None);
    }

    #[test]
    fn diag_falls_back_to_the_nearest_ancestor_then_one_one() {
        let text = "name: x\nitems:\n  - id: 1\n";
        let (_, pos): (Doc, _) = parse(file(), text).unwrap();
        let d = pos.diag(
            file(),
            &[Seg::Key("items"), Seg::Index(0), Seg::Key("tags")],
            "m",
        );
        assert_eq!((d.line, d.col), (3, 5));
        let d = pos.diag(file(), &[Seg::Key("other"), Seg::Index(3)], "m");
        assert_eq!((d.line, d.col), (1, 1));
        assert_eq!(d.to_string(), "t.yaml:1:1: m");
    }

    #[test]
    fn every_duplicate_key_is_reported_at_its_line() {
        let text = "name: x\nitems:\n  - id: 1\n    id: 2\nname: y\n";
        let err = parse::<Doc>(file(), text).unwrap_err();
        let lines: Vec<_> = err.0.iter().map(|d| (d.line, d.col)).collect();
        assert_eq!(lines, vec![(4, 5), (5, 1)]);
        assert!(err.0[0].message.contains("duplicate key `id`"));
        assert_eq!(err.to_string().lines().count(), 2);
    }

    #[test]
    fn duplicate_keys_in_flow_mappings_are_reported() {
        let text = "name: x\nitems: [{id: 1, id: 2}]\n";
        let err = parse::<Doc>(file(), text).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].line, 2);
    }

    #[test]
    fn serde_errors_carry_their_location_once() {
        let text = "name: x\nitems:\n  - id: 1\n    tagz: []\n";
        let err = parse::<Doc>(file(), text).unwrap_err();
        assert_eq!(err.0.len(), 1);
        let d = &err.0[0];
        assert_eq!(d.line, 4, "{d}");
        assert!(d.message.contains("unknown field `tagz`"), "{d}");
        assert!(!d.message.contains("at line"), "{d}");
        assert!(d.message.ends_with("(did you mean `tags`?)"), "{d}");

        let text = "name: x\nitems:\n  - id: one\n";
        let d = &parse::<Doc>(file(), text).unwrap_err().0[0];
        assert_eq!(d.line, 3, "{d}");
        assert!(d.message.contains("invalid type"), "{d}");
    }

    #[test]
    fn syntax_errors_are_reported_with_their_position() {
        let text = "name: x\nitems: [1, 2\nother: 3\n";
        let err = parse::<Doc>(file(), text).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert!(err.0[0].message.starts_with("YAML syntax error"), "{err}");
        assert!(err.0[0].line >= 2, "{err}");
    }

    #[test]
    fn an_empty_file_is_an_empty_mapping() {
        for text in ["", "\n", "# only a comment\n", "---\n", "~\n"] {
            let err = parse::<Doc>(file(), text).unwrap_err();
            assert_eq!((err.0[0].line, err.0[0].col), (1, 1));
            assert!(err.0[0].message.contains("the file is empty"), "{err}");
            assert!(err.0[0].message.contains("name"), "{err}");
            let (v, _): (AllOptional, _) = parse(file(), text).unwrap();
            assert_eq!(v, AllOptional::default());
        }
    }

    #[test]
    fn suggestion_is_a_did_you_mean_or_the_list() {
        let names = ["hq", "plant-1", "plant-2"];
        assert_eq!(suggestion("plant1", names), " (did you mean `plant-1`?)");
        assert_eq!(
            suggestion("mars", names),
            " (expected one of `hq`, `plant-1`, `plant-2`)"
        );
        assert_eq!(suggestion("mars", []), "");
        let many: Vec<String> = (0..12).map(|i| format!("loc{i:02}x")).collect();
        let listed = suggestion("zzzzzzzz", many.iter().map(String::as_str));
        assert!(listed.ends_with("`loc09x`, …)"), "{listed}");
    }

    #[test]
    fn did_you_mean_finds_close_names_only() {
        let names = ["items:read", "items:write", "admin"];
        assert_eq!(did_you_mean("items:raed", names), Some("items:read"));
        assert_eq!(did_you_mean("item:write", names), Some("items:write"));
        assert_eq!(did_you_mean("billing", names), None);
        assert_eq!(did_you_mean("x", []), None);
    }
}
