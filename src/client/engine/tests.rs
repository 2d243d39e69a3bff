//! Frame-by-frame tests of the whole engine: commands and server frames in, frames and events out.
//!
//! They live in one file rather than beside each mechanism because almost every scenario crosses
//! mechanisms (a send survives a reconnect, a sync page fills an inbox whose acks follow), and
//! they share one harness that drives the engine as the worker does, without a socket or a clock.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::{frame_id, wire_id, Command, Engine};
use crate::client::{ClientConfig, ClientError, Event, Sent, Snapshot};
use crate::protocol::{ClientFrame, ErrorCode, GroupKind, GroupSummary, Message, ServerFrame};

struct Harness {
    engine: Engine,
    events: mpsc::UnboundedReceiver<Event>,
}

fn harness(ack_every: usize) -> Harness {
    let mut config = ClientConfig::new("ws://unused/ws", "t");
    config.ack_every = ack_every;
    config.sync_page = 2;
    let (tx, rx) = mpsc::unbounded_channel();
    Harness {
        engine: Engine::new(&config, tx, Arc::new(Mutex::new(Snapshot::default()))),
        events: rx,
    }
}

impl Harness {
    fn events(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            out.push(event);
        }
        out
    }

    fn message_seqs(&mut self) -> Vec<u64> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some(m.seq),
                _ => None,
            })
            .collect()
    }

    /// Sends `body` to `group` as `Client::send` does; returns where the answer
    /// arrives.
    fn send(
        &mut self,
        group: &str,
        client_id: Option<&str>,
        body: &str,
    ) -> oneshot::Receiver<Result<Sent, ClientError>> {
        let (reply, answer) = oneshot::channel();
        self.engine.on_command(Command::Send {
            remind_after_secs: None,
            group: group.into(),
            client_id: client_id.map(str::to_owned),
            body: body.into(),
            reply,
        });
        answer
    }

    fn connect(&mut self, groups: Vec<GroupSummary>) -> Vec<ClientFrame> {
        self.engine
            .on_connected("ws://test/ws", "me".into(), groups, Vec::new());
        self.engine.take_outgoing()
    }
}

fn summary(group: &str, last_seq: u64, delivered: u64, read: u64) -> GroupSummary {
    GroupSummary {
        receipts: Default::default(),
        marked_unread: false,
        role: Default::default(),
        group: group.into(),
        name: group.into(),
        kind: GroupKind::Group,
        last_seq,
        delivered,
        read,
        unread: 0,
        first_seq: 1,
        last_ts: 0,
    }
}

fn message(group: &str, seq: u64) -> Message {
    Message {
        group: group.into(),
        seq,
        from: "other".into(),
        ts: 1000 + seq,
        body: format!("body {seq}"),
        client_id: format!("c{seq}"),
        ..Default::default()
    }
}

fn id_of(frame: &ClientFrame) -> u64 {
    frame_id(frame.id()).expect("every frame has an id")
}

fn page(id: u64, group: &str, seqs: std::ops::RangeInclusive<u64>, more: bool) -> ServerFrame {
    ServerFrame::Messages {
        id: Some(wire_id(id)),
        group: group.into(),
        messages: seqs.map(|s| message(group, s)).collect(),
        more,
        last_seq: 0,
        first_seq: 1,
    }
}

#[test]
fn a_send_is_resent_with_the_same_client_id_after_a_reconnect() {
    let mut h = harness(20);
    h.connect(vec![summary("g", 0, 0, 0)]);
    let mut answer = h.send("g", None, "hello");
    let first = h.engine.take_outgoing();
    let [ClientFrame::Send { client_id, .. }] = first.as_slice() else {
        panic!("expected one send, got {first:?}");
    };
    let client_id = client_id.clone();

    // Two drops in a row: the send survives both.
    h.engine.on_disconnected();
    h.connect(vec![summary("g", 0, 0, 0)]);
    h.engine.on_disconnected();
    let frames = h.connect(vec![summary("g", 1, 0, 0)]);
    let resent: Vec<&ClientFrame> = frames
        .iter()
        .filter(|f| matches!(f, ClientFrame::Send { .. }))
        .collect();
    assert_eq!(resent.len(), 1);
    let ClientFrame::Send {
        client_id: again, ..
    } = resent[0]
    else {
        unreachable!()
    };
    assert_eq!(again, &client_id);
    assert!(answer.try_recv().is_err(), "no answer before sent");

    h.engine.on_frame(ServerFrame::Sent {
        id: Some(wire_id(id_of(resent[0]))),
        group: "g".into(),
        client_id: client_id.clone(),
        seq: 1,
        ts: 5,
        duplicate: true,
    });
    let sent = answer.try_recv().expect("answered").expect("stored");
    assert_eq!((sent.seq, sent.duplicate), (1, true));
    // Nothing left to resend.
    h.engine.on_disconnected();
    let frames = h.connect(vec![summary("g", 1, 1, 0)]);
    assert!(!frames.iter().any(|f| matches!(f, ClientFrame::Send { .. })));
}

