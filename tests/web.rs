//! The web client's HTTP side (embedded files, their headers), the `users` frame it lists people
//! with, and `serve --demo` (seeding and login links). The page's behaviour in a real browser is
//! tested in tests/browser.rs.

mod common;

use common::{Client, Server};
use serde_json::json;

fn get(server: &Server, path: &str, if_none_match: Option<&str>) -> ureq::Response {
    let headers: Vec<(&str, &str)> = if_none_match
        .map(|tag| ("If-None-Match", tag))
        .into_iter()
        .collect();
    server.http_response("GET", path, &headers, None)
}

#[test]
fn the_page_and_its_files_are_served_from_the_binary_with_cache_headers() {
    let server = Server::start();
    for (path, content_type, marker) in [
        ("/", "text/html", "<script type=\"module\" src=\"/main.js\""),
        ("/main.js", "text/javascript", "from './connection.js'"),
        ("/connection.js", "text/javascript", "new WebSocket("),
        ("/model.js", "text/javascript", "export function"),
        ("/view.js", "text/javascript", "getElementById"),
        ("/dialog.js", "text/javascript", "type: 'remind'"),
        ("/app.css", "text/css", ".message-list"),
    ] {
        let response = get(&server, path, None);
        assert_eq!(response.status(), 200, "GET {path}");
        assert_eq!(response.content_type(), content_type, "GET {path}");
        assert_eq!(response.header("cache-control"), Some("no-cache"), "{path}");
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(response.header("referrer-policy"), Some("no-referrer"));
        let etag = response.header("etag").expect("an ETag").to_string();
        let body = response.into_string().expect("a text body");
        assert!(body.contains(marker), "GET {path} lacks {marker:?}");

        // Revalidation with the current tag costs no body; a stale tag gets the file.
        let again = get(&server, path, Some(&etag));
        assert_eq!(again.status(), 304, "GET {path} with If-None-Match");
        assert_eq!(again.into_string().unwrap_or_default(), "");
        assert_eq!(get(&server, path, Some("\"stale\"")).status(), 200);
    }
    let page = get(&server, "/", None);
    let policy = page.header("content-security-policy").expect("a CSP");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    // Unknown paths still get the JSON 404.
    let missing = get(&server, "/app.js", None);
    assert_eq!(missing.status(), 404);
    assert!(missing
        .into_string()
        .unwrap_or_default()
        .contains("not_found"));
}

#[tokio::test]
async fn users_lists_people_in_pages_by_id() {
    let server = Server::start();
    server.create_group("g", &["carol", "alice", "bob"]);
    let mut alice = server.connect("alice").await;
    let all = alice.request(json!({"type": "users"})).await;
    assert_eq!(all["type"], "users", "{all}");
    let ids: Vec<&str> = all["users"]
        .as_array()
        .expect("a users array")
        .iter()
        .map(|u| u["id"].as_str().expect("an id"))
        .collect();
    assert_eq!(ids, ["alice", "bob", "carol"]);
    assert_eq!(all["users"][0]["name"], "alice");
    assert_eq!(all["more"], false);

    let first = alice.request(json!({"type": "users", "limit": 2})).await;
    assert_eq!(first["users"].as_array().map(Vec::len), Some(2));
    assert_eq!(first["more"], true);
    let rest = alice
        .request(json!({"type": "users", "after": "bob", "limit": 2}))
        .await;
    assert_eq!(rest["users"], json!([{"id": "carol", "name": "carol"}]));
    assert_eq!(rest["more"], false);

    alice
        .expect_error(json!({"type": "users", "after": "not an id!"}), "bad_frame")
        .await;
}

/// The links `serve --demo` printed, as (user, URL).
fn demo_links(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|line| {
            let rest = line.strip_prefix("rollcall: demo login for ")?;
            let (user, url) = rest.split_once(": ")?;
            Some((user.to_string(), url.to_string()))
        })
        .collect()
}

/// Waits until the server printed at least `n` demo login links (over all its runs).
fn wait_for_links(server: &Server, n: usize) -> Vec<String> {
    server.wait_for_stdout(&format!("{n} demo login links"), |lines| {
        demo_links(lines).len() >= n
    })
}

