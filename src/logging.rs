//! Log output: every line on stderr, text or JSON, and the per-request access line.
//!
//! Why not a logger thread per line: handing each line to a writer thread costs a futex
//! wake and a context switch per request, and on a gateway pinned to one core that thread
//! competes with the requests it logs; writing each line where it is made costs a
//! `write(2)` per request. Instead, like nginx's buffered access log:
//! - each thread appends its lines to its own buffer (registered once; its lock is only
//!   ever shared with the writer thread, never between request threads);
//! - the first line after a write wakes the writer thread, which waits [`BATCH_DELAY`]
//!   for more and then writes each buffer in one `write(2)`: at most one wake-up per
//!   [`BATCH_DELAY`], however busy the gateway, and a line reaches stderr within about
//!   that delay;
//! - a buffer past [`BATCH_BYTES`] is written at once by its own thread;
//! - a thread's buffer is written when it exits, and every buffer when the [`Flush`]
//!   guard drops (the end of `serve`).
//!
//! Before [`init`] (the CLI commands) lines are written straight through. Lines are never
//! dropped (a `kill -9` loses at most the last [`BATCH_DELAY`]). Lines of one thread keep
//! their order; lines of different threads may interleave out of time order by up to one
//! batch, and each carries its own timestamp.
//!
//! The access line is formatted here, not through `tracing`'s field visitors: its fields
//! are fixed by the contract (section 5b) and it is written once per request, so it is
//! written directly into the worker's buffer, with no allocation. It still obeys the log
//! filter (`log.level`, `RUST_LOG`) under the target `keygate::access`.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use time::OffsetDateTime;

use crate::config::LogFormat;

/// A thread writes its own buffer once it holds this many bytes.
pub const BATCH_BYTES: usize = 32 * 1024;
/// How long the writer thread gathers lines before writing them.
pub const BATCH_DELAY: Duration = Duration::from_millis(50);

static FORMAT: OnceLock<LogFormat> = OnceLock::new();
static WRITER: OnceLock<&'static Writer> = OnceLock::new();

/// Sets up logging for `serve` and `demo`: `format` lines on stderr at `level` (or what
/// `RUST_LOG` says), batched (see the module docs). Keep the guard until exit: dropping
/// it writes every buffered line.
#[must_use = "dropping the guard writes the buffered log lines"]
pub fn init(format: LogFormat, level: &str) -> Flush {
    let _ = FORMAT.set(format);
    if WRITER.get().is_none() {
        let writer: &'static Writer = Box::leak(Box::new(Writer::new(write_stderr)));
        // No writer thread (the system refused one): lines keep going straight through.
        if writer.start() {
            let _ = WRITER.set(writer);
        }
    }
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
    let _ = ACCESS_ENABLED.set(ask_access_enabled());
    Flush(())
}

/// Writes every buffered line when dropped.
pub struct Flush(());

impl Drop for Flush {
    fn drop(&mut self) {
        if let Some(w) = WRITER.get() {
            w.write_all();
        }
    }
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
    /// The upstream service's name and the target tried; empty when nothing was.
    pub upstream: &'a str,
    pub upstream_target: &'a str,
    /// Why the upstream failed: its class (`connect refused`, `timeout`, `tls`, …) and
    /// the error's own words; empty when it answered.
    pub upstream_error: &'a str,
    pub upstream_reason: &'a str,
}

