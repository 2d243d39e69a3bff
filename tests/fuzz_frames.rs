//! Fuzzing the frame parser (`ClientFrame::parse`, the first thing every client byte meets) with
//! property tests: arbitrary text, arbitrary JSON values, and valid frames mutated at random.
//!
//! What must hold for every input (docs/PROTOCOL.md §3 and §5):
//! - parsing never panics, and the one-pass parse agrees with the careful one
//!   (`ClientFrame::parse_checked`);
//! - a refusal carries a documented code (`bad_frame`, `unknown_type`, or `too_large`) and a
//!   message;
//! - the refusal echoes the frame's `id` exactly when it could be read (a JSON number or a string
//!   of at most 128 characters in a JSON object), and carries none otherwise;
//! - `unknown_type` is given exactly for a readable frame whose `type` is a string the server
//!   does not know;
//! - a frame that parses round-trips: serializing it and parsing again gives the same frame, and
//!   a valid frame built in memory survives `to_text` → `parse` unchanged.
//!
//! Case counts are modest so `cargo test` stays quick; `PROPTEST_CASES=10000 cargo test --test
//! fuzz_frames` runs longer.

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use rollcall::protocol::{ClientFrame, ErrorCode, RequestId, MAX_ID_CHARS};
use serde_json::{json, Map, Value};

/// `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default),
        // Failure persistence files would land in the source tree; a failure prints its seed.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const CLIENT_TYPES: &[&str] = &[
    "send",
    "ack",
    "read",
    "sync",
    "history",
    "direct",
    "receipts",
    "readers",
    "ping",
    "settings",
    "remind",
    "mark_unread",
];

/// Every field name a client frame has, plus some it does not (`from` must be ignored).
const FIELD_NAMES: &[&str] = &[
    "type",
    "id",
    "group",
    "client_id",
    "body",
    "seq",
    "after",
    "before",
    "limit",
    "with",
    "mine",
    "seqs",
    "from",
    "ts",
    "share_reads",
    "remind_after_secs",
    "extra",
];

/// The id a refusal must echo: the object's `id` if it is a number or a short string.
fn readable_id(value: &Value) -> Option<RequestId> {
    match value.as_object()?.get("id")? {
        id @ Value::Number(_) => Some(RequestId::from(id.clone())),
        id @ Value::String(s) if s.chars().count() <= MAX_ID_CHARS => {
            Some(RequestId::from(id.clone()))
        }
        _ => None,
    }
}

/// Checks everything that must hold for one input text; `Ok` with the frame when it parsed.
fn check_text(text: &str) -> Result<Option<ClientFrame>, TestCaseError> {
    let parsed = std::panic::catch_unwind(|| ClientFrame::parse(text));
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(_) => return Err(TestCaseError::fail(format!("parse panicked on {text:?}"))),
    };
    // The one-pass parse and the careful one agree on every text.
    let careful = ClientFrame::parse_checked(text);
    prop_assert_eq!(
        parsed.as_ref(),
        careful.as_ref(),
        "fast and careful parse differ on {:?}",
        text
    );
    let value: Option<Value> = serde_json::from_str(text).ok();
    match parsed {
        Ok(frame) => {
            // Only JSON objects with a known type and a readable (or no) id parse.
            let value = value.ok_or_else(|| TestCaseError::fail("parsed a non-JSON text"))?;
            prop_assert!(value.is_object(), "parsed a non-object: {}", text);
            prop_assert!(
                value.get("id").is_none() || readable_id(&value).is_some(),
                "accepted an unreadable id: {}",
                text
            );
            let expected_id = readable_id(&value);
            prop_assert_eq!(frame.id(), expected_id.as_ref());
            prop_assert!(CLIENT_TYPES.contains(&frame.kind()));
            prop_assert_eq!(value.get("type"), Some(&json!(frame.kind())));
            // Round trip: what we would send again parses to the same frame.
            let again = ClientFrame::parse(&frame.to_text());
            prop_assert_eq!(again.as_ref(), Ok(&frame), "re-parsing {}", frame.to_text());
            Ok(Some(frame))
        }
        Err(e) => {
            prop_assert!(
                matches!(
                    e.code,
                    ErrorCode::BadFrame | ErrorCode::UnknownType | ErrorCode::TooLarge
                ),
                "undocumented code {:?} for {:?}",
                e.code,
                text
            );
            prop_assert!(!e.message.is_empty(), "error without a message");
            let expected_id = value.as_ref().and_then(readable_id);
            prop_assert_eq!(&e.id, &expected_id, "id echo for {:?}", text);
            // unknown_type exactly for a readable object whose type is an unknown string.
            let unknown = value.as_ref().is_some_and(|v| {
                (v.get("id").is_none() || expected_id.is_some())
                    && v.get("type")
                        .and_then(Value::as_str)
                        .is_some_and(|t| !CLIENT_TYPES.contains(&t))
            });
            if e.code != ErrorCode::TooLarge {
                prop_assert_eq!(
                    e.code == ErrorCode::UnknownType,
                    unknown,
                    "code {:?} for {:?}",
                    e.code,
                    text
                );
            }
            Ok(None)
        }
    }
}