#[tokio::test]
async fn demo_seeds_an_empty_data_dir_once_and_prints_working_login_links() {
    let mut server = Server::start_with(&["--demo"]);
    let lines = wait_for_links(&server, 4);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("rollcall: demo data created")),
        "{lines:#?}"
    );
    let links = demo_links(&lines);
    let users: Vec<&str> = links.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(users, ["alice", "bob", "carol", "dave"]);
    let page = server.url("/?token=");
    for (user, url) in &links {
        assert!(
            url.starts_with(&page),
            "{user}'s link {url} is not {page}..."
        );
    }

    // The link's token signs in, and the seeded history is there with real, durable seqs.
    let alice_token = links[0].1.strip_prefix(&page).expect("a token");
    let alice = Client::connect_query(&server.ws_url(), alice_token).await;
    let team = alice
        .welcome_group("team")
        .expect("alice is in team")
        .clone();
    assert_eq!(team["kind"], "group");
    assert_eq!(team["last_seq"], 6);
    assert_eq!(team["unread"], 1, "alice has read up to 5 of 6: {team}");
    let direct = alice
        .welcome_group("dm:alice:bob")
        .expect("alice has a direct conversation with bob");
    assert_eq!(direct["last_seq"], 2);
    let group = server.group("team");
    assert_eq!(group["members"].as_array().map(Vec::len), Some(4));
    assert_eq!(
        common::member_of(&group, "carol").expect("carol")["read"],
        3
    );
    alice.close().await;

    // A crash and a new start on the same data: nothing is seeded again; new links are printed.
    server.restart();
    let lines = wait_for_links(&server, 8);
    let created = lines
        .iter()
        .filter(|l| l.starts_with("rollcall: demo data created"))
        .count();
    assert_eq!(created, 1, "seeded twice: {lines:#?}");
    assert_eq!(server.group("team")["last_seq"], 6);
    let again = demo_links(&lines);
    assert_eq!(again[5].0, "bob");
    let bob_token = again[5]
        .1
        .strip_prefix(&server.url("/?token="))
        .expect("a link to the new port");
    let bob = Client::connect_query(&server.ws_url(), bob_token).await;
    assert_eq!(bob.welcome_group("team").expect("bob in team")["unread"], 0);
    bob.close().await;
}

/// A fresh clone's `./data` holds the tracked `data/README.md`: the quick start must still seed,
/// also after a first start that wrote the generated secrets and an empty database.
#[test]
fn demo_seeds_a_data_dir_that_holds_only_the_clones_readme_and_generated_files() {
    let data = tempfile::tempdir().expect("a data dir");
    let readme = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/README.md");
    std::fs::copy(&readme, data.path().join("README.md")).expect("copy the tracked README");
    let mut server = Server::options().data_dir(data).start();
    // The first start (without --demo) wrote admin-token, jwt-secret and db/.
    server.restart_with(&["--demo"]);
    let lines = wait_for_links(&server, 4);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("rollcall: demo data created")),
        "{lines:#?}"
    );
    assert_eq!(server.group("team")["last_seq"], 6);
}

#[test]
fn demo_seeds_nothing_into_a_data_dir_in_use() {
    let mut server = Server::start();
    server.create_group("ops", &["erin"]);
    server.restart_with(&["--demo"]);
    let lines = server.wait_for_stdout("the demo's note", |lines| {
        lines
            .iter()
            .any(|l| l.contains("demo: the data directory was not empty"))
    });
    assert!(
        lines
            .iter()
            .any(|l| l.contains("for a fresh demo, start with --data and a new directory")),
        "the note does not say what to do: {lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("demo data created")),
        "{lines:#?}"
    );
    let (status, _) = server.admin("GET", "/api/groups/team", None);
    assert_eq!(
        status, 404,
        "the demo group was created in a data dir in use"
    );
    assert_eq!(server.group("ops")["members"][0]["user"], "erin");
}

/// What a new user does first: a fresh `git clone`, then the README's first command. The test
/// runs the binary this build made in place of `cargo run --release --`, in the clone, so it
/// sees what the clone holds (`./data` with its tracked README), not a temp data dir.
#[test]
fn the_readmes_first_command_seeds_a_fresh_clone() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(repo.join("README.md")).expect("README.md");
    let first = readme
        .lines()
        .skip_while(|l| !l.starts_with("## Quick start"))
        .find(|l| l.starts_with("cargo "))
        .expect("a command in the README's quick start");
    let args = first
        .strip_prefix("cargo run --release -- ")
        .unwrap_or_else(|| {
            panic!("the first command is no longer `cargo run --release --`: {first}")
        });
    let dir = tempfile::tempdir().expect("a temp dir");
    let clone = dir.path().join("rollcall");
    let cloned = Command::new("git")
        .args(["clone", "--quiet"])
        .arg(repo)
        .arg(&clone)
        .status()
        .expect("git clone");
    assert!(cloned.success(), "git clone failed");
    assert!(
        clone.join("data").exists(),
        "a clone has its data/ directory"
    );

    let mut server = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(args.split_whitespace())
        // Port 0 instead of 7600, so the test runs beside anything else.
        .args(["--addr", "127.0.0.1:0"])
        .current_dir(&clone)
        .env_remove("ROLLCALL_ADMIN_TOKEN")
        .env_remove("ROLLCALL_JWT_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting rollcall");
    let stdout = server.stdout.take().expect("stdout");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + common::TIMEOUT;
    while seen
        .iter()
        .filter(|l: &&String| l.contains("demo login for"))
        .count()
        < 4
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        seen.iter()
            .any(|l| l.starts_with("rollcall: demo data created")),
        "the quick start seeded nothing in a fresh clone: {seen:#?}"
    );
    assert_eq!(
        seen.iter().filter(|l| l.contains("demo login for")).count(),
        4,
        "{seen:#?}"
    );
    assert!(
        clone.join("data/db").exists(),
        "the data went elsewhere than ./data"
    );
}
