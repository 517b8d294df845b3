//! Keys beyond create and revoke (issue 18): suspend and resume, edits in place, metadata
//! to the upstream, IP allowlists, and what no caller may do through an edit; on both
//! stores, with two gateways sharing one registry.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::admin::{As, TOKEN, call};
use crate::support::{self, Gateway, Options, RedisServer, Upstream, client, error_code};

/// Two gateways on one registry: `A` and `B`, both with the admin token.
async fn fleet(up: &Upstream, store: &str) -> (Gateway, Gateway) {
    let start = || {
        Gateway::start_with(
            up,
            Options {
                store_yaml: Some(store.to_owned()),
                extra: "cache:\n  ttl: 1h\n",
                admin_token: Some(TOKEN),
                ..Options::default()
            },
        )
    };
    (start().await, start().await)
}

/// (status, error code or "") of a keyed GET of `/v1/items/1` sent with `headers`.
async fn ask(gw: &Gateway, key: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut r = client().get(gw.url("/v1/items/1")).header("X-API-Key", key);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.unwrap();
    if resp.status().is_success() {
        return (resp.status().as_u16(), String::new());
    }
    let (status, code, _) = error_code(resp).await;
    (status, code)
}

/// Waits until `gw` answers `want` for `key`; returns how long it took (at most 1 s).
async fn within_a_second(gw: &Gateway, key: &str, want: (u16, &str)) -> Duration {
    let started = Instant::now();
    loop {
        let got = ask(gw, key, &[]).await;
        if (got.0, got.1.as_str()) == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no {want:?} within 1 s (last: {got:?})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Suspend on one gateway, refused by the other within a second, and back; an edit
/// that removes a scope and an allowlist that excludes the client, enforced fleet-wide;
/// metadata reaching the upstream; the CLI and the admin API alike.
async fn suspend_edit_and_allowlist_reach_the_fleet(store: &str) {
    let up = Upstream::start().await;
    let (a, b) = fleet(&up, store).await;
    let (id, key) = a
        .create_key(&[
            "--name",
            "edited",
            "--user",
            "u1",
            "--business",
            "acme",
            "--location",
            "*",
            "--scope",
            "items:read",
            "--metadata",
            "plan=pro",
            "--metadata",
            "seats=5",
        ])
        .await;
    let sent = [
        ("X-Keygate-Meta-Plan", "forged"),
        ("X-Keygate-Meta-Evil", "1"),
    ];
    assert_eq!(ask(&b, &key, &sent).await, (200, String::new()));
    let seen = up.last();
    assert_eq!(seen.header("x-keygate-meta-plan"), Some("pro"));
    assert_eq!(seen.header("x-keygate-meta-seats"), Some("5"));
    assert_eq!(
        seen.header("x-keygate-meta-evil"),
        None,
        "client-sent meta stripped"
    );

    // Suspended through A's admin API: B refuses within a second; resumed with B's CLI.
    let (status, v) = call(
        &a,
        Method::POST,
        &format!("/v1/keys/{id}/suspend"),
        As::Token(TOKEN),
        None,
    )
    .await;
    assert_eq!(
        (status, v["status"].as_str(), v["enabled"].as_bool()),
        (200, Some("disabled"), Some(false))
    );
    let lag = within_a_second(&b, &key, (401, "disabled_api_key")).await;
    eprintln!("suspension reached the other gateway in {lag:?}");
    let listed = ok(&b
        .cli(&["keys", "list", "--status", "disabled", "--json"])
        .await);
    assert!(listed.contains(&id), "{listed}");
    ok(&b.cli(&["keys", "resume", &id]).await);
    let lag = within_a_second(&a, &key, (200, "")).await;
    eprintln!("resumption reached the other gateway in {lag:?}");

    // An edit that removes the scope: refused everywhere within a second.
    let (status, v) = call(
        &a,
        Method::PATCH,
        &format!("/v1/keys/{id}"),
        As::Token(TOKEN),
        Some(json!({"scopes": [], "name": "no scopes"})),
    )
    .await;
    assert_eq!(
        (status, v["name"].as_str()),
        (200, Some("no scopes")),
        "{v}"
    );
    within_a_second(&b, &key, (403, "insufficient_scope")).await;
    ok(&b
        .cli(&["keys", "update", &id, "--scope", "items:read"])
        .await);
    within_a_second(&a, &key, (200, "")).await;

    // An allowlist without the client: 403 `ip_forbidden`; with it: served.
    ok(&a
        .cli(&[
            "keys",
            "update",
            &id,
            "--allow-ip",
            "192.0.2.0/24",
            "--allow-ip",
            "2001:db8::/32",
        ])
        .await);
    within_a_second(&b, &key, (403, "ip_forbidden")).await;
    let (status, v) = call(
        &b,
        Method::PATCH,
        &format!("/v1/keys/{id}"),
        As::Token(TOKEN),
        Some(json!({"allowed_ips": ["127.0.0.1"]})),
    )
    .await;
    assert_eq!(v["allowed_ips"], json!(["127.0.0.1"]), "{status} {v}");
    within_a_second(&a, &key, (200, "")).await;

    // The audit trail names the fields changed, never a value.
    let (_, events) = call(&a, Method::GET, "/v1/audit", As::Token(TOKEN), None).await;
    let mine: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["key_id"] == id.as_str())
        .collect();
    let actions: Vec<&str> = mine.iter().map(|e| e["action"].as_str().unwrap()).collect();
    for want in ["suspended", "resumed", "updated"] {
        assert!(actions.contains(&want), "{actions:?}");
    }
    assert!(
        mine.iter().any(|e| e["detail"] == "changed allowed_ips"),
        "{mine:?}"
    );
    assert!(
        !events.to_string().contains("192.0.2.0"),
        "values are not audited"
    );
}

#[tokio::test]
async fn on_the_embedded_store_edits_reach_the_other_gateway_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shared.db");
    let store = format!("store:\n  kind: embedded\n  path: {}\n", file.display());
    suspend_edit_and_allowlist_reach_the_fleet(&store).await;
}

