//! The invariants of ARCHITECTURE.md that can be read off the source tree, checked.
//!
//! - **One direction of dependency.** `http → session → registry → group → presence/commit →
//!   store`, with `protocol`, `ids`, `config` and `metrics` beside (they import only each
//!   other). A module names another (`crate::x`) only if `x` is below it or beside; so there is
//!   no circle between modules. The client module uses only `protocol` and `ids`.
//! - **Who knows what.** Only `protocol/` (and the client module) uses `serde_json`; only
//!   `session/` imports actix-web-actors; only `store/` names sled, and only `store/codec.rs`
//!   names bincode; only `store/postgres.rs` names the PostgreSQL client and pool, and no SQL
//!   is written outside `store/`.
//!
//! Read from the files, not from the compiler: a cheap, exact check of `crate::` paths (which
//! is how every module names another here) that fails with the file and line to fix.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Each module's layer: a module may name modules of a lower layer, and the `BESIDE` ones.
const LAYERS: &[(&str, u32)] = &[
    ("server", 9),
    ("demo", 8),
    ("http", 8),
    ("session", 7),
    ("accounts", 7),
    ("backup", 7),
    ("registry", 6),
    ("group", 5),
    ("presence", 4),
    ("commit", 4),
    ("auth", 4),
    ("store", 3),
];

/// Modules beside the layers: anyone may use them, and they use only each other.
const BESIDE: &[&str] = &["protocol", "ids", "config", "metrics"];

/// The client is a protocol client like any other: it may use only these.
const CLIENT_MAY_USE: &[&str] = &["protocol", "ids"];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`group` for `src/group/tick.rs`).
fn module_of(path: &Path) -> String {
    let relative = path.strip_prefix(src_dir()).expect("a file under src/");
    let first = relative
        .components()
        .next()
        .expect("a path component")
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_owned()
}

/// Every `crate::name` in a line.
fn crate_paths(line: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        // `rollcall_crate::` or `$crate::` are not ours.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            names.push(name);
        }
    }
    // `use crate::{a, b}` names several.
    if let Some(group) = line
        .split("crate::{")
        .nth(1)
        .and_then(|tail| tail.split('}').next())
    {
        for item in group.split(',') {
            let name: String = item
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.push(name);
            }
        }
    }
    names
}

fn sources() -> Vec<(PathBuf, String, String)> {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    assert!(files.len() > 20, "found only {} files in src/", files.len());
    files
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).expect("a readable source file");
            (path.clone(), module_of(&path), text)
        })
        .collect()
}

#[test]
fn every_module_names_only_modules_below_it_or_beside() {
    let layers: HashMap<&str, u32> = LAYERS.iter().copied().collect();
    let mut violations = Vec::new();
    let mut seen_modules = Vec::new();
    for (path, module, text) in sources() {
        if matches!(module.as_str(), "lib" | "main") {
            continue;
        }
        seen_modules.push(module.clone());
        for (n, line) in text.lines().enumerate() {
            for used in crate_paths(line) {
                if used == module {
                    continue;
                }
                let allowed = if module == "client" {
                    CLIENT_MAY_USE.contains(&used.as_str())
                } else if BESIDE.contains(&module.as_str()) {
                    BESIDE.contains(&used.as_str())
                } else if BESIDE.contains(&used.as_str()) {
                    true
                } else {
                    match (layers.get(module.as_str()), layers.get(used.as_str())) {
                        (Some(mine), Some(theirs)) => theirs < mine,
                        _ => false,
                    }
                };
                if !allowed {
                    violations.push(format!(
                        "{}:{}: `{module}` names `crate::{used}`",
                        path.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    // A new top-level module must be given a place in the layering.
    for module in &seen_modules {
        assert!(
            module == "client"
                || BESIDE.contains(&module.as_str())
                || layers.contains_key(module.as_str()),
            "module `{module}` has no layer in tests/layering.rs (and ARCHITECTURE.md)"
        );
    }
    assert!(
        violations.is_empty(),
        "dependencies against the layering:\n{}",
        violations.join("\n")
    );
}

/// Files of `src/` that mention `needle` outside comments, as `path:line`.
fn mentions(needle: &str, allowed: impl Fn(&Path) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    for (path, _, text) in sources() {
        if allowed(&path) {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if code.contains(needle) {
                found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

fn under(path: &Path, dir: &str) -> bool {
    path.starts_with(src_dir().join(dir))
}

#[test]
fn only_protocol_and_the_client_know_json() {
    let outside = mentions("serde_json", |p| under(p, "protocol") || under(p, "client"));
    assert!(
        outside.is_empty(),
        "serde_json outside protocol/:\n{}",
        outside.join("\n")
    );
    let outside = mentions("json!", |p| under(p, "protocol") || under(p, "client"));
    assert!(
        outside.is_empty(),
        "json! outside protocol/:\n{}",
        outside.join("\n")
    );
}

#[test]
fn only_the_session_knows_actix_web_actors() {
    let outside = mentions("actix_web_actors", |p| under(p, "session"));
    assert!(outside.is_empty(), "{}", outside.join("\n"));
}

#[test]
fn only_the_store_knows_sled_and_bincode() {
    let outside = mentions("sled::", |p| under(p, "store"));
    assert!(
        outside.is_empty(),
        "sled outside store/:\n{}",
        outside.join("\n")
    );
    let outside = mentions("bincode", |p| p == src_dir().join("store/codec.rs"));
    assert!(
        outside.is_empty(),
        "bincode outside store/codec.rs:\n{}",
        outside.join("\n")
    );
}

#[test]
fn only_the_postgres_store_knows_postgres_and_sql() {
    for client in ["tokio_postgres", "deadpool_postgres"] {
        let outside = mentions(client, |p| p == src_dir().join("store/postgres.rs"));
        assert!(
            outside.is_empty(),
            "{client} outside store/postgres.rs:\n{}",
            outside.join("\n")
        );
    }
    for sql in ["SELECT ", "INSERT INTO", "UPDATE ", "DELETE FROM"] {
        let outside = mentions(sql, |p| under(p, "store"));
        assert!(
            outside.is_empty(),
            "SQL outside store/:\n{}",
            outside.join("\n")
        );
    }
}

#[test]
fn the_path_reader_finds_what_it_must() {
    assert_eq!(crate_paths("use crate::group::{A, B};"), ["group"]);
    assert_eq!(
        crate_paths("use crate::{ids::UserId, store};"),
        ["ids", "store"]
    );
    assert_eq!(
        crate_paths("x = crate::web::asset_at(p); $crate::x"),
        ["web"]
    );
}
