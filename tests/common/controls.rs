//! Helpers for the receipt controls (docs/PROTOCOL.md §4.1–§4.4): a group's receipt policy and a
//! user's `share_reads` through the admin API, a graceful stop and start on the same data dir,
//! and the WebSocket frames `settings`, `remind`, `mark_unread` and the cursor moves that have no
//! reply on success.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

use super::{Client, Server, TIMEOUT};

impl Server {
    /// `POST /api/groups` with a receipt policy (`"full"`, `"counts"`, `"off"`); must answer 201.
    pub fn create_group_with_receipts(&self, id: &str, members: &[&str], receipts: &str) -> Value {
        self.ensure_users(members);
        self.admin_expect(
            "POST",
            "/api/groups",
            Some(json!({"id": id, "members": members, "receipts": receipts})),
            201,
        )
    }

    /// `PUT /api/groups/{gid}` with `{"receipts": policy}`; must answer 200 (the group).
    pub fn set_receipts(&self, group: &str, receipts: &str) -> Value {
        self.admin_expect(
            "PUT",
            &format!("/api/groups/{group}"),
            Some(json!({"receipts": receipts})),
            200,
        )
    }

    /// `GET /api/users/{uid}`, which must exist.
    pub fn user(&self, id: &str) -> Value {
        self.admin_expect("GET", &format!("/api/users/{id}"), None, 200)
    }

    /// `PUT /api/users/{uid}` with `{"share_reads": share}`; must answer 200 (the user).
    pub fn set_share_reads(&self, id: &str, share: bool) -> Value {
        self.admin_expect(
            "PUT",
            &format!("/api/users/{id}"),
            Some(json!({"share_reads": share})),
            200,
        )
    }

    /// Stops the server with SIGTERM (which must end it with status 0 within the documented
    /// 5 seconds, plus slack for a loaded CI machine), then starts it again on the same data dir.
    pub fn graceful_restart(&mut self) {
        self.signal("TERM");
        let status = self
            .wait_exit(TIMEOUT)
            .unwrap_or_else(|| panic!("the server did not exit within {TIMEOUT:?} of SIGTERM"));
        assert!(status.success(), "exit after SIGTERM: {status}");
        self.restart(); // not running any more: this only starts it again
    }
}

impl Client {
    /// Sends a frame that has no reply on success (`ack`, `read`, `mark_unread`) with an id,
    /// then a round trip through the same group (commands of one session reach the group in
    /// order), and checks that nothing answered that id.
    pub async fn silent(&mut self, frame: Value) {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = json!(format!("silent-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        let mut frame = frame;
        frame["id"] = id.clone();
        let group = frame["group"].as_str().expect("a group").to_string();
        self.send_json(frame.clone()).await;
        self.barrier(&group).await;
        if let Some(reply) = self.pending().iter().find(|f| f.get("id") == Some(&id)) {
            panic!("[{}] {frame} should have no reply, got {reply}", self.user);
        }
    }

    /// `read` of `seq` in `group`, checked as [`Client::silent`].
    pub async fn read_to(&mut self, group: &str, seq: u64) {
        self.silent(json!({"type": "read", "group": group, "seq": seq}))
            .await;
    }

    /// `ack` of `seq` in `group`, checked as [`Client::silent`].
    pub async fn ack_to(&mut self, group: &str, seq: u64) {
        self.silent(json!({"type": "ack", "group": group, "seq": seq}))
            .await;
    }

    /// `mark_unread` of `group`, checked as [`Client::silent`].
    pub async fn mark_unread(&mut self, group: &str) {
        self.silent(json!({"type": "mark_unread", "group": group}))
            .await;
    }

    /// `settings` (with `share_reads` when given); returns the `settings` reply after checking
    /// its type and its id.
    pub async fn settings(&mut self, share_reads: Option<bool>) -> Value {
        let mut frame = json!({"type": "settings"});
        if let Some(share) = share_reads {
            frame["share_reads"] = json!(share);
        }
        let reply = self.request(frame.clone()).await;
        assert_eq!(reply["type"], "settings", "{frame} answered with {reply}");
        reply
    }

    /// `remind` of `seq` in `group`: the reply, whatever it is.
    pub async fn remind(&mut self, group: &str, seq: u64) -> Value {
        self.request(json!({"type": "remind", "group": group, "seq": seq}))
            .await
    }

    /// Removes and returns the pending frames of this type (frames already received), in
    /// arrival order.
    pub async fn take_pending_of(&mut self, frame_type: &str) -> Vec<Value> {
        let mut taken = Vec::new();
        while self.pending().iter().any(|f| f["type"] == frame_type) {
            taken.push(self.recv_type(frame_type).await);
        }
        taken
    }

    /// Reads for `wait` (see [`Client::drain_for`]) and panics if a frame of this type (and, when
    /// given, of this group) arrived or was pending.
    pub async fn expect_none_of(&mut self, frame_type: &str, group: Option<&str>, wait: Duration) {
        self.drain_for(wait).await;
        let found: Vec<&Value> = self
            .pending()
            .iter()
            .filter(|f| f["type"] == frame_type && group.is_none_or(|g| f["group"] == g))
            .collect();
        assert!(
            found.is_empty(),
            "[{}] unexpected {frame_type} frames: {found:?}",
            self.user
        );
    }
}

/// `(seq, recipients, delivered, read)` of each item of a `receipt` / `receipts` frame.
pub fn items(frame: &Value) -> Vec<(u64, u64, u64, u64)> {
    frame["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {frame}"))
        .iter()
        .map(|i| {
            let n = |f: &str| i[f].as_u64().unwrap_or_else(|| panic!("no {f} in {i}"));
            (n("seq"), n("recipients"), n("delivered"), n("read"))
        })
        .collect()
}

/// The string list `field` of a frame (user ids), in order.
pub fn user_list(value: &Value, field: &str) -> Vec<String> {
    value[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} list in {value}"))
        .iter()
        .map(|u| u.as_str().expect("user ids are strings").to_string())
        .collect()
}

/// "bob carol" → ["bob", "carol"].
pub fn names(list: &str) -> Vec<String> {
    list.split_whitespace().map(str::to_string).collect()
}
