//! The opening deadline: an accepted connection must bring its first request within
//! `limits.header_read_timeout`, or it is closed.
//!
//! Why: hyper's HTTP/1 header-read timer starts only once hyper reads a head, and before
//! that come the TLS handshake and the protocol detection (HTTP/1 or the HTTP/2 preface),
//! which wait with no limit of their own; HTTP/2 has no header timer at all. A connection
//! that opened and said nothing (or only part of a handshake or preface) held a slot of
//! `limits.max_connections` for as long as its peer liked, so a few silent connections
//! locked out every client. After the first request, hyper's timer covers each
//! kept-alive HTTP/1 connection from the end of each answer.
//!
//! Invariant: the whole opening (handshake, detection, first head) is bounded, whatever the
//! peer sends or does not send. Cost: one timer per connection (not per request) and one
//! relaxed load per request.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

/// Set by the connection's service when a request arrives.
#[derive(Clone, Debug, Default)]
pub struct Opened(Arc<AtomicBool>);

impl Opened {
    /// A request has arrived on the connection.
    pub fn mark(&self) {
        if !self.0.load(Ordering::Relaxed) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    fn is(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Runs `conn` to its end, unless no request has arrived `limit` after the start: then it
/// is dropped, which closes the connection.
///
/// Once a request has come, the deadline timer is dropped at the next wake-up: a kept-alive
/// connection's later wake-ups poll only the connection, not a timer as well.
pub async fn within<F: Future<Output = ()>>(limit: Duration, opened: &Opened, conn: F) {
    let mut conn = std::pin::pin!(conn);
    let mut deadline = Some(Box::pin(tokio::time::sleep(limit)));
    let expired = std::future::poll_fn(|cx| {
        if conn.as_mut().poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        if opened.is() {
            deadline = None;
        }
        match deadline.as_mut() {
            Some(timer) => timer.as_mut().poll(cx).map(|()| true),
            None => Poll::Pending,
        }
    })
    .await;
    if expired {
        tracing::debug!(
            timeout = ?limit,
            "closed a connection that sent no request within the header-read timeout"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_request_is_closed_at_the_deadline() {
        let opened = Opened::default();
        let started = tokio::time::Instant::now();
        within(Duration::from_secs(2), &opened, std::future::pending()).await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_brought_a_request_runs_on_past_the_deadline() {
        let opened = Opened::default();
        let o = opened.clone();
        let conn = async move {
            o.mark();
            tokio::time::sleep(Duration::from_secs(10)).await;
        };
        let started = tokio::time::Instant::now();
        within(Duration::from_secs(2), &opened, conn).await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }
}