#[tokio::test]
async fn on_redis_edits_reach_the_other_gateway_within_a_second() {
    let redis = RedisServer::start();
    suspend_edit_and_allowlist_reach_the_fleet(&support::redis_store(&redis.url())).await;
}

/// Behind a trusted proxy the allowlist is checked against the client its chain names
/// (read from the right), IPv6 included; from anyone else the chain is not believed.
#[tokio::test]
async fn the_allowlist_follows_the_trusted_proxy_chain_ipv6_included() {
    let up = Upstream::start().await;
    let behind = Gateway::start_with(
        &up,
        Options {
            extra: "trusted_proxies: [127.0.0.1]\n",
            ..Options::default()
        },
    )
    .await;
    let args = |net: &'static str| {
        vec![
            "--name",
            "ip",
            "--user",
            "u1",
            "--business",
            "acme",
            "--location",
            "*",
            "--scope",
            "items:read",
            "--allow-ip",
            net,
        ]
    };
    let (_, v6) = behind.create_key(&args("2001:db8::/32")).await;
    let (_, v4) = behind.create_key(&args("203.0.113.0/24")).await;
    let xff = |chain: &'static str| [("X-Forwarded-For", chain)];
    assert_eq!(ask(&behind, &v6, &xff("2001:db8::5")).await.0, 200);
    assert_eq!(
        ask(&behind, &v6, &xff("2001:db9::5")).await,
        (403, "ip_forbidden".to_owned())
    );
    // A client cannot prepend its way in: the rightmost untrusted hop is the client.
    assert_eq!(
        ask(&behind, &v6, &xff("2001:db8::5, 198.51.100.1")).await.0,
        403
    );
    assert_eq!(
        ask(&behind, &v6, &xff("198.51.100.1, 2001:db8::5")).await.0,
        200
    );
    assert_eq!(ask(&behind, &v4, &xff("203.0.113.9")).await.0, 200);
    assert_eq!(
        ask(&behind, &v4, &[]).await.0,
        403,
        "no chain: the peer is the client"
    );

    // Not a trusted peer: the chain is ignored, the peer (127.0.0.1) is the client.
    let direct = Gateway::start(&up).await;
    let (_, key) = direct.create_key(&args("203.0.113.0/24")).await;
    assert_eq!(
        ask(&direct, &key, &xff("203.0.113.9")).await,
        (403, "ip_forbidden".to_owned())
    );
}