#[test]
fn sends_made_while_disconnected_go_out_in_order_on_connect() {
    let mut h = harness(20);
    let mut answers = Vec::new();
    for body in ["one", "two", "three"] {
        answers.push(h.send("g", None, body));
    }
    assert!(h.engine.take_outgoing().is_empty());
    let frames = h.connect(vec![summary("g", 0, 0, 0)]);
    let bodies: Vec<&str> = frames
        .iter()
        .filter_map(|f| match f {
            ClientFrame::Send { body, .. } => Some(body.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(bodies, vec!["one", "two", "three"]);
    // A sent without an id is matched by client_id.
    let ClientFrame::Send { client_id, .. } = &frames[1] else {
        panic!("expected a send")
    };
    h.engine.on_frame(ServerFrame::Sent {
        id: None,
        group: "g".into(),
        client_id: client_id.clone(),
        seq: 2,
        ts: 1,
        duplicate: false,
    });
    assert_eq!(
        answers[1].try_recv().expect("answered").map(|s| s.seq),
        Ok(2)
    );
}

#[test]
fn a_refused_send_fails_and_is_not_resent() {
    let mut h = harness(20);
    h.connect(vec![]);
    let mut answer = h.send("nope", Some("x"), "b");
    let frames = h.engine.take_outgoing();
    h.engine.on_frame(ServerFrame::error(
        Some(wire_id(id_of(&frames[0]))),
        ErrorCode::NotMember,
        "no",
    ));
    assert_eq!(
        answer.try_recv().expect("answered"),
        Err(ClientError::Server {
            code: ErrorCode::NotMember,
            message: "no".into()
        })
    );
    h.engine.on_disconnected();
    assert!(h.connect(vec![]).is_empty());
}

#[test]
fn a_send_refused_for_now_is_retried_on_the_next_tick_with_the_same_client_id() {
    let mut h = harness(20);
    h.connect(vec![summary("g", 0, 0, 0)]);
    let mut answer = h.send("g", Some("c1"), "b");
    for code in [ErrorCode::RateLimited, ErrorCode::Storage, ErrorCode::Busy] {
        let frames = h.engine.take_outgoing();
        assert_eq!(frames.len(), 1, "{frames:?}");
        h.engine.on_frame(ServerFrame::Error {
            id: Some(wire_id(id_of(&frames[0]))),
            code,
            message: "later".into(),
            retry_after_ms: Some(10),
        });
        assert!(answer.try_recv().is_err(), "the caller still waits");
        assert!(h.engine.take_outgoing().is_empty(), "not before the tick");
        h.engine.on_tick();
        let again = h.engine.take_outgoing();
        let Some(ClientFrame::Send { client_id, .. }) = again.first() else {
            panic!("expected the send again, got {again:?}");
        };
        assert_eq!(client_id, "c1");
        h.engine.outgoing = again;
    }
}

#[test]
fn reconnect_syncs_from_the_higher_watermark_and_holds_pushes_until_the_gap_fills() {
    let mut h = harness(20);
    let frames = h.connect(vec![summary("g", 5, 2, 0)]);
    let [ClientFrame::Sync { after: 2, .. }] = frames.as_slice() else {
        panic!("expected a sync after 2, got {frames:?}");
    };
    let sync_id = id_of(&frames[0]);
    // A push of a newer message arrives before the sync answer: it is held.
    h.engine.on_frame(ServerFrame::Msg(message("g", 6)));
    assert!(h.message_seqs().is_empty());
    h.engine.on_frame(page(sync_id, "g", 3..=4, true));
    assert_eq!(h.message_seqs(), vec![3, 4]);
    let frames = h.engine.take_outgoing();
    let [ClientFrame::Sync { after: 4, .. }] = frames.as_slice() else {
        panic!("expected the next page after 4, got {frames:?}");
    };
    // The last page overlaps the held push; each message still comes once, in order.
    h.engine
        .on_frame(page(id_of(&frames[0]), "g", 5..=6, false));
    assert_eq!(h.message_seqs(), vec![5, 6]);
    h.engine.on_frame(ServerFrame::Msg(message("g", 6)));
    h.engine.on_frame(ServerFrame::Msg(message("g", 7)));
    assert_eq!(h.message_seqs(), vec![7]);
    assert!(h.engine.take_outgoing().is_empty());

    // After a drop the local watermark (7) beats the server's delivered cursor (3).
    h.engine.on_disconnected();
    let frames = h.connect(vec![summary("g", 9, 3, 0)]);
    let [ClientFrame::Sync { after: 7, .. }] = frames.as_slice() else {
        panic!("expected a sync after 7, got {frames:?}");
    };
    h.engine
        .on_frame(page(id_of(&frames[0]), "g", 1..=9, false));
    let seqs = h.message_seqs();
    assert_eq!(seqs, vec![8, 9]);
}

#[test]
fn a_group_joined_while_online_starts_at_its_first_push() {
    let mut h = harness(20);
    h.connect(vec![]);
    h.engine.on_frame(ServerFrame::Msg(message("dm:a:b", 1)));
    h.engine.on_frame(ServerFrame::Msg(message("late", 41)));
    h.engine.on_frame(ServerFrame::Msg(message("late", 42)));
    assert_eq!(h.message_seqs(), vec![1, 41, 42]);
    assert!(h.engine.take_outgoing().is_empty());
}

#[test]
fn a_gap_in_pushes_starts_a_sync_and_an_unfillable_gap_is_skipped() {
    let mut h = harness(20);
    h.connect(vec![summary("g", 1, 1, 0)]);
    h.engine.on_frame(ServerFrame::Msg(message("g", 4)));
    let frames = h.engine.take_outgoing();
    let [ClientFrame::Sync { after: 1, .. }] = frames.as_slice() else {
        panic!("expected a gap sync, got {frames:?}");
    };
    // The server has nothing to fill the gap with.
    h.engine
        .on_frame(page(id_of(&frames[0]), "g", 4..=4, false));
    assert_eq!(h.message_seqs(), vec![4]);
    h.engine.on_frame(ServerFrame::Msg(message("g", 5)));
    assert_eq!(h.message_seqs(), vec![5]);
}

#[test]
fn queries_in_flight_are_retried_on_the_next_connection() {
    let mut h = harness(20);
    h.connect(vec![]);
    let (reply, mut answer) = oneshot::channel();
    h.engine.on_command(Command::Query {
        frame: ClientFrame::Ping { id: None },
        reply,
    });
    let first = id_of(&h.engine.take_outgoing()[0]);
    h.engine.on_disconnected();
    // A late pong for the old id is not mistaken for anything.
    let frames = h.connect(vec![]);
    let second = id_of(&frames[0]);
    assert_ne!(first, second);
    h.engine.on_frame(ServerFrame::Pong {
        id: Some(wire_id(second)),
    });
    assert!(matches!(
        answer.try_recv(),
        Ok(Ok(ServerFrame::Pong { .. }))
    ));
}

#[test]
fn shutdown_fails_every_waiting_caller() {
    let mut h = harness(20);
    let mut send_answer = h.send("g", None, "b");
    let (reply, mut query_answer) = oneshot::channel();
    h.engine.on_command(Command::Query {
        frame: ClientFrame::Ping { id: None },
        reply,
    });
    h.engine.shutdown();
    assert_eq!(send_answer.try_recv(), Ok(Err(ClientError::Closed)));
    assert_eq!(query_answer.try_recv(), Ok(Err(ClientError::Closed)));
}

#[test]
fn acks_follow_consumption_and_repeat_after_a_lost_ack() {
    let mut h = harness(3);
    h.connect(vec![summary("g", 0, 0, 0)]);
    for seq in 1..=4 {
        h.engine.on_command(Command::Consumed {
            group: "g".into(),
            seq,
        });
    }
    let acks = |frames: Vec<ClientFrame>| -> Vec<u64> {
        frames
            .into_iter()
            .filter_map(|f| match f {
                ClientFrame::Ack { seq, .. } => Some(seq),
                _ => None,
            })
            .collect()
    };
    assert_eq!(acks(h.engine.take_outgoing()), vec![3]);
    h.engine.on_tick();
    assert_eq!(acks(h.engine.take_outgoing()), vec![4]);
    h.engine.on_tick();
    assert!(h.engine.take_outgoing().is_empty());
    // The ack of 4 was lost with the connection.
    h.engine.on_disconnected();
    h.connect(vec![summary("g", 4, 3, 0)]);
    h.engine.on_tick();
    assert_eq!(acks(h.engine.take_outgoing()), vec![4]);
}

#[test]
fn read_marks_repeat_after_reconnect_and_refusals_surface() {
    let mut h = harness(20);
    h.connect(vec![summary("g", 9, 9, 0)]);
    h.engine.on_command(Command::Read {
        group: "g".into(),
        seq: 5,
    });
    assert_eq!(h.engine.take_outgoing().len(), 1);
    h.engine.on_disconnected();
    let frames = h.connect(vec![summary("g", 9, 9, 2)]);
    let [ClientFrame::Read { seq: 5, .. }] = frames.as_slice() else {
        panic!("expected the read mark again, got {frames:?}");
    };
    h.events();
    h.engine.on_command(Command::Read {
        group: "g".into(),
        seq: 50,
    });
    let frames = h.engine.take_outgoing();
    h.engine.on_frame(ServerFrame::error(
        Some(wire_id(id_of(&frames[0]))),
        ErrorCode::InvalidSeq,
        "too high",
    ));
    assert!(matches!(
        h.events().as_slice(),
        [Event::ReadRefused {
            seq: 50,
            code: ErrorCode::InvalidSeq,
            ..
        }]
    ));
    // The refused mark is not repeated.
    h.engine.on_disconnected();
    assert!(h.connect(vec![summary("g", 9, 9, 5)]).is_empty());
}
