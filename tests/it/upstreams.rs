//! Upstream services: HTTPS with a CA made here (verified, refused with the wrong CA, mTLS),
//! two services chosen by route with `strip_prefix`, failover across three instances with
//! one killed and restarted, a fast 502 when every target is down, what the access line and
//! the warnings say about an outage, and the forwarding headers on every protocol.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::support::{Gateway, Options, Upstream, client, error_code};

/// Public routes to three services: enough to test where requests go, not who may send them.
const POLICY: &str = r"version: 1
routes:
  - name: billing
    path: /billing/{*rest}
    public: true
    upstream: billing
    strip_prefix: /billing
  - name: inventory
    path: /inventory/{*rest}
    public: true
    upstream: inventory
    strip_prefix: /inventory
  - name: rest
    path: /{*rest}
    public: true
default: deny
";

/// A certificate authority made for one test.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf certificate for `names`, signed by this CA: (cert PEM, key PEM).
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A TLS acceptor for `leaf`; with `clients`, a client certificate from that CA is required.
fn acceptor(leaf: &(String, String), clients: Option<&Ca>) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![CertificateDer::from_pem_slice(leaf.0.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(leaf.1.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let config = match clients {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
                .unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    }
    .with_single_cert(chain, key)
    .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// One instance of a service: answers `{"instance", "path"}` and `/healthz`; `kill` closes
/// its listener and every connection, `restart` listens on the same port again.
struct Instance {
    name: &'static str,
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    hits: Arc<AtomicUsize>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Instance {
    async fn start(name: &'static str, tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let task = Some(tokio::spawn(serve(
            listener,
            name,
            tls.clone(),
            Arc::clone(&hits),
        )));
        Self {
            name,
            addr,
            tls,
            hits,
            task,
        }
    }

    fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    async fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.task = Some(tokio::spawn(serve(
            listener,
            self.name,
            self.tls.clone(),
            Arc::clone(&self.hits),
        )));
    }
}

/// Accepts until aborted; the connections live in a `JoinSet` that dies with it.
async fn serve(
    listener: TcpListener,
    name: &'static str,
    tls: Option<TlsAcceptor>,
    hits: Arc<AtomicUsize>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let hits = Arc::clone(&hits);
        let tls = tls.clone();
        conns.spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let hits = Arc::clone(&hits);
                async move {
                    let path = req
                        .uri()
                        .path_and_query()
                        .map_or_else(String::new, ToString::to_string);
                    if path != "/healthz" {
                        hits.fetch_add(1, Ordering::Relaxed);
                    }
                    if path.starts_with("/slow") {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    let host = req
                        .headers()
                        .get("host")
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let body = serde_json::json!({"instance": name, "path": path, "host": host});
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                        body.to_string(),
                    ))))
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match tls {
                None => {
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                }
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(stream).await {
                        let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                    }
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
}

/// A gateway in front of `default` with `upstreams` (YAML lines under `upstreams:`) and
/// the policy above; `files` are written beside the config.
async fn gateway(
    default: &Upstream,
    upstreams: &str,
    files: Vec<(&'static str, String)>,
    token: Option<&'static str>,
) -> Gateway {
    Gateway::start_with(
        default,
        Options {
            policy: POLICY,
            extra: &format!("upstreams:\n{upstreams}"),
            files,
            admin_token: token,
            ..Options::default()
        },
    )
    .await
}

/// Every upstream-failure access line has these.
fn access_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "keygate::access")
        .collect()
}

