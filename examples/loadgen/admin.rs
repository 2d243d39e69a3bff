//! The server's HTTP side as the load generator uses it (blocking, ureq, loopback only): the
//! admin API (users, groups, users' settings, user tokens, receipts), `/metrics` snapshots and
//! their deltas, and the run ids the users and groups it creates are named after.
//!
//! The server creates no user implicitly on the admin's behalf (a group member, an added member
//! or a `direct` peer must exist), so every scenario creates its users with [`Admin::create_users`]
//! before it makes groups of them. An error answer keeps the server's code ([`ApiError`]), so a
//! caller matches on it (`user_exists` on a re-run) instead of reading the message.

use std::collections::{BTreeMap, HashMap};
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rollcall::protocol::{ErrorCode, HttpError, NewUser};
use serde_json::{json, Value};

use crate::report::fig_f;
use crate::Error;

/// The usual timeout of one admin request.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Admin {
    base: String,
    pub host_port: String,
    token: String,
    /// Connections kept alive between requests ([`Admin::keep_alive`]); none: a new connection
    /// per request (ureq's default agent), as every scenario before `passivate` measured.
    agent: Option<ureq::Agent>,
}

/// A refused or failed admin request: what was asked, the HTTP status and the server's error
/// code when it answered with one, and why in words.
#[derive(Debug)]
pub struct ApiError {
    pub request: String,
    pub status: Option<u16>,
    pub code: Option<ErrorCode>,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.status, self.code) {
            (Some(status), Some(code)) => write!(
                f,
                "{}: HTTP {status} {}: {}",
                self.request,
                code.as_str(),
                self.message
            ),
            (Some(status), None) => write!(f, "{}: HTTP {status}: {}", self.request, self.message),
            _ => write!(f, "{}: {}", self.request, self.message),
        }
    }
}

impl std::error::Error for ApiError {}

/// What [`Admin::create_users`] did.
pub struct CreatedUsers {
    pub created: usize,
    /// Already there (`409 user_exists`): a re-run against the same server.
    pub existed: usize,
    pub took: Duration,
    /// The server's flushes meanwhile (from `/metrics`).
    pub flushes: f64,
}

impl CreatedUsers {
    /// Prints the setup line and records the time as the figure `create_users_s`.
    pub fn report(&self, threads: usize) {
        let took = self.took.as_secs_f64();
        println!(
            "users       : {} created, {} existed already, in {took:.3} s, {} flushes (POST /api/users from {} threads)",
            self.created,
            self.existed,
            self.flushes,
            threads.max(1)
        );
        fig_f("create_users_s", took);
        fig_f("create_users_flushes", self.flushes);
    }
}

