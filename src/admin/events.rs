//! `GET /v1/events?limit=`: the newest key events and where each stands with each
//! webhook (pending with its next attempt, delivered, or failed with the last error).
//!
//! Reach: as for the audit log. The admin token sees every event; a `keygate:admin` key
//! its own business's, with each webhook's URL up to its query (which may hold a
//! token); a `keygate:self` key none (events name other users' keys).

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use super::auth::Caller;
use super::error::AdminError;
use super::{Admin, input, json};

impl Admin {
    pub(super) async fn events(
        &self,
        caller: &Caller,
        raw_query: Option<&str>,
    ) -> Result<Response<Full<Bytes>>, AdminError> {
        let q = input::query(raw_query, &["limit"])?;
        let limit = input::limit(q.get("limit").map(String::as_str))?;
        let business = caller.log_reach("the key-event log")?;
        let mut events = self.store.recent_events(business, limit).await?;
        if business.is_some() {
            // A business sees where its events went, not the operator's tokens.
            for d in events.iter_mut().flat_map(|e| e.deliveries.iter_mut()) {
                d.url = crate::config::url_label(&d.url);
            }
        }
        let events: Vec<_> = events.iter().map(crate::events::Stored::to_json).collect();
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "events": events }),
        ))
    }
}