/// Writes the access line for one request (when `keygate::access` is enabled at info).
pub fn access(a: &Access<'_>) {
    if !access_enabled() {
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
                    upstream: a.upstream,
                    upstream_target: a.upstream_target,
                    upstream_error: a.upstream_error,
                    upstream_reason: a.upstream_reason,
                };
                let _ = serde_json::to_writer(&mut *buf, &line);
                buf.push(b'\n');
            }
            LogFormat::Text => {
                buf.extend_from_slice(ts.as_bytes());
                buf.extend_from_slice(b"  INFO keygate::access: request method=");
                text_value(buf, a.method);
                for (name, value) in [
                    (" path=", a.path),
                    (" route=", a.route),
                    (" code=", a.code),
                    (" key_id=", a.key_id),
                    (" business_id=", a.business_id),
                    (" upstream=", a.upstream),
                    (" upstream_target=", a.upstream_target),
                ] {
                    buf.extend_from_slice(name.as_bytes());
                    text_value(buf, value);
                }
                let mut n = itoa::Buffer::new();
                buf.extend_from_slice(b" status=");
                buf.extend_from_slice(n.format(a.status).as_bytes());
                buf.extend_from_slice(b" duration_ms=");
                buf.extend_from_slice(n.format(micros / 1000).as_bytes());
                let millis_fraction = n.format(1000 + micros % 1000).as_bytes();
                buf.push(b'.');
                buf.extend_from_slice(&millis_fraction[1..]);
                buf.extend_from_slice(b" upstream_status=");
                buf.extend_from_slice(n.format(a.upstream_status).as_bytes());
                if !a.upstream_error.is_empty() {
                    buf.extend_from_slice(b" upstream_error=");
                    text_value(buf, a.upstream_error);
                    buf.extend_from_slice(b" upstream_reason=");
                    text_value(buf, a.upstream_reason);
                }
                buf.push(b'\n');
            }
        }
    });
}

/// Whether the filter lets access lines through: asked once by [`init`] (the filter never
/// changes afterwards), every time before it.
fn access_enabled() -> bool {
    ACCESS_ENABLED
        .get()
        .copied()
        .unwrap_or_else(ask_access_enabled)
}

fn ask_access_enabled() -> bool {
    tracing::enabled!(target: "keygate::access", tracing::Level::INFO)
}

static ACCESS_ENABLED: OnceLock<bool> = OnceLock::new();

/// A text-format value: as it is when it is plain (visible ASCII, no quote or backslash),
/// else quoted and escaped, so a value can never forge another field or line; an empty
/// value is `""`.
fn text_value(buf: &mut Vec<u8>, v: &str) {
    if v.is_empty() {
        buf.extend_from_slice(b"\"\"");
        return;
    }
    let plain = is_plain(v.as_bytes());
    if plain {
        buf.extend_from_slice(v.as_bytes());
    } else {
        let _ = write!(buf, "{v:?}");
    }
}

/// Whether every byte is visible ASCII and neither `"` nor `\`: eight bytes a step
/// (values are short and nearly always plain, and eight fields of each access line are
/// tested), the tail padded with plain bytes. Each word is tested for a byte below
/// `!`, one at or above DEL, or a `"` or `\`; the tests may also flag the
/// byte after a flagged one (a borrow or carry), never a word with none.
fn is_plain(v: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x;
    let flagged = |x: u64| {
        let below_bang = x.wrapping_sub(ONES * 0x21) & !x;
        let del_or_above = x.wrapping_add(ONES) | x;
        (below_bang
            | del_or_above
            | zero_byte(x ^ (ONES * u64::from(b'"')))
            | zero_byte(x ^ (ONES * u64::from(b'\\'))))
            & HIGH
    };
    let (words, tail) = v.as_chunks::<8>();
    // The tail shifted into a word of plain bytes (copying up to seven bytes into an
    // array is a `memcpy` call per value).
    let last = tail
        .iter()
        .fold(ONES * u64::from(b'a'), |w, &b| (w << 8) | u64::from(b));
    // No early exit: the compiler folds the words without a branch each.
    words.iter().fold(flagged(last), |any, w| {
        any | flagged(u64::from_ne_bytes(*w))
    }) == 0
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
    upstream: &'a str,
    upstream_target: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    upstream_error: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    upstream_reason: &'a str,
}

/// The current time as RFC 3339 UTC (`2026-11-23T13:43:17.661824Z`) in `out`.
///
/// The part up to the second is formatted once per second per thread (as nginx caches
/// its time strings); each line only adds its microseconds.
fn rfc3339_now(out: &mut [u8; 40]) -> &str {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let second = since_epoch.as_secs();
    let prefix = SECOND.with(|cached| {
        let (at, text) = cached.get();
        if at == second && text[0] != 0 {
            return text;
        }
        let text = second_prefix(second);
        cached.set((second, text));
        text
    });
    if prefix[0] == 0 {
        return "";
    }
    out[..SECOND_LEN].copy_from_slice(&prefix);
    let micros = since_epoch.subsec_micros();
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(micros).as_bytes();
    let end = SECOND_LEN + 6;
    out[SECOND_LEN..end - digits.len()].fill(b'0');
    out[end - digits.len()..end].copy_from_slice(digits);
    out[end] = b'Z';
    std::str::from_utf8(&out[..=end]).unwrap_or("")
}

