//! Forward-auth mode: sub-requests in nginx, Traefik and Envoy style, the ambiguity rule,
//! and the shipped nginx example running for real in front of keygate and an upstream.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{Gateway, Options, Upstream, client, error_code};

async fn start(up: &Upstream) -> (Gateway, String) {
    let gw = Gateway::start_with(
        up,
        Options {
            extra: "forward_auth:\n  listen: 127.0.0.1:0\n",
            ..Options::default()
        },
    )
    .await;
    let fa = gw
        .forward_auth
        .clone()
        .expect("the listening line names the forward-auth listener");
    (gw, format!("http://{fa}"))
}

fn identity(resp: &reqwest::Response) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = resp
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-keygate-"))
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn nginx_traefik_and_envoy_style_sub_requests() {
    let up = Upstream::start().await;
    let (gw, fa) = start(&up).await;
    let (id, key) = gw
        .create_key(&[
            "--name",
            "fa",
            "--user",
            "u9",
            "--business",
            "acme",
            "--location",
            "hq",
            "--grant",
            "editor@hq",
            "--metadata",
            "plan=pro",
        ])
        .await;
    let c = client();

    // nginx: X-Original-Method + X-Original-URI.
    let resp = c
        .get(format!("{fa}/_auth"))
        .header("X-API-Key", &key)
        .header("X-Original-Method", "POST")
        .header("X-Original-URI", "/v1/locations/hq/items?x=1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        identity(&resp),
        vec![
            ("x-keygate-business-id".into(), "acme".into()),
            ("x-keygate-key-id".into(), id.clone()),
            ("x-keygate-location".into(), "hq".into()),
            ("x-keygate-meta-plan".into(), "pro".into()),
            ("x-keygate-route".into(), "location-items".into()),
            ("x-keygate-user-id".into(), "u9".into()),
        ]
    );
    assert!(
        resp.bytes().await.unwrap().is_empty(),
        "an allowed answer has an empty body"
    );

    // Traefik: X-Forwarded-Method + X-Forwarded-Uri; a refusal is the proxy's status and JSON.
    let resp = c
        .get(format!("{fa}/"))
        .header("X-API-Key", &key)
        .header("X-Forwarded-Method", "POST")
        .header("X-Forwarded-Uri", "/v1/locations/plant-2/items")
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (403, "location_forbidden"));

    // Envoy: the sub-request is the original request.
    let resp = c.get(format!("{fa}/v1/items/1")).send().await.unwrap();
    assert_eq!(error_code(resp).await.1, "missing_api_key");
    let resp = c
        .post(format!("{fa}/v1/locations/hq/items"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // A client's own metadata header is refused (a name the key lacks would not be
    // overwritten by the fronting proxy), on a keyed and on a public route alike.
    for (path, with_key) in [("/v1/locations/hq/items", true), ("/health", false)] {
        let mut r = c
            .get(format!("{fa}/_auth"))
            .header("X-Original-Method", "POST")
            .header("X-Original-URI", path)
            .header("X-Keygate-Meta-Tier", "enterprise");
        if with_key {
            r = r.header("X-API-Key", &key);
        }
        let (status, code, _) = error_code(r.send().await.unwrap()).await;
        assert_eq!((status, code.as_str()), (400, "bad_request"), "{path}");
    }

    // A public route: 200 with every identity header present, empty.
    let resp = c
        .get(format!("{fa}/health"))
        .header("X-Keygate-User-Id", "spoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ids = identity(&resp);
    assert_eq!(ids.len(), 5, "{ids:?}");
    assert!(
        ids.iter()
            .any(|(k, v)| k == "x-keygate-user-id" && v.is_empty()),
        "{ids:?}"
    );
    assert_eq!(up.count(), 0, "forward-auth never forwards anything itself");
}

#[tokio::test]
async fn disagreeing_original_request_headers_are_ambiguous() {
    let up = Upstream::start().await;
    let (gw, fa) = start(&up).await;
    let (_, key) = gw.key_with_scopes(&["items:read", "reports:read"]).await;
    let c = client();
    let ask = |pairs: Vec<(&'static str, &'static str)>| {
        let mut r = c.get(format!("{fa}/")).header("X-API-Key", &key);
        for (k, v) in pairs {
            r = r.header(k, v);
        }
        r.send()
    };
    // The client adds the pair its proxy does not set, naming another path.
    let resp = ask(vec![
        ("X-Original-Method", "GET"),
        ("X-Original-URI", "/v1/reports"),
        ("X-Forwarded-Method", "GET"),
        ("X-Forwarded-Uri", "/v1/items/1"),
    ])
    .await
    .unwrap();
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (400, "ambiguous_request"));
    // Same path, other method.
    let resp = ask(vec![
        ("X-Original-Method", "GET"),
        ("X-Original-URI", "/v1/items/1"),
        ("X-Forwarded-Method", "DELETE"),
        ("X-Forwarded-Uri", "/v1/items/1"),
    ])
    .await
    .unwrap();
    assert_eq!(error_code(resp).await.1, "ambiguous_request");
    // A repeated header of one pair.
    let resp = ask(vec![
        ("X-Original-URI", "/v1/items/1"),
        ("X-Original-URI", "/v1/reports"),
    ])
    .await
    .unwrap();
    assert_eq!(error_code(resp).await.1, "ambiguous_request");
    // Both pairs naming the same request are fine.
    let resp = ask(vec![
        ("X-Original-Method", "GET"),
        ("X-Original-URI", "/v1/items/1"),
        ("X-Forwarded-Method", "GET"),
        ("X-Forwarded-Uri", "/v1/items/1"),
    ])
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    // The original path is normalised and checked like a proxied one.
    let resp = ask(vec![("X-Original-URI", "/v1/items/..%2Freports")])
        .await
        .unwrap();
    assert_eq!(error_code(resp).await.1, "bad_path");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The shipped `config/examples/nginx.conf`, pointed at this test's ports, run in the foreground.
struct Nginx {
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
    addr: String,
}

impl Nginx {
    async fn start(upstream: std::net::SocketAddr, keygate: &str) -> Self {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| std::path::Path::new(p).exists()).expect(
            "nginx is needed for this test: `make test` installs it as root (apt-get install nginx-light)",
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        let example = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/examples/nginx.conf"
        ))
        .unwrap();
        let conf = example
            .replace("server 127.0.0.1:9000;", &format!("server {upstream};"))
            .replace("server 127.0.0.1:8082;", &format!("server {keygate};"))
            .replace("listen 8080;", &format!("listen 127.0.0.1:{port};"))
            .replace(
                "http {",
                &format!(
                    "http {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;"
                ),
            );
        assert!(
            conf.contains(&format!("listen 127.0.0.1:{port};")),
            "the example's listen line changed"
        );
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log stderr warn;\n{conf}"
        );
        let file = dir.path().join("nginx.conf");
        std::fs::write(&file, conf).unwrap();
        let child = tokio::process::Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let started = Instant::now();
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not start listening"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            _child: child,
            _dir: dir,
            addr,
        }
    }
}

