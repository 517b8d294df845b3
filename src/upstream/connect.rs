//! Opening a connection to one target: TCP within `connect_timeout`, then TLS for an
//! `https://` target; one [`Dial`] serves a client connection's own upstream connection
//! and, as a [`Connector`], the target's shared keep-alive pool.
//!
//! Invariants: every failure is a [`ConnectError`] naming the target (never sent: the
//! request can go elsewhere); a TLS failure keeps rustls's reason as its source, for the
//! log line, never for the client.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A connection to a target could not be opened: nothing was sent on it.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {target}")]
    Tcp {
        target: Arc<str>,
        #[source]
        source: io::Error,
    },
    #[error("no connection to {target} within {after:?}")]
    Timeout { target: Arc<str>, after: Duration },
    #[error("TLS handshake with {target} failed")]
    Tls {
        target: Arc<str>,
        #[source]
        source: io::Error,
    },
}

/// The host of `authority` as the resolver wants it: an IPv6 literal without brackets.
pub fn dial_host(authority: &http::uri::Authority) -> String {
    let bare = authority.host();
    bare.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(bare)
        .to_owned()
}

/// How to reach one target.
pub struct Dial {
    /// The target's URL (`https://host:port`), for messages.
    pub label: Arc<str>,
    /// Host as the resolver wants it (an IPv6 literal without brackets).
    pub host: String,
    pub port: u16,
    pub timeout: Duration,
    /// For `https://` targets: the connector and the name sent and verified.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Dial {
    /// A new connection, TLS done, within the connect timeout (TLS included).
    pub async fn open(&self) -> Result<Stream, ConnectError> {
        let timed_out = || ConnectError::Timeout {
            target: Arc::clone(&self.label),
            after: self.timeout,
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let tcp = tokio::time::timeout_at(
            deadline,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| timed_out())?
        .map_err(|source| ConnectError::Tcp {
            target: Arc::clone(&self.label),
            source,
        })?;
        let _ = tcp.set_nodelay(true);
        let Some((connector, name)) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let tls = tokio::time::timeout_at(deadline, connector.connect(name.clone(), tcp))
            .await
            .map_err(|_| timed_out())?
            .map_err(|source| ConnectError::Tls {
                target: Arc::clone(&self.label),
                source,
            })?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// A target's connection: plain TCP or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// The shared pool's connector for one target: whatever URI the pool asks for, it dials
/// this target (the pool keys connections by the URI, which names the target anyway).
#[derive(Clone)]
pub struct Connector(pub Arc<Dial>);

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let dial = Arc::clone(&self.0);
        Box::pin(async move { dial.open().await.map(TokioIo::new) })
    }
}
