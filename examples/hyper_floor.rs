//! The stack's floor: the cheapest HTTP/1 proxy hyper and tokio make, for
//! `benches/compare.sh`'s `hyper-floor` row.
//!
//! ```text
//! cargo run --release --example hyper_floor -- LISTEN_ADDR UPSTREAM_ADDR
//! ```
//! Each client connection gets its own keep-alive connection to the upstream and every
//! request is forwarded as it came, with only its target cut to origin-form: no key, no
//! policy, no identity headers, no hop-by-hop handling, no framing guard, no timers, no
//! access log, no metrics. It is not a gateway and must never front anything; it is
//! the yardstick for how much of keygate's cost is the HTTP stack itself (hyper 1 server and
//! client, tokio, the same allocator and runtime shape as `keygate serve` on one core)
//! and how much is keygate's own work.
#![allow(clippy::expect_used)] // start-up only: bad arguments, no port, no runtime

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

// The allocator the binary uses (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream] = args.as_slice() else {
        eprintln!("usage: hyper_floor LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN_ADDR: host:port");
    let upstream: SocketAddr = upstream.parse().expect("UPSTREAM_ADDR: host:port");
    // `keygate serve` on one CPU runs a current-thread runtime (src/cli.rs).
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(serve(listen, upstream));
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) {
    let listener = TcpListener::bind(listen).await.expect("bind LISTEN_ADDR");
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let _ = client.set_nodelay(true);
        tokio::spawn(async move {
            // This connection's upstream connection, opened on its first request.
            let conn: Arc<Mutex<Option<SendRequest<Incoming>>>> = Arc::default();
            let service = service_fn(move |req| forward(req, upstream, Arc::clone(&conn)));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(client), service)
                .await;
        });
    }
}

/// Whatever stops one request: the connection is then closed, as hyper does for a
/// service error. Nothing panics on a down upstream.
type Error = Box<dyn std::error::Error + Send + Sync>;

async fn forward(
    mut req: Request<Incoming>,
    upstream: SocketAddr,
    conn: Arc<Mutex<Option<SendRequest<Incoming>>>>,
) -> Result<Response<Incoming>, Error> {
    if let Some(target) = req.uri().path_and_query().cloned() {
        *req.uri_mut() = target.into();
    }
    // HTTP/1 serves one request at a time per connection: the lock is never contended.
    let mut slot = conn.lock().await;
    let send = match slot.take().filter(|s| !s.is_closed()) {
        Some(open) => slot.insert(open),
        None => slot.insert(open(upstream).await?),
    };
    send.ready().await?;
    Ok(send.send_request(req).await?)
}

/// A new keep-alive connection to the upstream, driven by a task of its own.
async fn open(upstream: SocketAddr) -> Result<SendRequest<Incoming>, Error> {
    let stream = TcpStream::connect(upstream).await?;
    let _ = stream.set_nodelay(true);
    let (send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(send)
}
