//! The admin API end to end: real keygate binary, real upstream, HTTP on loopback.
//! Every endpoint, status and rule of CONTRACT section 6, the permission model and its
//! escalation attempts, pagination, rotation with grace through the proxy, revocation
//! through the proxy, and the audit log across a restart.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Gateway, Options, Upstream, client, error_code};

pub(crate) const TOKEN: &str = "test-bootstrap-token-0123456789";

/// Who calls.
#[derive(Clone, Copy)]
pub(crate) enum As<'a> {
    Nobody,
    Token(&'a str),
    Key(&'a str),
}

async fn start(up: &Upstream) -> Gateway {
    Gateway::start_with(
        up,
        Options {
            admin_token: Some(TOKEN),
            ..Options::default()
        },
    )
    .await
}

fn req(gw: &Gateway, method: reqwest::Method, path: &str, who: As<'_>) -> reqwest::RequestBuilder {
    let r = client().request(method, gw.admin_url(path));
    match who {
        As::Nobody => r,
        As::Token(t) => r.bearer_auth(t),
        As::Key(k) => r.header("X-API-Key", k),
    }
}

pub(crate) async fn call(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    who: As<'_>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = req(gw, method, path, who);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, v)
}

async fn post(gw: &Gateway, path: &str, who: As<'_>, body: Value) -> (u16, Value) {
    call(gw, reqwest::Method::POST, path, who, Some(body)).await
}

async fn get(gw: &Gateway, path: &str, who: As<'_>) -> (u16, Value) {
    call(gw, reqwest::Method::GET, path, who, None).await
}

async fn delete(gw: &Gateway, path: &str, who: As<'_>) -> (u16, Value) {
    call(gw, reqwest::Method::DELETE, path, who, None).await
}

/// Creates a key with the bootstrap token; returns (id, secret).
async fn make(gw: &Gateway, body: Value) -> (String, String) {
    let (status, v) = post(gw, "/v1/keys", As::Token(TOKEN), body.clone()).await;
    assert_eq!(status, 201, "create {body}: {v}");
    (
        v["id"].as_str().unwrap().to_owned(),
        v["key"].as_str().unwrap().to_owned(),
    )
}

/// An admin key of `business` holding `extra` scopes too, at `locations`, with `grants`.
async fn admin_key(
    gw: &Gateway,
    business: &str,
    scope: &str,
    extra: &[&str],
    locations: &[&str],
    grants: Value,
) -> (String, String) {
    let mut scopes = vec![scope];
    scopes.extend_from_slice(extra);
    make(
        gw,
        json!({"name": "admin", "user_id": "boss", "business_id": business,
               "scopes": scopes, "locations": locations, "grants": grants}),
    )
    .await
}

async fn proxy_status(gw: &Gateway, key: &str, path: &str) -> (u16, String) {
    let resp = client()
        .get(gw.url(path))
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    if status == 200 {
        return (200, String::new());
    }
    let (s, code, _) = error_code(resp).await;
    (s, code)
}

fn assert_invalid(status: u16, v: &Value, field: &str) {
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_request", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!("{field}: ")),
        "message should name `{field}`: {msg}"
    );
}

