//! The web console at `/`: one HTML page, four scripts, one stylesheet, all compiled
//! into the binary (`console/`), no CDN, no build step. `app.js` shows three views by
//! the address's fragment (`#/keys`, `#/keys/<id>`, `#/audit`) over the admin API; the
//! page stays one asset, so the router here serves nothing new. Two scripts load before
//! it: `fields.js` (the key form's parts that creating and editing share: pickers,
//! metadata rows, the IP allowlist, field errors) and `edit.js` (the edit dialog,
//! Suspend and Resume), then `chart.js` (usage charts in plain SVG), a file per idea
//! rather than one script doing four jobs.
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
const FIELDS_SCRIPT: &str = include_str!("console/fields.js");
const EDIT_SCRIPT: &str = include_str!("console/edit.js");
const CHART_SCRIPT: &str = include_str!("console/chart.js");
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
    FieldsScript,
    EditScript,
    ChartScript,
    Style,
}

impl Asset {
    /// The asset served at `path`, if any.
    pub fn at(path: &str) -> Option<Self> {
        match path {
            "/" | "/index.html" => Some(Self::Index),
            "/console/app.js" => Some(Self::Script),
            "/console/fields.js" => Some(Self::FieldsScript),
            "/console/edit.js" => Some(Self::EditScript),
            "/console/chart.js" => Some(Self::ChartScript),
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
            Asset::Script => script(SCRIPT),
            Asset::FieldsScript => script(FIELDS_SCRIPT),
            Asset::EditScript => script(EDIT_SCRIPT),
            Asset::ChartScript => script(CHART_SCRIPT),
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

fn script(text: &'static str) -> (Bytes, &'static str) {
    (
        Bytes::from_static(text.as_bytes()),
        "text/javascript; charset=utf-8",
    )
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

    #[test]
    fn every_script_the_page_loads_is_served_as_javascript_in_order() {
        let page =
            String::from_utf8(Console::new("kg_", "X-API-Key").index.to_vec()).unwrap_or_default();
        let order = [
            "/console/fields.js",
            "/console/edit.js",
            "/console/chart.js",
            "/console/app.js",
        ];
        let at: Vec<Option<usize>> = order
            .iter()
            .map(|src| page.find(&format!(r#"<script src="{src}" defer>"#)))
            .collect();
        assert!(at.iter().all(Option::is_some), "{at:?}");
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
        for src in order {
            let asset = Asset::at(src);
            assert!(asset.is_some(), "{src} is not served");
            let r = Console::new("kg_", "X-API-Key").response(asset.unwrap_or(Asset::Index));
            let kind = r.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap_or_default();
            assert!(kind.starts_with("text/javascript"), "{src}: {kind}");
        }
        for text in [SCRIPT, FIELDS_SCRIPT, EDIT_SCRIPT, CHART_SCRIPT] {
            assert!(!text.contains("innerHTML") && !text.contains("localStorage"));
            assert!(!text.contains("document.cookie"));
        }
    }
}
