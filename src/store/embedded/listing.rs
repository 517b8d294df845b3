//! [`KeyStore::list`](crate::store::KeyStore::list) as one SQL query.
//!
//! Job: turn a [`ListQuery`] and its cursor into a `SELECT` whose filters are `WHERE`
//! terms on indexed columns, whose cursor is a row-value range, newest first, and read
//! one page (plus one row, to know whether a next page exists).
//!
//! Invariants: the SQL agrees with [`ListQuery::matches`] (the contract suite checks
//! every filter against it): statuses as of `query.now`, a `search` that folds ASCII
//! case only and treats `%`, `_` and `\` as plain characters.
//!
//! Why a walk of the ordered index: a `search` is a substring match no index serves, so
//! the query walks the `(created_at, id)` order until the page is full instead of
//! sorting every match.

use rusqlite::Connection;
use rusqlite::types::Value;

use super::classify;
use super::codec::{decode_key, raw_key_row};
use super::schema::KEY_COLUMNS;
use crate::keys::Status;
use crate::store::{Cursor, ListQuery, Page, StoreError};

/// Builds the listing SQL: filters as `WHERE` terms on indexed columns where there
/// are any, the cursor as a row-value range, newest first.
pub(super) fn list_page(
    conn: &Connection,
    query: &ListQuery,
    cursor: Option<&Cursor>,
) -> Result<Page, StoreError> {
    let mut terms: Vec<&str> = Vec::new();
    let mut params: Vec<Value> = Vec::new();
    if let Some(b) = &query.business_id {
        terms.push("business_id = ?");
        params.push(Value::Text(b.clone()));
    }
    if let Some(u) = &query.user_id {
        terms.push("user_id = ?");
        params.push(Value::Text(u.clone()));
    }
    match query.status {
        None => {}
        Some(Status::Revoked) => terms.push("revoked_at IS NOT NULL"),
        Some(Status::Expired) => {
            terms.push("revoked_at IS NULL AND expires_at IS NOT NULL AND expires_at <= ?");
            params.push(Value::Integer(query.now.0));
        }
        Some(Status::Disabled) => {
            terms.push(
                "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?) AND enabled = 0",
            );
            params.push(Value::Integer(query.now.0));
        }
        Some(Status::Active) => {
            terms.push(
                "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?) AND enabled <> 0",
            );
            params.push(Value::Integer(query.now.0));
        }
    }
    if let Some(search) = query.search.as_deref().filter(|s| !s.is_empty()) {
        terms.push(
            "(name LIKE ? ESCAPE '\\' OR description LIKE ? ESCAPE '\\' \
             OR id LIKE ? ESCAPE '\\')",
        );
        let pattern = format!("%{}%", escape_like(search));
        params.extend(std::iter::repeat_n(Value::Text(pattern), 3));
    }
    if let Some(c) = cursor {
        terms.push("(created_at, id) < (?, ?)");
        params.push(Value::Integer(c.created_at.0));
        params.push(Value::Text(c.id.clone()));
    }
    let page_size = query.page_size();
    params.push(Value::Integer(
        i64::try_from(page_size.saturating_add(1)).unwrap_or(i64::MAX),
    ));
    let filter = if terms.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", terms.join(" AND "))
    };
    let sql = format!(
        "SELECT {KEY_COLUMNS} FROM keys {filter} ORDER BY created_at DESC, id DESC LIMIT ?"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(classify)?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(params))
        .map_err(classify)?;
    let mut keys = Vec::with_capacity(page_size.min(1024));
    let mut more = false;
    while let Some(row) = rows.next().map_err(classify)? {
        if keys.len() == page_size {
            more = true;
            break;
        }
        keys.push(decode_key(raw_key_row(row).map_err(classify)?)?);
    }
    let next_cursor = if more {
        keys.last().map(|r| Cursor::after(r).encode())
    } else {
        None
    };
    Ok(Page { keys, next_cursor })
}

/// `LIKE` pattern text matching `text` literally (with `ESCAPE '\'`).
pub(super) fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
