//! Log output: every line on stderr, text or JSON, and the per-request access line.
//!
//! Why not a logger thread: handing each line to a writer thread costs a futex wake and a
//! context switch per request, and on a gateway pinned to one core that thread competes
//! with the requests it logs. Instead each runtime worker keeps its own line buffer
//! (thread-local: no lock shared between workers) and writes it to stderr in one
//! `write(2)`:
//! - when the worker goes idle (tokio's `on_thread_park`, wired by [`runtime_hooks`]), so
//!   on a quiet gateway a line is out before the worker sleeps;
//! - when the buffer passes [`BATCH_BYTES`], or its oldest line is older than
//!   [`BATCH_AGE`] when another is added, so a busy worker writes in large batches;
//! - when the thread exits, and for the calling thread when the [`Flush`] guard drops.
//!
//! Threads that are not runtime workers (the CLI, blocking helpers, file watchers) write
//! each line straight through. Lines are never dropped. Lines from different workers may
//! reach stderr out of time order by at most one batch; each carries its own timestamp.
//!
//! The access line is formatted here, not through `tracing`'s field visitors: its fields
//! are fixed by the contract (section 5b) and it is written once per request, so it is
//! written directly into the worker's buffer, with no allocation. It still obeys the log
//! filter (`log.level`, `RUST_LOG`) under the target `keygate::access`.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::LogFormat;

/// A worker writes its buffer once it holds this many bytes.
pub const BATCH_BYTES: usize = 32 * 1024;
/// ... or once its oldest line is this old (checked when a line is added).
pub const BATCH_AGE: Duration = Duration::from_millis(100);

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Sets up logging for `serve` and `demo`: `format` lines on stderr at `level` (or what
/// `RUST_LOG` says). Keep the guard until exit: dropping it writes what the calling
/// thread still holds.
#[must_use = "dropping the guard flushes this thread's log lines"]
pub fn init(format: LogFormat, level: &str) -> Flush {
    let _ = FORMAT.set(format);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_writer(|| Lines)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    Flush(())
}

/// Writes the calling thread's buffered lines when dropped.
pub struct Flush(());

impl Drop for Flush {
    fn drop(&mut self) {
        flush();
    }
}

/// Wires the per-worker buffers into a runtime: a worker batches from its first idle
/// moment on and writes its batch each time it goes idle.
pub fn runtime_hooks(builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    builder.on_thread_park(|| {
        with_batch(|b| {
            b.batching = true;
            b.write_out();
        });
    })
}

/// Writes what the calling thread holds.
pub fn flush() {
    with_batch(Batch::write_out);
}

/// One request, as its access line reports it.
pub struct Access<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub status: u16,
    /// The refusal's code; empty when the request was forwarded.
    pub code: &'a str,
    pub key_id: &'a str,
    pub business_id: &'a str,
    pub duration: Duration,
    /// 0 when nothing was forwarded.
    pub upstream_status: u16,
}

/// Writes the access line for one request (when `keygate::access` is enabled at info).
pub fn access(a: &Access<'_>) {
    if !tracing::enabled!(target: "keygate::access", tracing::Level::INFO) {
        return;
    }
    let format = FORMAT.get().copied().unwrap_or(LogFormat::Text);
    with_line(|buf| {
        let mut stamp = [0u8; 40];
        let ts = rfc3339_now(&mut stamp);
        // Whole microseconds: a duration is never printed with float noise.
        let micros = u64::try_from(a.duration.as_micros()).unwrap_or(u64::MAX);
        match format {
            LogFormat::Json => {
                #[allow(clippy::cast_precision_loss)] // microseconds, exact below 2^53
                let line = JsonAccess {
                    timestamp: ts,
                    level: "INFO",
                    target: "keygate::access",
                    message: "request",
                    ts,
                    method: a.method,
                    path: a.path,
                    route: a.route,
                    status: a.status,
                    code: a.code,
                    key_id: a.key_id,
                    business_id: a.business_id,
                    duration_ms: micros as f64 / 1000.0,
                    upstream_status: a.upstream_status,
                };
                let _ = serde_json::to_writer(&mut *buf, &line);
                buf.push(b'\n');
            }
            LogFormat::Text => {
                let _ = write!(buf, "{ts}  INFO keygate::access: request method=");
                text_value(buf, a.method);
                for (name, value) in [
                    (" path=", a.path),
                    (" route=", a.route),
                    (" code=", a.code),
                    (" key_id=", a.key_id),
                    (" business_id=", a.business_id),
                ] {
                    buf.extend_from_slice(name.as_bytes());
                    text_value(buf, value);
                }
                let _ = writeln!(
                    buf,
                    " status={} duration_ms={}.{:03} upstream_status={}",
                    a.status,
                    micros / 1000,
                    micros % 1000,
                    a.upstream_status,
                );
            }
        }
    });
}

/// A text-format value: as it is when it is plain (visible ASCII, no quote or backslash),
/// else quoted and escaped, so a value can never forge another field or line; an empty
/// value is `""`.
fn text_value(buf: &mut Vec<u8>, v: &str) {
    let plain = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    if plain {
        buf.extend_from_slice(v.as_bytes());
    } else {
        let _ = write!(buf, "{v:?}");
    }
}

