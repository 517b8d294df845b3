//! Connection faults production traffic brings: clients that open a connection and say
//! nothing (or only part of a TLS handshake or an HTTP/2 preface), and upstreams that
//! close kept-alive connections under keygate's feet.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{Gateway, Options, Upstream, client, keyed_get, raw};

/// A gateway with a 1 s header-read timeout and a cap of `cap` connections.
async fn capped(up: &Upstream, cap: usize, more: &str) -> Gateway {
    Gateway::start_with(
        up,
        Options {
            extra: &format!("limits:\n  header_read_timeout: 1s\n  max_connections: {cap}\n{more}"),
            ..Options::default()
        },
    )
    .await
}

/// Opens `n` connections to `addr` that never send a byte.
async fn silent(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    held
}

/// Whether the server closed `s` within `limit` (end of stream or reset).
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(limit, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn silent_connections_at_the_cap_are_cut_and_a_real_client_is_then_served() {
    let up = Upstream::start().await;
    let gw = capped(&up, 10, "").await;
    let (_, key) = gw.key_with_scopes(&["items:read"]).await;
    // Every slot held by a connection that says nothing.
    let mut held = silent(&gw.proxy, 10).await;
    let started = std::time::Instant::now();
    let answer = raw(&gw.proxy, keyed_get(&gw, "/v1/items/1", &key).as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "a real client behind 10 silent connections was not served: {answer:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "served before any slot could free: the cap did not hold ({:?})",
        started.elapsed()
    );
    for s in &mut held {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "a silent connection outlived the header-read timeout"
        );
    }
}

#[tokio::test]
async fn silent_tls_connections_before_or_after_the_handshake_are_cut() {
    let up = Upstream::start().await;
    let pair = crate::tls::self_signed("gateway");
    let gw = Gateway::start_with(
        &up,
        Options {
            extra: "tls:\n  cert: cert.pem\n  key: key.pem\nlimits:\n  header_read_timeout: 1s\n  max_connections: 4\n",
            files: vec![
                ("cert.pem", pair.cert_pem.clone()),
                ("key.pem", pair.key_pem.clone()),
            ],
            ..Options::default()
        },
    )
    .await;
    let (_, key) = gw.key_with_scopes(&["items:read"]).await;
    let mut held = silent(&gw.proxy, 3).await;
    // One that starts the handshake (a few bytes of a ClientHello) and stalls.
    held[0].write_all(&[0x16, 0x03, 0x01, 0x00]).await.unwrap();
    // One that completes the handshake, then says nothing.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pair.der.clone().into()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(&gw.proxy).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut quiet = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the gateway");
    let https = crate::tls::client(&[&pair], true);
    let port = gw.proxy.rsplit(':').next().unwrap();
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        https
            .get(format!("https://localhost:{port}/v1/items/1"))
            .header("X-API-Key", &key)
            .send(),
    )
    .await
    .expect("a real TLS client behind silent connections was never served")
    .unwrap()
    .status();
    assert_eq!(status, 200);
    for s in &mut held {
        assert!(closed_within(s, Duration::from_secs(5)).await);
    }
    let mut buf = [0u8; 64];
    let end = tokio::time::timeout(Duration::from_secs(5), quiet.read(&mut buf)).await;
    assert!(
        matches!(end, Ok(Ok(0) | Err(_))),
        "a TLS connection silent after its handshake outlived the header-read timeout"
    );
}

#[tokio::test]
async fn a_connection_that_only_sends_the_http2_preface_or_part_of_a_head_is_cut() {
    let up = Upstream::start().await;
    let gw = capped(&up, 10, "").await;
    let mut preface = TcpStream::connect(&gw.proxy).await.unwrap();
    preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut partial_preface = TcpStream::connect(&gw.proxy).await.unwrap();
    partial_preface.write_all(b"PRI * HTTP/2").await.unwrap();
    let mut partial_head = TcpStream::connect(&gw.proxy).await.unwrap();
    partial_head.write_all(b"GET /v1/items/1 HT").await.unwrap();
    for (name, s) in [
        ("preface", &mut preface),
        ("partial preface", &mut partial_preface),
        ("partial head", &mut partial_head),
    ] {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "{name}: still open after 5 s with a 1 s header-read timeout"
        );
    }
}

#[tokio::test]
async fn the_admin_listener_answers_during_a_flood_and_cuts_its_own_silent_connections() {
    let up = Upstream::start().await;
    // A long header-read timeout: the flood holds its slots for the whole test.
    let gw = Gateway::start_with(
        &up,
        Options {
            extra: "limits:\n  header_read_timeout: 30s\n  max_connections: 40\nforward_auth:\n  listen: 127.0.0.1:0\n",
            ..Options::default()
        },
    )
    .await;
    // 40 on the proxy listener: every slot the proxy side may take, and more queued.
    let _flood = silent(&gw.proxy, 40).await;
    let health = tokio::time::timeout(
        Duration::from_secs(5),
        client().get(gw.admin_url("/healthz")).send(),
    )
    .await
    .expect("/healthz did not answer during a connection flood on the proxy listener")
    .unwrap();
    assert_eq!(health.status(), 200);
    let metrics = client().get(gw.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);

    // A silent connection on the admin and the forward-auth listeners is cut too.
    let quick = Gateway::start_with(
        &up,
        Options {
            extra: "limits:\n  header_read_timeout: 1s\nforward_auth:\n  listen: 127.0.0.1:0\n",
            ..Options::default()
        },
    )
    .await;
    let mut admin = TcpStream::connect(&quick.admin).await.unwrap();
    let mut fa = TcpStream::connect(quick.forward_auth.as_deref().unwrap())
        .await
        .unwrap();
    assert!(closed_within(&mut admin, Duration::from_secs(5)).await);
    assert!(closed_within(&mut fa, Duration::from_secs(5)).await);
}

