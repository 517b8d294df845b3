//! Framing guard: sees the raw HTTP/1 bytes before hyper does, to catch one smuggling
//! shape hyper accepts.
//!
//! A request head carrying both `Content-Length` and `Transfer-Encoding` (CL.TE, TE.CL)
//! is how requests are smuggled past proxies that frame bodies differently from the
//! upstream. hyper handles it per RFC 9112 §6.3 — it drops the length, decodes by the
//! coding and closes the connection after answering — but the dropped header leaves no
//! trace in the parsed request, so the proxy could not refuse it. This wrapper parses
//! each head with `httparse` (hyper's own parser), follows the body framing to find the
//! next head, and records in the connection's [`Ambiguous`] verdict which head had both;
//! the proxy then refuses that request (and any later one on the connection) with 400,
//! while requests before it on the same connection are served as usual.
//!
//! Invariants: the bytes are passed to hyper unchanged; the guard only reads them. Once
//! it cannot follow the stream (an upgrade, HTTP/2, a head it cannot parse, a head larger
//! than its buffer) it stops looking and leaves the decision to hyper, which refuses
//! malformed input itself. Cost: one `httparse` pass per head and a counter per body read.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One connection's verdict, shared by the guard (which finds the first head with both
/// framing headers) and the service (which numbers the requests hyper hands it; HTTP/1
/// serves them one at a time, in order).
#[derive(Clone, Debug)]
pub struct Ambiguous(Arc<Verdict>);

#[derive(Debug)]
struct Verdict {
    /// Index of the first ambiguous head; `u64::MAX` while there is none.
    first_bad: AtomicU64,
    /// Requests the service has been handed so far.
    served: AtomicU64,
}

impl Default for Ambiguous {
    fn default() -> Self {
        Self(Arc::new(Verdict {
            first_bad: AtomicU64::new(u64::MAX),
            served: AtomicU64::new(0),
        }))
    }
}

impl Ambiguous {
    /// Called once per request, in order: `false` for the ambiguous request and every later one.
    pub fn admit(&self) -> bool {
        let n = self.0.served.fetch_add(1, Ordering::AcqRel);
        n < self.0.first_bad.load(Ordering::Acquire)
    }

    fn mark(&self, head: u64) {
        self.0.first_bad.fetch_min(head, Ordering::AcqRel);
    }

    #[cfg(test)]
    fn first_bad(&self) -> Option<u64> {
        Some(self.0.first_bad.load(Ordering::Acquire)).filter(|&i| i != u64::MAX)
    }
}

/// Where the guard is in the byte stream.
#[derive(Debug)]
enum State {
    /// Collecting a request head.
    Head(Vec<u8>),
    /// Skipping this many body bytes.
    Length(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// No longer following (see the module docs).
    Off,
}

#[derive(Debug)]
enum Chunk {
    /// Collecting a chunk-size line.
    Size(Vec<u8>),
    /// Skipping chunk data, then its CRLF.
    Data(u64),
    /// Collecting a trailer line (an empty one ends the body).
    Trailer(Vec<u8>),
}

/// Wraps a connection's stream; see the module docs.
pub struct Guarded<S> {
    inner: S,
    state: State,
    flag: Ambiguous,
    max_head: usize,
    /// Heads parsed so far (the index of the next one).
    heads: u64,
}

impl<S> Guarded<S> {
    /// `max_head`: heads larger than this are hyper's to refuse; the guard stops looking.
    pub fn new(inner: S, flag: Ambiguous, max_head: usize) -> Self {
        Self {
            inner,
            state: State::Head(Vec::new()),
            flag,
            max_head,
            heads: 0,
        }
    }

    fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let state = std::mem::replace(&mut self.state, State::Off);
            let (state, used) = step(state, bytes, &self.flag, self.max_head, &mut self.heads);
            self.state = state;
            bytes = &bytes[used..];
            if matches!(self.state, State::Off) {
                return;
            }
        }
    }
}

/// Advances over `bytes`; returns the new state and how many bytes it consumed.
fn step(
    state: State,
    bytes: &[u8],
    flag: &Ambiguous,
    max_head: usize,
    heads: &mut u64,
) -> (State, usize) {
    match state {
        State::Off => (State::Off, bytes.len()),
        State::Head(mut buf) => {
            // Usually a whole head arrives in one read: parse it in place, no copy.
            let start = buf.len();
            let whole = if buf.is_empty() {
                bytes
            } else {
                buf.extend_from_slice(bytes);
                &buf
            };
            let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
            let mut req = httparse::Request::new(&mut []);
            match req.parse_with_uninit_headers(whole, &mut headers) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let next = body_state(&req, flag, *heads);
                    *heads += 1;
                    (next, head_len - start)
                }
                Ok(httparse::Status::Partial) if whole.len() <= max_head => {
                    if buf.is_empty() {
                        buf.extend_from_slice(bytes);
                    }
                    (State::Head(buf), bytes.len())
                }
                _ => (State::Off, bytes.len()),
            }
        }
        State::Length(left) => {
            let take = left.min(bytes.len() as u64);
            let left = left - take;
            let used = usize::try_from(take).unwrap_or(bytes.len());
            (
                if left == 0 {
                    State::Head(Vec::new())
                } else {
                    State::Length(left)
                },
                used,
            )
        }
        State::Chunked(chunk) => step_chunked(chunk, bytes),
    }
}

