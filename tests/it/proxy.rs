//! The proxy end to end: real keygate binary, real upstream, HTTP on loopback.

use std::time::{Duration, Instant};

use crate::support::{self, Gateway, Options, Upstream, client, error_code, keyed_get, raw};

#[tokio::test]
async fn allowed_request_is_forwarded_with_identity_and_without_the_key() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up).await;
    let (id, key) = gw.key_with_scopes(&["items:read"]).await;
    let resp = client()
        .get(gw.url("/v1/items/42?x=1"))
        .header("X-API-Key", &key)
        .header("X-Keygate-User-Id", "spoofed")
        .header("X-Keygate-Admin", "yes")
        .header("X-Forwarded-For", "6.6.6.6")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = up.last();
    assert_eq!(seen.target, "/v1/items/42?x=1");
    assert_eq!(seen.header("x-keygate-key-id"), Some(id.as_str()));
    assert_eq!(seen.header("x-keygate-user-id"), Some("u1"));
    assert_eq!(seen.header("x-keygate-business-id"), Some("acme"));
    assert_eq!(seen.header("x-keygate-route"), Some("items"));
    assert_eq!(seen.header("x-keygate-location"), None);
    assert_eq!(
        seen.header("x-keygate-admin"),
        None,
        "client-sent X-Keygate-* must be removed"
    );
    assert_eq!(
        seen.header("x-api-key"),
        None,
        "the key must never be forwarded"
    );
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert!(
        !seen.headers.iter().any(|(_, v)| v.contains(&key)),
        "the secret leaked upstream"
    );
}

#[tokio::test]
async fn public_route_needs_no_key_and_forwards_no_identity() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up).await;
    let resp = client()
        .get(gw.url("/health"))
        .header("X-Keygate-Key-Id", "spoofed")
        .header("X-Keygate-Route", "spoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = up.last();
    assert!(
        !seen
            .headers
            .iter()
            .any(|(k, _)| k.starts_with("x-keygate-")),
        "public routes forward no identity headers: {:?}",
        seen.headers
    );
}

#[tokio::test]
async fn missing_invalid_and_ambiguous_keys_are_refused_before_the_upstream() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up).await;
    let (_, key) = gw.key_with_scopes(&["items:read"]).await;

    let resp = client().get(gw.url("/v1/items/1")).send().await.unwrap();
    assert_eq!(
        resp.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("ApiKey header=\"X-API-Key\"")
    );
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (401, "missing_api_key"));

    // Malformed, checksum-broken and unknown-but-well-formed keys: same status, code and body.
    let mut broken = key.clone();
    let last = broken.pop().unwrap();
    broken.push(if last == 'a' { 'b' } else { 'a' });
    let unknown = {
        // A well-formed key from another registry: valid checksum, unknown hash.
        let other = Gateway::start(&up).await;
        other.key_with_scopes(&["items:read"]).await.1
    };
    let mut bodies = Vec::new();
    for bad in ["nonsense", "kg_short", broken.as_str(), unknown.as_str()] {
        let resp = client()
            .get(gw.url("/v1/items/1"))
            .header("X-API-Key", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{bad}");
        bodies.push(resp.text().await.unwrap());
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "bad-key bodies differ: {bodies:?}"
    );
    assert!(bodies[0].contains("invalid_api_key"));

    let resp = client()
        .get(gw.url("/v1/items/1"))
        .header("X-API-Key", &key)
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (400, "ambiguous_api_key"));
    let joined = format!("{key},{key}");
    let resp = client()
        .get(gw.url("/v1/items/1"))
        .header("X-API-Key", joined)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await.1, "ambiguous_api_key");

    // A key in the query string is not a key.
    let resp = client()
        .get(gw.url(&format!("/v1/items/1?api_key={key}")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await.1, "missing_api_key");
    assert_eq!(up.count(), 0, "nothing refused may reach the upstream");
}