/// What the closing upstream received: the method of every request head.
type Received = Arc<Mutex<Vec<String>>>;

/// An upstream like a Node.js or gunicorn server with a short keep-alive timeout: it
/// answers one request per connection without `Connection: close`, then closes the
/// connection 60 ms later, whatever it received meanwhile (which it counts, unanswered).
async fn closing_upstream() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Received::default();
    let r = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let r = Arc::clone(&r);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // The first request: its head, and its body by Content-Length.
                let body_end = loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = head_end(&buf) {
                        break end + content_length(&buf[..end]);
                    }
                };
                while buf.len() < body_end {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                r.lock().unwrap().push(method(&buf));
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                // Whatever comes in the next 60 ms is received, never answered.
                let mut rest = buf.split_off(body_end);
                let _ = tokio::time::timeout(Duration::from_millis(60), async {
                    loop {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => rest.extend_from_slice(&chunk[..n]),
                        }
                    }
                })
                .await;
                if head_end(&rest).is_some() {
                    r.lock().unwrap().push(method(&rest));
                }
            });
        }
    });
    (url, received)
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// The request's method, or `unidentified` when its head lacks keygate's identity headers
/// (a request built anew for a resend must carry them as the first one did).
fn method(buf: &[u8]) -> String {
    let text = String::from_utf8_lossy(buf).to_ascii_lowercase();
    let head = &text[..head_end(text.as_bytes()).unwrap_or(text.len())];
    if !head.contains("\r\nx-keygate-key-id: ") || !head.contains("\r\nx-forwarded-for: ") {
        return "unidentified".to_owned();
    }
    head.split(' ')
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase()
}

#[tokio::test]
async fn gets_survive_an_upstream_that_closes_kept_connections_and_posts_are_not_resent() {
    let (url, received) = closing_upstream().await;
    let up = Upstream::start().await; // for the key's creation only: the routes go to `url`
    let gw = Gateway::start_with(&up, Options::upstream(&url, "")).await;
    let (_, key) = gw.key_with_scopes(&["items:read", "items:write"]).await;

    // Steady load: 4 keep-alive clients, 25 GETs each, back to back.
    let mut clients = Vec::new();
    for c in 0..4 {
        let target = gw.url(&format!("/v1/items/{c}"));
        let key = key.clone();
        clients.push(tokio::spawn(async move {
            let http = client();
            let mut statuses = Vec::new();
            for _ in 0..25 {
                let resp = http
                    .get(&target)
                    .header("X-API-Key", &key)
                    .header("X-Client-Trace", "t")
                    .send()
                    .await;
                statuses.push(resp.map_or(0, |r| r.status().as_u16()));
            }
            statuses
        }));
    }
    let mut statuses = Vec::new();
    for c in clients {
        statuses.extend(c.await.unwrap());
    }
    let bad: Vec<u16> = statuses.iter().copied().filter(|&s| s != 200).collect();
    assert!(bad.is_empty(), "GETs not answered 200: {bad:?}");
    let unidentified = received
        .lock()
        .unwrap()
        .iter()
        .filter(|m| *m == "unidentified")
        .count();
    assert_eq!(
        unidentified, 0,
        "requests reached the upstream without identity headers"
    );
    let gets = received
        .lock()
        .unwrap()
        .iter()
        .filter(|m| *m == "GET")
        .count();
    assert!(gets >= 100, "the upstream saw {gets} GETs for 100 answered");

    // A POST right after a GET on one client connection goes out on the kept upstream
    // connection, which the upstream then closes unanswered: the POST is not resent.
    let mut s = TcpStream::connect(&gw.proxy).await.unwrap();
    let get = format!("GET /v1/items/x HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n\r\n");
    s.write_all(get.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let posts_before = received
        .lock()
        .unwrap()
        .iter()
        .filter(|m| *m == "POST")
        .count();
    let post = format!(
        "POST /v1/upload HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody"
    );
    s.write_all(post.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer))
        .await
        .expect("no answer to the POST")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    // 502 when the upstream dropped it; 200 only if it had closed before the POST left.
    assert!(
        answer.starts_with("HTTP/1.1 502") || answer.starts_with("HTTP/1.1 200"),
        "{answer:?}"
    );
    // A resend would have gone out (and been counted by the upstream, before it answered)
    // before keygate's answer: counting now misses none.
    let posts = received
        .lock()
        .unwrap()
        .iter()
        .filter(|m| *m == "POST")
        .count()
        - posts_before;
    assert_eq!(posts, 1, "the POST reached the upstream {posts} times");
}
