//! The built-in web client: a page, a script and a style sheet, embedded in the binary with
//! `include_str!` so the server ships everything a browser needs (no build step, no CDN).
//!
//! The files live in `src/web/` and are plain HTML, CSS and dependency-free JavaScript; the
//! script speaks the WebSocket protocol of docs/PROTOCOL.md like any other client. This module
//! only names them, with their content types and an ETag computed at compile time, so a browser
//! revalidates cheaply (`Cache-Control: no-cache` + `If-None-Match`) and never runs a stale
//! script after an upgrade. Routing stays in `http.rs`. (Rejected: long-lived `immutable`
//! caching with hashed file names, which would need a build step to rename the files.)

/// One embedded file.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static str,
    /// A strong ETag: a hash of the body, quoted.
    pub etag: &'static str,
}

/// The page, at `/`.
pub const INDEX: Asset = asset(
    "text/html; charset=utf-8",
    include_str!("web/index.html"),
    &ETAG_INDEX,
);
/// The script, at `/app.js`.
pub const APP_JS: Asset = asset(
    "text/javascript; charset=utf-8",
    include_str!("web/app.js"),
    &ETAG_APP_JS,
);
/// The style sheet, at `/app.css`.
pub const APP_CSS: Asset = asset(
    "text/css; charset=utf-8",
    include_str!("web/app.css"),
    &ETAG_APP_CSS,
);

/// Every HTTP path [`asset_at`] answers.
pub const ASSET_PATHS: &[&str] = &["/", "/index.html", "/app.js", "/app.css"];

/// The asset served at an HTTP path, if any.
pub fn asset_at(path: &str) -> Option<&'static Asset> {
    match path {
        "/" | "/index.html" => Some(&INDEX),
        "/app.js" => Some(&APP_JS),
        "/app.css" => Some(&APP_CSS),
        _ => None,
    }
}

/// The Content-Security-Policy of the page: only its own script, style and WebSocket.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

const ETAG_INDEX: [u8; 18] = etag(include_str!("web/index.html"));
const ETAG_APP_JS: [u8; 18] = etag(include_str!("web/app.js"));
const ETAG_APP_CSS: [u8; 18] = etag(include_str!("web/app.css"));

const fn asset(content_type: &'static str, body: &'static str, etag: &'static [u8; 18]) -> Asset {
    Asset {
        content_type,
        body,
        etag: match std::str::from_utf8(etag) {
            Ok(s) => s,
            Err(_) => "\"0\"",
        },
    }
}

/// `"` + 16 hex digits of the FNV-1a hash of `body` + `"`.
const fn etag(body: &str) -> [u8; 18] {
    let bytes = body.as_bytes();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    let digits = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    let mut d = 0;
    while d < 16 {
        out[1 + d] = digits[((hash >> (60 - 4 * d)) & 0xf) as usize];
        d += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_quoted_etag() {
        let tags = [INDEX.etag, APP_JS.etag, APP_CSS.etag];
        for tag in tags {
            assert_eq!(tag.len(), 18, "{tag}");
            assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
        }
        assert_ne!(tags[0], tags[1]);
        assert_ne!(tags[1], tags[2]);
        assert_eq!(etag("a"), etag("a"));
        assert_ne!(etag("a"), etag("b"));
    }

    #[test]
    fn the_page_loads_only_embedded_files() {
        assert!(INDEX.body.contains("src=\"/app.js\""));
        assert!(INDEX.body.contains("href=\"/app.css\""));
        for body in [INDEX.body, APP_JS.body, APP_CSS.body] {
            assert!(!body.contains("http://") && !body.contains("https://"));
        }
        assert!(asset_at("/nope.js").is_none());
    }
}
