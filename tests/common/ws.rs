//! The WebSocket side of the tests: a raw client that sends and reads JSON frames ([`Client`]),
//! how reading a frame can end ([`WireEnd`]), a hand-made upgrade for tests that write the wire
//! bytes themselves ([`raw_ws_upgrade`]), and the `seq` helpers.
//!
//! The client is deliberately raw (`serde_json::Value`, not the crate's client module): the tests
//! check the documented wire format field by field, and a typed client would hide a renamed or
//! missing field behind its own defaults.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{token, Server, TIMEOUT};

impl Server {
    /// Connects a WebSocket client for `user` with a freshly minted token.
    pub async fn connect(&self, user: &str) -> Client {
        Client::connect(&self.ws_url(), &token(user)).await
    }
}

/// Performs the WebSocket upgrade of `GET /ws` on 127.0.0.1:`port` by hand, with
/// `Authorization: Bearer <token>`, and checks that it was accepted (101). Returns the stream and
/// whatever arrived after the response head (the start of the first frames).
pub async fn raw_ws_upgrade(port: u16, token: &str) -> (TcpStream, Vec<u8>) {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connecting");
    raw_ws_upgrade_over(stream, port, token).await
}

/// Like [`raw_ws_upgrade`], over a stream the test connected itself (e.g. with a small receive
/// buffer).
pub async fn raw_ws_upgrade_over(
    mut stream: TcpStream,
    port: u16,
    token: &str,
) -> (TcpStream, Vec<u8>) {
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("writing the upgrade");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(TIMEOUT, stream.read(&mut chunk))
            .await
            .expect("no upgrade response")
            .expect("reading the upgrade response");
        assert!(n > 0, "connection closed during the upgrade");
        buf.extend_from_slice(&chunk[..n]);
    };
    assert!(
        buf.starts_with(b"HTTP/1.1 101"),
        "upgrade refused: {}",
        String::from_utf8_lossy(&buf[..end])
    );
    buf.drain(..end);
    (stream, buf)
}

/// How reading the next frame from the wire ended when it did not yield a JSON frame.
#[derive(Debug)]
pub enum WireEnd {
    /// Nothing arrived within the wait.
    Timeout,
    /// The server closed the connection, with this close code if it sent one.
    Closed(Option<u16>),
    /// The connection failed (reset, EOF without a close frame, ...).
    Failed(String),
}

/// A raw WebSocket client: sends JSON objects, reads JSON objects.
///
/// Frames skipped while waiting for a particular one (`recv_type`, `request`) are kept in
/// `pending`, in arrival order, and later `recv*` calls look there first.
pub struct Client {
    pub user: String,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<Value>,
    /// The `welcome` frame, read by `connect`.
    pub welcome: Value,
    next_id: u64,
}

impl Client {
    /// Connects with `Authorization: Bearer <token>` and reads the `welcome` frame.
    pub async fn connect(ws_url: &str, token: &str) -> Client {
        match Client::try_connect(ws_url, Some(token)).await {
            Ok(client) => client,
            Err(status) => panic!("connecting to {ws_url} was refused with HTTP {status}"),
        }
    }

    /// Connects with the token in the `?token=` query instead of a header.
    pub async fn connect_query(ws_url: &str, token: &str) -> Client {
        let url = format!("{ws_url}?token={token}");
        match Client::try_connect(&url, None).await {
            Ok(client) => client,
            Err(status) => panic!("connecting to {url} was refused with HTTP {status}"),
        }
    }