impl Admin {
    pub fn new(http: &str, token: &str) -> Result<Admin, Error> {
        let rest = http
            .strip_prefix("http://")
            .ok_or("--http must start with http://")?;
        let host_port = rest.split('/').next().unwrap_or_default().to_string();
        let addrs: Vec<_> = host_port.to_socket_addrs()?.collect();
        if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
            return Err(format!("{host_port} is not a loopback address; refusing").into());
        }
        Ok(Admin {
            base: format!("http://{host_port}"),
            host_port,
            token: token.to_string(),
            agent: None,
        })
    }

    /// The same admin client keeping up to `connections` connections alive between requests,
    /// for tens of thousands of requests in a row (a new connection each would spend the
    /// ephemeral ports on TIME_WAIT). Only for requests back to back: the server closes a
    /// connection idle for 5 s, and a `POST` on such a connection is not retried.
    pub fn keep_alive(&self, connections: usize) -> Admin {
        let agent = ureq::AgentBuilder::new()
            .max_idle_connections(connections.max(1))
            .max_idle_connections_per_host(connections.max(1))
            .build();
        Admin {
            agent: Some(agent),
            ..self.clone()
        }
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// One admin request; an error answer keeps the server's status and code.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, ApiError> {
        let request = format!("{method} {path}");
        let fail = |status: Option<u16>, code: Option<ErrorCode>, message: String| ApiError {
            request: request.clone(),
            status,
            code,
            message,
        };
        let url = format!("{}{path}", self.base);
        let call = match &self.agent {
            Some(agent) => agent.request(method, &url),
            None => ureq::request(method, &url),
        }
        .timeout(timeout)
        .set("Authorization", &self.auth());
        let answer = match body {
            Some(body) => call.send_json(body),
            None => call.call(),
        };
        match answer {
            Ok(response) => response
                .into_json()
                .map_err(|e| fail(None, None, format!("unreadable answer: {e}"))),
            Err(ureq::Error::Status(status, response)) => {
                let text = response.into_string().unwrap_or_default();
                match serde_json::from_str::<HttpError>(&text) {
                    Ok(e) => Err(fail(Some(status), Some(e.error.code), e.error.message)),
                    Err(_) => Err(fail(Some(status), None, text)),
                }
            }
            Err(e) => Err(fail(None, None, e.to_string())),
        }
    }

    pub fn post(&self, path: &str, body: Value) -> Result<Value, Error> {
        Ok(self.call("POST", path, Some(body), TIMEOUT)?)
    }

    /// `POST` with a longer timeout than the usual 10 s (creating a group of thousands).
    pub fn post_slow(&self, path: &str, body: Value, timeout: Duration) -> Result<Value, Error> {
        Ok(self.call("POST", path, Some(body), timeout)?)
    }

    pub fn put(&self, path: &str, body: Value) -> Result<Value, Error> {
        Ok(self.call("PUT", path, Some(body), TIMEOUT)?)
    }

    pub fn get(&self, path: &str) -> Result<Value, Error> {
        Ok(self.call("GET", path, None, TIMEOUT)?)
    }

    /// Creates user `id` (named after its id, no password): true when created, false when it
    /// existed already (`409 user_exists`).
    pub fn create_user(&self, id: &str) -> Result<bool, Error> {
        let body = serde_json::to_value(NewUser {
            id: id.to_string(),
            name: None,
            password: None,
        })?;
        match self.call("POST", "/api/users", Some(body), TIMEOUT) {
            Ok(_) => Ok(true),
            Err(ApiError {
                code: Some(ErrorCode::UserExists),
                ..
            }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates every user in `users` from `threads` parallel connections (a user that exists
    /// already is counted, not an error, so a run can be repeated against the same server).
    /// The server answers each creation once it is durable, after a flush of its own (account
    /// writes are serialized, so parallel creations share no flush: the threads overlap the
    /// requests, 1,000 users cost 1,000 fsyncs). The first refusal stops the rest.
    pub fn create_users(
        &self,
        users: &[String],
        threads: usize,
        deadline: Instant,
    ) -> Result<CreatedUsers, Error> {
        let before = self.metrics()?;
        let t = Instant::now();
        let created = AtomicUsize::new(0);
        in_parallel(users, threads, deadline, "creating users", |user| {
            if self.create_user(user)? {
                created.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })?;
        let took = t.elapsed();
        let created = created.into_inner();
        Ok(CreatedUsers {
            created,
            existed: users.len() - created,
            took,
            flushes: before.delta(&self.metrics()?, "rollcall_flushes_total"),
        })
    }

    pub fn metrics(&self) -> Result<Metrics, Error> {
        let text = ureq::get(&format!("{}/metrics", self.base))
            .timeout(TIMEOUT)
            .set("Authorization", &self.auth())
            .call()
            .map_err(|e| format!("GET /metrics: {e}"))?
            .into_string()?;
        Ok(Metrics::parse(&text))
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/ws?token={token}", self.host_port)
    }

    /// Mints a token for the existing user `user` and returns its WebSocket URL.
    pub fn user_ws_url(&self, user: &str) -> Result<String, Error> {
        let answer = self.post(&format!("/api/users/{user}/tokens"), json!({}))?;
        let token = answer["token"].as_str().ok_or("no token in answer")?;
        Ok(self.ws_url(token))
    }
}

/// Runs `f` on every item from `threads` threads (each a blocking admin client, taking the
/// next item until none is left); the first error, or the deadline, stops every thread and
/// is returned (`doing` names the work in the deadline's error).
pub fn in_parallel<T: Sync>(
    items: &[T],
    threads: usize,
    deadline: Instant,
    doing: &str,
    f: impl Fn(&T) -> Result<(), Error> + Sync,
) -> Result<(), Error> {
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<(), Error> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return Ok(());
                        };
                        if Instant::now() > deadline {
                            next.store(items.len(), Ordering::Relaxed);
                            return Err(format!("deadline reached while {doing}").into());
                        }
                        if let Err(e) = f(item) {
                            next.store(items.len(), Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                })
            })
            .collect();
        let mut result = Ok(());
        for w in workers {
            let r = w
                .join()
                .map_err(|_| format!("a thread panicked while {doing}"))?;
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}

/// One `/metrics` snapshot: `name{labels}` → value.
#[derive(Default, Clone)]
pub struct Metrics(HashMap<String, f64>);

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut out = HashMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some((key, value)) = line.rsplit_once(' ') {
                if let Ok(v) = value.trim().parse::<f64>() {
                    out.insert(key.trim().to_string(), v);
                }
            }
        }
        Metrics(out)
    }

    pub fn get(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(0.0)
    }

    /// `after - self` for one key.
    pub fn delta(&self, after: &Metrics, key: &str) -> f64 {
        after.get(key) - self.get(key)
    }

    pub fn frames(&self, after: &Metrics, dir: &str, kind: &str) -> f64 {
        self.delta(
            after,
            &format!("rollcall_frames_{dir}_total{{type=\"{kind}\"}}"),
        )
    }

    /// Every frame type's delta in one direction.
    pub fn frames_by_type(&self, after: &Metrics, dir: &str) -> BTreeMap<String, f64> {
        let prefix = format!("rollcall_frames_{dir}_total{{type=\"");
        let mut out = BTreeMap::new();
        for key in after.0.keys().chain(self.0.keys()) {
            if let Some(kind) = key
                .strip_prefix(&prefix)
                .and_then(|k| k.strip_suffix("\"}"))
            {
                let d = self.delta(after, key);
                if d != 0.0 {
                    out.insert(kind.to_string(), d);
                }
            }
        }
        out
    }
}

/// `admin.metrics()` from async code.
pub async fn blocking_metrics(admin: &Admin) -> Result<Metrics, Error> {
    let admin = admin.clone();
    tokio::task::spawn_blocking(move || admin.metrics())
        .await
        .map_err(|e| format!("metrics task: {e}"))?
}

/// A prefix unique to this run, for the users and groups it creates.
pub fn run_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("lg{ms:x}{:x}", std::process::id())
}
