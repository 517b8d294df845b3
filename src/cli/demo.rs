//! `keygate demo`: everything a newcomer needs in one command.
//!
//! A temporary folder holds a config, a policy and the embedded store; a built-in echo
//! upstream answers every request with what it received (so the identity headers keygate
//! adds are visible); a demo key is created and printed with ready-to-paste curl lines,
//! one allowed and two refused. A second key, holding `keygate:admin` for the demo's
//! business and every scope and role of the policy, is printed as the console's sign-in
//! credential, so the console's key list shows the demo key and can create more.
//! Every command printed runs as printed (`keygate` on PATH after `make install`).
//! Ctrl-C (or SIGTERM) stops everything and removes the folder.

use std::convert::Infallible;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::app::{self, App};
use crate::config::Config;
use crate::keys::Grant;
use crate::lifecycle::{self, Expiry, NewKey, Rules};
use crate::policy::Policy;

/// The example policy, `config/policy.yaml`, under a line saying where the demo's copy is.
const DEMO_POLICY: &str = concat!(
    "# The demo's copy of config/policy.yaml: edit it and run `keygate check --config <folder>/keygate.yaml`.\n",
    include_str!("../../config/policy.yaml"),
);

/// Runs the demo until Ctrl-C.
pub async fn run() -> anyhow::Result<()> {
    let _log = crate::logging::init(crate::config::LogFormat::Text, "info");
    let dir = tempfile::Builder::new()
        .prefix("keygate-demo-")
        .tempdir()
        .context("cannot create a temporary folder")?;
    let echo = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot start the echo upstream")?;
    let echo_addr = echo.local_addr()?;
    tokio::spawn(serve_echo(echo));

    let proxy = bind_preferred(8080).await?;
    let admin = bind_preferred(8081).await?;
    let (proxy_addr, admin_addr) = (proxy.local_addr()?, admin.local_addr()?);

    let config_file = dir.path().join("keygate.yaml");
    std::fs::write(dir.path().join("policy.yaml"), DEMO_POLICY)?;
    std::fs::write(
        &config_file,
        format!(
            "# keygate demo config (temporary)\nlisten: {proxy_addr}\nupstream:\n  url: http://{echo_addr}\nadmin:\n  listen: {admin_addr}\nstore:\n  kind: embedded\n  path: keygate.db\npolicy: policy.yaml\n"
        ),
    )?;
    let cfg = Config::load(&config_file)?;
    let policy = Policy::load(&cfg.policy)?;
    let store = app::open_store(&cfg.store)?;
    let rules = Rules {
        policy: &policy,
        prefix: &cfg.keys.prefix,
        max_ttl: cfg.keys.max_ttl,
    };
    let new = NewKey {
        name: "demo".to_owned(),
        description: "created by keygate demo".to_owned(),
        user_id: "demo-user".to_owned(),
        business_id: BUSINESS.to_owned(),
        scopes: vec!["items:read".to_owned()],
        locations: vec!["*".to_owned()],
        grants: Vec::new(),
        expiry: Some(Expiry::In(std::time::Duration::from_secs(86_400))),
        ..NewKey::default()
    };
    let (record, secret) = lifecycle::create(&*store, &rules, new, "demo").await?;
    let (admin_record, admin_secret) =
        lifecycle::create(&*store, &rules, console_admin(&policy), "demo").await?;
    drop(store);
    let app = App::build(cfg)?;

    let key = secret.expose();
    let base = format!("http://{proxy_addr}");
    let config_path = config_file.display();
    println!("keygate demo is running; Ctrl-C stops it.");
    println!("  gateway   {base}  ->  echo upstream http://{echo_addr}");
    println!("  console   http://{admin_addr}/");
    println!(
        "            sign in with the admin key {} (keygate:admin for business {BUSINESS})",
        admin_secret.expose()
    );
    println!("  admin     http://{admin_addr}  (admin API, /healthz, /readyz, /metrics)");
    println!(
        "  files     {}  (config, policy, key store; removed on exit)",
        dir.path().display()
    );
    println!(
        "  demo key  {} ({}; scope items:read everywhere; expires in 1 day)",
        record.id, record.prefix
    );
    println!("  admin key {} ({})", admin_record.id, admin_record.prefix);
    println!();
    println!(
        "Allowed: GET an item with the demo key (200; the echo shows the X-Keygate-* headers keygate added):"
    );
    println!("  curl -i -H 'X-API-Key: {key}' {base}/v1/items/42");
    println!(
        "Refused: the route needs items:write, which the demo key lacks (403 insufficient_scope):"
    );
    println!("  curl -i -H 'X-API-Key: {key}' {base}/v1/locations/hq/items");
    println!("Refused: no key at all (401 missing_api_key):");
    println!("  curl -i {base}/v1/items/42");
    println!();
    println!("More keys, from another terminal (`make install` puts keygate on PATH):");
    println!(
        "  keygate keys create --config {config_path} --name second-key --user demo-user --business {BUSINESS} --scope items:read --expires 1d"
    );
    println!("  keygate keys list --config {config_path}");
    {
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    let listeners = app::Listeners {
        proxy,
        admin,
        forward_auth: None,
    };
    app.serve(listeners, super::shutdown_signal()).await?;
    eprintln!("keygate demo stopped");
    Ok(())
}

/// The business the demo's keys belong to.
const BUSINESS: &str = "demo-co";

/// The console's sign-in key: an admin of the demo business that holds every scope and
/// role of the policy everywhere, so it may create any key the console offers.
fn console_admin(policy: &Policy) -> NewKey {
    let mut scopes: Vec<String> = policy.scopes().map(|(name, _)| name.to_owned()).collect();
    scopes.push("keygate:admin".to_owned());
    NewKey {
        name: "demo console admin".to_owned(),
        description: "created by keygate demo to sign in to the console".to_owned(),
        user_id: "demo-admin".to_owned(),
        business_id: BUSINESS.to_owned(),
        scopes,
        locations: vec!["*".to_owned()],
        grants: policy
            .roles()
            .map(|(role, _)| Grant {
                role: role.to_owned(),
                locations: vec!["*".to_owned()],
            })
            .collect(),
        expiry: Some(Expiry::In(std::time::Duration::from_secs(86_400))),
        ..NewKey::default()
    }
}

/// The well-known port when free, else any free port on loopback.
async fn bind_preferred(port: u16) -> anyhow::Result<TcpListener> {
    match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => Ok(l),
        Err(_) => TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot listen on loopback"),
    }
}

/// The echo upstream: answers every request with a JSON account of what it received.
async fn serve_echo(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let svc = service_fn(echo);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body_len = body.collect().await.map_or(0, |b| b.to_bytes().len());
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let answer = serde_json::json!({
        "echo": "keygate demo upstream",
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": body_len,
    });
    let mut r = Response::new(Full::new(Bytes::from(format!("{answer:#}\n"))));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}