/// Any JSON value, numbers of every kind and unicode strings included.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        // Quarters are exact in binary (serde_json parses other floats best-effort).
        (-4000i32..4000).prop_map(|n| Value::from(f64::from(n) / 4.0)),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        Just(json!(0)),
        ".{0,12}".prop_map(Value::from),
        "[a-z]{1,4}".prop_map(Value::from),
        proptest::sample::select(CLIENT_TYPES).prop_map(Value::from),
        "x{129,130}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON objects that look like frames: known field names with arbitrary values, a `type` that
/// is usually known.
fn frame_like_object() -> impl Strategy<Value = Value> {
    let type_value = prop_oneof![
        6 => proptest::sample::select(CLIENT_TYPES).prop_map(Value::from),
        1 => json_value(),
    ];
    (
        proptest::option::weighted(0.9, type_value),
        proptest::collection::btree_map(proptest::sample::select(FIELD_NAMES), json_value(), 0..7),
    )
        .prop_map(|(kind, fields)| {
            let mut object = Map::new();
            for (name, value) in fields {
                object.insert(name.to_string(), value);
            }
            if let Some(kind) = kind {
                object.insert("type".into(), kind);
            }
            Value::Object(object)
        })
}

fn id_strategy() -> impl Strategy<Value = Option<RequestId>> {
    proptest::option::of(
        prop_oneof![
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            // Quarters are exact in binary, so they round-trip through text.
            (-4000i32..4000).prop_map(|n| Value::from(f64::from(n) / 4.0)),
            ".{0,20}".prop_map(Value::from),
            "y{128}".prop_map(Value::from),
        ]
        .prop_map(RequestId::from),
    )
}

fn text() -> impl Strategy<Value = String> {
    ".{0,24}"
}

/// Any valid client frame.
fn valid_frame() -> impl Strategy<Value = ClientFrame> {
    let limit = proptest::option::of(prop_oneof![0usize..2000, Just(usize::MAX)]);
    prop_oneof![
        (
            id_strategy(),
            text(),
            text(),
            text(),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>())
        )
            .prop_map(
                |(id, group, client_id, body, remind_after_secs, reply_to)| {
                    ClientFrame::Send {
                        id,
                        group,
                        client_id,
                        body,
                        remind_after_secs,
                        reply_to,
                    }
                }
            ),
        (id_strategy(), text(), any::<u64>()).prop_map(|(id, group, seq)| ClientFrame::Ack {
            id,
            group,
            seq
        }),
        (id_strategy(), text(), any::<u64>()).prop_map(|(id, group, seq)| ClientFrame::Read {
            id,
            group,
            seq
        }),
        (id_strategy(), text(), any::<u64>(), limit.clone()).prop_map(
            |(id, group, after, limit)| ClientFrame::Sync {
                id,
                group,
                after,
                limit
            }
        ),
        (
            id_strategy(),
            text(),
            proptest::option::of(any::<u64>()),
            limit.clone()
        )
            .prop_map(|(id, group, before, limit)| ClientFrame::History {
                id,
                group,
                before,
                limit
            }),
        (id_strategy(), text()).prop_map(|(id, with)| ClientFrame::Direct { id, with }),
        (
            id_strategy(),
            text(),
            any::<bool>(),
            proptest::option::of(proptest::collection::vec(any::<u64>(), 0..5)),
            any::<u64>(),
            limit
        )
            .prop_map(|(id, group, mine, seqs, after, limit)| {
                ClientFrame::Receipts {
                    id,
                    group,
                    mine,
                    seqs,
                    after,
                    limit,
                }
            }),
        (id_strategy(), text(), any::<u64>()).prop_map(|(id, group, seq)| ClientFrame::Readers {
            id,
            group,
            seq
        }),
        id_strategy().prop_map(|id| ClientFrame::Ping { id }),
        (id_strategy(), proptest::option::of(any::<bool>()))
            .prop_map(|(id, share_reads)| ClientFrame::Settings { id, share_reads }),
        (id_strategy(), text(), any::<u64>()).prop_map(|(id, group, seq)| ClientFrame::Remind {
            id,
            group,
            seq
        }),
        (id_strategy(), text()).prop_map(|(id, group)| ClientFrame::MarkUnread { id, group }),
    ]
}