/// The admin API's edits keep creation's rules: no power beyond the caller's own, no
/// key outside its business, nothing on a revoked key, and bad input named.
#[tokio::test]
async fn escalation_through_patch_is_refused() {
    let up = Upstream::start().await;
    let gw = Gateway::start_with(
        &up,
        Options {
            admin_token: Some(TOKEN),
            ..Options::default()
        },
    )
    .await;
    let (_, admin) = gw
        .create_key(&[
            "--name",
            "acme admin",
            "--user",
            "boss",
            "--business",
            "acme",
            "--location",
            "hq",
            "--scope",
            "keygate:admin",
            "--scope",
            "items:read",
        ])
        .await;
    let (id, _) = gw
        .create_key(&[
            "--name",
            "target",
            "--user",
            "u1",
            "--business",
            "acme",
            "--location",
            "hq",
            "--scope",
            "items:read",
        ])
        .await;
    let (other, _) = gw
        .create_key(&[
            "--name",
            "elsewhere",
            "--user",
            "u2",
            "--business",
            "globex",
            "--location",
            "hq",
        ])
        .await;
    let path = format!("/v1/keys/{id}");
    let edit_as_admin = |body: Value| call(&gw, Method::PATCH, &path, As::Key(&admin), Some(body));
    for (body, why) in [
        (
            json!({"scopes": ["items:read", "items:write"]}),
            "scopes: `items:write`",
        ),
        (
            json!({"locations": ["hq", "plant-1"]}),
            "locations: `plant-1`",
        ),
        (
            json!({"grants": [{"role": "editor", "locations": ["hq"]}]}),
            "grants: `editor@hq`",
        ),
        (
            json!({"scopes": ["reports:read"]}),
            "scopes: `reports:read`",
        ),
    ] {
        let (status, v) = edit_as_admin(body.clone()).await;
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{body}: {v}"
        );
        assert!(message.contains(why), "{body}: {message}");
    }
    let (_, v) = call(&gw, Method::GET, &path, As::Token(TOKEN), None).await;
    assert_eq!(v["scopes"], json!(["items:read"]), "nothing was written");

    // Within its power: fine; another business's key: as if it did not exist.
    let (status, v) =
        edit_as_admin(json!({"metadata": {"plan": "basic"}, "description": "ok"})).await;
    assert_eq!(
        (status, v["metadata"]["plan"].as_str()),
        (200, Some("basic")),
        "{v}"
    );
    let (status, _) = call(
        &gw,
        Method::PATCH,
        &format!("/v1/keys/{other}"),
        As::Key(&admin),
        Some(json!({"name": "mine"})),
    )
    .await;
    assert_eq!(status, 404);

    // Bad input names the field; a misspelt one gets a did-you-mean.
    for (body, field) in [
        (
            json!({"metdata": {}}),
            "metdata: unknown field (did you mean `metadata`?)",
        ),
        (
            json!({"metadata": {"Bad Name": "x"}}),
            "metadata: `Bad Name` is not a valid name",
        ),
        (
            json!({"allowed_ips": ["10.0.0.0/8", "nonsense"]}),
            "allowed_ips[1]: `nonsense` is not an IP address or CIDR",
        ),
        (
            json!({"expires_in": "-1h"}),
            "expires_in: `-1h` is negative",
        ),
    ] {
        let (status, v) = edit_as_admin(body.clone()).await;
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{body}: {v}");
        assert!(message.starts_with(field), "{body}: {message}");
    }

    // `null` is refused naming the field; suspend and resume take no fields.
    let (status, v) = edit_as_admin(json!({"expires_at": null})).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("expires_at: null is not accepted"),
        "{v}"
    );
    let (status, v) = call(
        &gw,
        Method::POST,
        &format!("{path}/suspend"),
        As::Token(TOKEN),
        Some(json!({"x": 1})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );

    // Revoked is final: 409 `invalid_request` saying why.
    let (status, _) = call(&gw, Method::DELETE, &path, As::Token(TOKEN), None).await;
    assert_eq!(status, 204);
    for (method, p) in [
        (Method::PATCH, path.clone()),
        (Method::POST, format!("{path}/resume")),
    ] {
        let body = (method == Method::PATCH).then(|| json!({"name": "again"}));
        let (status, v) = call(&gw, method, &p, As::Token(TOKEN), body).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (409, Some("invalid_request")),
            "{p}: {v}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains("revoked"),
            "{v}"
        );
    }
}

