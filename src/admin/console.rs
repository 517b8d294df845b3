//! The web console at `/`: one HTML page, one script, one stylesheet, all compiled into
//! the binary (`console/`), no CDN, no build step. The script shows three views by the
//! address's fragment (`#/keys`, `#/keys/<id>`, `#/audit`) over the admin API; the page
//! stays one asset, so the router here serves nothing new.
//!
//! Invariants: the page runs no inline script or style, so the Content-Security-Policy
//! allows scripts and styles only from this origin (`'self'`) and forbids framing
//! (`frame-ancestors 'none'`, plus `X-Frame-Options: DENY` from the router); the
//! console keeps its credential in the tab's `sessionStorage` and sends it only in
//! `Authorization`/`X-API-Key` headers, never in a cookie or a URL, so a cross-site
//! request carries no credential (CSRF-proof by design). Why the key prefix is
//! written into the page at start-up: the console tells a key from a token by it.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/app.js");
const STYLE: &str = include_str!("console/app.css");

/// Scripts and styles only from this origin, fetches only to it, no framing, no forms
/// posted anywhere, no plugins.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; form-action 'none'; \
    frame-ancestors 'none'; base-uri 'none'";

/// The console's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    Index,
    Script,
    Style,
}

impl Asset {
    /// The asset served at `path`, if any.
    pub fn at(path: &str) -> Option<Self> {
        match path {
            "/" | "/index.html" => Some(Self::Index),
            "/console/app.js" => Some(Self::Script),
            "/console/app.css" => Some(Self::Style),
            _ => None,
        }
    }
}

/// The rendered console.
pub struct Console {
    index: Bytes,
}

impl Console {
    /// Renders the page for keys starting with `key_prefix`, sent in `key_header`.
    pub fn new(key_prefix: &str, key_header: &str) -> Self {
        let index = INDEX
            .replace("{{KEY_PREFIX}}", &escape(key_prefix))
            .replace("{{KEY_HEADER}}", &escape(key_header));
        Self {
            index: Bytes::from(index),
        }
    }

    pub fn response(&self, asset: Asset) -> Response<Full<Bytes>> {
        let (body, kind) = match asset {
            Asset::Index => (self.index.clone(), "text/html; charset=utf-8"),
            Asset::Script => (
                Bytes::from_static(SCRIPT.as_bytes()),
                "text/javascript; charset=utf-8",
            ),
            Asset::Style => (
                Bytes::from_static(STYLE.as_bytes()),
                "text/css; charset=utf-8",
            ),
        };
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = StatusCode::OK;
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    }
}

/// HTML attribute escaping for the values written into the page.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_has_no_inline_script_or_style_and_carries_the_prefix() {
        let page = String::from_utf8(Console::new("kg_\"x", "X-API-Key").index.to_vec())
            .unwrap_or_default();
        assert!(page.contains(r#"content="kg_&quot;x""#));
        assert!(!page.contains("{{"));
        assert!(!page.contains("<script>"), "inline script");
        assert!(!page.contains("style="), "inline style");
        assert!(!page.contains("<style"), "inline style");
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no CDN"
        );
        assert!(!CSP.contains("unsafe-inline"));
    }
}
