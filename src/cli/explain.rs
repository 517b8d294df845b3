//! `keygate policy explain`: what the proxy would decide for a request, without sending
//! anything. Runs the same normalisation, route match and `Policy::decide` as the proxy
//! (rate limits aside: they depend on traffic), against the configured store for `--key`.

use std::path::Path;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::keys::KeysEnv;
use super::{Exit, fail};
use crate::keys::Timestamp;
use crate::policy::Facts;
use crate::policy::path::normalise;
use crate::proxy::Refusal;

/// The arguments of `policy explain`.
pub struct Question {
    pub method: String,
    pub path: String,
    pub key: Option<String>,
    pub headers: Vec<String>,
    pub json: bool,
}

/// What the proxy would do, and why.
struct Answer {
    route: Option<String>,
    required: Vec<String>,
    location: Option<String>,
    refusal: Option<Refusal>,
    reason: String,
}

/// Prints the answer; `Err(Exit(3, ""))` for a refusal, as the contract's exit codes say.
pub async fn run(config: &Path, q: Question) -> Result<(), Exit> {
    let env = KeysEnv::open(config)?;
    let method = Method::from_bytes(q.method.to_ascii_uppercase().as_bytes()).map_err(|_| {
        Exit(
            1,
            format!("error: --method `{}` is not an HTTP method", q.method),
        )
    })?;
    let headers = parse_headers(&q.headers)?;
    let answer = decide(&env, &method, &q.path, q.key.as_deref(), &headers).await?;
    print(&answer, q.json);
    if answer.refusal.is_some() {
        Err(Exit(3, String::new()))
    } else {
        Ok(())
    }
}

async fn decide(
    env: &KeysEnv,
    method: &Method,
    target: &str,
    key: Option<&str>,
    headers: &HeaderMap,
) -> Result<Answer, Exit> {
    let (raw_path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut answer = Answer {
        route: None,
        required: Vec::new(),
        location: None,
        refusal: None,
        reason: String::new(),
    };
    let refuse = |mut a: Answer, r: Refusal| {
        a.reason = r.message();
        a.refusal = Some(r);
        a
    };
    let path = match normalise(raw_path) {
        Ok(p) => p,
        Err(e) => return Ok(refuse(answer, Refusal::from(e))),
    };
    let matched = match env.policy.route(method, &path) {
        Ok(m) => m,
        Err(d) => return Ok(refuse(answer, Refusal::from(d))),
    };
    answer.route = Some(matched.route_name().to_owned());
    answer.required = matched.required_scopes().to_vec();
    if matched.is_public() {
        answer.reason = format!("route `{}` is public: no key needed", matched.route_name());
        return Ok(answer);
    }
    let Some(id) = key else {
        let mut a = refuse(answer, Refusal::MissingKey);
        a.reason = format!(
            "route `{}` needs a key; pass --key ID to decide for one",
            a.route.as_deref().unwrap_or("")
        );
        return Ok(a);
    };
    let Some(record) = env.store.by_id(id).await.map_err(fail)? else {
        let mut a = refuse(answer, Refusal::InvalidKey);
        a.reason = format!("no key with id `{id}` in the store");
        return Ok(a);
    };
    let facts = Facts { headers, query };
    let route = matched.route_name().to_owned();
    match env.policy.decide(
        matched,
        path,
        &std::sync::Arc::new(record),
        &facts,
        Timestamp::now(),
    ) {
        Ok(permit) => {
            answer.location = permit.location().map(str::to_owned);
            answer.reason = if answer.required.is_empty() {
                format!("key `{id}` may call route `{route}`, which needs no scope")
            } else {
                format!(
                    "key `{id}` holds every scope route `{route}` requires ({})",
                    answer.required.join(", ")
                )
            };
            Ok(answer)
        }
        Err(denial) => Ok(refuse(answer, Refusal::from(denial))),
    }
}

fn parse_headers(raw: &[String]) -> Result<HeaderMap, Exit> {
    let mut map = HeaderMap::new();
    for h in raw {
        let bad = || Exit(1, format!("error: --header `{h}`: write it as NAME:VALUE"));
        let (name, value) = h.split_once(':').ok_or_else(bad)?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
        let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
        map.append(name, value);
    }
    Ok(map)
}

fn print(a: &Answer, json: bool) {
    if json {
        let v = serde_json::json!({
            "route": a.route,
            "decision": if a.refusal.is_some() { "deny" } else { "allow" },
            "code": a.refusal.as_ref().map(Refusal::code),
            "required_scopes": a.required,
            "location": a.location,
            "reason": a.reason,
        });
        println!("{v}");
        return;
    }
    let dash = |s: Option<&str>| s.map_or_else(|| "-".to_owned(), str::to_owned);
    println!("route      {}", dash(a.route.as_deref()));
    println!(
        "requires   {}",
        if a.required.is_empty() {
            "-".to_owned()
        } else {
            a.required.join(", ")
        }
    );
    println!("location   {}", dash(a.location.as_deref()));
    match &a.refusal {
        None => println!("decision   allow"),
        Some(r) => println!("decision   deny ({} {})", r.status().as_u16(), r.code()),
    }
    println!("reason     {}", a.reason);
}
