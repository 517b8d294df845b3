//! A real webhook receiver: an HTTP server that keeps every POST it gets, checks nothing
//! itself (the tests check signatures), and answers 200. It can start on an address
//! chosen before it runs, so a test can point keygate at a receiver that is down.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// One delivery as it arrived.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a webhook body is JSON")
    }
}

pub struct Receiver {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    count: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback address nothing listens on yet (the port is free when this returns).
pub async fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

impl Receiver {
    pub async fn start() -> Self {
        Self::serve(
            TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind receiver"),
        )
    }

    /// A receiver on `addr` (from [`free_addr`]).
    pub async fn start_at(addr: SocketAddr) -> Self {
        Self::serve(TcpListener::bind(addr).await.expect("bind receiver"))
    }

    fn serve(listener: TcpListener) -> Self {
        let addr = listener.local_addr().expect("addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let (tx, count) = watch::channel(0);
        let tx = Arc::new(tx);
        let g = Arc::clone(&got);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (g, tx) = (Arc::clone(&g), Arc::clone(&tx));
                tokio::spawn(async move {
                    let svc = service_fn(move |req| keep(req, Arc::clone(&g), Arc::clone(&tx)));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            got,
            count,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/keygate", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    /// Waits (at most `within`) until `n` deliveries have arrived; returns them all.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let mut count = self.count.clone();
        let arrived = tokio::time::timeout(within, count.wait_for(|c| *c >= n)).await;
        let got = self.received();
        assert!(
            arrived.is_ok(),
            "{} of {n} deliveries arrived within {within:?}: {:#?}",
            got.len(),
            got.iter().map(Received::json).collect::<Vec<_>>()
        );
        got
    }
}

/// The URL of a receiver that will listen on `addr`.
pub fn url_at(addr: SocketAddr) -> String {
    format!("http://{addr}/hooks/keygate")
}

async fn keep(
    req: Request<Incoming>,
    got: Arc<Mutex<Vec<Received>>>,
    tx: Arc<watch::Sender<usize>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
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
    let n = {
        let mut g = got.lock().expect("lock");
        g.push(Received { headers, body });
        g.len()
    };
    tx.send_replace(n);
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}
