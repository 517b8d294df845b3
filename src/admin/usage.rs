//! `GET /v1/keys/{id}/usage` and `GET /v1/usage?business_id=`: a key's or a business's
//! requests per hour or day, allowed and refused (`usage::report` shapes them).
//!
//! Reach: as for records. A key's usage is visible to whoever may see the key (another
//! business's key is 404); a business's to the admin token and that business's
//! `keygate:admin` keys (another business is 404; a `keygate:self` key is 403: a
//! business's total includes other users' keys).

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use super::auth::Caller;
use super::error::AdminError;
use super::{Admin, input, json};
use crate::keys::Timestamp;
use crate::store::UsageSeries;
use crate::usage::{Range, Report};

type Answer = Result<Response<Full<Bytes>>, AdminError>;

/// The range a query asks for.
fn range(q: &std::collections::HashMap<String, String>) -> Result<Range, AdminError> {
    let get = |k: &str| q.get(k).map(String::as_str);
    Range::parse(get("from"), get("to"), get("granularity"), Timestamp::now())
        .map_err(|(field, why)| AdminError::invalid(field, why))
}

impl Admin {
    /// `GET /v1/keys/{id}/usage?from=&to=&granularity=hour|day`.
    pub(super) async fn key_usage(&self, caller: &Caller, id: &str, raw: Option<&str>) -> Answer {
        let q = input::query(raw, &["from", "to", "granularity"])?;
        let range = range(&q)?;
        let record = self.store.by_id(id).await?.ok_or(AdminError::NotFound)?;
        caller.check_visible(&record)?;
        let body = self
            .usage_of(UsageSeries::Key(record.id.clone()), range)
            .await?;
        let mut body = body;
        body["key_id"] = record.id.into();
        body["business_id"] = record.business_id.into();
        Ok(json(StatusCode::OK, &body))
    }

    /// `GET /v1/usage?business_id=&from=&to=&granularity=`.
    pub(super) async fn business_usage(&self, caller: &Caller, raw: Option<&str>) -> Answer {
        let mut q = input::query(raw, &["business_id", "from", "to", "granularity"])?;
        let range = range(&q)?;
        let business = match (caller, q.remove("business_id")) {
            (Caller::OwnUser(_), _) => {
                return Err(AdminError::Forbidden(
                    "a business's usage needs the admin token or a keygate:admin key; a \
                     keygate:self key sees its own keys' usage at /v1/keys/{id}/usage"
                        .to_owned(),
                ));
            }
            (Caller::Admin(k), None) => k.business_id.clone(),
            (Caller::Admin(k), Some(b)) if b != k.business_id => return Err(AdminError::NotFound),
            (_, Some(b)) => b,
            (Caller::Token, None) => {
                return Err(AdminError::invalid(
                    "business_id",
                    "is required with the admin token (whose business?)",
                ));
            }
        };
        let mut body = self
            .usage_of(UsageSeries::Business(business.clone()), range)
            .await?;
        body["business_id"] = business.into();
        Ok(json(StatusCode::OK, &body))
    }

    async fn usage_of(
        &self,
        series: UsageSeries,
        range: Range,
    ) -> Result<serde_json::Value, AdminError> {
        Ok(Report::read(&*self.store, &series, range).await?.to_json())
    }
}