/// What follows a parsed head; raises the flag for a head with both framing headers.
/// One pass over the headers, no allocation.
fn body_state(req: &httparse::Request<'_, '_>, flag: &Ambiguous, index: u64) -> State {
    let (mut lengths, mut length) = (0usize, None::<&[u8]>);
    let (mut coded, mut coding) = (false, None::<&[u8]>);
    let mut upgrade = req.method == Some("CONNECT");
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            length = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            coded = true;
            coding = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if lengths > 0 && coded {
        flag.mark(index);
        return State::Off; // hyper closes the connection after this request
    }
    if upgrade || req.version != Some(1) {
        return State::Off;
    }
    if let Some(last) = coding {
        let chunked = std::str::from_utf8(last)
            .ok()
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        return if chunked {
            State::Chunked(Chunk::Size(Vec::new()))
        } else {
            State::Off
        };
    }
    if lengths > 1 {
        return State::Off; // several lengths: hyper refuses or agrees; either way, stop
    }
    match length.map(|v| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
    }) {
        None | Some(Some(0)) => State::Head(Vec::new()),
        Some(Some(n)) => State::Length(n),
        Some(None) => State::Off,
    }
}

/// Lines in a chunked body are short; a longer one means the guard lost track.
const MAX_LINE: usize = 4096;

fn step_chunked(chunk: Chunk, bytes: &[u8]) -> (State, usize) {
    match chunk {
        Chunk::Size(mut line) => match collect_line(&mut line, bytes) {
            None if line.len() > MAX_LINE => (State::Off, bytes.len()),
            None => (State::Chunked(Chunk::Size(line)), bytes.len()),
            Some(used) => match httparse::parse_chunk_size(&line) {
                Ok(httparse::Status::Complete((_, 0))) => {
                    (State::Chunked(Chunk::Trailer(Vec::new())), used)
                }
                // The data, then its CRLF.
                Ok(httparse::Status::Complete((_, n))) => {
                    (State::Chunked(Chunk::Data(n.saturating_add(2))), used)
                }
                _ => (State::Off, used),
            },
        },
        Chunk::Data(left) => {
            let take = left.min(bytes.len() as u64);
            let left = left - take;
            let used = usize::try_from(take).unwrap_or(bytes.len());
            let next = if left == 0 {
                Chunk::Size(Vec::new())
            } else {
                Chunk::Data(left)
            };
            (State::Chunked(next), used)
        }
        Chunk::Trailer(mut line) => match collect_line(&mut line, bytes) {
            None if line.len() > MAX_LINE => (State::Off, bytes.len()),
            None => (State::Chunked(Chunk::Trailer(line)), bytes.len()),
            Some(used) if line == b"\r\n" || line == b"\n" => (State::Head(Vec::new()), used),
            Some(used) => (State::Chunked(Chunk::Trailer(Vec::new())), used),
        },
    }
}

/// Appends `bytes` up to and including the first `\n`; `Some(consumed)` once the line is whole.
fn collect_line(line: &mut Vec<u8>, bytes: &[u8]) -> Option<usize> {
    let Some(i) = bytes.iter().position(|&b| b == b'\n') else {
        line.extend_from_slice(bytes);
        return None;
    };
    line.extend_from_slice(&bytes[..=i]);
    Some(i + 1)
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && !matches!(this.state, State::Off)
        {
            this.observe(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (index of the first ambiguous head, whether the guard stopped following).
    fn flagged(stream: &[&[u8]]) -> (Option<u64>, bool) {
        let flag = Ambiguous::default();
        let mut g = Guarded::new((), flag.clone(), 65536);
        for part in stream {
            g.observe(part);
        }
        (flag.first_bad(), matches!(g.state, State::Off))
    }

    #[test]
    fn requests_before_the_ambiguous_one_are_admitted() {
        let flag = Ambiguous::default();
        flag.mark(2);
        assert_eq!(
            [flag.admit(), flag.admit(), flag.admit(), flag.admit()],
            [true, true, false, false]
        );
    }

    #[test]
    fn both_framing_headers_are_found_in_either_order() {
        let cl_te: &[u8] = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let te_cl: &[u8] =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: 3\r\n\r\n";
        assert_eq!(flagged(&[cl_te]).0, Some(0));
        assert_eq!(flagged(&[te_cl]).0, Some(0));
    }

    #[test]
    fn the_guard_follows_bodies_to_the_next_head_even_split_across_reads() {
        let stream: &[&[u8]] = &[
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel",
            b"loGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwi",
            b"ki\r\n0\r\nX-Trailer: 1\r\n\r\n",
            b"POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-",
            b"Encoding: chunked\r\n\r\n",
        ];
        assert_eq!(
            flagged(stream),
            (Some(3), true),
            "the fourth head is found after three bodies"
        );
        // Without the last request nothing is found and the guard is still following.
        assert_eq!(flagged(&stream[..4]), (None, false));
    }

    #[test]
    fn a_body_that_looks_like_a_smuggled_head_is_skipped_as_body() {
        let body = "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let req = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(flagged(&[req.as_bytes()]), (None, false));
    }

    #[test]
    fn upgrades_http2_and_junk_stop_the_guard() {
        let ws: &[u8] = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        assert_eq!(flagged(&[ws]), (None, true));
        assert_eq!(
            flagged(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]),
            (None, true)
        );
        assert_eq!(flagged(&[b"\x16\x03\x01junk\r\n\r\n"]), (None, true));
    }
}
