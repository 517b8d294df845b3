//! What kind of failure an upstream error is: the `result` label of
//! `keygate_upstream_requests_total`, the access line's `upstream_error`, and whether it
//! counts against the target's health.
//!
//! Invariants: a handful of fixed words (bounded labels); the error's own text goes to
//! the log (`upstream_reason`), never to the client or a label.

use std::error::Error;
use std::io;

use super::NoHealthyTarget;
use super::connect::ConnectError;

/// The class of an upstream request's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// An answer came (any status).
    Ok,
    /// The target refused the connection.
    Refused,
    /// No connection, or no answer, in time.
    Timeout,
    /// The TLS handshake failed (certificate, name, protocol).
    Tls,
    /// The connection was reset or closed before an answer.
    Reset,
    /// Every target of the upstream is taken out: nothing was tried.
    Down,
    /// Anything else (an unreachable network, a malformed answer).
    Error,
}

impl Class {
    /// Every class a request to a target can end in (the label values registered at start).
    pub const RESULTS: [Class; 6] = [
        Class::Ok,
        Class::Refused,
        Class::Timeout,
        Class::Tls,
        Class::Reset,
        Class::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "connect refused",
            Self::Timeout => "timeout",
            Self::Tls => "tls",
            Self::Reset => "reset",
            Self::Down => "no healthy target",
            Self::Error => "error",
        }
    }

    /// Its index in [`Class::RESULTS`] (`Down` never reaches a target: counted nowhere).
    pub fn slot(self) -> Option<usize> {
        Self::RESULTS.iter().position(|c| *c == self)
    }
}

/// The class of `e`, from the first error in its chain that says.
pub fn classify(e: &(dyn Error + 'static)) -> Class {
    for c in std::iter::successors(Some(e), |&c| c.source()) {
        if let Some(ce) = c.downcast_ref::<ConnectError>() {
            return match ce {
                ConnectError::Timeout { .. } => Class::Timeout,
                ConnectError::Tls { .. } => Class::Tls,
                ConnectError::Tcp { source, .. } => io_class(source).unwrap_or(Class::Error),
            };
        }
        if c.is::<NoHealthyTarget>() {
            return Class::Down;
        }
        if c.is::<rustls::Error>() {
            return Class::Tls;
        }
        if let Some(io) = c.downcast_ref::<io::Error>()
            && let Some(class) = io_class(io)
        {
            return class;
        }
        if let Some(h) = c.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return Class::Timeout;
            }
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return Class::Reset;
            }
        }
    }
    Class::Error
}

fn io_class(e: &io::Error) -> Option<Class> {
    if e.get_ref()
        .is_some_and(<dyn std::error::Error + Send + Sync>::is::<rustls::Error>)
    {
        return Some(Class::Tls);
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Some(Class::Refused),
        io::ErrorKind::TimedOut => Some(Class::Timeout),
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => Some(Class::Reset),
        _ => None,
    }
}

/// Whether `e` failed before anything was sent: a connection that could not be opened
/// (its failure is already counted against its target where it happened).
pub fn before_sending(e: &(dyn Error + 'static)) -> bool {
    std::iter::successors(Some(e), |&c| c.source())
        .any(|c| c.is::<ConnectError>() || c.is::<NoHealthyTarget>())
}

/// Whether `e` is the client's doing, not the target's: its request body failed
/// (hyper's "user" errors: the client went away mid-upload).
pub fn clients_fault(e: &(dyn Error + 'static)) -> bool {
    std::iter::successors(Some(e), |&c| c.source()).any(|c| {
        c.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_user)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn connect_failures_are_classed_by_their_cause() {
        let target: Arc<str> = Arc::from("http://127.0.0.1:1");
        let refused = ConnectError::Tcp {
            target: Arc::clone(&target),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(classify(&refused), Class::Refused);
        assert!(before_sending(&refused));
        let tls = ConnectError::Tls {
            target: Arc::clone(&target),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            ),
        };
        assert_eq!(classify(&tls), Class::Tls);
        let late = ConnectError::Timeout {
            target,
            after: std::time::Duration::from_secs(1),
        };
        assert_eq!(classify(&late), Class::Timeout);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(classify(&reset), Class::Reset);
        assert!(!before_sending(&reset));
        assert_eq!(Class::Down.slot(), None);
        assert_eq!(Class::Refused.as_str(), "connect refused");
    }
}
