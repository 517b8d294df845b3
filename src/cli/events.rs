//! `keygate events test URL`: sends one signed test event, so a receiver's signature
//! check can be tried before any key changes.
//!
//! Invariants: the secret is the one the gateway would use (the config's webhook with
//! this URL, its `secret_env`), or the variable `--secret-env` names; it is never
//! printed. The test event has type `test`, an `evt_test_…` id and no key.

use std::path::Path;

use super::{Exit, load_config};
use crate::config::{self, Webhook};
use crate::events::deliver::Hook;
use crate::keys::Timestamp;

pub(super) async fn test(
    config_path: &Path,
    url: &str,
    secret_env: Option<&str>,
) -> Result<(), Exit> {
    let configured = if config_path.exists() {
        load_config(config_path)?
            .events
            .webhooks
            .into_iter()
            .find(|w| w.url == url)
    } else {
        None
    };
    let webhook = match (configured, secret_env) {
        (Some(w), None) => w,
        (found, Some(var)) => Webhook {
            secret_env: var.to_owned(),
            ..found.map_or_else(|| ad_hoc(url), Ok)?
        },
        (None, None) => {
            return Err(Exit(
                1,
                format!(
                    "error: {url} is not in events.webhooks of {}; pass --secret-env VAR naming the variable that holds its signing secret",
                    config_path.display()
                ),
            ));
        }
    };
    let secret = crate::events::deliver::secret(&webhook).ok_or_else(|| {
        Exit(
            1,
            format!(
                "error: {} is not set; export it with the webhook's signing secret",
                webhook.secret_env
            ),
        )
    })?;
    let hook = Hook::new(0, &webhook, secret).map_err(super::fail)?;
    let id = format!(
        "evt_test_{}",
        crate::keys::new_id("t").trim_start_matches("kid_")
    );
    let body = serde_json::json!({
        "id": id,
        "type": "test",
        "time": Timestamp::now(),
        "key": null,
        "data": {"message": "a test event from `keygate events test`"},
    });
    let body = serde_json::to_vec(&body).unwrap_or_default();
    match hook.post(&id, "test", body).await {
        Ok(status) if (200..300).contains(&status) => {
            println!("delivered {id} to {url}: {status}");
            Ok(())
        }
        Ok(status) => Err(Exit(
            1,
            format!("error: {url} answered {status} to the signed test event {id}"),
        )),
        Err(why) => Err(Exit(1, format!("error: cannot deliver to {url}: {why}"))),
    }
}

/// A webhook that is not in the config: its URL checked as the config checks one.
fn ad_hoc(url: &str) -> Result<Webhook, Exit> {
    let uri = config::parse_webhook_url(url).map_err(|why| Exit(1, format!("error: {why}")))?;
    Ok(Webhook {
        url: url.to_owned(),
        uri,
        secret_env: String::new(),
        events: crate::events::Kind::ALL.to_vec(),
        ca: None,
    })
}
