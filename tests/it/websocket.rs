//! WebSocket upgrades pass through after authorisation, and only then.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{Gateway, Options, Upstream, keyed_get, raw};

/// An upstream that accepts every upgrade and then echoes the raw bytes back.
async fn echo_upgrades() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|mut req: Request<Incoming>| async move {
                    let upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        if let Ok(up) = upgrade.await {
                            let mut io = TokioIo::new(up);
                            let mut buf = [0u8; 1024];
                            while let Ok(n) = io.read(&mut buf).await {
                                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    });
                    let mut r = Response::new(Empty::<Bytes>::new());
                    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                    r.headers_mut()
                        .insert("upgrade", "websocket".parse().unwrap());
                    r.headers_mut()
                        .insert("connection", "upgrade".parse().unwrap());
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

fn upgrade_request(key: Option<&str>) -> String {
    // Without a key the refusal should also end the connection, so ask for close too.
    let (key_line, connection) = match key {
        Some(k) => (format!("X-API-Key: {k}\r\n"), "Upgrade"),
        None => (String::new(), "Upgrade, close"),
    };
    format!(
        "GET /v1/items/live HTTP/1.1\r\nHost: x\r\n{key_line}Connection: {connection}\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

#[tokio::test]
async fn websocket_upgrades_pass_through_only_after_authorisation() {
    let unused = Upstream::start().await;
    let upstream = echo_upgrades().await;
    let gw = Gateway::start_with(&unused, Options::upstream(&upstream, "")).await;
    let (_, key) = gw.key_with_scopes(&["items:read"]).await;

    let answer = raw(&gw.proxy, upgrade_request(None).as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 401"),
        "no key, no upgrade: {answer}"
    );

    let mut s = tokio::net::TcpStream::connect(&gw.proxy).await.unwrap();
    s.write_all(upgrade_request(Some(&key)).as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed before the upgrade answer: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    // The tunnel carries bytes both ways.
    s.write_all(b"hello through keygate").await.unwrap();
    let mut echoed = [0u8; 21];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"hello through keygate");
}

/// An upstream that answers `101 Switching Protocols` to a request that asked for no
/// upgrade is broken: the client gets 502, never a switched connection.
#[tokio::test]
async fn an_upstream_switching_protocols_unasked_is_a_bad_gateway() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = s.read(&mut head).await;
                let _ = s
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\n")
                    .await;
                let _ = s.read(&mut head).await; // hold the connection open
            });
        }
    });
    let unused = Upstream::start().await;
    let gw = Gateway::start_with(&unused, Options::upstream(&upstream, "")).await;
    let (_, key) = gw.key_with_scopes(&["items:read"]).await;
    let answer = raw(&gw.proxy, keyed_get(&gw, "/v1/items/1", &key).as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(answer.contains("upstream_unavailable"), "{answer}");
}
