//! Fuzzing a live session: generated frames (well-formed, mistyped, out of range, aimed at
//! groups the user is not in or that do not exist, or mutated) sent over a real WebSocket to a
//! real server, one connection for every case.
//!
//! For every frame: the session answers exactly as `ClientFrame::parse` predicts (the refusal's
//! code and echoed id when it does not parse), every refusal carries a code a WebSocket client
//! can get (`internal` would mean a bug here), a refused frame changes nothing stored (the
//! groups' members, cursors and `last_seq` as the admin API shows them), only a `sent` that is
//! not a duplicate adds a message, and the session stays open and answering.
//!
//! `PROPTEST_CASES=2000 cargo test --test fuzz_session` runs longer.

mod common;

use std::sync::Mutex;

use common::{Client, Server};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use rollcall::protocol::{ClientFrame, MAX_PAGE};
use serde_json::{json, Value};

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// The codes a WebSocket client may be refused with for a frame (PROTOCOL.md §5; `busy` needs
/// a thousand sends in flight, `internal` a storage failure: neither may happen here).
const WS_CODES: &[&str] = &[
    "bad_frame",
    "unknown_type",
    "no_such_group",
    "not_member",
    "no_such_user",
    "invalid_seq",
    "too_large",
];

const TYPES: &[&str] = &[
    "send", "ack", "read", "sync", "history", "direct", "receipts", "readers", "ping", "dance",
];

fn group_name() -> impl Strategy<Value = Value> {
    prop_oneof![
        16 => Just(json!("team")),
        2 => Just(json!("private")),
        1 => Just(json!("nosuch")),
        1 => Just(json!("dm:alice:bob")),
        1 => Just(json!("dm:bob:alice")),
        1 => Just(json!("bad id!")),
        1 => Just(json!("")),
        1 => Just(json!(7)),
    ]
}

fn seq_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        24 => (0u64..6).prop_map(Value::from),
        2 => Just(json!(u64::MAX)),
        2 => any::<u64>().prop_map(Value::from),
        1 => Just(json!(-1)),
        1 => Just(json!("3")),
        1 => Just(json!(1.5)),
    ]
}

fn limit_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        12 => (0u64..5).prop_map(Value::from),
        2 => Just(json!(1001)),
        2 => Just(json!(u64::MAX)),
        1 => Just(json!(-3)),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
        Just(json!([1, 2])),
        Just(json!({"a": 1})),
    ]
}

/// A frame: a type, the fields a frame of any type may have (each present or not, with
/// adversarial values), an id or not, and sometimes one field replaced by any JSON value.
fn session_frame() -> impl Strategy<Value = Value> {
    let fields = (
        proptest::option::weighted(0.95, group_name()),
        proptest::option::weighted(
            0.9,
            prop_oneof![
                4 => (0u8..6).prop_map(|n| json!(format!("c{n}"))),
                1 => Just(json!("")),
                1 => Just(json!("x".repeat(129))),
            ],
        ),
        proptest::option::weighted(
            0.9,
            prop_oneof![
                4 => ".{0,16}".prop_map(Value::from),
                1 => Just(json!("b".repeat(70_000))),
            ],
        ),
        proptest::option::weighted(0.8, seq_value()),
        proptest::option::weighted(0.3, seq_value()),
        proptest::option::weighted(0.3, seq_value()),
        proptest::option::weighted(0.5, limit_value()),
        proptest::option::weighted(0.5, any::<bool>()),
        proptest::option::weighted(
            0.4,
            prop_oneof![
                6 => proptest::collection::vec(seq_value(), 0..5).prop_map(Value::Array),
                1 => Just(json!(vec![1; MAX_PAGE + 1])),
            ],
        ),
        proptest::option::weighted(
            0.9,
            prop_oneof![
                3 => Just(json!("bob")),
                1 => Just(json!("alice")),
                2 => Just(json!("carol")),
                2 => "[a-z]{1,8}".prop_map(Value::from),
                1 => Just(json!("not valid")),
            ],
        ),
    );
    (
        proptest::sample::select(TYPES),
        proptest::option::weighted(
            0.9,
            prop_oneof![
                10 => (0u64..1_000_000).prop_map(Value::from),
                10 => "[a-z0-9]{0,12}".prop_map(Value::from),
                1 => Just(json!(null)),
                1 => Just(json!({"nested": 1})),
            ],
        ),
        fields,
        proptest::option::weighted(
            0.1,
            (
                proptest::sample::select(vec![
                    "type",
                    "group",
                    "client_id",
                    "body",
                    "seq",
                    "after",
                    "limit",
                    "seqs",
                    "with",
                    "mine",
                    "before",
                    "from",
                ]),
                any_json(),
            ),
        ),
    )
        .prop_map(|(kind, id, fields, replaced)| {
            let (group, client_id, body, seq, after, before, limit, mine, seqs, with) = fields;
            let mut frame = json!({"type": kind});
            let object = frame.as_object_mut().expect("object");
            let mut put = |name: &str, value: Option<Value>| {
                if let Some(value) = value {
                    object.insert(name.to_string(), value);
                }
            };
            put("id", id);
            put("group", group);
            put("client_id", client_id);
            put("body", body);
            put("seq", seq);
            put("after", after);
            put("before", before);
            put("limit", limit);
            put("mine", mine.map(Value::from));
            put("seqs", seqs);
            put("with", with);
            if let Some((name, value)) = replaced {
                put(name, Some(value));
            }
            frame
        })
}