async fn get_json(url: &str) -> (u16, Value) {
    let resp = client().get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Waits (at most `within`) until `/v1/upstreams` shows `target` of `upstream` `up` or not.
async fn until_target(gw: &Gateway, upstream: &str, target: &str, up: bool, within: Duration) {
    let started = Instant::now();
    loop {
        let v: Value = client()
            .get(gw.admin_url("/v1/upstreams"))
            .bearer_auth("admin-token")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let state = v["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == upstream)
            .and_then(|u| {
                u["targets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["url"] == target)
                    .map(|t| t["up"].as_bool().unwrap())
            });
        if state == Some(up) {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{upstream} {target} never became up={up}: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `keygate_upstream_up{upstream,target}` as scraped now.
async fn up_gauge(gw: &Gateway, upstream: &str, target: &str) -> Option<f64> {
    let text = client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let want = format!("keygate_upstream_up{{upstream=\"{upstream}\",target=\"{target}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&want))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn https_upstream_is_verified_with_its_ca_and_a_wrong_ca_is_a_502_with_the_reason_logged() {
    let ca = Ca::new("internal CA");
    let billing =
        Instance::start("billing-1", Some(acceptor(&ca.leaf(&["127.0.0.1"]), None))).await;
    let default = Upstream::start().await;
    let gw = gateway(
        &default,
        &format!(
            "  billing:\n    targets: [{}]\n    tls:\n      ca: ca.pem\n  inventory:\n    url: {}\n",
            billing.url(),
            default.url()
        ),
        vec![("ca.pem", ca.pem.clone())],
        None,
    )
    .await;
    let (status, body) = get_json(&gw.url("/billing/invoices/7")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["instance"], "billing-1");
    assert_eq!(body["path"], "/invoices/7");

    // The same upstream trusted with another CA: refused, and the client is told nothing of why.
    let other = Ca::new("someone else");
    let wrong = gateway(
        &default,
        &format!(
            "  billing:\n    targets: [{}]\n    tls:\n      ca: ca.pem\n  inventory:\n    url: {}\n",
            billing.url(),
            default.url()
        ),
        vec![("ca.pem", other.pem.clone())],
        None,
    )
    .await;
    let resp = client()
        .get(wrong.url("/billing/invoices/7"))
        .send()
        .await
        .unwrap();
    let (status, code, body) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (502, "upstream_unavailable"));
    let text = body.to_string().to_lowercase();
    assert!(
        !text.contains("certificate") && !text.contains("issuer") && !text.contains("tls"),
        "the client's answer must not carry the TLS reason: {body}"
    );
    let lines = wrong
        .stderr_until(1, |l| l.contains("\"upstream_error\":\"tls\""))
        .await;
    let line = access_lines(&lines)
        .into_iter()
        .find(|v| v["upstream_error"] == "tls")
        .unwrap();
    assert_eq!(line["upstream"], "billing");
    assert_eq!(line["upstream_target"], billing.url());
    let reason = line["upstream_reason"].as_str().unwrap();
    assert!(
        reason.contains("TLS handshake") && reason.contains("UnknownIssuer"),
        "{reason}"
    );
}

#[tokio::test]
async fn mtls_required_by_the_upstream_is_satisfied_by_the_client_certificate() {
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let leaf = server_ca.leaf(&["billing.internal"]);
    let billing = Instance::start("billing-mtls", Some(acceptor(&leaf, Some(&client_ca)))).await;
    let default = Upstream::start().await;
    let (cert, key) = client_ca.leaf(&["keygate.internal"]);
    let section = |auth: &str| {
        format!(
            "  billing:\n    targets: [{}]\n    tls:\n      ca: ca.pem\n      server_name: billing.internal\n{auth}  inventory:\n    url: {}\n",
            billing.url(),
            default.url()
        )
    };
    let files = || {
        vec![
            ("ca.pem", server_ca.pem.clone()),
            ("kg.pem", cert.clone()),
            ("kg.key", key.clone()),
        ]
    };
    let with_cert = gateway(
        &default,
        &section("      client_cert: kg.pem\n      client_key: kg.key\n"),
        files(),
        None,
    )
    .await;
    let (status, body) = get_json(&with_cert.url("/billing/x")).await;
    assert_eq!(
        (status, &body["instance"]),
        (200, &Value::from("billing-mtls"))
    );

    // The same without a client certificate: the upstream refuses the handshake.
    let without = gateway(&default, &section(""), files(), None).await;
    let resp = client()
        .get(without.url("/billing/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(
        billing.hits(),
        1,
        "only the request with a certificate arrived"
    );
}

#[tokio::test]
async fn routes_choose_their_service_and_strip_their_prefix() {
    let billing = Instance::start("billing", None).await;
    let inventory = Instance::start("inventory", None).await;
    let default = Upstream::start().await;
    let gw = gateway(
        &default,
        &format!(
            "  billing:\n    url: {}\n  inventory:\n    targets: [{}]\n",
            billing.url(),
            inventory.url()
        ),
        Vec::new(),
        None,
    )
    .await;
    let (_, b) = get_json(&gw.url("/billing/invoices/7?year=2026")).await;
    assert_eq!(b["instance"], "billing");
    assert_eq!(b["path"], "/invoices/7?year=2026");
    assert_eq!(b["host"], billing.addr.to_string(), "Host is the target's");
    let (_, i) = get_json(&gw.url("/inventory/")).await;
    assert_eq!(
        (&i["instance"], &i["path"]),
        (&Value::from("inventory"), &Value::from("/"))
    );
    let (status, _) = get_json(&gw.url("/other/thing")).await;
    assert_eq!(status, 200);
    assert_eq!(
        default.last().target,
        "/other/thing",
        "no route upstream: the default"
    );
    assert_eq!((billing.hits(), inventory.hits()), (1, 1));

    let lines = gw
        .stderr_until(3, |l| l.contains("\"target\":\"keygate::access\""))
        .await;
    let access = access_lines(&lines);
    let mut upstreams: Vec<(&str, &str)> = access
        .iter()
        .map(|v| {
            (
                v["upstream"].as_str().unwrap(),
                v["upstream_target"].as_str().unwrap(),
            )
        })
        .collect();
    upstreams.sort_unstable();
    let (b, i, d) = (billing.url(), inventory.url(), default.url());
    assert_eq!(
        upstreams,
        [
            ("billing", b.as_str()),
            ("default", d.as_str()),
            ("inventory", i.as_str())
        ]
    );
}

#[tokio::test]
async fn a_killed_instance_costs_no_request_is_ejected_and_comes_back_after_restart() {
    let mut a = Instance::start("a", None).await;
    let mut b = Instance::start("b", None).await;
    let mut c = Instance::start("c", None).await;
    let default = Upstream::start().await;
    let gw = gateway(
        &default,
        &format!(
            "  billing:\n    url: {}\n  inventory:\n    targets: [{}, {}, {}]\n    health:\n      path: /healthz\n      interval: 200ms\n      unhealthy_after: 2\n      healthy_after: 2\n",
            default.url(),
            a.url(),
            b.url(),
            c.url()
        ),
        Vec::new(),
        Some("admin-token"),
    )
    .await;
    let errors = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..6 {
        let (url, errors, done, stop) = (
            gw.url("/inventory/items"),
            Arc::clone(&errors),
            Arc::clone(&done),
            Arc::clone(&stop),
        );
        load.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => {
                        eprintln!("load: status {}", r.status());
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("load: {e}");
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let wait_for = |n: usize| {
        let done = Arc::clone(&done);
        async move {
            let started = Instant::now();
            while done.load(Ordering::Relaxed) < n {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "the load stalled"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_for(200).await;
    assert!(b.hits() > 0, "b took part before it was killed");
    b.kill().await;
    let b_url = b.url();
    until_target(&gw, "inventory", &b_url, false, Duration::from_secs(10)).await;
    assert_eq!(up_gauge(&gw, "inventory", &b_url).await, Some(0.0));
    let at_kill = done.load(Ordering::Relaxed);
    wait_for(at_kill + 200).await;

    b.restart().await;
    until_target(&gw, "inventory", &b_url, true, Duration::from_secs(10)).await;
    assert_eq!(up_gauge(&gw, "inventory", &b_url).await, Some(1.0));
    let hits_back = b.hits();
    wait_for(done.load(Ordering::Relaxed) + 200).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    if errors.load(Ordering::Relaxed) > 0 {
        let failed: Vec<String> = gw
            .stderr_until(0, |_| true)
            .await
            .into_iter()
            .filter(|l| l.contains("502") || l.contains("WARN") || l.contains("upstream_error"))
            .collect();
        panic!("a request failed; the gateway said: {failed:#?}");
    }
    assert!(b.hits() > hits_back, "b serves again after its restart");
    assert!(a.hits() > 0 && c.hits() > 0);

    let lines = gw.stderr_until(1, |l| l.contains("back in rotation")).await;
    let down: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("taken out of rotation"))
        .collect();
    assert_eq!(down.len(), 1, "one warning per outage: {down:#?}");
    assert!(down[0].contains(&b_url), "{}", down[0]);
    let v: Value = client()
        .get(gw.admin_url("/v1/upstreams"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["error"]["code"], "unauthenticated",
        "/v1/upstreams needs admin credentials: {v}"
    );
    a.kill().await;
    c.kill().await;
}

#[tokio::test]
async fn when_every_target_is_down_the_answer_is_an_immediate_502() {
    // Two ports nobody listens on: both bound at once, then freed, so the system cannot
    // hand out the same port twice (the test would then see one target, counted twice).
    let (l1, l2) = (
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    let (one, two) = (
        format!("http://{}", l1.local_addr().unwrap()),
        format!("http://{}", l2.local_addr().unwrap()),
    );
    drop((l1, l2));
    let default = Upstream::start().await;
    let gw = gateway(
        &default,
        &format!(
            "  billing:\n    url: {}\n  inventory:\n    targets: [{one}, {two}]\n    connect_timeout: 5s\n    health:\n      unhealthy_after: 1\n",
            default.url()
        ),
        Vec::new(),
        Some("admin-token"),
    )
    .await;
    let resp = client().get(gw.url("/inventory/a")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    until_target(&gw, "inventory", &one, false, Duration::from_secs(5)).await;
    until_target(&gw, "inventory", &two, false, Duration::from_secs(5)).await;
    let started = Instant::now();
    let resp = client().get(gw.url("/inventory/b")).send().await.unwrap();
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (502, "upstream_unavailable"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let lines = gw
        .stderr_until(1, |l| {
            l.contains("\"upstream_error\":\"no healthy target\"")
        })
        .await;
    let access = access_lines(&lines);
    let mut classes: Vec<&str> = access
        .iter()
        .map(|v| v["upstream_error"].as_str().unwrap())
        .collect();
    classes.sort_unstable();
    assert_eq!(classes, ["connect refused", "no healthy target"]);
    // Nothing was tried the second time: each target counted its one refusal only.
    let text = client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for t in [&one, &two] {
        let want = format!(
            "keygate_upstream_requests_total{{upstream=\"inventory\",target=\"{t}\",result=\"connect refused\"}} 1"
        );
        assert!(text.contains(&want), "{want} in\n{text}");
    }
}

/// Issue 17: a down upstream is visible: the cause class on each 502's access line, one
/// warning per outage, and `/readyz`, which does not check upstreams, stays ready.
#[tokio::test]
async fn a_down_upstream_is_visible_in_access_lines_and_warned_about_once() {
    let unused = Upstream::start().await;
    let mut up = Instance::start("api", None).await;
    let gw = Gateway::start_with(
        &unused,
        Options {
            admin_token: Some("admin-token"),
            ..Options::upstream(&up.url(), "  timeout: 300ms\n")
        },
    )
    .await;
    let (_, key) = gw.key_with_scopes(&["items:read"]).await;
    // Timeout: the upstream takes 5 s on /slow.
    let resp = client()
        .get(gw.url("/slow"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    up.kill().await;
    for _ in 0..6 {
        let resp = client()
            .get(gw.url("/v1/items/1"))
            .header("X-API-Key", &key)
            .header("Connection", "close")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 502);
    }
    let lines = gw
        .stderr_until(7, |l| l.contains("\"target\":\"keygate::access\""))
        .await;
    let access = access_lines(&lines);
    // Lines from several threads may interleave: count them, do not order them.
    let count = |class: &str| {
        access
            .iter()
            .filter(|v| v["upstream_error"] == class)
            .count()
    };
    assert_eq!(access.len(), 7);
    assert_eq!(count("timeout"), 1);
    assert_eq!(
        count("connect refused"),
        2,
        "taken out at the third failure (a timeout and two refusals)"
    );
    assert_eq!(count("no healthy target"), 4);
    let down = lines
        .iter()
        .filter(|l| l.contains("taken out of rotation"))
        .count();
    assert_eq!(down, 1, "one warning for the outage, not one per request");
    let (status, ready) = get_json(&gw.admin_url("/readyz")).await;
    assert_eq!(status, 200, "/readyz does not check upstreams: {ready}");

    // Without an active check, the target is tried again after a back-off and returns.
    up.restart().await;
    until_target(&gw, "default", &up.url(), true, Duration::from_secs(10)).await;
    let resp = client()
        .get(gw.url("/v1/items/1"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn forwarding_headers_are_dropped_or_overwritten_on_h1_h2c_and_h2_over_tls() {
    let up = Upstream::start().await;
    let pair = crate::tls::self_signed("gateway");
    let plain = Gateway::start(&up).await;
    let tls = crate::tls::start(&up, &pair).await;
    let (_, key) = plain.key_with_scopes(&["items:read"]).await;
    let (_, tls_key) = tls.key_with_scopes(&["items:read"]).await;
    let spoofed = [
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Port", "6666"),
        ("X-Forwarded-Prefix", "/evil"),
        ("Forwarded", "for=6.6.6.6;proto=https;host=evil.example"),
        ("X-Real-IP", "6.6.6.6"),
    ];
    let h2c = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let h2_tls = crate::tls::client(&[&pair], false);
    let cases = [
        (
            "HTTP/1.1",
            client(),
            plain.url("/v1/items/1"),
            &key,
            "http",
            "HTTP/1.1",
            plain.proxy.clone(),
        ),
        (
            "h2c",
            h2c,
            plain.url("/v1/items/1"),
            &key,
            "http",
            "HTTP/2.0",
            plain.proxy.clone(),
        ),
        (
            "h2 over TLS",
            h2_tls,
            format!("https://{}/v1/items/1", tls.proxy),
            &tls_key,
            "https",
            "HTTP/2.0",
            tls.proxy.clone(),
        ),
    ];
    for (proto, c, url, key, scheme, version, host) in cases {
        let mut req = c.get(&url).header("X-API-Key", key.as_str());
        for (name, value) in spoofed {
            req = req.header(name, value);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "{proto}");
        assert_eq!(format!("{:?}", resp.version()), version, "{proto}");
        let seen = up.last();
        assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"), "{proto}");
        assert_eq!(seen.header("x-forwarded-proto"), Some(scheme), "{proto}");
        assert_eq!(
            seen.header("x-forwarded-host"),
            Some(host.as_str()),
            "{proto}"
        );
        for dropped in [
            "x-forwarded-port",
            "x-forwarded-prefix",
            "forwarded",
            "x-real-ip",
        ] {
            assert_eq!(seen.header(dropped), None, "{proto}: {dropped}");
        }
    }

    // From a trusted proxy they are kept (and the address chain appended to).
    let trusted = Gateway::start_with(
        &up,
        Options {
            extra: "trusted_proxies: [127.0.0.1]\n",
            ..Options::default()
        },
    )
    .await;
    let (_, key) = trusted.key_with_scopes(&["items:read"]).await;
    let mut req = client()
        .get(trusted.url("/v1/items/1"))
        .header("X-API-Key", key);
    for (name, value) in spoofed {
        req = req.header(name, value);
    }
    assert_eq!(req.send().await.unwrap().status(), 200);
    let seen = up.last();
    assert_eq!(seen.header("x-forwarded-for"), Some("6.6.6.6, 127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("evil.example"));
    assert_eq!(seen.header("x-forwarded-port"), Some("6666"));
    assert_eq!(seen.header("x-forwarded-prefix"), Some("/evil"));
    assert_eq!(seen.header("x-real-ip"), Some("6.6.6.6"));
}

#[tokio::test]
async fn check_accepts_the_two_service_example() {
    let config =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/two-services.yaml");
    let out = crate::support::cli(&config, &["check"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("3 upstreams, 4 targets"), "{stdout}");
}

/// Writes a config with `upstreams` and a policy with `routes`, and runs `keygate check`.
async fn check(upstreams: &str, routes: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.yaml"),
        format!("version: 1\nroutes:\n{routes}default: deny\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("ca.pem"), Ca::new("check").pem).unwrap();
    let config = dir.path().join("keygate.yaml");
    std::fs::write(
        &config,
        format!(
            "upstream:\n  url: http://127.0.0.1:9000\nupstreams:\n{upstreams}policy: policy.yaml\n"
        ),
    )
    .unwrap();
    let out = crate::support::cli(&config, &["check"]).await;
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn check_names_an_unknown_upstream_with_a_did_you_mean_and_a_strip_prefix_off_the_path() {
    let (ok, _, err) = check(
        "  billing:\n    url: http://127.0.0.1:9001\n",
        "  - name: a\n    path: /billing/{*rest}\n    public: true\n    upstream: biling\n  - name: b\n    path: /inventory/{*rest}\n    public: true\n    upstream: billing\n    strip_prefix: /inv\n",
    )
    .await;
    assert!(!ok);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].contains("policy.yaml:6:15: "), "{err}");
    assert!(
        lines[0].contains("upstream `biling` is not declared"),
        "{err}"
    );
    assert!(lines[0].ends_with("(did you mean `billing`?)"), "{err}");
    assert!(lines[1].contains("policy.yaml:11:19: "), "{err}");
    assert!(
        lines[1].contains(
            "strip_prefix `/inv` is not a prefix of the route's path `/inventory/{*rest}`"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn check_warns_about_insecure_skip_verify_and_refuses_tls_without_https() {
    let (ok, out, err) = check(
        "  billing:\n    url: https://127.0.0.1:9001\n    tls:\n      insecure_skip_verify: true\n",
        "  - name: a\n    path: /a\n    public: true\n    upstream: billing\n",
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.starts_with("ok: "), "{out}");
    assert!(
        err.contains(
            "keygate.yaml:7:29: warning: upstream `billing`: certificate verification is off"
        ),
        "{err}"
    );

    let (ok, _, err) = check(
        "  billing:\n    url: http://127.0.0.1:9001\n    tls:\n      ca: ca.pem\n      client_cert: kg.pem\n",
        "  - name: a\n    path: /a\n    public: true\n",
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains(
            "keygate.yaml:7:7: `tls` applies to https:// targets, and upstream `billing` has none"
        ),
        "{err}"
    );
    assert!(
        err.contains("keygate.yaml:8:20: `client_cert` needs `client_key`"),
        "{err}"
    );
}

/// A client that breaks off its upload fails its own request, not the target: with
/// `unhealthy_after: 1`, the target stays in rotation.
#[tokio::test]
async fn a_client_breaking_off_its_upload_does_not_count_against_the_target() {
    use tokio::io::AsyncWriteExt;
    let up = Upstream::start().await;
    let gw = Gateway::start_with(
        &up,
        Options {
            admin_token: Some("admin-token"),
            ..Options::upstream(&up.url(), "  health:\n    unhealthy_after: 1\n")
        },
    )
    .await;
    let (_, key) = gw.key_with_scopes(&["items:write"]).await;
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(&gw.proxy).await.unwrap();
        let head = format!(
            "POST /v1/upload HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Length: 100000\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&[b'x'; 1000]).await.unwrap();
        s.flush().await.unwrap();
        drop(s);
    }
    // Each broken upload reached the upstream (which records it when its body ends).
    let started = Instant::now();
    while up.count() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{} uploads arrived",
            up.count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resp = client().get(gw.url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the target is still in rotation");
    let lines = gw
        .stderr_until(1, |l| l.contains("\"route\":\"health\""))
        .await;
    assert!(
        !lines.iter().any(|l| l.contains("taken out of rotation")),
        "{lines:#?}"
    );
    until_target(&gw, "default", &up.url(), true, Duration::from_secs(1)).await;
    let resp = client().get(gw.url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}
