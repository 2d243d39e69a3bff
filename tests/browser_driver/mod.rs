//! The browser tests' driver: Debian's Chromium through chromedriver (WebDriver, with the
//! `fantoccini` crate), one chromedriver per test on a free port and one Chromium per page,
//! each with a fresh profile; and [`Page`], a signed-in page observed through small JavaScript
//! queries of the DOM. Shared by `tests/browser.rs`, `tests/browser_accounts.rs` and
//! `tests/browser_chat.rs` (`mod browser_driver;`), each of which adds the page queries of its
//! own features in an `impl Page` of its own. Needs `/usr/bin/chromium` and
//! `/usr/bin/chromedriver` (Debian's `chromium` and `chromium-driver`, which `scripts/test.sh`
//! installs); without them the tests fail saying so.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::common::{token, Server};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// How long the page may take to show something (Chromium on two busy cores is slow).
pub const WAIT: Duration = Duration::from_secs(30);

/// One browser test at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where screenshots go: `target/browser-artifacts/`.
pub fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|target| target.join("browser-artifacts"))
        .unwrap_or_else(|| PathBuf::from("browser-artifacts"));
    std::fs::create_dir_all(&dir).expect("creating the artifacts directory");
    dir
}

/// A chromedriver process (in its own process group, which the browsers it starts join) and
/// the profile directories of the browsers it started.
pub struct Driver {
    pub child: Child,
    pub port: u16,
    pub profiles: Vec<TempDir>,
    pub log: TempDir,
}

impl Driver {
    pub fn start() -> Driver {
        for (path, what) in [(CHROMEDRIVER, "chromedriver"), (CHROMIUM, "chromium")] {
            assert!(
                Path::new(path).exists(),
                "{what} is missing ({path}): the browser tests need Debian's `chromium` and \
                 `chromium-driver` packages. Run the tests with scripts/test.sh, which installs \
                 them, instead of a bare `cargo test`."
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("finding a free port")
            .port();
        let log = tempfile::tempdir().expect("a log dir");
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg(format!(
                    "--log-path={}",
                    log.path().join("chromedriver.log").display()
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("starting chromedriver")
        };
        let driver = Driver {
            child,
            port,
            profiles: Vec::new(),
            log,
        };
        let status = format!("http://127.0.0.1:{port}/status");
        let started = Instant::now();
        loop {
            let ready = ureq::get(&status)
                .timeout(Duration::from_secs(2))
                .call()
                .ok()
                .and_then(|r| r.into_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                return driver;
            }
            assert!(
                started.elapsed() < WAIT,
                "chromedriver did not get ready on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A new headless Chromium with a fresh profile.
    pub async fn browser(&mut self) -> Browser {
        let profile = tempfile::tempdir().expect("a profile dir");
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1100,720".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        self.profiles.push(profile);
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "starting Chromium through chromedriver failed: {e}\nchromedriver log:\n{}",
                    self.log_tail()
                )
            })
    }

    /// A browser with nothing open yet, named `name` in failure messages.
    pub async fn page(&mut self, name: &str) -> Page {
        Page {
            browser: self.browser().await,
            name: name.to_string(),
            driver_port: self.port,
        }
    }

    /// A browser signed in as `user` through a token link (`/?token=`).
    pub async fn open_as(&mut self, server: &Server, user: &str) -> Page {
        let page = Page {
            browser: self.browser().await,
            name: user.to_string(),
            driver_port: self.port,
        };
        page.goto(&server.url(&format!("/?token={}", token(user))))
            .await;
        page
    }

    pub fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.log.path().join("chromedriver.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The browsers are chromedriver's children in its process group: end them all.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser window (or tab) with the web client open, as one user.
pub struct Page {
    pub browser: Browser,
    pub name: String,
    /// chromedriver's port, for its CDP endpoint.
    pub driver_port: u16,
}

impl Page {
    pub async fn goto(&self, url: &str) {
        self.browser
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("{}: opening {url}: {e}", self.name));
    }

    /// Runs a script (with `arguments[0..]`) and returns its result.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.browser
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("{}: script failed: {e}\n{script}", self.name))
    }

    /// Polls `script` until `accept` takes its result; panics after `WAIT` with what it saw
    /// last (and saves a screenshot of the page as it was).
    pub async fn wait_until(
        &self,
        what: &str,
        script: &str,
        args: Vec<Value>,
        accept: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let value = self.js(script, args.clone()).await;
            if accept(&value) {
                return value;
            }
            if started.elapsed() > WAIT {
                let shot = artifacts_dir().join(format!("failed-{}.png", self.name));
                if let Ok(png) = self.browser.screenshot().await {
                    let _ = std::fs::write(&shot, png);
                }
                panic!(
                    "{}: waited {WAIT:?} for {what}; last saw {value} (screenshot: {})",
                    self.name,
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        let element = self
            .browser
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{}: no {css}: {e}", self.name));
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("{}: clicking {css}: {e}", self.name));
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self
            .browser
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{}: no {css}: {e}", self.name));
        element
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("{}: typing into {css}: {e}", self.name));
    }

    /// Waits for the connection indicator to say `state` (`online`, `offline`, ...).
    pub async fn wait_connection(&self, state: &str) {
        self.wait_until(
            &format!("connection state {state}"),
            "return document.getElementById('connection').dataset.state;",
            vec![],
            |v| v == state,
        )
        .await;
    }

    pub async fn open_conversation(&self, group: &str) {
        self.click(&format!(".conversation[data-group=\"{group}\"]"))
            .await;
        self.wait_until(
            &format!("{group} open"),
            "return document.querySelector('.conversation[aria-current=\"true\"]')?.dataset.group ?? null;",
            vec![],
            |v| v == group,
        )
        .await;
    }

    /// Saves a screenshot as `target/browser-artifacts/<name>`; with
    /// `ROLLCALL_UPDATE_SCREENSHOT=1` also as `docs/<docs>`.
    pub async fn screenshot(&self, name: &str, docs: Option<&str>) {
        let png = self.browser.screenshot().await.expect("a screenshot");
        std::fs::write(artifacts_dir().join(name), &png).expect("saving the screenshot");
        if let Some(docs) = docs {
            if std::env::var_os("ROLLCALL_UPDATE_SCREENSHOT").is_some() {
                let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("docs")
                    .join(docs);
                std::fs::write(&path, &png)
                    .unwrap_or_else(|e| panic!("updating {}: {e}", path.display()));
            }
        }
    }

    pub async fn close(self) {
        let _ = self.browser.close().await;
    }
}
