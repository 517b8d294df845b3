//! An error and its causes on one line, each cause printed once: `outer: cause: root`.
//!
//! Job: the one way keygate reports an error chain, in the CLI's `error:` line and in
//! the `error` field of log lines. Invariants: every keygate error's `Display` says its
//! own layer's words only and keeps its cause as `source()` (house style), so walking the
//! chain here is the only place a cause is printed. Some libraries' errors already print
//! their cause in their own `Display` (`redis`, `rusqlite`, an `io::Error` made from
//! another error); a cause whose text the line already holds is not printed again, so
//! `Connection refused (os error 111)` appears once, not twice.
//! Why not anyhow's `{:#}`: it prints every layer verbatim, duplicates included, and
//! `anyhow` stays in the binary while the library's log lines need the same output.

use std::error::Error;
use std::fmt;

/// Displays `0` and every `source()` below it, joined with `: `.
#[derive(Clone, Copy)]
pub struct Chain<'a>(pub &'a dyn Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(c) = cause {
            let text = c.to_string();
            if !text.is_empty() && !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = c.source();
        }
        f.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::Chain;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read config.yaml")]
    struct Outer(#[source] std::io::Error);

    /// Like `redis::RedisError`: prints its cause and also returns it from `source()`.
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Echo(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("the key store is unavailable")]
    struct Store(#[source] Echo);

    fn gone() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::NotFound)
    }

    #[test]
    fn every_layer_once_outermost_first() {
        let e = Outer(gone());
        assert_eq!(
            Chain(&e).to_string(),
            format!("cannot read config.yaml: {}", gone())
        );
    }

    #[test]
    fn a_cause_a_layer_already_printed_is_not_printed_again() {
        let e = Store(Echo(gone()));
        let line = Chain(&e).to_string();
        assert_eq!(line, format!("the key store is unavailable: {}", gone()));
        assert_eq!(line.matches(&gone().to_string()).count(), 1, "{line}");
    }

    #[test]
    fn an_error_without_a_cause_is_its_display() {
        let e = gone();
        assert_eq!(Chain(&e).to_string(), e.to_string());
    }
}