#[derive(Serialize)]
struct JsonAccess<'a> {
    timestamp: &'a str,
    level: &'a str,
    target: &'a str,
    message: &'a str,
    ts: &'a str,
    method: &'a str,
    path: &'a str,
    route: &'a str,
    status: u16,
    code: &'a str,
    key_id: &'a str,
    business_id: &'a str,
    duration_ms: f64,
    upstream_status: u16,
}

/// The current time as RFC 3339 UTC (`2026-11-23T13:43:17.661824Z`) in `out`.
fn rfc3339_now(out: &mut [u8; 40]) -> &str {
    let now = OffsetDateTime::now_utc();
    // Microseconds, like every other log line.
    let now = now
        .replace_nanosecond(now.nanosecond() / 1000 * 1000)
        .unwrap_or(now);
    let mut cursor = std::io::Cursor::new(&mut out[..]);
    if now.format_into(&mut cursor, &Rfc3339).is_err() {
        return "";
    }
    // What was written is where the cursor stands (`format_into`'s count came out short).
    let n = usize::try_from(cursor.position()).unwrap_or(0);
    std::str::from_utf8(&out[..n]).unwrap_or("")
}

/// `tracing`'s writer: each formatted event arrives in one `write_all`.
struct Lines;

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        with_line(|buf| buf.extend_from_slice(bytes));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Appends one line through `fill`, then writes the buffer out if it is due.
fn with_line(fill: impl FnOnce(&mut Vec<u8>)) {
    let mut fill = Some(fill);
    with_batch(|b| {
        if b.since.is_none() {
            b.since = Some(Instant::now());
        }
        if let Some(f) = fill.take() {
            f(&mut b.buf);
        }
        let due = !b.batching
            || b.buf.len() >= BATCH_BYTES
            || b.since.is_some_and(|t| t.elapsed() >= BATCH_AGE);
        if due {
            b.write_out();
        }
    });
    // The thread is exiting (its buffer is gone) or the buffer is in use: write directly.
    if let Some(f) = fill {
        let mut line = Vec::new();
        f(&mut line);
        write_stderr(&line);
    }
}

fn with_batch(f: impl FnOnce(&mut Batch)) {
    let _ = BATCH.try_with(|cell| {
        if let Ok(mut b) = cell.try_borrow_mut() {
            f(&mut b);
        }
    });
}

thread_local! {
    static BATCH: RefCell<Batch> = const {
        RefCell::new(Batch { buf: Vec::new(), batching: false, since: None })
    };
}

struct Batch {
    buf: Vec<u8>,
    /// Set once this thread is known to be a runtime worker (it has gone idle once).
    batching: bool,
    /// When the oldest buffered line was added.
    since: Option<Instant>,
}

impl Batch {
    fn write_out(&mut self) {
        if !self.buf.is_empty() {
            write_stderr(&self.buf);
            self.buf.clear();
            if self.buf.capacity() > 4 * BATCH_BYTES {
                self.buf.shrink_to(BATCH_BYTES);
            }
        }
        self.since = None;
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.write_out();
    }
}

/// One `write(2)` (or as many as stderr needs); a closed stderr loses the lines, never
/// the request.
fn write_stderr(bytes: &[u8]) {
    let _ = std::io::stderr().lock().write_all(bytes);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let mut out = [0u8; 40];
        let ts = rfc3339_now(&mut out);
        let parsed = OffsetDateTime::parse(ts, &Rfc3339).unwrap();
        assert!(ts.ends_with('Z'), "{ts}");
        assert_eq!(parsed.nanosecond() % 1000, 0, "{ts}");
        assert!((OffsetDateTime::now_utc() - parsed).whole_seconds().abs() < 5);
    }

    #[test]
    fn text_values_are_plain_or_quoted_never_raw_spaces_or_newlines() {
        let text = |v: &str| {
            let mut b = Vec::new();
            text_value(&mut b, v);
            String::from_utf8(b).unwrap()
        };
        assert_eq!(text("/v1/items/1"), "/v1/items/1");
        assert_eq!(text(""), "\"\"");
        assert_eq!(text("a b"), "\"a b\"");
        assert_eq!(text("x\nstatus=200"), "\"x\\nstatus=200\"");
        assert_eq!(text("say \"hi\""), "\"say \\\"hi\\\"\"");
    }

    #[test]
    fn a_worker_holds_lines_until_due_and_other_threads_do_not() {
        std::thread::spawn(|| {
            with_line(|_| {});
            with_batch(|b| assert!(b.since.is_none(), "a plain thread writes at once"));
            with_batch(|b| b.batching = true);
            with_line(|_| {});
            with_batch(|b| assert!(b.since.is_some(), "a worker holds its lines"));
            with_batch(|b| b.since = Instant::now().checked_sub(BATCH_AGE));
            with_line(|_| {});
            with_batch(|b| assert!(b.since.is_none(), "written once the oldest line aged"));
        })
        .join()
        .unwrap();
    }
}