/// `2026-11-23T13:43:17.`: the length of [`rfc3339_now`]'s part up to the second.
const SECOND_LEN: usize = 20;

thread_local! {
    /// The second [`rfc3339_now`] last formatted on this thread, and its text.
    static SECOND: std::cell::Cell<(u64, [u8; SECOND_LEN])> =
        const { std::cell::Cell::new((0, [0; SECOND_LEN])) };
}

/// `YYYY-MM-DDTHH:MM:SS.` for `second` since the epoch; all zero bytes for a time
/// RFC 3339 cannot write (before year 0 or after 9999).
fn second_prefix(second: u64) -> [u8; SECOND_LEN] {
    let mut text = [0u8; SECOND_LEN];
    let Some(t) = i64::try_from(second)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
    else {
        return text;
    };
    let (year, month, day) = t.to_calendar_date();
    let (hour, minute, sec) = t.to_hms();
    let formatted = format!(
        "{year:04}-{:02}-{day:02}T{hour:02}:{minute:02}:{sec:02}.",
        u8::from(month)
    );
    if formatted.len() == SECOND_LEN {
        text.copy_from_slice(formatted.as_bytes());
    }
    text
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

/// Appends one line through `fill` to the calling thread's buffer (or writes it
/// straight through before [`init`]).
fn with_line(fill: impl FnOnce(&mut Vec<u8>)) {
    if let Some(w) = WRITER.get() {
        w.append(fill);
    } else {
        write_now(write_stderr, fill);
    }
}

/// One line, written at once: no buffer to hold it.
fn write_now(sink: fn(&[u8]), fill: impl FnOnce(&mut Vec<u8>)) {
    let mut line = Vec::new();
    fill(&mut line);
    sink(&line);
}

type Buffer = Arc<Mutex<Vec<u8>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The buffers, and the thread that writes them.
struct Writer {
    /// Every thread's buffer, registered on its first line.
    buffers: Mutex<Vec<Weak<Mutex<Vec<u8>>>>>,
    /// A line is waiting: set by the first line after a write, cleared by the writer.
    pending: AtomicBool,
    wake: Mutex<bool>,
    woken: Condvar,
    sink: fn(&[u8]),
}

thread_local! {
    /// This thread's buffer and the writer it is registered with.
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

struct Local {
    buf: Buffer,
    writer: &'static Writer,
}

impl Drop for Local {
    fn drop(&mut self) {
        self.writer.write_buffer(&self.buf);
    }
}

impl Writer {
    fn new(sink: fn(&[u8])) -> Self {
        Self {
            buffers: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            wake: Mutex::new(false),
            woken: Condvar::new(),
            sink,
        }
    }

    /// Starts the writer thread; false when the system refuses one.
    fn start(&'static self) -> bool {
        std::thread::Builder::new()
            .name("keygate-log".into())
            .spawn(move || self.run())
            .is_ok()
    }

    fn run(&self) {
        loop {
            {
                let mut woke = lock(&self.wake);
                while !*woke {
                    woke = self
                        .woken
                        .wait(woke)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                *woke = false;
            }
            std::thread::sleep(BATCH_DELAY);
            // Cleared before writing: a line added from here on wakes the next round.
            self.pending.store(false, Ordering::Release);
            self.write_all();
        }
    }

    fn append(&'static self, fill: impl FnOnce(&mut Vec<u8>)) {
        let mut fill = Some(fill);
        let _ = LOCAL.try_with(|cell| {
            let Ok(mut local) = cell.try_borrow_mut() else {
                return;
            };
            let local = local.get_or_insert_with(|| self.register());
            let mut buf = lock(&local.buf);
            if let Some(f) = fill.take() {
                f(&mut buf);
            }
            if buf.len() >= BATCH_BYTES {
                (self.sink)(&buf);
                buf.clear();
            } else if !self.pending.load(Ordering::Acquire)
                && !self.pending.swap(true, Ordering::AcqRel)
            {
                *lock(&self.wake) = true;
                self.woken.notify_one();
            }
        });
        // The thread is exiting (its buffer is gone): write the line directly.
        if let Some(f) = fill {
            write_now(self.sink, f);
        }
    }

    fn register(&'static self) -> Local {
        let buf: Buffer = Arc::new(Mutex::new(Vec::new()));
        let mut all = lock(&self.buffers);
        all.retain(|b| b.strong_count() > 0);
        all.push(Arc::downgrade(&buf));
        Local { buf, writer: self }
    }

    fn write_all(&self) {
        let all: Vec<Buffer> = lock(&self.buffers)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for buf in &all {
            self.write_buffer(buf);
        }
    }

    fn write_buffer(&self, buf: &Mutex<Vec<u8>>) {
        let mut b = lock(buf);
        if !b.is_empty() {
            (self.sink)(&b);
            b.clear();
            if b.capacity() > 4 * BATCH_BYTES {
                b.shrink_to(BATCH_BYTES);
            }
        }
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
    use time::format_description::well_known::Rfc3339;

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let mut out = [0u8; 40];
        let ts = rfc3339_now(&mut out);
        let parsed = OffsetDateTime::parse(ts, &Rfc3339).unwrap();
        assert!(ts.ends_with('Z'), "{ts}");
        assert_eq!(parsed.nanosecond() % 1000, 0, "{ts}");
        assert!((OffsetDateTime::now_utc() - parsed).whole_seconds().abs() < 5);
        // The cached part up to the second, for a known second and its edges.
        assert_eq!(&second_prefix(0), b"1970-01-01T00:00:00.");
        assert_eq!(&second_prefix(1_795_441_397), b"2026-11-23T13:43:17.");
        assert_eq!(second_prefix(u64::MAX), [0; SECOND_LEN]);
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
    fn the_word_test_of_plainness_agrees_with_the_byte_rule_for_every_byte_and_position() {
        let byte_rule = |v: &[u8]| {
            v.iter()
                .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        };
        for len in 1..=17 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut v = vec![b'x'; len];
                    v[at] = b;
                    assert_eq!(is_plain(&v), byte_rule(&v), "byte {b:#x} at {at} of {len}");
                    // A bad byte next to it: a borrow or carry may not hide either.
                    if at + 1 < len {
                        v[at + 1] = 0xff;
                        assert!(!is_plain(&v), "byte {b:#x} at {at} of {len} before 0xff");
                    }
                }
            }
        }
        assert!(is_plain(b""));
    }

    static SEEN: Mutex<Vec<u8>> = Mutex::new(Vec::new());

    fn capture(bytes: &[u8]) {
        lock(&SEEN).extend_from_slice(bytes);
    }

    fn seen() -> String {
        String::from_utf8(lock(&SEEN).clone()).unwrap()
    }

    #[test]
    fn lines_are_written_in_batches_and_never_lost() {
        let w: &'static Writer = Box::leak(Box::new(Writer::new(capture)));
        assert!(w.start());
        let wait_for = |text: &str| {
            let t = std::time::Instant::now();
            while !seen().contains(text) {
                assert!(t.elapsed() < 100 * BATCH_DELAY, "{text:?} never written");
                std::thread::sleep(BATCH_DELAY / 5);
            }
        };
        // A thread that logs and stays alive: the writer thread writes its line.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (appended, has_appended) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            w.append(|b| b.extend_from_slice(b"one\n"));
            hold.recv().unwrap();
            // A full buffer is written by its own thread, at once.
            w.append(|b| b.resize(b.len() + BATCH_BYTES, b'x'));
            assert!(seen().contains(&"x".repeat(BATCH_BYTES)), "written at once");
            w.append(|b| b.extend_from_slice(b"two\n"));
            appended.send(()).unwrap();
            hold.recv().unwrap();
        });
        wait_for("one\n");
        release.send(()).unwrap();
        // `write_all` (what the guard runs at exit) writes what a live thread holds.
        has_appended.recv().unwrap();
        w.write_all();
        assert!(seen().contains("two\n"), "{:?}", seen());
        release.send(()).unwrap();
        t.join().unwrap();
    }
}
