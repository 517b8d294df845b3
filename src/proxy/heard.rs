//! An upstream connection's stream that notes whether the upstream has said anything
//! since the last request was sent.
//!
//! Why: a kept-alive upstream connection may be closed by the upstream (its idle timeout)
//! just as keygate sends the next request on it. RFC 9112 §9.3.1 lets a proxy send an
//! idempotent request again on a new connection when the old one closed; keygate does so
//! only when not one byte of an answer arrived, which hyper's error ("connection closed
//! before message completed", also said after a partial head) cannot tell. This wrapper
//! can: every read that brings bytes sets the flag, and the sender clears it before each
//! request. Cost: one relaxed store per read, one per request.
//!
//! Invariant: the bytes pass through unchanged; the wrapper only watches reads.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Shared between the stream (which sets it) and the sender (which clears and reads it).
#[derive(Clone, Debug, Default)]
pub struct Heard(Arc<AtomicBool>);

impl Heard {
    /// Forgets what was heard: called just before a request is sent.
    pub fn clear(&self) {
        self.0.store(false, Ordering::Relaxed);
    }

    /// Whether any byte arrived since the last [`Heard::clear`].
    pub fn anything(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// `S`, with reads noted in a [`Heard`].
pub struct Listening<S> {
    inner: S,
    heard: Heard,
}

impl<S> Listening<S> {
    pub fn new(inner: S, heard: Heard) -> Self {
        Self { inner, heard }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Listening<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.heard.0.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Listening<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_read_with_bytes_is_heard_and_a_clear_forgets_it() {
        let (a, mut b) = tokio::io::duplex(64);
        let heard = Heard::default();
        let mut s = Listening::new(a, heard.clone());
        s.write_all(b"GET").await.expect("write");
        assert!(!heard.anything(), "writing is not hearing");
        b.write_all(b"HTTP").await.expect("write");
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.expect("read");
        assert!(heard.anything());
        heard.clear();
        assert!(!heard.anything());
        drop(b);
        assert_eq!(s.read(&mut buf).await.expect("eof"), 0);
        assert!(!heard.anything(), "an end of stream brings no byte");
    }
}
