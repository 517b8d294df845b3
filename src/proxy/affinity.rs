//! A client connection's own upstream connection ([`Affinity`]): an HTTP/1 client
//! connection sends its requests one at a time, so it gets one upstream connection of its
//! own, opened on its first forwarded request and reused for the next ones with no pool
//! look-up and no lock shared with other connections; it closes with the client's
//! connection. Beside it lives the connection's [`LazyTimer`].
//!
//! Invariant: a request holds the connection through a [`Lease`]; the connection goes
//! back only through [`keep`], after a whole answer head, never after an error, a timeout,
//! a cancelled request or a protocol switch (that connection is closed or given away).

use std::sync::Mutex;

use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use super::answer_timer::LazyTimer;
use super::forward::UpBody;
use super::heard::Heard;

/// One client connection's own upstream connection (see the module docs).
#[derive(Default)]
pub struct Affinity(Mutex<Slot>);

#[derive(Default)]
struct Slot {
    /// A request holds the connection and the timer.
    busy: bool,
    /// None yet, while a request holds it, or after a failure, a timeout, a cancelled
    /// request or a protocol switch (the connection was then closed or given away).
    conn: Option<Kept>,
    /// The connection's answer timer, kept armed from one request to the next ([`within`]);
    /// on an idle connection it comes due once, up to a timeout after the last request, and
    /// wakes the connection's task for nothing that one time.
    timer: Option<LazyTimer>,
}

impl Affinity {
    /// Takes the connection (if any) and the timer for one request; `None` when a
    /// request holds them.
    pub fn lease(&self) -> Option<Lease<'_>> {
        let mut slot = self.slot();
        if slot.busy {
            return None;
        }
        slot.busy = true;
        Some(Lease {
            affinity: self,
            conn: slot.conn.take(),
            timer: slot.timer.take(),
        })
    }

    /// The slot, locked. A poisoned lock only means a request panicked while holding it;
    /// the slot itself is always a whole value.
    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A request's hold on its connection's upstream connection and timer; when dropped it
/// puts back what it holds: the connection only if [`keep`] returned it (not after an
/// error, a timeout or a cancelled request: that connection is closed).
pub struct Lease<'a> {
    affinity: &'a Affinity,
    pub conn: Option<Kept>,
    pub timer: Option<LazyTimer>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let mut slot = self.affinity.slot();
        slot.busy = false;
        slot.conn = self.conn.take();
        slot.timer = self.timer.take();
    }
}

/// A kept-alive upstream connection.
pub struct Kept {
    pub send: SendRequest<UpBody>,
    /// Whether the upstream has sent anything since the request now on it was sent.
    pub heard: Heard,
    /// When its last request started.
    pub used: std::time::Instant,
    /// The upstream service (its index) and the target of that service it is to.
    pub service: u16,
    pub target: u16,
}

/// Puts `conn` back in `slot` for the next request once its answer has come, unless the
/// answer switched protocols (the connection then belongs to the upgrade). `now`: when
/// the request started.
pub fn keep(
    slot: &mut Option<Kept>,
    mut conn: Kept,
    resp: Response<Incoming>,
    now: std::time::Instant,
) -> Response<Incoming> {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        conn.used = now;
        *slot = Some(conn);
    }
    resp
}
