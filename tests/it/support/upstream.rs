//! A real HTTP upstream that records what reached it, so tests can prove what keygate
//! forwarded (and what it did not).
//!
//! - `/slow…` answers after 5 s (for upstream timeouts);
//! - `/v1/items/download/{n}` streams `n` bytes back;
//! - `/v1/items/close` answers with `Connection: close` (and then closes);
//! - anything else answers 200 with `{"path", "body_bytes", "body_sha256"}`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query exactly as they arrived.
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body_bytes: usize,
    /// The connection it came on (keygate's end of it).
    pub peer: std::net::SocketAddr,
}

impl Seen {
    /// Every value of header `name` (lower case).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The only value of header `name`; panics if there are several.
    pub fn header(&self, name: &str) -> Option<&str> {
        let all = self.header_all(name);
        assert!(
            all.len() <= 1,
            "header {name} appears {} times: {all:?}",
            all.len()
        );
        all.first().copied()
    }
}

pub struct Upstream {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, Infallible>;

impl Upstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, peer, Arc::clone(&s)));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// The last request received; panics if none.
    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream received no request")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }
}

async fn handle(
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string);
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    // Hash the body as it streams in, without holding all of it.
    let mut body = body;
    let mut hasher = Sha256::new();
    let mut body_bytes = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            body_bytes += data.len();
            hasher.update(data);
        }
    }
    seen.lock().expect("lock").push(Seen {
        method: parts.method.to_string(),
        target: target.clone(),
        version: format!("{:?}", parts.version),
        headers,
        body_bytes,
        peer,
    });
    if parts.uri.path().starts_with("/slow") {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    if let Some(n) = parts.uri.path().strip_prefix("/v1/items/download/") {
        let n: usize = n.parse().unwrap_or(0);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let chunks = (0..n.div_ceil(chunk.len())).map(move |i| {
            let len = chunk.len().min(n - i * chunk.len());
            Ok::<_, Infallible>(Frame::data(chunk.slice(..len)))
        });
        let body = StreamBody::new(stream::iter(chunks));
        return Ok(Response::new(BodyExt::boxed(body)));
    }
    let answer = serde_json::json!({
        "path": target,
        "body_bytes": body_bytes,
        "body_sha256": hex(&hasher.finalize()),
    });
    let mut r = Response::new(BodyExt::boxed(Full::new(Bytes::from(answer.to_string()))));
    r.headers_mut()
        .insert("content-type", "application/json".parse().expect("static"));
    if parts.uri.path() == "/v1/items/close" {
        r.headers_mut()
            .insert("connection", "close".parse().expect("static"));
    }
    Ok(r)
}

pub fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}
