//! The health checks of one target: the active `GET health.path` every interval, or,
//! without one, a connection tried after a back-off once the target is taken out.
//!
//! Invariant: they only report to the target's [`Health`](super::health::Health); the
//! state and its transitions (and their log lines) live there.

use http::{Request, Uri};
use http_body_util::{Either, Empty};

use super::{Service, health};
use crate::proxy::forward::UpBody;
use crate::report::Chain;

/// Every `interval`: `GET path` on target `i`; 2xx passes, anything else fails.
pub(super) async fn actively(s: &Service, i: usize, path: &str) {
    let Some(t) = s.targets.get(i) else { return };
    let mut tick = tokio::time::interval(s.health.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let target = format!("{}{path}", s.base_path);
    loop {
        tick.tick().await;
        let outcome = match health_request(&target) {
            Ok(req) => {
                let sent = t.absolute(req).map(|r| t.client.request(r));
                match sent {
                    Ok(fut) => match tokio::time::timeout(s.health.interval, fut).await {
                        Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
                        Ok(Ok(resp)) => Err(format!("health check answered {}", resp.status())),
                        Ok(Err(e)) => Err(Chain(&e).to_string()),
                        Err(_) => Err(format!(
                            "health check not answered within {:?}",
                            s.health.interval
                        )),
                    },
                    Err(e) => Err(Chain(&*e).to_string()),
                }
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => t.health.check_passed(&t.who()),
            Err(reason) => t.health.failed(&t.who(), &reason),
        }
    }
}

fn health_request(target: &str) -> Result<Request<UpBody>, String> {
    let uri: Uri = target
        .parse()
        .map_err(|e| format!("health check path `{target}`: {e}"))?;
    let mut req = Request::new(Either::Right(Empty::new()));
    *req.uri_mut() = uri;
    Ok(req)
}

/// Without an active check: once target `i` is taken out, a connection to it is tried
/// after a back-off (500 ms, doubling to 30 s); each that opens counts as a passed check.
pub(super) async fn passively(service: &Service, index: usize) {
    let Some(target) = service.targets.get(index) else {
        return;
    };
    loop {
        target.health.went_down.notified().await;
        let mut wait = None;
        while !target.health.is_up() {
            let pause = health::back_off(wait);
            tokio::time::sleep(pause).await;
            match target.dial.open().await {
                Ok(_) => {
                    wait = None;
                    target.health.check_passed(&target.who());
                }
                Err(e) => {
                    wait = Some(pause);
                    target.health.failed(&target.who(), &Chain(&e).to_string());
                }
            }
        }
    }
}