/// What a refused frame must not change: both groups as the admin API shows them.
fn snapshot(server: &Server) -> (Value, Value) {
    (server.group("team"), server.group("private"))
}

/// The `id` a reply carries: the frame's id if `parse` reads one.
fn reply_id(parsed: &Result<ClientFrame, rollcall::protocol::FrameError>) -> Value {
    match parsed {
        Ok(f) => f.id().map(|id| id.as_json().clone()),
        Err(e) => e.id.as_ref().map(|id| id.as_json().clone()),
    }
    .unwrap_or(Value::Null)
}

/// Whether `reply` answers a request with this id (a frame without id gets replies without).
fn is_reply(reply: &Value, id: &Value) -> bool {
    let replies = [
        "error", "sent", "messages", "receipts", "readers", "direct", "pong",
    ];
    replies.iter().any(|t| reply["type"] == *t) && reply.get("id").unwrap_or(&Value::Null) == id
}

async fn check_one(
    server: &Server,
    alice: &mut Client,
    barriers: &mut u64,
    frame: Value,
) -> Result<(), TestCaseError> {
    let text = frame.to_string();
    let parsed = ClientFrame::parse(&text);
    let id = reply_id(&parsed);
    let before = snapshot(server);
    alice.send_text(&text).await;
    // ack and read answer only a refusal; a sync of the same group after them is answered after
    // it (the group handles both in order). Everything else answers exactly once.
    let silent_on_success = matches!(
        parsed,
        Ok(ClientFrame::Ack { .. } | ClientFrame::Read { .. })
    );
    let mut replies = Vec::new();
    if silent_on_success {
        *barriers += 1;
        let barrier_id = json!(format!("barrier-{barriers}"));
        let group = frame["group"].clone();
        alice
            .send_json(json!({"type": "sync", "id": barrier_id, "group": group, "limit": 1}))
            .await;
        loop {
            let next = alice
                .recv_where("a reply or the barrier", |f| {
                    is_reply(f, &id) || f.get("id") == Some(&barrier_id)
                })
                .await;
            if next.get("id") == Some(&barrier_id) {
                break;
            }
            replies.push(next);
        }
        prop_assert!(replies.len() <= 1, "{} answered {:?}", text, replies);
    } else {
        replies.push(
            alice
                .recv_where(&format!("the reply to {text}"), |f| is_reply(f, &id))
                .await,
        );
    }

    let after = snapshot(server);
    for reply in &replies {
        if reply["type"] == "error" {
            let code = reply["code"].as_str().unwrap_or_default();
            prop_assert!(WS_CODES.contains(&code), "{} refused with {}", text, reply);
            prop_assert!(reply["message"].is_string(), "{}", reply);
            prop_assert_eq!(reply.get("id").unwrap_or(&Value::Null), &id);
            if let Err(e) = &parsed {
                prop_assert_eq!(code, e.code.as_str(), "{}", text);
            }
            prop_assert_eq!(&after, &before, "the refused {} changed a group", text);
        } else {
            prop_assert!(parsed.is_ok(), "{} did not parse but got {}", text, reply);
        }
        if reply["type"] == "sent" && frame["group"] == "team" {
            let seq = reply["seq"].as_u64().unwrap_or(0);
            let last = |s: &(Value, Value)| s.0["last_seq"].as_u64().unwrap_or(0);
            let grown = if reply["duplicate"] == true { 0 } else { 1 };
            prop_assert_eq!(last(&after), last(&before) + grown, "{}", reply);
            prop_assert!(seq >= 1 && seq <= last(&after), "{}", reply);
        } else if reply["type"] != "sent" {
            prop_assert_eq!(
                &after.0["last_seq"],
                &before.0["last_seq"],
                "{} → {}",
                text,
                reply
            );
        }
    }
    if parsed.is_err() {
        prop_assert_eq!(replies.len(), 1);
        prop_assert_eq!(&replies[0]["type"], "error");
    }
    Ok(())
}

#[test]
fn a_session_answers_any_frame_as_documented_and_stays_open() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = Server::start_with(&["--receipt-interval-ms", "50"]);
    server.create_group("team", &["alice", "bob"]);
    server.create_group("private", &["carol"]);
    let state = Mutex::new((runtime.block_on(server.connect("alice")), 0u64));
    let mut runner = TestRunner::new(ProptestConfig {
        cases: cases(300),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&session_frame(), |frame| {
        let mut state = state.lock().expect("state");
        let (alice, barriers) = &mut *state;
        runtime.block_on(check_one(&server, alice, barriers, frame))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Still open and answering, and every push it got is a well-formed frame of its groups.
    let (mut alice, _) = state.into_inner().expect("state");
    runtime.block_on(async {
        alice.ping().await;
        while let Some(frame) = alice.take_pending() {
            if frame["type"] == "msg" {
                assert_eq!(frame["from"], "alice", "{frame}");
                assert!(frame["seq"].as_u64().is_some_and(|s| s >= 1), "{frame}");
            }
            assert_ne!(frame["type"], "error", "an unclaimed error: {frame}");
        }
    });
    let (status, _) = server.http("GET", "/healthz", None, None);
    assert_eq!(status, 200);
}
