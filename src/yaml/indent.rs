//! Indentation words for YAML syntax errors: where the misplaced line starts and how it is
//! misplaced ("indented more than line 4 ..."), or the tab that YAML forbids.
//!
//! Job: the YAML scanner reports where it gave up (often the `:` after a misplaced key, or
//! the column after a tab) with its own words ("mapping values are not allowed in this
//! context"). A person fixes indentation by looking at the start of the line and its
//! neighbours, so this module re-reads the text around the error and, when indentation is
//! the likely cause, moves the position to the offending character and adds a hint.
//!
//! Invariants: it only reads the text; it answers `None` (keep the scanner's words and
//! position) whenever the lines do not show an indentation mistake; it never panics on
//! input (no indexing past a line, columns are counted in characters).

/// A better place and a hint for a syntax error at `line` (1-based) whose scanner message
/// is `info`: `(line, col, hint)`, the hint starting with "indent with spaces".
pub(super) fn explain(text: &str, line: usize, info: &str) -> Option<(usize, usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    if let Some(found) = tab(&lines, line, info) {
        return Some(found);
    }
    let cur = *lines.get(line.checked_sub(1)?)?;
    if is_blank(cur) {
        return None;
    }
    let ci = indent(cur);
    let (p, prev) = previous(&lines, line)?;
    let pc = content_column(prev);
    let at = |hint: String| Some((line, ci + 1, hint));
    if ci > pc && !opens_block(prev) {
        return at(format!(
            "indent with spaces; this line is indented more than line {p} `{}` above \
             ({}, not {pc}): line it up with it, or end line {p} with `:` to nest under it",
            shown(prev),
            spaces(ci)
        ));
    }
    if ci < pc {
        // The nearest line above at this depth or shallower: its parent, or a sibling.
        let (k, outer) = lines
            .get(..p.saturating_sub(1))?
            .iter()
            .enumerate()
            .rev()
            .find(|(_, l)| !is_blank(l) && content_column(l) <= ci)
            .map(|(i, l)| (i + 1, *l))?;
        let oc = content_column(outer);
        if oc < ci {
            return at(format!(
                "indent with spaces; this line is indented less than line {p} `{}` above \
                 ({}, not {pc}) but more than line {k} `{}` ({}): line it up with one of them",
                shown(prev),
                spaces(ci),
                shown(outer),
                spaces(oc)
            ));
        }
    }
    None
}

/// A tab in the indentation of the error's line or of a line before it (YAML forbids
/// tabs there): the tab's own position.
fn tab(lines: &[&str], line: usize, info: &str) -> Option<(usize, usize, String)> {
    let leading_tab = |l: &str| {
        l.chars()
            .take_while(|c| c.is_whitespace())
            .position(|c| c == '\t')
    };
    // "found a tab" can be reported at the end of the line before the tab's.
    let last = if info.contains("tab") { line + 1 } else { line };
    let upto = lines.get(..last.min(lines.len()))?;
    let (i, col) = upto
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, l)| leading_tab(l).map(|c| (i, c)))?;
    // A tab far above an unrelated error is not its cause, unless the scanner says "tab".
    if i + 1 != line && !info.contains("tab") {
        return None;
    }
    Some((
        i + 1,
        col + 1,
        "indent with spaces, not tabs: YAML does not allow a tab in indentation".to_owned(),
    ))
}

/// The previous line that holds something: (1-based number, text).
fn previous<'a>(lines: &[&'a str], line: usize) -> Option<(usize, &'a str)> {
    lines
        .get(..line.checked_sub(1)?)?
        .iter()
        .enumerate()
        .rev()
        .find(|(_, l)| !is_blank(l))
        .map(|(i, l)| (i + 1, *l))
}

fn is_blank(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
}

fn indent(line: &str) -> usize {
    line.chars().take_while(|&c| c == ' ').count()
}

/// Where a line's content starts for its children's and siblings' sake: after its
/// indentation and any `- ` sequence markers (`- name: x` holds `name` at column 2).
fn content_column(line: &str) -> usize {
    let mut col = indent(line);
    let mut rest = line.get(col..).unwrap_or("");
    while let Some(after) = rest.strip_prefix("- ") {
        let spaces = after.chars().take_while(|&c| c == ' ').count();
        col += 2 + spaces;
        rest = after.get(spaces..).unwrap_or("");
    }
    col
}

/// Whether the next line may be indented deeper: the line ends in `:` (a key whose value
/// follows), a block scalar indicator, or is a bare `-`.
fn opens_block(line: &str) -> bool {
    let code = line.split(" #").next().unwrap_or(line).trim_end();
    code.ends_with(':')
        || code.ends_with('-')
        || code.ends_with('|')
        || code.ends_with('>')
        || code.ends_with("|-")
        || code.ends_with(">-")
        || code.ends_with("|+")
        || code.ends_with(">+")
}

fn spaces(n: usize) -> String {
    if n == 1 {
        "1 space".to_owned()
    } else {
        format!("{n} spaces")
    }
}

/// The line as quoted in a hint: trimmed, at most 40 characters.
fn shown(line: &str) -> String {
    let t = line.trim();
    if t.chars().count() > 40 {
        format!("{}…", t.chars().take(39).collect::<String>())
    } else {
        t.to_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::explain;

    #[test]
    fn a_line_indented_more_than_its_sibling() {
        let text = "cache:\n  ttl: 60s\n   negative_ttl: 5s\n";
        let (line, col, hint) = explain(text, 3, "mapping values are not allowed").unwrap();
        assert_eq!((line, col), (3, 4));
        assert!(
            hint.starts_with(
                "indent with spaces; this line is indented more than line 2 `ttl: 60s`"
            ),
            "{hint}"
        );
    }

    #[test]
    fn a_line_between_two_levels() {
        let text = "cache:\n    ttl: 60s\n  negative_ttl: 5s\n";
        let (line, col, hint) = explain(text, 3, "did not find expected key").unwrap();
        assert_eq!((line, col), (3, 3));
        assert!(
            hint.contains("indented less than line 2 `ttl: 60s`")
                && hint.contains("more than line 1 `cache:`"),
            "{hint}"
        );
    }

    #[test]
    fn a_tab_is_pointed_at() {
        let text = "cache:\n\tttl: 60s\n";
        let (line, col, hint) = explain(text, 2, "tabs disallowed").unwrap();
        assert_eq!((line, col), (2, 1));
        assert!(hint.starts_with("indent with spaces, not tabs"), "{hint}");
    }

    #[test]
    fn a_tab_after_spaces_on_the_next_line_is_pointed_at() {
        // The scanner reports this one at the end of the line before.
        let text = "upstream:\n  url: http://x\n  \tconnect_timeout: 1s\n";
        let (line, col, _) =
            explain(text, 2, "while scanning a plain scalar, found a tab").unwrap();
        assert_eq!((line, col), (3, 3));
    }

    #[test]
    fn sequence_items_and_nested_keys_are_not_blamed() {
        // `path` lines up with `name` after `- `; `ttl` nests under `cache:`.
        let text = "routes:\n  - name: a\n    path: /x\ncache:\n  ttl: 1s\n";
        for line in 1..=5 {
            assert_eq!(explain(text, line, "some other error"), None, "line {line}");
        }
    }
}
