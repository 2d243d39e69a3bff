//! HTTP to the server under test: one request with any headers ([`Server::http_response`]), the
//! JSON form of it with a bearer token or a raw `Authorization` value, the admin API helpers
//! (users, groups, members, bot sends, `/metrics`), and the helpers that read admin API bodies
//! (an error body's code, a group's member entry).

use serde_json::{json, Value};

use super::{Server, ADMIN_TOKEN, TIMEOUT};

impl Server {
    /// One HTTP request with these extra headers; error statuses are answers like any other
    /// (only a transport error panics).
    pub fn http_response(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> ureq::Response {
        let agent = ureq::AgentBuilder::new().timeout(TIMEOUT).build();
        let mut request = agent.request(method, &self.url(path));
        for (name, value) in headers {
            request = request.set(name, value);
        }
        let result = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        match result {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(e) => panic!("{method} {path}: transport error: {e}"),
        }
    }

    /// One HTTP request; answers (status, JSON body) for success and error statuses alike. An
    /// empty body is `Value::Null`; a body that is not JSON comes back as a `Value::String`.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let authorization = bearer.map(|bearer| format!("Bearer {bearer}"));
        self.http_raw(method, path, authorization.as_deref(), body)
    }

    /// Like [`Server::http`], with a raw `Authorization` header value (or none): for schemes
    /// and spellings other than `Bearer <token>`.
    pub fn http_raw(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let headers: Vec<(&str, &str)> = authorization
            .map(|value| ("Authorization", value))
            .into_iter()
            .collect();
        let response = self.http_response(method, path, &headers, body);
        let status = response.status();
        let text = response.into_string().expect("reading the HTTP body");
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// An admin API request with the right admin token.
    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.http(method, path, Some(ADMIN_TOKEN), body)
    }

    /// An admin API request that must answer `expected_status`; returns the body.
    pub fn admin_expect(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        expected_status: u16,
    ) -> Value {
        let (status, value) = self.admin(method, path, body);
        assert_eq!(
            status, expected_status,
            "{method} {path}: unexpected status; body: {value}"
        );
        value
    }

    /// Creates the users that do not exist yet (the admin API creates nobody implicitly).
    pub fn ensure_users(&self, users: &[&str]) {
        for user in users {
            let (status, body) = self.admin("POST", "/api/users", Some(json!({"id": user})));
            assert!(
                status == 201 || status == 409,
                "POST /api/users {user}: {status} {body}"
            );
        }
    }

    /// Creates a group through the admin API, creating its members as users first.
    pub fn create_group(&self, id: &str, members: &[&str]) -> Value {
        self.ensure_users(members);
        self.admin_expect(
            "POST",
            "/api/groups",
            Some(json!({"id": id, "members": members})),
            201,
        )
    }

    /// `GET /api/groups/{gid}`, which must exist.
    pub fn group(&self, id: &str) -> Value {
        self.admin_expect("GET", &format!("/api/groups/{id}"), None, 200)
    }

    /// One member's entry of `GET /api/groups/{gid}`.
    pub fn member(&self, group: &str, user: &str) -> Value {
        let group_value = self.group(group);
        member_of(&group_value, user)
            .unwrap_or_else(|| panic!("{user} is not listed in {group_value}"))
            .clone()
    }

    /// Posts a message through the admin API (as a bot, or a sender who need not be online),
    /// which must answer 200; returns its seq.
    pub fn post(&self, group: &str, from: &str, body: &str) -> u64 {
        let sent = self.admin_expect(
            "POST",
            &format!("/api/groups/{group}/messages"),
            Some(json!({"from": from, "body": body})),
            200,
        );
        sent["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("no numeric seq in {sent}"))
    }

    /// `GET /metrics` with the admin token: the value of one counter or gauge sample, named
    /// with its labels as in the Prometheus text (e.g. `rollcall_frames_in_total{type="ack"}`);
    /// 0 when the sample is absent (a labelled counter appears on its first increment).
    pub fn metric(&self, sample: &str) -> u64 {
        let (status, body) = self.admin("GET", "/metrics", None);
        assert_eq!(status, 200, "GET /metrics: {body}");
        let text = body.as_str().expect("metrics are plain text");
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == sample).then(|| {
                    value
                        .parse::<f64>()
                        .unwrap_or_else(|e| panic!("bad sample value in {line:?}: {e}"))
                        as u64
                })
            })
            .unwrap_or(0)
    }
}

/// The entry for `user` in a group object's `members`.
pub fn member_of<'a>(group: &'a Value, user: &str) -> Option<&'a Value> {
    group["members"]
        .as_array()?
        .iter()
        .find(|m| m["user"] == user)
}

/// The error code of an admin API error body `{"error":{"code","message"}}`, checking the shape.
pub fn http_error_code(body: &Value) -> String {
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"));
    assert!(
        body["error"]["message"].is_string(),
        "error body without a message: {body}"
    );
    code.to_string()
}