#[tokio::test]
async fn the_shipped_nginx_example_works_in_front_of_keygate() {
    let up = Upstream::start().await;
    let (gw, _) = start(&up).await;
    let nginx = Nginx::start(up_addr(&up), gw.forward_auth.as_deref().unwrap()).await;
    let (id, key) = gw.key_with_scopes(&["items:read"]).await;
    let c = client();
    let url = |p: &str| format!("http://{}{p}", nginx.addr);

    let resp = c
        .get(url("/v1/items/7?q=1"))
        .header("X-API-Key", &key)
        .header("X-Keygate-User-Id", "spoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = up.last();
    assert_eq!(seen.target, "/v1/items/7?q=1");
    assert_eq!(seen.header("x-keygate-key-id"), Some(id.as_str()));
    assert_eq!(
        seen.header("x-keygate-user-id"),
        Some("u1"),
        "keygate's answer overwrites the client's"
    );
    assert_eq!(seen.header("x-keygate-route"), Some("items"));
    assert_eq!(
        seen.header("x-api-key"),
        None,
        "the example never forwards the secret"
    );

    let before = up.count();
    assert_eq!(
        c.get(url("/v1/reports"))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        c.get(url("/v1/items/7")).send().await.unwrap().status(),
        401
    );
    assert_eq!(
        c.get(url("/v1/items/7"))
            .header("X-API-Key", "kg_junk")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        up.count(),
        before,
        "refused requests never reach the upstream"
    );
}

fn up_addr(up: &Upstream) -> std::net::SocketAddr {
    up.url().trim_start_matches("http://").parse().unwrap()
}