#[tokio::test]
async fn admin_token_creates_shows_lists_and_revokes_and_the_proxy_follows() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let resp = req(&gw, reqwest::Method::POST, "/v1/keys", As::Token(TOKEN))
        .json(&json!({
            "name": "reader", "description": "reads items", "user_id": "u1", "business_id": "acme",
            "scopes": ["items:read"], "locations": ["hq", "plant-1", "plant-2"],
            "grants": [{"role": "editor", "locations": ["plant-1", "plant-2"]}],
            "expires_in": "1d"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = resp.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["key"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/keys/{id}"));
    let mut fields: Vec<&str> = created
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "allowed_ips",
            "business_id",
            "created_at",
            "created_by",
            "description",
            "enabled",
            "expires_at",
            "grants",
            "id",
            "key",
            "last_used_at",
            "limits",
            "locations",
            "metadata",
            "name",
            "plan",
            "prefix",
            "quota",
            "revoked_at",
            "scopes",
            "status",
            "updated_at",
            "user_id"
        ]
    );
    assert!(secret.starts_with("kg_"));
    assert!(!id.starts_with("kg_"));
    assert!(secret.starts_with(created["prefix"].as_str().unwrap()));
    assert_eq!(created["created_by"], "token");
    assert_eq!(created["status"], "active");
    assert_eq!(created["revoked_at"], Value::Null);
    assert_eq!(created["last_used_at"], Value::Null);
    assert_eq!(
        created["grants"],
        json!([{"role": "editor", "locations": ["plant-1", "plant-2"]}])
    );
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(created["expires_at"].as_str().unwrap().ends_with('Z'));

    // Shown: the record, never the secret.
    let (status, shown) = get(&gw, &format!("/v1/keys/{id}"), As::Token(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(shown.get("key").is_none());
    let mut without = created.clone();
    without.as_object_mut().unwrap().remove("key");
    assert_eq!(shown, without);
    let (status, listed) = get(&gw, "/v1/keys?business_id=acme", As::Token(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(listed["keys"], json!([without]));
    assert_eq!(listed["next_cursor"], Value::Null);
    assert!(!listed.to_string().contains(&secret));

    // The key works through the proxy (and is now cached there) ...
    assert_eq!(proxy_status(&gw, &secret, "/v1/items/1").await.0, 200);
    assert_eq!(
        proxy_status(&gw, &secret, "/v1/locations/plant-2/items")
            .await
            .0,
        200
    );
    // ... last_used_at is written within 10 s ...
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = get(&gw, &format!("/v1/keys/{id}"), As::Token(TOKEN)).await;
        if v["last_used_at"].is_string() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "last_used_at not written in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ... and is refused within a second of DELETE.
    let (status, body) = delete(&gw, &format!("/v1/keys/{id}"), As::Token(TOKEN)).await;
    assert_eq!((status, body), (204, Value::Null));
    let revoked_at = Instant::now();
    loop {
        let (s, code) = proxy_status(&gw, &secret, "/v1/items/1").await;
        if s == 401 {
            assert_eq!(code, "invalid_api_key");
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "still allowed 1 s after revocation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, v) = get(&gw, &format!("/v1/keys/{id}"), As::Token(TOKEN)).await;
    assert_eq!(v["status"], "revoked");
    assert!(v["revoked_at"].is_string());
    // Revoking again is still 204; an unknown id is 404.
    assert_eq!(
        delete(&gw, &format!("/v1/keys/{id}"), As::Token(TOKEN))
            .await
            .0,
        204
    );
    let (status, v) = delete(&gw, "/v1/keys/kid_nope", As::Token(TOKEN)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = get(&gw, "/v1/keys/kid_nope", As::Token(TOKEN)).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn credentials_missing_wrong_or_insufficient() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let (_, plain) = make(
        &gw,
        json!({"name": "plain", "user_id": "u", "business_id": "acme", "scopes": ["items:read"]}),
    )
    .await;
    let (admin_id, admin) = admin_key(&gw, "acme", "keygate:admin", &[], &[], json!([])).await;
    let (_, trial) = admin_key(&gw, "trial-co", "keygate:admin", &[], &[], json!([])).await;

    for path in ["/v1/keys", "/v1/policy", "/v1/audit", "/v1/keys/kid_x"] {
        let resp = req(&gw, reqwest::Method::GET, path, As::Nobody)
            .send()
            .await
            .unwrap();
        assert!(resp.headers().contains_key("www-authenticate"));
        let (status, code, _) = error_code(resp).await;
        assert_eq!((status, code.as_str()), (401, "unauthenticated"), "{path}");
    }
    let wrong = [
        As::Token("wrong-token"),
        As::Token(""),
        As::Key("kg_notakey"),
        As::Key("kg_0000000000000000000000000000"),
    ];
    for who in wrong {
        let (status, v) = get(&gw, "/v1/keys", who).await;
        assert_eq!(status, 401, "{v}");
    }
    let resp = client()
        .get(gw.admin_url("/v1/keys"))
        .header("Authorization", format!("Basic {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // A valid key without keygate:admin or keygate:self: 403.
    let (status, v) = get(&gw, "/v1/keys", As::Key(&plain)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    // A business switched off by the policy: 403.
    assert_eq!(get(&gw, "/v1/keys", As::Key(&trial)).await.0, 403);
    // Both credentials at once: ambiguous.
    let resp = req(&gw, reqwest::Method::GET, "/v1/keys", As::Token(TOKEN))
        .header("X-API-Key", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // The admin key works; once revoked it is 401.
    assert_eq!(get(&gw, "/v1/keys", As::Key(&admin)).await.0, 200);
    assert_eq!(
        delete(&gw, &format!("/v1/keys/{admin_id}"), As::Token(TOKEN))
            .await
            .0,
        204
    );
    assert_eq!(get(&gw, "/v1/keys", As::Key(&admin)).await.0, 401);

    // Public: health, OpenAPI, the console.
    for path in [
        "/healthz",
        "/openapi.json",
        "/",
        "/console/app.js",
        "/console/app.css",
    ] {
        let resp = client().get(gw.admin_url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn a_gateway_without_a_token_refuses_every_bearer() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&up).await;
    let (status, v) = get(&gw, "/v1/keys", As::Token("")).await;
    assert_eq!(status, 401, "{v}");
    let (status, _) = get(&gw, "/v1/keys", As::Token("anything")).await;
    assert_eq!(status, 401);
    // Keys created with the CLI still administer.
    let (_, admin) = gw
        .create_key(&[
            "--name",
            "a",
            "--user",
            "boss",
            "--business",
            "acme",
            "--scope",
            "keygate:admin",
        ])
        .await;
    assert_eq!(get(&gw, "/v1/keys", As::Key(&admin)).await.0, 200);
}

#[tokio::test]
async fn bad_input_is_400_naming_the_field() {
    let up = Upstream::start().await;
    let gw = Gateway::start_with(
        &up,
        Options {
            admin_token: Some(TOKEN),
            extra: "keys:\n  max_ttl: 30d\n",
            ..Options::default()
        },
    )
    .await;
    let base = json!({"name": "n", "user_id": "u", "business_id": "acme"});
    let with = |patch: Value| {
        let mut b = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases = [
        (with(json!({"nmae": "typo"})), "nmae"),
        (with(json!({"name": ""})), "name"),
        (with(json!({"name": "   "})), "name"),
        (with(json!({"name": 5})), "name"),
        (json!({"user_id": "u", "business_id": "acme"}), "name"),
        (json!({"name": "n", "business_id": "acme"}), "user_id"),
        (json!({"name": "n", "user_id": "u"}), "business_id"),
        (with(json!({"user_id": "has space"})), "user_id"),
        (with(json!({"scopes": ["items:raed"]})), "scopes"),
        (with(json!({"scopes": "items:read"})), "scopes"),
        (with(json!({"locations": ["mars"]})), "locations"),
        (
            with(json!({"grants": [{"role": "boss", "locations": ["hq"]}]})),
            "grants",
        ),
        (
            with(json!({"grants": [{"role": "viewer", "locations": ["mars"]}]})),
            "grants",
        ),
        (
            with(json!({"grants": [{"role": "viewer", "locations": []}]})),
            "grants",
        ),
        (
            with(json!({"grants": [{"role": "viewer", "locations": ["hq"], "x": 1}]})),
            "grants[0].x",
        ),
        (with(json!({"expires_in": "soon"})), "expires_in"),
        (with(json!({"expires_in": "0s"})), "expires_in"),
        (with(json!({"expires_in": "1y"})), "expires_in"),
        (with(json!({"expires_in": "never"})), "expires_in"),
        (with(json!({"expires_at": "tomorrow"})), "expires_at"),
        (
            with(json!({"expires_at": "2001-01-01T00:00:00Z"})),
            "expires_at",
        ),
        (
            with(json!({"expires_at": "2999-01-01T00:00:00Z"})),
            "expires_at",
        ),
        (
            with(json!({"expires_in": "1d", "expires_at": "2999-01-01T00:00:00Z"})),
            "expires_at",
        ),
    ];
    for (body, field) in cases {
        let (status, v) = post(&gw, "/v1/keys", As::Token(TOKEN), body.clone()).await;
        assert_invalid(status, &v, field);
        if field == "scopes" && body["scopes"].is_array() {
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(msg.contains("did you mean `items:read`"), "{msg}");
        }
    }
    // Not JSON, not an object, empty.
    for raw in ["{", "[]", "", "null", "{\"name\": \"n\"} trailing"] {
        let resp = req(&gw, reqwest::Method::POST, "/v1/keys", As::Token(TOKEN))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        let (status, code, v) = error_code(resp).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_request"),
            "{raw:?}: {v}"
        );
    }
    // Too large.
    let big = "x".repeat(100_000);
    let (status, v) = post(
        &gw,
        "/v1/keys",
        As::Token(TOKEN),
        with(json!({"description": big})),
    )
    .await;
    assert_eq!(status, 413, "{v}");
    // Within max_ttl is fine.
    let (status, v) = post(
        &gw,
        "/v1/keys",
        As::Token(TOKEN),
        with(json!({"expires_in": "5d"})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = post(&gw, "/v1/keys", As::Token(TOKEN), base.clone()).await;
    assert_eq!(status, 201, "no expiry given: max_ttl applies: {v}");
    assert!(v["expires_at"].is_string());

    // Query strings.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("status=gone", "status"),
        ("cursor=zz", "cursor"),
        ("colour=red", "colour"),
        ("search=a&search=b", "search"),
    ] {
        let (status, v) = get(&gw, &format!("/v1/keys?{query}"), As::Token(TOKEN)).await;
        assert_invalid(status, &v, field);
    }
    let (status, v) = get(&gw, "/v1/audit?limit=x", As::Token(TOKEN)).await;
    assert_invalid(status, &v, "limit");
    // Rotation input.
    let (id, _) = make(&gw, base.clone()).await;
    for (body, field) in [
        (json!({"grace": "a while"}), "grace"),
        (json!({"grace": "2y"}), "grace"),
        (json!({"graze": "1h"}), "graze"),
        (json!({"expires_in": "1y"}), "expires_in"),
    ] {
        let (status, v) = post(
            &gw,
            &format!("/v1/keys/{id}/rotate"),
            As::Token(TOKEN),
            body,
        )
        .await;
        assert_invalid(status, &v, field);
    }
}

#[tokio::test]
async fn routing_405_with_allow_and_404() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    for (method, path, allow) in [
        (reqwest::Method::PUT, "/v1/keys", "GET, POST"),
        (reqwest::Method::PUT, "/v1/keys/kid_x", "GET, PATCH, DELETE"),
        (reqwest::Method::GET, "/v1/keys/kid_x/suspend", "POST"),
        (reqwest::Method::GET, "/v1/keys/kid_x/rotate", "POST"),
        (reqwest::Method::POST, "/v1/policy", "GET"),
        (reqwest::Method::DELETE, "/v1/audit", "GET"),
    ] {
        let resp = req(&gw, method, path, As::Token(TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{path}");
        assert_eq!(resp.headers()["allow"], allow);
    }
    for path in [
        "/v1/nope",
        "/v1/keys/",
        "/v1/keys/a/b",
        "/v1/keys/a/rotate/x",
        "/nope",
    ] {
        let (status, v) = get(&gw, path, As::Token(TOKEN)).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{path}"
        );
    }
}

#[tokio::test]
async fn keys_never_mint_what_they_do_not_hold() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    // An admin of acme holding items:read everywhere, location hq, editor at hq.
    let (admin_id, admin) = admin_key(
        &gw,
        "acme",
        "keygate:admin",
        &["items:read"],
        &["hq"],
        json!([{"role": "editor", "locations": ["hq"]}]),
    )
    .await;
    let who = As::Key(&admin);
    let new = |extra: Value| {
        let mut b = json!({"name": "n", "user_id": "ann", "business_id": "acme"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let refused = [
        json!({"scopes": ["items:write"]}),  // only at hq, via a role
        json!({"scopes": ["reports:read"]}), // not held at all
        json!({"locations": ["plant-1"]}),   // not its location
        json!({"locations": ["*"]}),         // not every location
        // Role and location only at hq: the new key can hold neither at plant-1.
        json!({"locations": ["plant-1"], "grants": [{"role": "editor", "locations": ["plant-1"]}]}),
        json!({"grants": [{"role": "editor", "locations": ["*"]}]}),
        json!({"business_id": "globex"}), // another business
    ];
    for extra in refused {
        let (status, v) = post(&gw, "/v1/keys", who, new(extra.clone())).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{extra}: {v}"
        );
    }
    // Within its own power: fine, and recorded as made by this key.
    let (status, v) = post(
        &gw,
        "/v1/keys",
        who,
        new(json!({"scopes": ["items:read", "keygate:self"], "locations": ["hq"],
                   "grants": [{"role": "editor", "locations": ["hq"]}, {"role": "viewer", "locations": ["*"]}]})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["created_by"], format!("key:{admin_id}"));
    // Unknown scopes are still 400 for a key caller (validated before permissions).
    let (status, _) = post(&gw, "/v1/keys", who, new(json!({"scopes": ["nope:x"]}))).await;
    assert_eq!(status, 400);

    // A self key of ann: its own user only, and nothing beyond its own power.
    let (_, own) = make(
        &gw,
        json!({"name": "ann self", "user_id": "ann", "business_id": "acme",
               "scopes": ["keygate:self", "items:read"], "locations": ["*"]}),
    )
    .await;
    let me = As::Key(&own);
    let (status, v) = post(
        &gw,
        "/v1/keys",
        me,
        new(json!({"scopes": ["items:read"], "locations": ["plant-2"]})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    for extra in [
        json!({"user_id": "bob"}),
        json!({"scopes": ["keygate:admin"]}),
        json!({"scopes": ["items:write"]}),
        json!({"locations": ["hq"], "grants": [{"role": "editor", "locations": ["hq"]}]}),
    ] {
        let (status, v) = post(&gw, "/v1/keys", me, new(extra.clone())).await;
        assert_eq!(status, 403, "{extra}: {v}");
    }
    // Another user's key in its business: visible to admins, forbidden to a self key.
    let (bob_key, _) = make(
        &gw,
        json!({"name": "bob's", "user_id": "bob", "business_id": "acme"}),
    )
    .await;
    let path = format!("/v1/keys/{bob_key}");
    assert_eq!(get(&gw, &path, me).await.0, 403);
    assert_eq!(delete(&gw, &path, me).await.0, 403);
    assert_eq!(
        post(&gw, &format!("{path}/rotate"), me, json!({})).await.0,
        403
    );
    assert_eq!(get(&gw, "/v1/audit", me).await.0, 403);
    let (status, v) = get(&gw, "/v1/keys?user_id=bob", me).await;
    assert_eq!((status, v["keys"].as_array().unwrap().len()), (200, 0));
    let (_, v) = get(&gw, "/v1/keys", me).await;
    assert!(
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["user_id"] == "ann"),
        "{v}"
    );
    assert_eq!(get(&gw, &path, who).await.0, 200);
    // Rotating a more powerful key of its own user would mint that power: 403.
    let (strong, _) = make(
        &gw,
        json!({"name": "strong", "user_id": "ann", "business_id": "acme", "scopes": ["items:write"]}),
    )
    .await;
    let (status, _) = post(&gw, &format!("/v1/keys/{strong}/rotate"), me, json!({})).await;
    assert_eq!(status, 403);
    let (status, _) = post(&gw, &format!("/v1/keys/{strong}/rotate"), who, json!({})).await;
    assert_eq!(status, 403, "the admin holds items:write only at hq");
    // But it may revoke it.
    assert_eq!(delete(&gw, &format!("/v1/keys/{strong}"), me).await.0, 204);
}

#[tokio::test]
async fn another_business_is_invisible() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let (_, admin) = admin_key(&gw, "acme", "keygate:admin", &[], &[], json!([])).await;
    let (theirs, their_secret) = make(
        &gw,
        json!({"name": "globex key", "user_id": "g", "business_id": "globex", "scopes": ["items:read"], "locations": ["*"]}),
    )
    .await;
    let (_, own) = make(
        &gw,
        json!({"name": "self", "user_id": "boss", "business_id": "acme", "scopes": ["keygate:self"]}),
    )
    .await;
    for who in [As::Key(&admin), As::Key(&own)] {
        let path = format!("/v1/keys/{theirs}");
        let (status, v) = get(&gw, &path, who).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (404, Some("not_found"))
        );
        assert_eq!(delete(&gw, &path, who).await.0, 404);
        assert_eq!(
            post(&gw, &format!("{path}/rotate"), who, json!({})).await.0,
            404
        );
        let (status, v) = get(&gw, "/v1/keys?business_id=globex", who).await;
        assert_eq!(status, 200);
        assert_eq!(v["keys"], json!([]));
        let (_, v) = get(&gw, &format!("/v1/keys?search={theirs}"), who).await;
        assert_eq!(v["keys"], json!([]));
        let (_, v) = get(&gw, "/v1/keys", who).await;
        assert!(
            v["keys"]
                .as_array()
                .unwrap()
                .iter()
                .all(|k| k["business_id"] == "acme")
        );
    }
    // Still alive: nothing happened to it.
    assert_eq!(proxy_status(&gw, &their_secret, "/v1/items/1").await.0, 200);
    // The token sees it.
    assert_eq!(
        get(&gw, &format!("/v1/keys/{theirs}"), As::Token(TOKEN))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn listing_pages_searches_and_filters() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let (id, _) = make(
            &gw,
            json!({"name": format!("pager {i}"), "description": if i == 3 { "the NEEDLE one" } else { "" },
                   "user_id": if i % 2 == 0 { "even" } else { "odd" }, "business_id": "pages"}),
        )
        .await;
        ids.push(id);
    }
    make(
        &gw,
        json!({"name": "pager elsewhere", "user_id": "even", "business_id": "other"}),
    )
    .await;
    for id in &ids[..2] {
        assert_eq!(
            delete(&gw, &format!("/v1/keys/{id}"), As::Token(TOKEN))
                .await
                .0,
            204
        );
    }
    // Three pages of 3, 3, 1; newest first; no gaps, no repeats.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/keys?business_id=pages&limit=3&cursor={c}"),
            None => "/v1/keys?business_id=pages&limit=3".to_owned(),
        };
        let (status, v) = get(&gw, &path, As::Token(TOKEN)).await;
        assert_eq!(status, 200, "{v}");
        let keys = v["keys"].as_array().unwrap();
        pages.push(keys.len());
        seen.extend(keys.iter().map(|k| k["id"].as_str().unwrap().to_owned()));
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, [3, 3, 1]);
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    let mut sorted_seen = seen.clone();
    sorted_seen.sort();
    let mut sorted_ids = ids.clone();
    sorted_ids.sort();
    assert_eq!(sorted_seen, sorted_ids, "every key exactly once");
    // Keys made in the same second order by id; the order is still total and stable.
    let (_, all) = get(&gw, "/v1/keys?business_id=pages", As::Token(TOKEN)).await;
    let all: Vec<String> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(all, seen);
    assert_eq!(all.len(), newest_first.len());

    let count = |v: &Value| v["keys"].as_array().unwrap().len();
    let (_, v) = get(
        &gw,
        "/v1/keys?business_id=pages&status=revoked",
        As::Token(TOKEN),
    )
    .await;
    assert_eq!(count(&v), 2);
    assert!(
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["status"] == "revoked")
    );
    let (_, v) = get(
        &gw,
        "/v1/keys?business_id=pages&status=active",
        As::Token(TOKEN),
    )
    .await;
    assert_eq!(count(&v), 5);
    let (_, v) = get(
        &gw,
        "/v1/keys?business_id=pages&status=expired",
        As::Token(TOKEN),
    )
    .await;
    assert_eq!(count(&v), 0);
    let (_, v) = get(&gw, "/v1/keys?search=needle", As::Token(TOKEN)).await;
    assert_eq!(v["keys"][0]["id"], ids[3].as_str());
    assert_eq!(count(&v), 1);
    let (_, v) = get(&gw, "/v1/keys?search=PAGER+5", As::Token(TOKEN)).await;
    assert_eq!(v["keys"][0]["id"], ids[5].as_str());
    let (_, v) = get(
        &gw,
        &format!("/v1/keys?search={}", &ids[6][4..]),
        As::Token(TOKEN),
    )
    .await;
    assert_eq!(v["keys"][0]["id"], ids[6].as_str());
    let (_, v) = get(&gw, "/v1/keys?search=pager", As::Token(TOKEN)).await;
    assert_eq!(count(&v), 8, "every business for the token");
    let (_, v) = get(
        &gw,
        "/v1/keys?business_id=pages&user_id=odd",
        As::Token(TOKEN),
    )
    .await;
    assert_eq!(count(&v), 3);

    // Default page size 50, larger limits clamped to 500.
    for i in 0..52 {
        make(
            &gw,
            json!({"name": format!("bulk {i}"), "user_id": "b", "business_id": "bulk"}),
        )
        .await;
    }
    let (_, v) = get(&gw, "/v1/keys?business_id=bulk", As::Token(TOKEN)).await;
    assert_eq!(count(&v), 50);
    assert!(v["next_cursor"].is_string());
    let (_, v) = get(
        &gw,
        "/v1/keys?business_id=bulk&limit=100000000000000000000",
        As::Token(TOKEN),
    )
    .await;
    assert_eq!(count(&v), 52);
    assert_eq!(v["next_cursor"], Value::Null);
}

#[tokio::test]
async fn rotation_keeps_the_old_key_during_grace_then_expires_it() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let (old_id, old_secret) = make(
        &gw,
        json!({"name": "rotating", "description": "d", "user_id": "u1", "business_id": "acme",
               "scopes": ["items:read"], "locations": ["hq"],
               "grants": [{"role": "editor", "locations": ["hq"]}], "expires_in": "5d"}),
    )
    .await;
    assert_eq!(proxy_status(&gw, &old_secret, "/v1/items/1").await.0, 200);
    let (_, old) = get(&gw, &format!("/v1/keys/{old_id}"), As::Token(TOKEN)).await;

    let (status, new) = post(
        &gw,
        &format!("/v1/keys/{old_id}/rotate"),
        As::Token(TOKEN),
        json!({"grace": "3s"}),
    )
    .await;
    assert_eq!(status, 201, "{new}");
    let new_secret = new["key"].as_str().unwrap();
    assert_ne!(new["id"], old["id"]);
    assert_ne!(new_secret, old_secret);
    for field in [
        "name",
        "description",
        "user_id",
        "business_id",
        "scopes",
        "locations",
        "grants",
    ] {
        assert_eq!(new[field], old[field], "{field}");
    }
    // Same lifetime from now: five days.
    let at = |v: &Value, f: &str| {
        time::OffsetDateTime::parse(
            v[f].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let life = at(&new, "expires_at") - at(&new, "created_at");
    assert_eq!(life.whole_days(), 5);

    // During the grace both work; after it the old one is expired.
    assert_eq!(proxy_status(&gw, &old_secret, "/v1/items/1").await.0, 200);
    assert_eq!(proxy_status(&gw, new_secret, "/v1/items/1").await.0, 200);
    let started = Instant::now();
    loop {
        let (s, code) = proxy_status(&gw, &old_secret, "/v1/items/1").await;
        if s == 401 {
            assert_eq!(code, "expired_api_key");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "old key still works"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the grace was not honoured"
    );
    assert_eq!(proxy_status(&gw, new_secret, "/v1/items/1").await.0, 200);
    let (_, v) = get(&gw, &format!("/v1/keys/{old_id}"), As::Token(TOKEN)).await;
    assert_eq!(v["status"], "expired");

    // No body: no grace; given expiry: used.
    let new_id = new["id"].as_str().unwrap();
    let resp = req(
        &gw,
        reqwest::Method::POST,
        &format!("/v1/keys/{new_id}/rotate"),
        As::Token(TOKEN),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 201);
    let newest: Value = resp.json().await.unwrap();
    assert_eq!(
        proxy_status(&gw, new_secret, "/v1/items/1").await.1,
        "expired_api_key"
    );
    let (status, v) = post(
        &gw,
        &format!("/v1/keys/{}/rotate", newest["id"].as_str().unwrap()),
        As::Token(TOKEN),
        json!({"expires_in": "1h"}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        (at(&v, "expires_at") - at(&v, "created_at")).whole_hours(),
        1
    );
    // A revoked key cannot be rotated; an unknown one is 404.
    let id = v["id"].as_str().unwrap();
    delete(&gw, &format!("/v1/keys/{id}"), As::Token(TOKEN)).await;
    let (status, v) = post(
        &gw,
        &format!("/v1/keys/{id}/rotate"),
        As::Token(TOKEN),
        json!({}),
    )
    .await;
    assert_invalid(status, &v, "id");
    assert_eq!(
        post(&gw, "/v1/keys/kid_nope/rotate", As::Token(TOKEN), json!({}))
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn audit_is_scoped_and_survives_a_restart() {
    let up = Upstream::start().await;
    let mut gw = start(&up).await;
    let (admin_id, admin) = admin_key(
        &gw,
        "acme",
        "keygate:admin",
        &["items:read"],
        &["*"],
        json!([]),
    )
    .await;
    let by_key = {
        let (status, v) = post(
            &gw,
            "/v1/keys",
            As::Key(&admin),
            json!({"name": "by admin", "user_id": "u", "business_id": "acme", "scopes": ["items:read"]}),
        )
        .await;
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_owned()
    };
    let (other, _) = make(
        &gw,
        json!({"name": "g", "user_id": "u", "business_id": "globex"}),
    )
    .await;
    let (status, rotated) = post(
        &gw,
        &format!("/v1/keys/{by_key}/rotate"),
        As::Key(&admin),
        json!({"grace": "1h"}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(rotated["created_by"], format!("key:{admin_id}"));
    let rotated_id = rotated["id"].as_str().unwrap().to_owned();
    assert_eq!(
        delete(&gw, &format!("/v1/keys/{rotated_id}"), As::Token(TOKEN))
            .await
            .0,
        204
    );

    gw.restart().await;

    let (status, v) = get(&gw, "/v1/audit", As::Token(TOKEN)).await;
    assert_eq!(status, 200);
    let events = v["events"].as_array().unwrap();
    let find = |action: &str, key: &str| {
        events
            .iter()
            .find(|e| e["action"] == action && e["key_id"] == key)
            .unwrap_or_else(|| panic!("no {action} of {key} in {v}"))
            .clone()
    };
    assert_eq!(find("created", &admin_id)["actor"], "token");
    assert_eq!(find("created", &by_key)["actor"], format!("key:{admin_id}"));
    assert_eq!(find("rotated", &by_key)["actor"], format!("key:{admin_id}"));
    assert_eq!(
        find("created", &rotated_id)["actor"],
        format!("key:{admin_id}")
    );
    let revoked = find("revoked", &rotated_id);
    assert_eq!(revoked["actor"], "token");
    assert_eq!(revoked["business_id"], "acme");
    assert!(revoked["at"].as_str().unwrap().ends_with('Z'));
    find("created", &other);
    // Newest first.
    assert_eq!(events[0]["action"], "revoked");

    // An admin key sees its own business only; the limit applies.
    let (status, v) = get(&gw, "/v1/audit?limit=100", As::Key(&admin)).await;
    assert_eq!(status, 200);
    let mine = v["events"].as_array().unwrap();
    assert!(!mine.is_empty());
    assert!(mine.iter().all(|e| e["business_id"] == "acme"), "{v}");
    let (_, v) = get(&gw, "/v1/audit?limit=2", As::Token(TOKEN)).await;
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn policy_and_whoami() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let (status, v) = get(&gw, "/v1/policy", As::Token(TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(
        v["scopes"][0],
        json!({"name": "items:read", "description": "Read items"})
    );
    assert_eq!(
        v["roles"][1],
        json!({"name": "editor", "scopes": ["items:read", "items:write"]})
    );
    assert_eq!(v["locations"], json!(["hq", "plant-1", "plant-2"]));
    assert!(
        v["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "location-items")
    );
    let (status, v) = get(&gw, "/v1/whoami", As::Token(TOKEN)).await;
    assert_eq!((status, v["kind"].as_str()), (200, Some("token")));
    let (id, own) = make(
        &gw,
        json!({"name": "s", "user_id": "ann", "business_id": "acme", "scopes": ["keygate:self"]}),
    )
    .await;
    let (_, v) = get(&gw, "/v1/whoami", As::Key(&own)).await;
    assert_eq!(v["kind"], "self");
    assert_eq!(v["key_id"], id.as_str());
    assert_eq!(v["user_id"], "ann");
    assert_eq!(get(&gw, "/v1/policy", As::Key(&own)).await.0, 200);
}

#[tokio::test]
async fn console_is_served_with_security_headers() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let resp = client().get(gw.admin_url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(h.get("set-cookie").is_none());
    let page = resp.text().await.unwrap();
    for label in [
        "Admin token or key",
        "Sign in",
        "Search",
        "Status",
        "Create key",
    ] {
        assert!(page.contains(label), "{label}");
    }
    assert!(page.contains(r#"<script src="/console/app.js""#));
    let js = client()
        .get(gw.admin_url("/console/app.js"))
        .send()
        .await
        .unwrap();
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let js = js.text().await.unwrap();
    assert!(js.contains("sessionStorage"));
    assert!(!js.contains("localStorage") && !js.contains("document.cookie"));
    let css = client()
        .get(gw.admin_url("/console/app.css"))
        .send()
        .await
        .unwrap();
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
}

/// `keys.header` is the key header everywhere: the proxy and the admin API read it (and
/// only it), both name it in `WWW-Authenticate`, and so do the admin API's message,
/// `/openapi.json` and the console page.
#[tokio::test]
async fn a_configured_key_header_is_used_by_the_proxy_and_the_admin_api() {
    let up = Upstream::start().await;
    let gw = Gateway::start_with(
        &up,
        Options {
            admin_token: Some(TOKEN),
            extra: "keys:\n  header: X-Custom-Key\n",
            ..Options::default()
        },
    )
    .await;
    let (_, key) = admin_key(
        &gw,
        "acme",
        "keygate:admin",
        &["items:read"],
        &["*"],
        json!([]),
    )
    .await;
    let challenge = |resp: &reqwest::Response| {
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned()
    };

    // The proxy.
    let resp = client()
        .get(gw.url("/v1/items/1"))
        .header("X-Custom-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client()
        .get(gw.url("/v1/items/1"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(challenge(&resp), r#"ApiKey header="X-Custom-Key""#);
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (401, "missing_api_key"));

    // The admin API.
    let whoami = |header: &'static str| {
        client()
            .get(gw.admin_url("/v1/whoami"))
            .header(header, &key)
            .send()
    };
    let resp = whoami("X-Custom-Key").await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["kind"], "admin");
    let resp = whoami("X-API-Key").await.unwrap();
    assert_eq!(
        challenge(&resp),
        r#"Bearer realm="keygate-admin", ApiKey header="X-Custom-Key""#
    );
    let (status, code, v) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (401, "unauthenticated"));
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("X-Custom-Key") && !message.contains("X-API-Key"),
        "{message}"
    );
    // Sent twice: ambiguous, as on the proxy.
    let resp = client()
        .get(gw.admin_url("/v1/whoami"))
        .header("X-Custom-Key", &key)
        .header("X-Custom-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // What tells clients which header to send.
    let doc: Value = client()
        .get(gw.admin_url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["components"]["securitySchemes"]["apiKey"]["name"],
        "X-Custom-Key"
    );
    let page = client()
        .get(gw.admin_url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(r#"content="X-Custom-Key""#),
        "the console is told the header"
    );
}

#[tokio::test]
async fn bad_bodies_get_the_fix_a_did_you_mean_or_the_valid_values() {
    let up = Upstream::start().await;
    let gw = start(&up).await;
    let message = |v: &Value| v["error"]["message"].as_str().unwrap().to_owned();
    let base = json!({"name": "n", "user_id": "u", "business_id": "acme"});
    let with = |extra: Value| {
        let mut b = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    // A grant where the key may not act: refused at creation, saying the fix.
    let (status, v) = post(
        &gw,
        "/v1/keys",
        As::Token(TOKEN),
        with(json!({"grants": [{"role": "editor", "locations": ["hq"]}]})),
    )
    .await;
    assert_invalid(status, &v, "grants");
    assert!(
        message(&v).contains("where the key may not act (it has no locations)")
            && message(&v).contains("add `hq` to `locations`"),
        "{v}"
    );
    // An unknown body field: the config's did-you-mean.
    let (status, v) = post(
        &gw,
        "/v1/keys",
        As::Token(TOKEN),
        with(json!({"nmae": "x"})),
    )
    .await;
    assert_invalid(status, &v, "nmae");
    assert_eq!(message(&v), "nmae: unknown field (did you mean `name`?)");
    // Unknown locations and scopes: a did-you-mean, or else every valid one.
    let (status, v) = post(
        &gw,
        "/v1/keys",
        As::Token(TOKEN),
        with(json!({"locations": ["mars"]})),
    )
    .await;
    assert_invalid(status, &v, "locations");
    assert_eq!(
        message(&v),
        "locations: unknown location `mars` (expected one of `hq`, `plant-1`, `plant-2`)"
    );
    let (status, v) = post(
        &gw,
        "/v1/keys",
        As::Token(TOKEN),
        with(json!({"scopes": ["items:raed"]})),
    )
    .await;
    assert_invalid(status, &v, "scopes");
    assert_eq!(
        message(&v),
        "scopes: unknown scope `items:raed` (did you mean `items:read`?)"
    );
}