/// An edit is judged by what it adds: an admin key can rename, narrow and suspend a key
/// that holds more than it does, not widen it. Metadata, allowlists and resumption are
/// power too: a self key cannot raise its own plan, lift its own allowlist or resume a
/// key an admin suspended.
#[tokio::test]
async fn edits_are_judged_by_what_they_add_metadata_and_allowlists_included() {
    let up = Upstream::start().await;
    let gw = Gateway::start_with(
        &up,
        Options {
            admin_token: Some(TOKEN),
            ..Options::default()
        },
    )
    .await;
    let create = |args: &'static [&'static str]| gw.create_key(args);
    let (_, admin) = create(&[
        "--name",
        "hq admin",
        "--user",
        "boss",
        "--business",
        "acme",
        "--location",
        "hq",
        "--scope",
        "keygate:admin",
        "--scope",
        "items:read",
    ])
    .await;
    let (strong, _) = create(&[
        "--name",
        "strong",
        "--user",
        "u1",
        "--business",
        "acme",
        "--location",
        "plant-1",
        "--grant",
        "viewer@plant-1",
    ])
    .await;
    let patch = |id: &str, who: As<'static>, body: Value| {
        let path = format!("/v1/keys/{id}");
        let gw = &gw;
        async move { call(gw, Method::PATCH, &path, who, Some(body)).await }
    };
    let admin_key: &'static str = Box::leak(admin.into_boxed_str());
    for body in [
        json!({"name": "renamed"}),
        json!({"grants": []}),
        json!({"enabled": false}),
    ] {
        let (status, v) = patch(&strong, As::Key(admin_key), body.clone()).await;
        assert_eq!(status, 200, "{body}: {v}");
    }
    let (status, v) = patch(
        &strong,
        As::Key(admin_key),
        json!({"locations": ["plant-1", "plant-2"]}),
    )
    .await;
    assert_eq!(status, 403, "adding a location it lacks: {v}");

    // A self key with a plan and an allowlist, used from 127.0.0.1.
    let (me, own) = create(&[
        "--name",
        "me",
        "--user",
        "u7",
        "--business",
        "acme",
        "--location",
        "*",
        "--scope",
        "keygate:self",
        "--metadata",
        "plan=free",
        "--allow-ip",
        "127.0.0.0/8",
    ])
    .await;
    let own_key: &'static str = Box::leak(own.into_boxed_str());
    for (body, field) in [
        (
            json!({"metadata": {"plan": "enterprise"}}),
            "metadata: a keygate:self key cannot set metadata",
        ),
        (
            json!({"allowed_ips": []}),
            "allowed_ips: a key with an IP allowlist can only give allowlists inside its own",
        ),
        (json!({"allowed_ips": ["0.0.0.0/0"]}), "allowed_ips:"),
    ] {
        let (status, v) = patch(&me, As::Key(own_key), body.clone()).await;
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, 403, "{body}: {v}");
        assert!(message.starts_with(field), "{body}: {message}");
    }
    let (status, v) = patch(
        &me,
        As::Key(own_key),
        json!({"allowed_ips": ["127.0.0.1"], "description": "narrower"}),
    )
    .await;
    assert_eq!(
        (status, v["allowed_ips"].clone()),
        (200, json!(["127.0.0.1"])),
        "narrowing inside its own: {v}"
    );
    let (status, v) = call(&gw, Method::POST, "/v1/keys", As::Key(own_key), Some(json!({"name": "mine", "user_id": "u7", "business_id": "acme", "metadata": {"plan": "enterprise"}, "allowed_ips": ["127.0.0.1"]}))).await;
    assert_eq!(status, 403, "a new key with a bigger plan: {v}");

    // A key the admin suspended stays suspended for its user.
    let (other, _) = create(&[
        "--name",
        "sibling",
        "--user",
        "u7",
        "--business",
        "acme",
        "--location",
        "*",
    ])
    .await;
    let (status, _) = call(
        &gw,
        Method::POST,
        &format!("/v1/keys/{other}/suspend"),
        As::Token(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, v) = call(
        &gw,
        Method::POST,
        &format!("/v1/keys/{other}/resume"),
        As::Key(own_key),
        None,
    )
    .await;
    assert_eq!(status, 403, "{v}");
    let (status, _) = call(
        &gw,
        Method::POST,
        &format!("/v1/keys/{other}/resume"),
        As::Key(admin_key),
        None,
    )
    .await;
    assert_eq!(status, 200);
}