/// One change to a valid frame.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace (or add) a field with any JSON value.
    SetField(&'static str, Value),
    /// Remove a field.
    RemoveField(&'static str),
    /// Byte-level edits of the text: delete, insert, or truncate at a char position.
    DeleteChar(proptest::sample::Index),
    InsertChar(proptest::sample::Index, char),
    Truncate(proptest::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (proptest::sample::select(FIELD_NAMES), json_value())
            .prop_map(|(f, v)| Mutation::SetField(f, v)),
        2 => proptest::sample::select(FIELD_NAMES).prop_map(Mutation::RemoveField),
        1 => any::<proptest::sample::Index>().prop_map(Mutation::DeleteChar),
        1 => (
            any::<proptest::sample::Index>(),
            prop_oneof![
                proptest::sample::select(vec!['"', '{', '}', ',', ':', '\\', '1', '-', ' ', 'e']),
                any::<char>()
            ]
        )
            .prop_map(|(i, c)| Mutation::InsertChar(i, c)),
        1 => any::<proptest::sample::Index>().prop_map(Mutation::Truncate),
    ]
}

/// Applies mutations; structural ones act on the JSON object, text ones on the text.
fn apply(frame: &ClientFrame, mutations: &[Mutation]) -> String {
    let mut text = frame.to_text();
    for m in mutations {
        match m {
            Mutation::SetField(name, value) => {
                if let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(&text) {
                    object.insert((*name).to_string(), value.clone());
                    text = Value::Object(object).to_string();
                }
            }
            Mutation::RemoveField(name) => {
                if let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(&text) {
                    object.remove(*name);
                    text = Value::Object(object).to_string();
                }
            }
            Mutation::DeleteChar(at) => {
                let chars: Vec<char> = text.chars().collect();
                if !chars.is_empty() {
                    let at = at.index(chars.len());
                    text = chars[..at].iter().chain(&chars[at + 1..]).collect();
                }
            }
            Mutation::InsertChar(at, c) => {
                let mut chars: Vec<char> = text.chars().collect();
                let at = at.index(chars.len() + 1);
                chars.insert(at, *c);
                text = chars.into_iter().collect();
            }
            Mutation::Truncate(at) => {
                let chars: Vec<char> = text.chars().collect();
                let at = at.index(chars.len() + 1);
                text = chars[..at].iter().collect();
            }
        }
    }
    text
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_text_never_panics_and_is_refused_with_a_documented_code(text in ".{0,64}") {
        check_text(&text)?;
    }

    #[test]
    fn arbitrary_bytes_as_text_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        check_text(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn arbitrary_json_values_never_panic(value in json_value()) {
        check_text(&value.to_string())?;
    }

    #[test]
    fn frame_like_objects_parse_or_are_refused_with_the_id_echoed(value in frame_like_object()) {
        let frame = check_text(&value.to_string())?;
        if let Some(frame) = frame {
            // Unknown fields (`from`, `ts`, `extra`) are ignored: a parsed frame carries none,
            // so a client cannot choose the sender or the timestamp.
            let reparsed: Value = serde_json::from_str(&frame.to_text()).expect("frame JSON");
            for forged in ["from", "ts", "extra"] {
                prop_assert!(reparsed.get(forged).is_none(), "{} kept in {}", forged, reparsed);
            }
        }
    }

    #[test]
    fn valid_frames_round_trip(frame in valid_frame()) {
        let text = frame.to_text();
        let parsed = ClientFrame::parse(&text);
        prop_assert_eq!(parsed.as_ref(), Ok(&frame), "parsing {}", text);
        prop_assert_eq!(frame.id(), parsed.as_ref().ok().and_then(ClientFrame::id));
        check_text(&text)?;
    }

    #[test]
    fn mutated_valid_frames_never_panic_and_echo_readable_ids(
        frame in valid_frame(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        check_text(&apply(&frame, &mutations))?;
    }
}

/// An `id` of `null` reads as "no id" in a one-pass parse, but is refused: also when the key is
/// spelled with an escape. A repeated key is read as the careful parse reads it (the last one).
#[test]
fn null_escaped_and_repeated_ids_are_read_like_the_careful_parse() {
    for text in [
        r#"{"type":"read","group":"g","seq":1,"id":null}"#,
        r#"{"type":"read","group":"g","seq":1,"\u0069d":null}"#,
    ] {
        let err = ClientFrame::parse(text).expect_err(text);
        assert_eq!(err.code, ErrorCode::BadFrame, "{text}");
        assert_eq!(err.id, None, "{text}");
    }
    let text = r#"{"type":"read","group":"g","seq":1,"id":1,"id":2}"#;
    let frame = ClientFrame::parse(text).expect(text);
    assert_eq!(frame.id().map(RequestId::as_json), Some(&json!(2)));
    assert_eq!(Ok(frame), ClientFrame::parse_checked(text));
}

/// `read` and `ack` have a parse of their own (strings borrowed); it agrees with the careful
/// parse on the shapes it meets: extra fields, escapes, wrong or missing fields, ids.
#[test]
fn cursor_frames_parse_like_the_careful_parse() {
    for text in [
        r#"{"type":"read","group":"g","seq":1}"#,
        r#"{"type":"ack","id":7,"group":"g","seq":1,"extra":[1,{"a":null}]}"#,
        r#"{"type":"read","id":"r-1","group":"g\u0041","seq":1}"#,
        r#"{"type":"read","group":"g","seq":-1}"#,
        r#"{"type":"read","group":"g","seq":1.5}"#,
        r#"{"type":"read","group":"g","seq":18446744073709551616}"#,
        r#"{"type":"read","seq":1}"#,
        r#"{"type":"ack","group":7,"seq":1,"id":3}"#,
        r#"{"type":"read","group":"g","seq":1,"id":[1]}"#,
        r#"{"type":"read","type":"ack","group":"g","seq":1}"#,
        r#" {"type":"read","group":"g","seq":2} "#,
        r#"["read",null,"g",1]"#,
    ] {
        assert_eq!(
            ClientFrame::parse(text),
            ClientFrame::parse_checked(text),
            "{text}"
        );
    }
}

/// A float `id` reads the same in the one-pass and the careful parse (serde_json's
/// `float_roundtrip`: without it the two paths could round the last digit differently).
#[test]
fn float_ids_read_alike() {
    let text = r#"{"type":"receipts","id":-4.960083608606575e+40,"group":"g","mine":false}"#;
    assert_eq!(ClientFrame::parse(text), ClientFrame::parse_checked(text));
    let frame = ClientFrame::parse(text).expect(text);
    assert_eq!(ClientFrame::parse(&frame.to_text()).as_ref(), Ok(&frame));
}

/// Deeply nested JSON is refused (serde_json's recursion limit), not a stack overflow.
#[test]
fn deep_nesting_is_bad_frame() {
    for (open, close) in [("[", "]"), (r#"{"a":"#, "}")] {
        let text = format!(
            r#"{{"type":"send","id":3,"group":{}1{}}}"#,
            open.repeat(100_000),
            close.repeat(100_000)
        );
        let err = ClientFrame::parse(&text).expect_err("nested frame");
        assert_eq!(err.code, ErrorCode::BadFrame, "{}", err.message);
    }
}

/// A frame whose `id` is readable but whose other fields are wrong echoes that id, for every
/// type; an unreadable id (null, object, bool, long string) is not echoed.
#[test]
fn ids_are_echoed_exactly_when_readable() {
    for kind in CLIENT_TYPES {
        // ping has no fields to mistype (unknown ones are ignored), so it is skipped here only.
        let mistyped_ids: &[Value] = if *kind == "ping" {
            &[]
        } else {
            &[json!(1), json!("r-1"), json!(-7), json!(2.5), json!("")]
        };
        for id in mistyped_ids {
            let frame = json!({"type": kind, "id": id, "group": 5, "with": [], "seq": "x", "share_reads": "x"});
            let err = ClientFrame::parse(&frame.to_string()).expect_err("mistyped fields");
            assert_eq!(err.code, ErrorCode::BadFrame, "{frame}");
            assert_eq!(err.id.as_ref().map(RequestId::as_json), Some(id), "{frame}");
        }
        for id in [
            json!(null),
            json!({"n": 1}),
            json!([1]),
            json!(true),
            json!("z".repeat(MAX_ID_CHARS + 1)),
        ] {
            let frame = json!({"type": kind, "id": id});
            let err = ClientFrame::parse(&frame.to_string()).expect_err("bad id");
            assert_eq!((err.code, err.id), (ErrorCode::BadFrame, None), "{frame}");
        }
    }
}
