//! Raw-byte attacks on the proxy listener: smuggling, malformed framing and headers,
//! junk keys, slow clients. The recording upstream proves nothing refused was forwarded.

use std::fmt::Write as _;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Gateway, Options, Upstream, keyed_get, raw};

async fn setup() -> (Upstream, Gateway, String) {
    let up = Upstream::start().await;
    let gw = Gateway::start_with(
        &up,
        Options {
            extra: "limits:\n  header_read_timeout: 1s\n  max_body_bytes: 1048576\n",
            ..Options::default()
        },
    )
    .await;
    let (_, key) = gw.key_with_scopes(&["items:read", "items:write"]).await;
    (up, gw, key)
}

fn status_of(answer: &str) -> u16 {
    answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// How many HTTP responses a byte stream holds (status lines at line starts).
fn responses(answer: &str) -> usize {
    answer.matches("HTTP/1.1 ").count()
}

#[tokio::test]
async fn smuggling_framing_is_refused_before_anything_is_forwarded() {
    let (up, gw, key) = setup().await;
    let smuggled = "GET /v1/items/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    // CL together with TE, in either order, also after a good request on the same
    // connection: refused with 400 before anything is forwarded, and the request hidden
    // after the body never runs.
    for (name, request) in [
        (
            "CL.TE",
            format!(
                "POST /v1/upload HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE.CL",
            format!(
                "POST /v1/upload HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n{smuggled}"
            ),
        ),
    ] {
        let answer = raw(&gw.proxy, request.as_bytes()).await;
        assert_eq!(status_of(&answer), 400, "{name}: {answer:?}");
        assert_eq!(responses(&answer), 1, "{name}: {answer:?}");
    }
    assert_eq!(
        up.count(),
        0,
        "nothing of a CL+TE request may be forwarded: {:?}",
        up.seen()
    );
    // The same after a good request on one connection: the guard follows the first
    // request's body to find the second head.
    let pipelined = format!(
        "POST /v1/upload HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Length: 4\r\n\r\nbody\
         POST /v1/upload HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
    );
    let answer = raw(&gw.proxy, pipelined.as_bytes()).await;
    assert_eq!(responses(&answer), 2, "{answer:?}");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer[12..].contains("HTTP/1.1 400"), "{answer:?}");
    assert_eq!(
        up.count(),
        1,
        "only the good request was forwarded: {:?}",
        up.seen()
    );
    let forwarded = up.count();
    let cases: Vec<(&str, String)> = vec![
        (
            "duplicate CL",
            format!(
                "POST /v1/upload HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nbody{smuggled}"
            ),
        ),
        (
            "malformed CL",
            format!(
                "POST /v1/upload HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Length: 4x\r\n\r\nbody"
            ),
        ),
        (
            "signed CL",
            format!(
                "POST /v1/upload HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Length: +4\r\n\r\nbody"
            ),
        ),
        (
            "unknown TE",
            format!(
                "POST /v1/upload HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nTransfer-Encoding: xchunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n"
            ),
        ),
        (
            "TE not last chunked",
            format!(
                "POST /v1/upload HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nTransfer-Encoding: chunked, gzip\r\n\r\n4\r\nbody\r\n0\r\n\r\n"
            ),
        ),
        (
            "TE on HTTP/1.0",
            format!(
                "POST /v1/upload HTTP/1.0\r\nHost: x\r\nX-API-Key: {key}\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n"
            ),
        ),
        (
            "bare CR",
            format!("GET /v1/items/1 HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nX-A: a\rb\r\n\r\n"),
        ),
        (
            "obs-fold",
            format!(
                "GET /v1/items/1 HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nX-A: a\r\n b\r\n\r\n"
            ),
        ),
        (
            "NUL in header",
            format!("GET /v1/items/1 HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nX-A: a\0b\r\n\r\n"),
        ),
        (
            "space before colon",
            format!("GET /v1/items/1 HTTP/1.1\r\nHost: x\r\nX-API-Key : {key}\r\n\r\n"),
        ),
    ];
    for (name, request) in cases {
        let answer = raw(&gw.proxy, request.as_bytes()).await;
        assert_eq!(status_of(&answer), 400, "{name}: {answer:?}");
        assert_eq!(
            responses(&answer),
            1,
            "{name}: a second response means a smuggled request: {answer:?}"
        );
    }
    assert_eq!(
        up.count(),
        forwarded,
        "nothing may be forwarded: {:?}",
        up.seen()
    );
}

#[tokio::test]
async fn the_body_of_a_refused_request_is_never_read_as_the_next_request() {
    let (up, gw, _key) = setup().await;
    // No key: refused at once; its body holds a complete request that must not run.
    let body = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let request = format!(
        "POST /v1/upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = raw(&gw.proxy, request.as_bytes()).await;
    assert_eq!(status_of(&answer), 401, "{answer}");
    assert_eq!(responses(&answer), 1, "{answer}");
    assert_eq!(
        up.count(),
        0,
        "the smuggled /health must not reach the upstream"
    );
}

#[tokio::test]
async fn expect_100_continue_without_a_valid_key_gets_the_final_401() {
    let (up, gw, _key) = setup().await;
    let mut s = tokio::net::TcpStream::connect(&gw.proxy).await.unwrap();
    s.write_all(b"POST /v1/upload HTTP/1.1\r\nHost: x\r\nX-API-Key: kg_nope\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(
        answer.starts_with("HTTP/1.1 401"),
        "expected the final 401, not 100 Continue: {answer}"
    );
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn junk_oversized_and_misplaced_keys_get_401_or_431_and_never_crash() {
    let (up, gw, key) = setup().await;
    let long = "k".repeat(8000);
    for (name, request) in [
        ("binary junk", b"GET /v1/items/1 HTTP/1.1\r\nHost: x\r\nX-API-Key: \xff\xfe\x80junk\r\nConnection: close\r\n\r\n".to_vec()),
        ("long key", format!("GET /v1/items/1 HTTP/1.1\r\nHost: x\r\nX-API-Key: kg_{long}\r\nConnection: close\r\n\r\n").into_bytes()),
        ("cookie only", format!("GET /v1/items/1 HTTP/1.1\r\nHost: x\r\nCookie: X-API-Key={key}\r\nConnection: close\r\n\r\n").into_bytes()),
        ("authorization only", format!("GET /v1/items/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n").into_bytes()),
    ] {
        let answer = raw(&gw.proxy, &request).await;
        assert_eq!(status_of(&answer), 401, "{name}: {answer}");
        assert!(answer.contains("_api_key"), "{name}: {answer}");
    }
    let huge = "a".repeat(70 * 1024);
    let answer = raw(
        &gw.proxy,
        format!("GET /v1/items/1 HTTP/1.1\r\nHost: x\r\nX-API-Key: {huge}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&answer), 431, "{answer}");
    let answer = raw(&gw.proxy, keyed_get(&gw, "/v1/items/1", &key).as_bytes()).await;
    assert_eq!(status_of(&answer), 200, "still serving: {answer}");
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let (up, gw, key) = setup().await;
    // Declared too large: refused before reading.
    let answer = raw(
        &gw.proxy,
        format!("POST /v1/upload HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Length: 2000000\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&answer), 413, "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert_eq!(up.count(), 0);
    // Chunked past the limit: cut off while streaming.
    let chunk = "a".repeat(64 * 1024);
    let mut request = format!(
        "POST /v1/upload HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for _ in 0..20 {
        let _ = write!(request, "{:x}\r\n{chunk}\r\n", chunk.len());
    }
    request.push_str("0\r\n\r\n");
    let answer = raw(&gw.proxy, request.as_bytes()).await;
    assert_eq!(status_of(&answer), 413, "{answer}");
    assert!(
        up.seen().iter().all(|s| s.body_bytes <= 1_048_576),
        "the upstream never gets more than the limit"
    );
}

#[tokio::test]
async fn a_slow_client_is_cut_off() {
    let (_up, gw, key) = setup().await;
    let mut s = tokio::net::TcpStream::connect(&gw.proxy).await.unwrap();
    s.write_all(format!("GET /v1/items/1 HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n").as_bytes())
        .await
        .unwrap();
    // The head is never finished; header_read_timeout is 1 s in this config.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was not closed within 5 s");
}

#[tokio::test]
async fn forwarding_headers_are_believed_only_from_trusted_proxies() {
    let up = Upstream::start().await;
    let send = |gw: &Gateway, key: &str, xff: &str| {
        let req = format!(
            "GET /v1/items/1 HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nX-Forwarded-For: {xff}\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n"
        );
        let addr = gw.proxy.clone();
        async move { raw(&addr, req.as_bytes()).await }
    };
    // Nobody is trusted by default: the client's chain and scheme are replaced.
    let plain = Gateway::start(&up).await;
    let (_, key) = plain.key_with_scopes(&["items:read"]).await;
    assert_eq!(status_of(&send(&plain, &key, "6.6.6.6").await), 200);
    assert_eq!(up.last().header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(up.last().header("x-forwarded-proto"), Some("http"));

    // Behind a trusted load balancer (loopback here), the chain is kept and extended.
    let behind = Gateway::start_with(
        &up,
        Options {
            extra: "trusted_proxies: [127.0.0.0/8]\n",
            ..Options::default()
        },
    )
    .await;
    let (_, key) = behind.key_with_scopes(&["items:read"]).await;
    assert_eq!(
        status_of(&send(&behind, &key, "203.0.113.7, 10.0.0.2").await),
        200
    );
    assert_eq!(
        up.last().header("x-forwarded-for"),
        Some("203.0.113.7, 10.0.0.2, 127.0.0.1")
    );
    assert_eq!(up.last().header("x-forwarded-proto"), Some("https"));
    // A chain that is not a list of addresses is not believed even from a trusted peer.
    assert_eq!(
        status_of(&send(&behind, &key, "evil\", 1.2.3.4").await),
        200
    );
    assert_eq!(up.last().header("x-forwarded-for"), Some("127.0.0.1"));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let (_up, gw, key) = setup().await;
    let mut s = tokio::net::TcpStream::connect(&gw.proxy).await.unwrap();
    s.write_all(
        format!("GET /v1/items/1 HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 65536];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Kept alive, then idle: closed within the idle timeout (1 s here), not held forever.
    let started = std::time::Instant::now();
    let rest = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut Vec::new())).await;
    assert!(
        rest.is_ok(),
        "an idle keep-alive connection was still open after 5 s"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "closed too early: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    let up = Upstream::start().await;
    let mut gw = Gateway::start_with(&up, Options::upstream(&up.url(), "  timeout: 20s\n")).await;
    let (_, key) = gw.key_with_scopes(&["items:read"]).await;
    // /slow answers after 5 s; SIGTERM arrives while it is in flight.
    let url = gw.url("/slow");
    let in_flight = tokio::spawn(async move {
        crate::support::client()
            .get(url)
            .header("X-API-Key", key)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    let started = std::time::Instant::now();
    while up.count() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the request never reached the upstream"
        );
        tokio::task::yield_now().await;
    }
    gw.signal("TERM");
    assert_eq!(
        in_flight
            .await
            .unwrap()
            .expect("the in-flight request was cut off"),
        200
    );
    assert_eq!(gw.wait().await.code(), Some(0));
}

#[tokio::test]
async fn at_the_connection_cap_new_connections_wait_for_a_free_slot() {
    let up = Upstream::start().await;
    let gw = Gateway::start_with(
        &up,
        Options {
            extra: "limits:\n  max_connections: 2\n",
            ..Options::default()
        },
    )
    .await;
    let (_, key) = gw.key_with_scopes(&["items:read"]).await;
    let hold_a = tokio::net::TcpStream::connect(&gw.proxy).await.unwrap();
    let _hold_b = tokio::net::TcpStream::connect(&gw.proxy).await.unwrap();
    // Both slots are taken (the admin listener shares the cap): a third client is not served yet.
    let mut third = tokio::net::TcpStream::connect(&gw.proxy).await.unwrap();
    third
        .write_all(keyed_get(&gw, "/v1/items/1", &key).as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let early = tokio::time::timeout(Duration::from_millis(500), third.read_to_end(&mut buf)).await;
    assert!(
        early.is_err() && buf.is_empty(),
        "served past the cap: {:?}",
        String::from_utf8_lossy(&buf)
    );
    // A slot frees up: the waiting client is served.
    drop(hold_a);
    tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&buf)), 200);
}
