//! TLS on the proxy listener: ALPN h2 and http/1.1 with certificates made in the test,
//! no plain HTTP on the TLS port, and certificate reload on SIGHUP without dropping
//! established connections.

use crate::support::{Gateway, Options, Upstream, raw};

pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

pub fn self_signed(name: &str) -> Pair {
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

pub fn client(trust: &[&Pair], h1_only: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .tls_info(true)
        .use_rustls_tls();
    for p in trust {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(p.cert_pem.as_bytes()).unwrap());
    }
    if h1_only {
        b = b.http1_only();
    }
    b.build().unwrap()
}

fn served_cert(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .expect("TLS info with the peer certificate")
}

pub async fn start(up: &Upstream, pair: &Pair) -> Gateway {
    Gateway::start_with(
        up,
        Options {
            extra: "tls:\n  cert: cert.pem\n  key: key.pem\n",
            files: vec![
                ("cert.pem", pair.cert_pem.clone()),
                ("key.pem", pair.key_pem.clone()),
            ],
            ..Options::default()
        },
    )
    .await
}

#[tokio::test]
async fn https_with_alpn_h2_and_http11() {
    let up = Upstream::start().await;
    let pair = self_signed("first");
    let gw = start(&up, &pair).await;
    let (id, key) = gw.key_with_scopes(&["items:read"]).await;
    let url = format!("https://{}/v1/items/tls", gw.proxy);

    let resp = client(&[&pair], false)
        .get(&url)
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "ALPN offers h2");
    assert_eq!(resp.status(), 200);
    assert_eq!(served_cert(&resp), pair.der);
    let seen = up.last();
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-keygate-key-id"), Some(id.as_str()));

    let resp = client(&[&pair], true)
        .get(&url)
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);

    // Plain HTTP on the TLS port gets no HTTP answer.
    let answer = raw(
        &gw.proxy,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        !answer.starts_with("HTTP/"),
        "plain HTTP was served on the TLS port: {answer}"
    );
}

#[tokio::test]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    let up = Upstream::start().await;
    let first = self_signed("first");
    let gw = start(&up, &first).await;
    let (_, key) = gw.key_with_scopes(&["items:read"]).await;
    let url = format!("https://{}/v1/items/reload", gw.proxy);
    let second = self_signed("second");

    // One HTTP/2 connection, kept open across the reload.
    let kept = client(&[&first, &second], false);
    let resp = kept
        .get(&url)
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(served_cert(&resp), first.der);

    let dir = gw.config.parent().unwrap();
    std::fs::write(dir.join("cert.pem"), &second.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &second.key_pem).unwrap();
    gw.signal("HUP");

    // New handshakes get the new certificate (the reload is asynchronous: poll briefly).
    let started = std::time::Instant::now();
    loop {
        let fresh = client(&[&first, &second], false);
        let resp = fresh
            .get(&url)
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap();
        if served_cert(&resp) == second.der {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "certificate not reloaded"
        );
    }
    // The established connection still works, on its original session.
    let resp = kept
        .get(&url)
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        served_cert(&resp),
        first.der,
        "the kept connection was not re-established"
    );
}

#[tokio::test]
async fn check_names_a_bad_certificate_file() {
    let up = Upstream::start().await;
    let pair = self_signed("x");
    let gw = start(&up, &pair).await;
    let dir = gw.config.parent().unwrap();
    std::fs::write(dir.join("cert.pem"), "not a certificate").unwrap();
    let out = gw.cli(&["check"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cert.pem"), "{err}");
}
