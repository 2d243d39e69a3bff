//! The built-in web client: a page, its script modules and a style sheet, embedded in the binary
//! with `include_str!` so the server ships everything a browser needs (no build step, no CDN).
//!
//! The files live in `src/web/` and are plain HTML, CSS and dependency-free JavaScript modules:
//! the page loads `/main.js` (`<script type="module">`), which imports `./model.js`,
//! `./connection.js` (which imports `./presence.js`), `./view.js` (which imports `./dialog.js`,
//! `./groups.js`, `./format.js`, `./presence.js` and `./notify.js`), `./account.js` and
//! `./api.js` by relative path; the script speaks the WebSocket protocol of docs/PROTOCOL.md
//! like any other client. The admin page (`/admin`) loads `/admin.js`, which imports `./api.js`. This module only names the files, with their
//! content types and an ETag computed at compile time, so a browser revalidates cheaply
//! (`Cache-Control: no-cache` + `If-None-Match`) and never runs a stale script after an
//! upgrade. Serving is `assets.rs` beside it, and the router registers [`ASSET_PATHS`]. (Rejected: long-lived
//! `immutable` caching with hashed file names, which would need a build step to rename the
//! files.)

/// One embedded file.
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static str,
    /// A strong ETag: a hash of the body, quoted.
    pub etag: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// An [`Asset`] of a file in `src/web/`, with its ETag computed at compile time.
macro_rules! embed {
    ($content_type:expr, $file:literal) => {{
        const ETAG: [u8; 18] = etag(include_str!($file));
        asset($content_type, include_str!($file), &ETAG)
    }};
}

/// The page, at `/` (and `/index.html`).
pub const INDEX: Asset = embed!(HTML, "../web/index.html");
/// The entry module, at `/main.js`: sign-in and token, wires the others.
pub const MAIN_JS: Asset = embed!(JAVASCRIPT, "../web/main.js");
/// The WebSocket protocol client, at `/connection.js`.
pub const CONNECTION_JS: Asset = embed!(JAVASCRIPT, "../web/connection.js");
/// The client's state (conversations, messages, cursors, receipts, outbox), at `/model.js`.
pub const MODEL_JS: Asset = embed!(JAVASCRIPT, "../web/model.js");
/// DOM rendering and the page's controls, at `/view.js`.
pub const VIEW_JS: Asset = embed!(JAVASCRIPT, "../web/view.js");
/// The receipts dialog (who has seen a message; remind the others), at `/dialog.js`.
pub const DIALOG_JS: Asset = embed!(JAVASCRIPT, "../web/dialog.js");
/// The new-group and group settings dialogs, at `/groups.js`.
pub const GROUPS_JS: Asset = embed!(JAVASCRIPT, "../web/groups.js");
/// Message bodies as DOM nodes (links, mentions), day separators and grouping, at `/format.js`.
pub const FORMAT_JS: Asset = embed!(JAVASCRIPT, "../web/format.js");
/// Who is online and who is typing, at `/presence.js`.
pub const PRESENCE_JS: Asset = embed!(JAVASCRIPT, "../web/presence.js");
/// Desktop notifications, mutes and the unread count in the title, at `/notify.js`.
pub const NOTIFY_JS: Asset = embed!(JAVASCRIPT, "../web/notify.js");
/// The sign-in form, "Change password" and "Sign out", at `/account.js`.
pub const ACCOUNT_JS: Asset = embed!(JAVASCRIPT, "../web/account.js");
/// HTTP calls to the JSON API (sign-in, password, the admin page's), at `/api.js`.
pub const API_JS: Asset = embed!(JAVASCRIPT, "../web/api.js");
/// The admin page, at `/admin`.
pub const ADMIN: Asset = embed!(HTML, "../web/admin.html");
/// The admin page's module (users and groups through the admin API), at `/admin.js`.
pub const ADMIN_JS: Asset = embed!(JAVASCRIPT, "../web/admin.js");
/// The style sheet (of both pages), at `/app.css`.
pub const APP_CSS: Asset = embed!(CSS, "../web/app.css");

/// Every HTTP path with an asset, with its asset: what [`asset_at`] answers.
const ASSETS: [(&str, &Asset); 16] = [
    ("/", &INDEX),
    ("/index.html", &INDEX),
    ("/main.js", &MAIN_JS),
    ("/connection.js", &CONNECTION_JS),
    ("/model.js", &MODEL_JS),
    ("/view.js", &VIEW_JS),
    ("/dialog.js", &DIALOG_JS),
    ("/groups.js", &GROUPS_JS),
    ("/format.js", &FORMAT_JS),
    ("/presence.js", &PRESENCE_JS),
    ("/notify.js", &NOTIFY_JS),
    ("/account.js", &ACCOUNT_JS),
    ("/api.js", &API_JS),
    ("/admin", &ADMIN),
    ("/admin.js", &ADMIN_JS),
    ("/app.css", &APP_CSS),
];

/// Every HTTP path [`asset_at`] answers, for the router to register.
pub const ASSET_PATHS: &[&str] = &{
    let mut paths = [""; ASSETS.len()];
    let mut i = 0;
    while i < ASSETS.len() {
        paths[i] = ASSETS[i].0;
        i += 1;
    }
    paths
};

