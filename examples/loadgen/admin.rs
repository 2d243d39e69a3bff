//! The server's HTTP side as the load generator uses it (blocking, ureq, loopback only): the
//! admin API (groups, users' settings, user tokens, receipts), `/metrics` snapshots and their
//! deltas, and the run ids the users and groups it creates are named after.

use std::collections::{BTreeMap, HashMap};
use std::net::ToSocketAddrs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::Error;

#[derive(Clone)]
pub struct Admin {
    base: String,
    pub host_port: String,
    token: String,
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
        })
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    pub fn post(&self, path: &str, body: Value) -> Result<Value, Error> {
        let response = ureq::post(&format!("{}{path}", self.base))
            .timeout(Duration::from_secs(10))
            .set("Authorization", &self.auth())
            .send_json(body)
            .map_err(|e| format!("POST {path}: {e}"))?;
        Ok(response.into_json()?)
    }

    /// `POST` with a longer timeout than the usual 10 s (creating a group of thousands).
    pub fn post_slow(&self, path: &str, body: Value, timeout: Duration) -> Result<Value, Error> {
        let response = ureq::post(&format!("{}{path}", self.base))
            .timeout(timeout)
            .set("Authorization", &self.auth())
            .send_json(body)
            .map_err(|e| format!("POST {path}: {e}"))?;
        Ok(response.into_json()?)
    }

    pub fn put(&self, path: &str, body: Value) -> Result<Value, Error> {
        let response = ureq::put(&format!("{}{path}", self.base))
            .timeout(Duration::from_secs(10))
            .set("Authorization", &self.auth())
            .send_json(body)
            .map_err(|e| format!("PUT {path}: {e}"))?;
        Ok(response.into_json()?)
    }

    pub fn get(&self, path: &str) -> Result<Value, Error> {
        let response = ureq::get(&format!("{}{path}", self.base))
            .timeout(Duration::from_secs(10))
            .set("Authorization", &self.auth())
            .call()
            .map_err(|e| format!("GET {path}: {e}"))?;
        Ok(response.into_json()?)
    }

    pub fn metrics(&self) -> Result<Metrics, Error> {
        let text = ureq::get(&format!("{}/metrics", self.base))
            .timeout(Duration::from_secs(10))
            .set("Authorization", &self.auth())
            .call()
            .map_err(|e| format!("GET /metrics: {e}"))?
            .into_string()?;
        Ok(Metrics::parse(&text))
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/ws?token={token}", self.host_port)
    }

    /// Mints a token for `user` and returns its WebSocket URL.
    pub fn user_ws_url(&self, user: &str) -> Result<String, Error> {
        let answer = self.post(&format!("/api/users/{user}/tokens"), json!({}))?;
        let token = answer["token"].as_str().ok_or("no token in answer")?;
        Ok(self.ws_url(token))
    }
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