    /// Connects; `Err(status)` when the server refused the upgrade with an HTTP status.
    pub async fn try_connect(url: &str, bearer: Option<&str>) -> Result<Client, u16> {
        let mut request = url
            .into_client_request()
            .expect("building the WebSocket request");
        if let Some(bearer) = bearer {
            request.headers_mut().insert(
                "Authorization",
                HeaderValue::from_str(&format!("Bearer {bearer}")).expect("header value"),
            );
        }
        let connecting = tokio_tungstenite::connect_async(request);
        let (ws, _response) = match tokio::time::timeout(TIMEOUT, connecting).await {
            Err(_) => panic!("connecting to {url} took longer than {TIMEOUT:?}"),
            Ok(Err(tungstenite::Error::Http(response))) => return Err(response.status().as_u16()),
            Ok(Err(e)) => panic!("connecting to {url} failed: {e}"),
            Ok(Ok(pair)) => pair,
        };
        let mut client = Client {
            user: String::new(),
            ws,
            pending: VecDeque::new(),
            welcome: Value::Null,
            next_id: 0,
        };
        let welcome = client.recv().await;
        assert_eq!(
            welcome["type"], "welcome",
            "the first frame after the upgrade must be welcome, got {welcome}"
        );
        client.user = welcome["user"].as_str().unwrap_or_default().to_string();
        client.welcome = welcome;
        Ok(client)
    }

    /// The `welcome` entry for one group, if listed.
    pub fn welcome_group(&self, group: &str) -> Option<&Value> {
        self.welcome["groups"]
            .as_array()?
            .iter()
            .find(|g| g["group"] == group)
    }