/// The asset served at an HTTP path, if any.
pub fn asset_at(path: &str) -> Option<&'static Asset> {
    ASSETS
        .iter()
        .find(|(at, _)| *at == path)
        .map(|(_, asset)| *asset)
}

/// The Content-Security-Policy of the page: only its own script, style and WebSocket.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

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

    const ALL: [&Asset; 15] = [
        &INDEX,
        &MAIN_JS,
        &CONNECTION_JS,
        &MODEL_JS,
        &VIEW_JS,
        &DIALOG_JS,
        &GROUPS_JS,
        &FORMAT_JS,
        &PRESENCE_JS,
        &NOTIFY_JS,
        &ACCOUNT_JS,
        &API_JS,
        &ADMIN,
        &ADMIN_JS,
        &APP_CSS,
    ];

    #[test]
    fn every_asset_has_a_distinct_quoted_etag() {
        let tags = ALL.map(|asset| asset.etag);
        for (i, tag) in tags.iter().enumerate() {
            assert_eq!(tag.len(), 18, "{tag}");
            assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
            for other in &tags[i + 1..] {
                assert_ne!(tag, other);
            }
        }
        assert_eq!(etag("a"), etag("a"));
        assert_ne!(etag("a"), etag("b"));
    }

    #[test]
    fn every_listed_path_has_an_asset_and_no_other_path_has_one() {
        assert_eq!(
            ASSET_PATHS,
            [
                "/",
                "/index.html",
                "/main.js",
                "/connection.js",
                "/model.js",
                "/view.js",
                "/dialog.js",
                "/groups.js",
                "/format.js",
                "/presence.js",
                "/notify.js",
                "/account.js",
                "/api.js",
                "/admin",
                "/admin.js",
                "/app.css"
            ]
        );
        for path in ASSET_PATHS {
            let asset = asset_at(path).unwrap_or_else(|| panic!("no asset at {path}"));
            let expected = if path.ends_with(".js") {
                JAVASCRIPT
            } else if path.ends_with(".css") {
                CSS
            } else {
                HTML
            };
            assert_eq!(asset.content_type, expected, "{path}");
        }
        assert_eq!(asset_at("/index.html").map(|a| a.body), Some(INDEX.body));
        for path in [
            "/app.js",
            "/nope.js",
            "",
            "main.js",
            "/main.js/",
            "/web/main.js",
        ] {
            assert!(asset_at(path).is_none(), "{path}");
        }
    }

    /// The specifiers of a module's `import ... from '<specifier>';` lines.
    fn imports(body: &str) -> Vec<&str> {
        body.lines()
            .filter(|line| line.starts_with("import "))
            .map(|line| {
                let (_, spec) = line
                    .rsplit_once(" from ")
                    .unwrap_or_else(|| panic!("an import on one line: {line}"));
                spec.trim_end_matches(';').trim_matches('\'')
            })
            .collect()
    }

    #[test]
    fn the_pages_load_only_embedded_files() {
        for (page, entry) in [(&INDEX, "/main.js"), (&ADMIN, "/admin.js")] {
            assert!(page.body.contains(&format!(
                "<script type=\"module\" src=\"{entry}\"></script>"
            )));
            assert_eq!(page.body.matches("<script").count(), 1);
            assert!(page.body.contains("href=\"/app.css\""));
        }
        // From the pages' entry modules, each `./x.js` import resolves to an embedded module at
        // `/x.js`, and every embedded module is reached.
        let mut reached = vec!["/main.js".to_string(), "/admin.js".to_string()];
        let mut next = 0;
        while next < reached.len() {
            let path = reached[next].clone();
            let module = asset_at(&path).unwrap_or_else(|| panic!("nothing at {path}"));
            assert_eq!(module.content_type, JAVASCRIPT, "{path}");
            let specs = imports(module.body);
            assert_eq!(
                module.body.matches(" from '").count(),
                specs.len(),
                "{path}: an import not on a line of its own"
            );
            for spec in specs {
                let file = spec
                    .strip_prefix("./")
                    .filter(|file| file.ends_with(".js") && !file.contains('/'))
                    .unwrap_or_else(|| panic!("{path} imports {spec:?}, not ./<name>.js"));
                let imported = format!("/{file}");
                assert!(asset_at(&imported).is_some(), "{path} imports {spec:?}");
                if !reached.contains(&imported) {
                    reached.push(imported);
                }
            }
            next += 1;
        }
        reached.sort();
        let mut modules: Vec<String> = ASSET_PATHS
            .iter()
            .filter(|path| path.ends_with(".js"))
            .map(|path| path.to_string())
            .collect();
        modules.sort();
        assert_eq!(reached, modules);
        for asset in ALL {
            assert!(!asset.body.contains("http://") && !asset.body.contains("https://"));
        }
    }

    #[test]
    fn every_module_opens_with_a_comment_saying_what_it_owns() {
        for asset in [
            &MAIN_JS,
            &CONNECTION_JS,
            &MODEL_JS,
            &VIEW_JS,
            &DIALOG_JS,
            &GROUPS_JS,
            &FORMAT_JS,
            &PRESENCE_JS,
            &NOTIFY_JS,
            &ACCOUNT_JS,
            &API_JS,
            &ADMIN_JS,
        ] {
            assert!(asset.body.starts_with("// "), "{}", &asset.body[..40]);
        }
    }
}