#[tokio::test]
async fn scopes_routes_and_methods_decide() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up).await;
    let (_, reader) = gw.key_with_scopes(&["items:read"]).await;
    let c = client();

    let resp = c
        .get(gw.url("/v1/reports"))
        .header("X-API-Key", &reader)
        .send()
        .await
        .unwrap();
    let (status, code, body) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (403, "insufficient_scope"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reports:read"),
        "{body}"
    );

    // POST to /v1/items falls through to the write route, which needs items:write.
    let resp = c
        .post(gw.url("/v1/items/1"))
        .header("X-API-Key", &reader)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await.1, "insufficient_scope");

    // DELETE matches no route's methods: default deny.
    let resp = c
        .delete(gw.url("/v1/items/1"))
        .header("X-API-Key", &reader)
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (403, "no_route"));
    let resp = c
        .get(gw.url("/nowhere"))
        .header("X-API-Key", &reader)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await.1, "no_route");

    // {*rest} matches zero trailing segments too.
    let resp = c
        .get(gw.url("/v1/items"))
        .header("X-API-Key", &reader)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn default_allow_authenticated_admits_any_valid_key() {
    let up = Upstream::start().await;
    let policy = support::POLICY.replace("default: deny", "default: allow_authenticated");
    let gw = Gateway::start_with(
        &up,
        Options {
            policy: &policy,
            ..Options::default()
        },
    )
    .await;
    let (_, key) = gw.key_with_scopes(&[]).await;
    let resp = client()
        .get(gw.url("/anything/else"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last().header("x-keygate-route"), Some("default"));
    let resp = client().get(gw.url("/anything/else")).send().await.unwrap();
    assert_eq!(error_code(resp).await.1, "missing_api_key");
}

#[tokio::test]
async fn locations_from_path_header_and_query_with_grants() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up).await;
    let c = client();
    // editor at hq only; viewer everywhere; may act at hq and plant-1.
    let (_, key) = gw
        .create_key(&[
            "--name",
            "loc",
            "--user",
            "u2",
            "--business",
            "acme",
            "--location",
            "hq",
            "--location",
            "plant-1",
            "--grant",
            "editor@hq",
            "--grant",
            "viewer@*",
        ])
        .await;

    let resp = c
        .post(gw.url("/v1/locations/hq/items"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last().header("x-keygate-location"), Some("hq"));
    assert_eq!(up.last().header("x-keygate-route"), Some("location-items"));

    // plant-1: a location of the key, but editor is not granted there.
    let resp = c
        .post(gw.url("/v1/locations/plant-1/items"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await.1, "insufficient_scope");
    // plant-2: not one of the key's locations.
    let resp = c
        .post(gw.url("/v1/locations/plant-2/items"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (403, "location_forbidden"));
    // Undeclared and case-tricked locations are not locations.
    let resp = c
        .post(gw.url("/v1/locations/HQ/items"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await.1, "location_forbidden");

    // Header source: viewer@* gives items:read at any of the key's locations.
    let resp = c
        .get(gw.url("/v1/here/items"))
        .header("X-API-Key", &key)
        .header("X-Location", "plant-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.last().header("x-keygate-location"), Some("plant-1"));
    let resp = c
        .get(gw.url("/v1/here/items"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await.1, "location_forbidden");
    let resp = c
        .get(gw.url("/v1/here/items"))
        .header("X-API-Key", &key)
        .header("X-Location", "hq")
        .header("X-Location", "plant-2")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await.1, "location_forbidden");

    // Query source, including a duplicate hidden behind percent-encoding.
    let resp = c
        .get(gw.url("/v1/there/items?loc=hq"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = c
        .get(gw.url("/v1/there/items?loc=hq&l%6fc=plant-2"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await.1, "location_forbidden");

    // A route without a location takes role scopes only from grants at `*`.
    let (_, hq_viewer) = gw
        .create_key(&[
            "--name",
            "hqv",
            "--user",
            "u3",
            "--business",
            "acme",
            "--location",
            "*",
            "--grant",
            "viewer@hq",
        ])
        .await;
    let resp = c
        .get(gw.url("/v1/items/1"))
        .header("X-API-Key", &hq_viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await.1, "insufficient_scope");
    let resp = c
        .get(gw.url("/v1/here/items"))
        .header("X-API-Key", &hq_viewer)
        .header("X-Location", "hq")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn disabled_business_is_refused() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up).await;
    let (_, key) = gw
        .create_key(&[
            "--name",
            "t",
            "--user",
            "u",
            "--business",
            "trial-co",
            "--scope",
            "items:read",
        ])
        .await;
    let resp = client()
        .get(gw.url("/v1/items/1"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (403, "business_disabled"));
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn rotated_key_expires_and_cli_revocation_reaches_the_server_within_a_second() {
    let up = Upstream::start().await;
    // A long cache TTL: revocation must not wait for it.
    let gw = Gateway::start_with(
        &up,
        Options {
            extra: "cache:\n  ttl: 1h\n",
            ..Options::default()
        },
    )
    .await;
    let c = client();
    let (id, key) = gw.key_with_scopes(&["items:read"]).await;
    let resp = c
        .get(gw.url("/v1/items/1"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "warms the cache");

    let out = gw.cli(&["keys", "rotate", &id, "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    loop {
        let resp = c
            .get(gw.url("/v1/items/1"))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap();
        if resp.status() == 401 {
            assert_eq!(error_code(resp).await.1, "expired_api_key");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "rotated key still accepted after 1 s"
        );
    }
    let resp = c
        .get(gw.url("/v1/items/1"))
        .header("X-API-Key", &new_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let out = gw.cli(&["keys", "revoke", &new_id]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    loop {
        let resp = c
            .get(gw.url("/v1/items/1"))
            .header("X-API-Key", &new_key)
            .send()
            .await
            .unwrap();
        if resp.status() == 401 {
            assert_eq!(
                error_code(resp).await.1,
                "invalid_api_key",
                "revoked keys look like unknown ones"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "revoked key still accepted after 1 s"
        );
    }
}

#[tokio::test]
async fn paths_are_normalised_and_the_authorised_path_is_forwarded() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up).await;
    let (_, key) = gw.key_with_scopes(&["items:read"]).await;
    let req = |target: &str| keyed_get(&gw, target, &key);

    for (sent, forwarded) in [
        ("/v1/items/a/../b", "/v1/items/b"),
        ("/v1/./items//c", "/v1/items/c"),
        ("/v1/%69tems/%7Ex", "/v1/items/~x"),
        ("/v1/reports/../items/d", "/v1/items/d"),
        ("/v1/items/%252e%252e/e", "/v1/items/%252e%252e/e"),
        ("/v1/items/%7e%2a", "/v1/items/~%2A"),
        ("/v1/items/f;v=1", "/v1/items/f;v=1"),
    ] {
        let answer = raw(&gw.proxy, req(sent).as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{sent}: {answer}");
        assert_eq!(up.last().target, forwarded, "{sent}");
    }
    let before = up.count();
    for bad in [
        "/v1/items/..%2Fadmin",
        "/v1/items/a%2fb",
        "/v1/items/a%5Cb",
        "/v1/items/%00",
        "/v1/items/%zz",
        "/v1/items/%C0%AE%C0%AE/x",
        "/v1/items/..;x/reports",
        "/../v1/items/x",
        "/v1/items/../../../x",
    ] {
        let answer = raw(&gw.proxy, req(bad).as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{bad}: {answer}");
        assert!(answer.contains("bad_path"), "{bad}: {answer}");
    }
    // Absolute-form naming another host.
    let answer = raw(&gw.proxy, req("http://evil.example/v1/items/1").as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("bad_path"),
        "{answer}"
    );
    assert_eq!(up.count(), before, "refused paths must never be forwarded");
}

/// An upstream URL with a path prefixes every forwarded path with it; the query follows
/// the authorised path whether or not normalisation changed it.
#[tokio::test]
async fn the_upstream_url_path_prefixes_the_authorised_path() {
    let up = Upstream::start().await;
    let gw = Gateway::start_with(&up, Options::upstream(&format!("{}/api/", up.url()), "")).await;
    let (_, key) = gw.key_with_scopes(&["items:read"]).await;
    // Raw requests: an HTTP client library would remove the dot segment itself.
    for (sent, forwarded) in [
        ("/v1/items/42?x=1", "/api/v1/items/42?x=1"),
        ("/v1/./items/43?y=2", "/api/v1/items/43?y=2"),
    ] {
        let answer = raw(&gw.proxy, keyed_get(&gw, sent, &key).as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{sent}: {answer}");
        assert_eq!(up.last().target, forwarded, "{sent}");
    }
}

/// An HTTP/1.1 client connection keeps one upstream connection for all its requests,
/// another client connection gets its own, and when the upstream closes one
/// (`Connection: close`) the next request on that client connection opens a new one.
#[tokio::test]
async fn each_client_connection_reuses_its_own_upstream_connection() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up).await;
    let (_, key) = gw.key_with_scopes(&["items:read"]).await;
    // One pooled connection each, HTTP/1.1: requests in turn reuse it.
    let one_connection = || {
        reqwest::Client::builder()
            .http1_only()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap()
    };
    let get =
        |c: &reqwest::Client, path: &str| c.get(gw.url(path)).header("X-API-Key", &key).send();
    let (a, b) = (one_connection(), one_connection());
    for path in ["/v1/items/1", "/v1/items/2", "/v1/items/3"] {
        assert_eq!(get(&a, path).await.unwrap().status(), 200);
    }
    assert_eq!(get(&b, "/v1/items/4").await.unwrap().status(), 200);
    assert_eq!(get(&a, "/v1/items/close").await.unwrap().status(), 200);
    assert_eq!(get(&a, "/v1/items/5").await.unwrap().status(), 200);
    assert_eq!(get(&a, "/v1/items/6").await.unwrap().status(), 200);

    let port = |path: &str| {
        up.seen()
            .iter()
            .find(|s| s.target == path)
            .unwrap_or_else(|| panic!("{path} never reached the upstream"))
            .peer
    };
    let first = port("/v1/items/1");
    assert_eq!(port("/v1/items/2"), first);
    assert_eq!(port("/v1/items/3"), first);
    assert_eq!(port("/v1/items/close"), first);
    assert_ne!(
        port("/v1/items/4"),
        first,
        "another client connection, another upstream one"
    );
    let after = port("/v1/items/5");
    assert_ne!(after, first, "the closed upstream connection was replaced");
    assert_eq!(port("/v1/items/6"), after);
}

#[tokio::test]
async fn http2_prior_knowledge_is_served() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up).await;
    let (id, key) = gw.key_with_scopes(&["items:read"]).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let resp = h2
        .get(gw.url("/v1/items/h2"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(
        up.last().version,
        "HTTP/1.1",
        "keygate speaks HTTP/1.1 to the upstream"
    );
    assert_eq!(up.last().header("x-keygate-key-id"), Some(id.as_str()));
    assert_eq!(up.last().target, "/v1/items/h2");
    let resp = h2.get(gw.url("/v1/items/h2")).send().await.unwrap();
    assert_eq!(error_code(resp).await.1, "missing_api_key");
}

#[tokio::test]
async fn ten_megabyte_bodies_stream_both_ways() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up).await;
    let (_, key) = gw.key_with_scopes(&["items:read", "items:write"]).await;
    let size = 10 * 1024 * 1024;
    let body: Vec<u8> = (0..size).map(|i| u8::try_from(i % 251).unwrap()).collect();
    let expected = support::upstream::hex(&<sha2::Sha256 as sha2::Digest>::digest(&body));
    // Sent chunked from a stream, so keygate cannot rely on a Content-Length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(256 * 1024).map(|c| Ok(c.to_vec())).collect();
    let stream = futures_util::stream::iter(chunks);
    let resp = client()
        .post(gw.url("/v1/upload"))
        .header("X-API-Key", &key)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["body_bytes"], size);
    assert_eq!(v["body_sha256"], expected);
    let seen = up.last();
    assert_eq!((seen.method.as_str(), seen.body_bytes), ("POST", size));

    let resp = client()
        .get(gw.url(&format!("/v1/items/download/{size}")))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().len(), size);
}

#[tokio::test]
async fn dead_and_slow_upstreams_are_502_and_504() {
    let up = Upstream::start().await;
    let gw = Gateway::start_with(&up, Options::upstream(&up.url(), "  timeout: 2s\n")).await;
    let (_, key) = gw.key_with_scopes(&["items:read"]).await;
    // The upstream timeout is 2 s here; /slow answers after 5 s.
    let resp = client()
        .get(gw.url("/slow"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (504, "upstream_timeout"));

    // A port with nothing listening.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dead = Gateway::start_with(&up, Options::upstream(&format!("http://{closed}"), "")).await;
    let (_, key) = dead.key_with_scopes(&["items:read"]).await;
    let resp = client()
        .get(dead.url("/v1/items/1"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (502, "upstream_unavailable"));
}

#[tokio::test]
async fn h2c_upgrade_is_refused_and_hop_by_hop_headers_are_dropped() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up).await;
    let (id, key) = gw.key_with_scopes(&["items:read"]).await;
    let answer = raw(
        &gw.proxy,
        format!("GET /v1/items/1 HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(up.count(), 0);

    // Connection naming the identity headers and the key cannot drop what keygate adds.
    let answer = raw(
        &gw.proxy,
        format!("GET /v1/items/1 HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nConnection: close, X-API-Key, X-Keygate-Key-Id, X-Custom\r\nX-Custom: 1\r\nKeep-Alive: timeout=5\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = up.last();
    assert_eq!(seen.header("x-keygate-key-id"), Some(id.as_str()));
    assert_eq!(seen.header("x-custom"), None);
    assert_eq!(seen.header("keep-alive"), None);
    assert_eq!(seen.header("x-api-key"), None);
}

#[tokio::test]
async fn health_and_readiness_on_the_admin_listener() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up).await;
    let resp = client().get(gw.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn sigterm_stops_the_gateway_cleanly() {
    let up = Upstream::start().await;
    let mut gw = Gateway::start(&up).await;
    let (_, key) = gw.key_with_scopes(&["items:read"]).await;
    let resp = client()
        .get(gw.url("/v1/items/1"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    gw.signal("TERM");
    assert_eq!(gw.wait().await.code(), Some(0));
    assert!(
        client().get(gw.url("/v1/items/1")).send().await.is_err(),
        "nothing listens after shutdown"
    );
    // The store file outlives the process, with the key's last use flushed on the way out.
    let out = gw.cli(&["keys", "list", "--json"]).await;
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        listed[0]["last_used_at"].is_string(),
        "last_used_at flushed on shutdown: {listed:?}"
    );
}

#[tokio::test]
async fn a_store_that_cannot_open_fails_closed_and_recovers_without_restart() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The store's folder is a plain file for now: nothing can be opened beneath it.
    let blocker = dir.path().join("blocked");
    std::fs::write(&blocker, "not a folder").unwrap();
    let store = format!(
        "store:\n  kind: embedded\n  path: {}\n",
        blocker.join("keygate.db").display()
    );
    let gw = Gateway::start_with(
        &up,
        Options {
            store_yaml: Some(store.clone()),
            ..Options::default()
        },
    )
    .await;
    let c = client();
    assert_eq!(
        c.get(gw.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(gw.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        c.get(gw.url("/health")).send().await.unwrap().status(),
        200,
        "public routes need no store"
    );

    // A well-formed key (made against another store) cannot be checked: 503, never open.
    let other = Gateway::start(&up).await;
    let (_, foreign) = other.key_with_scopes(&["items:read"]).await;
    let resp = c
        .get(gw.url("/v1/items/1"))
        .header("X-API-Key", &foreign)
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (503, "auth_unavailable"));

    // The folder appears; the CLI creates the store and a key; the gateway picks it up.
    std::fs::remove_file(&blocker).unwrap();
    let (_, key) = gw.key_with_scopes(&["items:read"]).await;
    let started = Instant::now();
    loop {
        let resp = c
            .get(gw.url("/v1/items/1"))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            break;
        }
        assert_eq!(error_code(resp).await.1, "auth_unavailable");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the gateway did not recover"
        );
    }
    assert_eq!(
        c.get(gw.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        up.seen()
            .iter()
            .all(|s| s.target != "/v1/items/1" || s.header("x-keygate-key-id").is_some())
    );
}

#[tokio::test]
async fn rate_limits_count_per_key_and_answer_429_with_retry_after() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up).await;
    let (_, a) = gw.key_with_scopes(&["items:read"]).await;
    let (_, b) = gw.key_with_scopes(&["items:read"]).await;
    let c = client();
    for _ in 0..2 {
        let resp = c
            .get(gw.url("/v1/limited"))
            .header("X-API-Key", &a)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let resp = c
        .get(gw.url("/v1/limited"))
        .header("X-API-Key", &a)
        .send()
        .await
        .unwrap();
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=30).contains(&retry),
        "2/m refills one every 30 s: {retry}"
    );
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"));
    // Another key has its own bucket; other routes are not limited.
    let resp = c
        .get(gw.url("/v1/limited"))
        .header("X-API-Key", &b)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = c
        .get(gw.url("/v1/items/1"))
        .header("X-API-Key", &a)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Public routes count per client address.
    assert_eq!(
        c.get(gw.url("/v1/open")).send().await.unwrap().status(),
        200
    );
    let resp = c.get(gw.url("/v1/open")).send().await.unwrap();
    assert_eq!(error_code(resp).await.1, "rate_limited");
    assert_eq!(up.count(), 5, "refused requests never reach the upstream");
}

#[tokio::test]
async fn a_registry_that_cannot_be_reached_is_503_auth_unavailable_never_open() {
    let up = Upstream::start().await;
    // Redis is down from the start: keygate starts anyway and fails closed.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gw = Gateway::start_with(
        &up,
        Options {
            store_yaml: Some(support::redis_store(&format!("redis://{closed}"))),
            ..Options::default()
        },
    )
    .await;
    let key = keygate::keys::generate("kg_");
    let started = Instant::now();
    let resp = client()
        .get(gw.url("/v1/items/1"))
        .header("X-API-Key", key.expose())
        .send()
        .await
        .unwrap();
    let (status, code, body) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (503, "auth_unavailable"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by store.timeout"
    );
    assert_eq!(up.count(), 0, "nothing reaches the upstream");
    // A malformed key is refused without asking the registry at all.
    let resp = client()
        .get(gw.url("/v1/items/1"))
        .header("X-API-Key", "kg_not-a-real-key")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await.0, 401);
    let ready = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let health = client().get(gw.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn a_location_refusal_says_it_once_and_names_the_valid_locations() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up).await;
    let (_, key) = gw
        .create_key(&[
            "--name",
            "loc",
            "--user",
            "u",
            "--business",
            "acme",
            "--location",
            "hq",
            "--grant",
            "editor@hq",
        ])
        .await;
    let c = client();
    let refused = |path: &'static str| {
        let req = c.post(gw.url(path)).header("X-API-Key", &key);
        async move {
            let (status, code, body) = error_code(req.send().await.unwrap()).await;
            assert_eq!(
                (status, code.as_str()),
                (403, "location_forbidden"),
                "{body}"
            );
            body["error"]["message"].as_str().unwrap().to_owned()
        }
    };
    // Not one of the key's locations: one sentence, "location" once.
    let message = refused("/v1/locations/plant-2/items").await;
    assert_eq!(message, "the API key may not act at location `plant-2`");
    // Not a location of the policy: a did-you-mean, or else the valid ones.
    let message = refused("/v1/locations/plant2/items").await;
    assert_eq!(
        message,
        "`plant2` is not a location of the policy (did you mean `plant-2`?)"
    );
    let message = refused("/v1/locations/mars/items").await;
    assert_eq!(
        message,
        "`mars` is not a location of the policy (expected one of `hq`, `plant-1`, `plant-2`)"
    );
}