    /// Sends one JSON value as a text frame.
    pub async fn send_json(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    /// Sends raw text as one text frame (for malformed input).
    pub async fn send_text(&mut self, text: &str) {
        match tokio::time::timeout(TIMEOUT, self.ws.send(Message::text(text.to_string()))).await {
            Err(_) => panic!(
                "[{}] the server did not take a frame within {TIMEOUT:?}",
                self.user
            ),
            Ok(Err(e)) => panic!("[{}] sending a frame failed: {e}", self.user),
            Ok(Ok(())) => {}
        }
    }

    /// Sends any WebSocket message (binary, or a raw frame with invalid UTF-8).
    pub async fn send_message(&mut self, message: Message) {
        match tokio::time::timeout(TIMEOUT, self.ws.send(message)).await {
            Err(_) => panic!("[{}] the server did not take a frame", self.user),
            Ok(Err(e)) => panic!("[{}] sending a frame failed: {e}", self.user),
            Ok(Ok(())) => {}
        }
    }

    /// Sends raw text, ignoring a failure (the server may already be closing the connection).
    pub async fn send_text_lossy(&mut self, text: &str) {
        let _ = tokio::time::timeout(TIMEOUT, self.ws.send(Message::text(text.to_string()))).await;
    }

    /// Reads the next JSON frame from the wire, skipping pings and pongs.
    pub async fn read_wire(&mut self, wait: Duration) -> Result<Value, WireEnd> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Err(WireEnd::Timeout),
                Ok(next) => next,
            };
            match next {
                None => return Err(WireEnd::Failed("stream ended".into())),
                Some(Err(tungstenite::Error::ConnectionClosed)) => {
                    return Err(WireEnd::Closed(None))
                }
                Some(Err(e)) => return Err(WireEnd::Failed(e.to_string())),
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(text.as_str()).unwrap_or_else(|e| {
                        panic!(
                            "[{}] server sent a frame that is not JSON ({e}): {text}",
                            self.user
                        )
                    });
                    assert!(
                        value.is_object() && value["type"].is_string(),
                        "[{}] server sent a frame that is not a typed object: {value}",
                        self.user
                    );
                    return Ok(value);
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(WireEnd::Closed(frame.map(|f| u16::from(f.code))))
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Binary(bytes))) => {
                    panic!(
                        "[{}] server sent a binary frame ({} bytes)",
                        self.user,
                        bytes.len()
                    )
                }
            }
        }
    }

    /// The next frame (pending first), waiting at most `TIMEOUT`.
    pub async fn recv(&mut self) -> Value {
        if let Some(frame) = self.pending.pop_front() {
            return frame;
        }
        match self.read_wire(TIMEOUT).await {
            Ok(frame) => frame,
            Err(end) => panic!("[{}] expected a frame, got {end:?}", self.user),
        }
    }

    /// The first frame that satisfies `accept` (pending first); frames skipped on the way stay
    /// pending. Panics after `TIMEOUT`, naming `what` and the skipped frames.
    pub async fn recv_where(&mut self, what: &str, accept: impl Fn(&Value) -> bool) -> Value {
        if let Some(pos) = self.pending.iter().position(&accept) {
            return self.pending.remove(pos).expect("position is in range");
        }
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_wire(left).await {
                Ok(frame) if accept(&frame) => return frame,
                Ok(frame) => self.pending.push_back(frame),
                Err(end) => panic!(
                    "[{}] waiting for {what}: {end:?}; frames received meanwhile: {:?}",
                    self.user,
                    self.pending_summary()
                ),
            }
        }
    }

    /// The next frame of this `type` (pending first).
    pub async fn recv_type(&mut self, frame_type: &str) -> Value {
        self.recv_where(&format!("a {frame_type:?} frame"), |f| {
            f["type"] == frame_type
        })
        .await
    }

    /// The next `msg` frame of one group.
    pub async fn recv_msg(&mut self, group: &str) -> Value {
        self.recv_where(&format!("a msg of {group}"), |f| {
            f["type"] == "msg" && f["group"] == group
        })
        .await
    }

    /// The next `n` `msg` frames of one group, in arrival order.
    pub async fn recv_msgs(&mut self, group: &str, n: usize) -> Vec<Value> {
        let mut msgs = Vec::with_capacity(n);
        for _ in 0..n {
            msgs.push(self.recv_msg(group).await);
        }
        msgs
    }

    /// Sends a frame with an `id` (one is added when missing) and waits for the reply that echoes
    /// it. Other frames stay pending.
    pub async fn request(&mut self, mut frame: Value) -> Value {
        if frame.get("id").is_none() {
            self.next_id += 1;
            frame["id"] = json!(format!("req-{}", self.next_id));
        }
        let id = frame["id"].clone();
        self.send_json(frame.clone()).await;
        self.recv_where(&format!("the reply to {frame}"), |f| {
            f.get("id") == Some(&id)
        })
        .await
    }

    /// Sends a frame that must be refused; returns the `error` frame after checking that it is
    /// an error with `code` that echoes the frame's id.
    pub async fn expect_error(&mut self, frame: Value, code: &str) -> Value {
        let reply = self.request(frame.clone()).await;
        assert_eq!(
            reply["type"], "error",
            "{frame} should be refused, got {reply}"
        );
        assert_eq!(
            reply["code"], code,
            "{frame} refused with the wrong code: {reply}"
        );
        assert!(
            reply["message"].is_string(),
            "error without a message: {reply}"
        );
        reply
    }

    /// `ping` → `pong`: proves the session is open and answering.
    pub async fn ping(&mut self) {
        let reply = self.request(json!({"type": "ping"})).await;
        assert_eq!(reply["type"], "pong", "ping answered with {reply}");
    }

    /// `send` and wait for its `sent`.
    pub async fn send_msg(&mut self, group: &str, client_id: &str, body: &str) -> Value {
        let sent = self
            .request(json!({"type": "send", "group": group, "client_id": client_id, "body": body}))
            .await;
        assert_eq!(
            sent["type"], "sent",
            "send {client_id} to {group} answered with {sent}"
        );
        sent
    }

    /// Sends `n` messages with this `body` to `group` (client ids `c1`..`cN`), pipelined
    /// `window` at a time: each window's `sent` replies are awaited before the next window goes
    /// out, and the pushes of the own messages that arrived meanwhile are dropped. Returns the
    /// `sent` replies, in the order they arrived.
    pub async fn send_in_windows(
        &mut self,
        group: &str,
        n: u64,
        window: u64,
        body: &str,
    ) -> Vec<Value> {
        let mut sent = Vec::with_capacity(n as usize);
        for first in (1..=n).step_by(window as usize) {
            let last = (first + window - 1).min(n);
            for i in first..=last {
                self.send_json(json!({"type": "send", "group": group, "client_id": format!("c{i}"), "body": body}))
                    .await;
            }
            for _ in first..=last {
                sent.push(self.recv_type("sent").await);
            }
            while self.take_pending().is_some() {}
        }
        sent
    }

    /// A round trip through the group: a `sync` of one message, answered after everything this
    /// session sent to that group before it. Returns the reply.
    pub async fn barrier(&mut self, group: &str) -> Value {
        self.request(json!({"type": "sync", "group": group, "after": 0, "limit": 1}))
            .await
    }

    /// Syncs one group from `after` with `limit`, one page; checks the reply's type.
    pub async fn sync_page(&mut self, group: &str, after: u64, limit: u64) -> Value {
        let page = self
            .request(json!({"type": "sync", "group": group, "after": after, "limit": limit}))
            .await;
        assert_eq!(page["type"], "messages", "sync answered with {page}");
        page
    }

    /// Syncs a whole group from `after`, following `more`; returns every message in order.
    pub async fn sync_all(&mut self, group: &str, after: u64) -> Vec<Value> {
        self.sync_all_in_pages(group, after, 1000).await
    }

    /// Like [`Client::sync_all`], asking for pages of at most `limit` messages.
    pub async fn sync_all_in_pages(&mut self, group: &str, after: u64, limit: u64) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = after;
        loop {
            let page = self.sync_page(group, after, limit).await;
            let messages = page["messages"].as_array().expect("messages array").clone();
            if let Some(last) = messages.last() {
                after = last["seq"].as_u64().expect("seq");
            }
            all.extend(messages);
            if page["more"] != true {
                return all;
            }
        }
    }

    /// Reads whatever arrives within `wait` into pending. Only for asserting that something did
    /// NOT happen, after an awaited barrier made it due.
    pub async fn drain_for(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_wire(left).await {
                Ok(frame) => self.pending.push_back(frame),
                Err(WireEnd::Timeout) => return,
                Err(end) => panic!("[{}] connection ended: {end:?}", self.user),
            }
        }
    }

    /// Frames received but not consumed yet.
    pub fn pending(&self) -> &VecDeque<Value> {
        &self.pending
    }

    /// Removes and returns the oldest pending frame.
    pub fn take_pending(&mut self) -> Option<Value> {
        self.pending.pop_front()
    }

    /// Panics if any pending frame is an `error`.
    pub fn assert_no_error(&self) {
        if let Some(err) = self.pending.iter().find(|f| f["type"] == "error") {
            panic!("[{}] unexpected error frame: {err}", self.user);
        }
    }

    /// Panics if any pending frame is a `msg` of `group`.
    pub fn assert_no_msg(&self, group: &str) {
        if let Some(msg) = self
            .pending
            .iter()
            .find(|f| f["type"] == "msg" && f["group"] == group)
        {
            panic!("[{}] unexpected msg: {msg}", self.user);
        }
    }

    /// Reads until the server ends the connection; returns how it ended. Panics if it stays open
    /// longer than `TIMEOUT`.
    pub async fn expect_closed(&mut self) -> WireEnd {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_wire(left).await {
                Ok(frame) => self.pending.push_back(frame),
                Err(WireEnd::Timeout) => {
                    panic!("[{}] the server did not close the connection", self.user)
                }
                Err(end) => return end,
            }
        }
    }

    /// Reads (and so answers pings) until `until` completes; frames go to pending. Panics if the
    /// connection ends meanwhile.
    pub async fn pump_until<F: std::future::Future>(&mut self, until: F) -> F::Output {
        tokio::pin!(until);
        loop {
            tokio::select! {
                out = &mut until => return out,
                next = self.ws.next() => match next {
                    Some(Ok(Message::Text(text))) => {
                        let value = serde_json::from_str(text.as_str()).expect("JSON frame");
                        self.pending.push_back(value);
                    }
                    Some(Ok(Message::Close(frame))) => {
                        panic!("[{}] server closed the connection: {frame:?}", self.user)
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("[{}] connection failed: {e}", self.user),
                    None => panic!("[{}] connection ended", self.user),
                },
            }
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    fn pending_summary(&self) -> Vec<String> {
        self.pending
            .iter()
            .map(|f| {
                let mut s = f.to_string();
                if s.len() > 200 {
                    s.truncate(200);
                    s.push('…');
                }
                s
            })
            .collect()
    }
}

/// The `seq` of a frame or message, which must be a number.
pub fn seq(frame: &Value) -> u64 {
    frame["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no numeric seq in {frame}"))
}

/// The seqs of a list of messages.
pub fn seqs(messages: &[Value]) -> Vec<u64> {
    messages.iter().map(seq).collect()
}