/// Twenty admins editing one key at the same moment on Redis: every edit lands (the
/// losers of each compare-and-set read again and retry), none is lost or merged.
#[tokio::test]
async fn concurrent_edits_on_redis_all_land() {
    let redis = RedisServer::start();
    let up = Upstream::start().await;
    let (a, b) = fleet(&up, &support::redis_store(&redis.url())).await;
    let (id, _) = a.key_with_scopes(&["items:read"]).await;
    let path = format!("/v1/keys/{id}");
    let edits = (0..20).map(|i| {
        let gw = if i % 2 == 0 { &a } else { &b };
        let path = path.clone();
        async move {
            let body = json!({"metadata": {"editor": format!("e{i}")}});
            call(gw, Method::PATCH, &path, As::Token(TOKEN), Some(body)).await
        }
    });
    let answers = futures_util::future::join_all(edits).await;
    for (status, v) in &answers {
        assert_eq!(*status, 200, "{v}");
    }
    let (_, audit) = call(
        &a,
        Method::GET,
        "/v1/audit?limit=100",
        As::Token(TOKEN),
        None,
    )
    .await;
    let updates = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["key_id"] == id.as_str() && e["action"] == "updated")
        .count();
    assert_eq!(
        updates, 20,
        "every edit changed the metadata, so every one is audited"
    );
}

/// `keys update --location` that would leave one of the key's own grants outside its
/// locations names the flag that was given, not `--grant`.
#[tokio::test]
async fn a_cli_update_that_orphans_a_grant_names_the_location_flag() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up).await;
    let (id, _) = gw
        .create_key(&[
            "--name",
            "g",
            "--user",
            "u1",
            "--business",
            "acme",
            "--location",
            "hq",
            "--grant",
            "editor@hq",
        ])
        .await;
    let out = gw
        .cli(&["keys", "update", &id, "--location", "plant-1"])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: --location: the key's grant `editor@hq` needs location `hq`"),
        "{err}"
    );
}
