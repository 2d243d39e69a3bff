//! Micro-benchmarks of the hot paths (criterion): frame encode/decode (`protocol/`, with the careful
//! parse beside the one-pass one), counting frames by type (`metrics.rs`), the
//! receipt index at 10 / 1,000 / 10,000 members (`group/receipts.rs`), and the message store's
//! write and range scan (`store/`), and a flush's pushes to 40 sessions: one mailbox message per
//! message or one per flush (`presence/`, `group/fanout.rs`). Run with `cargo bench --bench hot_paths`; results and the
//! machine are in BENCHMARKS.md. `cargo clippy --all-targets` and `cargo test --benches`
//! compile them; `cargo test` does not run them.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rollcall::config::Durability;
use rollcall::group::receipts::{Counted, ReceiptIndex};
use rollcall::ids::{GroupId, UserId};
use rollcall::metrics::Metrics;
use rollcall::presence::{Backlog, FrameText, Outbound, SessionHandle};
use rollcall::protocol::{ClientFrame, Message, ServerFrame};
use rollcall::store::{
    Direction, GroupKindRecord, GroupRecord, MemberRecord, MessageRecord, SledStore, Store,
};

const BODY: &str = "a message body of about sixty-four bytes, like a short chat line.";

/// A `msg` frame with a 64-byte body.
fn sample_msg() -> ServerFrame {
    ServerFrame::Msg(Message {
        group: "team-1".into(),
        seq: 123_456,
        from: "alice".into(),
        ts: 1_763_900_000_000,
        body: BODY.into(),
        client_id: "c-000123".into(),
        ..Default::default()
    })
}

fn frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    let send = r#"{"type":"send","id":17,"group":"team-1","client_id":"c-000123","body":"a message body of about sixty-four bytes, like a short chat line."}"#;
    g.bench_function("decode_send", |b| {
        b.iter(|| ClientFrame::parse(black_box(send)).is_ok())
    });
    let ack = r#"{"type":"read","group":"team-1","seq":123456}"#;
    g.bench_function("decode_read", |b| {
        b.iter(|| ClientFrame::parse(black_box(ack)).is_ok())
    });
    let msg = sample_msg();
    // The careful parse (through a `serde_json::Value`), which every frame went through before
    // the one-pass and the cursor parses; `parse` falls back to it for malformed frames.
    g.bench_function("decode_send_careful", |b| {
        b.iter(|| ClientFrame::parse_checked(black_box(send)).is_ok())
    });
    g.bench_function("decode_read_careful", |b| {
        b.iter(|| ClientFrame::parse_checked(black_box(ack)).is_ok())
    });
    g.bench_function("encode_msg", |b| b.iter(|| black_box(&msg).to_text().len()));
    g.finish();
}

/// Counting a frame by type: the busy types (`msg`, counted once per delivery) have their
/// counter at hand; the others go through the family's hashed, locked map.
fn frame_counters(c: &mut Criterion) {
    let metrics = Metrics::default();
    let mut g = c.benchmark_group("frame_counter");
    g.bench_function("busy_type", |b| {
        b.iter(|| metrics.frame_out(black_box("msg")))
    });
    g.bench_function("family_lookup", |b| {
        b.iter(|| metrics.frame_out(black_box("users")))
    });
    g.finish();
}

/// A group of `n` members whose cursors are spread over the last 1,000 of 100,000 messages.
fn index_of(n: u64) -> (ReceiptIndex, Vec<MemberRecord>) {
    let mut index = ReceiptIndex::default();
    let mut members = Vec::new();
    for i in 0..n {
        let read = 99_000 + (i * 7919) % 1000;
        let m = MemberRecord {
            joined_seq: i % 50,
            delivered: read + (i % 3),
            read,
        };
        index.insert(&m, true);
        members.push(m);
    }
    (index, members)
}

fn receipts(c: &mut Criterion) {
    let mut g = c.benchmark_group("receipt_index");
    for n in [10u64, 1_000, 10_000] {
        let (index, members) = index_of(n);
        g.bench_with_input(BenchmarkId::new("count_for_seq", n), &n, |b, _| {
            let mut seq = 99_000;
            b.iter(|| {
                seq = if seq >= 100_000 { 99_000 } else { seq + 1 };
                black_box(index.counts(
                    seq,
                    members.first().map(|record| Counted {
                        record,
                        shares_reads: true,
                    }),
                ))
            })
        });
        g.bench_with_input(BenchmarkId::new("cursor_move", n), &n, |b, _| {
            let mut index = index.clone();
            let mut members = members.clone();
            let mut i = 0usize;
            b.iter(|| {
                // One member reads one more message: the move the index makes per `read`.
                i = (i + 1) % members.len();
                let old = members[i];
                let mut new = old;
                new.read += 1;
                new.delivered = new.delivered.max(new.read);
                index.update(&old, &new, true);
                members[i] = new;
            })
        });
    }
    g.finish();
}

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store =
        SledStore::open(&dir.path().join("db"), 64 << 20, Durability::Process).expect("open");
    let group = GroupId::parse("bench").expect("group id");
    store
        .create_group(
            &group,
            &GroupRecord {
                name: "bench".into(),
                kind: GroupKindRecord::Group,
                created_ms: 0,
            },
        )
        .expect("create group");
    let record = MessageRecord {
        from: "alice".into(),
        client_id: "c-000123".into(),
        ts: 1_763_900_000_000,
        body: BODY.into(),
    };
    let mut g = c.benchmark_group("store");
    let mut seq = 0u64;
    g.throughput(Throughput::Elements(1));
    g.bench_function("put_message", |b| {
        b.iter(|| {
            seq += 1;
            store
                .put_message(&group, rollcall::ids::Seq(seq), &record)
                .expect("put")
        })
    });
    // At least 10,000 messages for the scans, whatever the put benchmark left.
    while seq < 10_000 {
        seq += 1;
        store
            .put_message(&group, rollcall::ids::Seq(seq), &record)
            .expect("put");
    }
    store.flush().expect("flush");
    for page in [100u64, 1_000] {
        g.throughput(Throughput::Elements(page));
        g.bench_with_input(BenchmarkId::new("scan_page", page), &page, |b, &page| {
            let mut first = 1u64;
            b.iter(|| {
                let mut n = 0u64;
                store
                    .scan_messages(
                        &group,
                        rollcall::ids::Seq(first),
                        rollcall::ids::Seq(first + page - 1),
                        Direction::Ascending,
                        &mut |_, m| {
                            n += m.body.len() as u64;
                            true
                        },
                    )
                    .expect("scan");
                first = if first + 2 * page > 10_000 {
                    1
                } else {
                    first + page
                };
                n
            })
        });
    }
    g.finish();
}

/// Plays a session on another thread: takes its frames off the queue, as a session does before
/// it encodes them.
struct Sink {
    backlog: Backlog,
}

impl Actor for Sink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1 << 20);
    }
}

impl Handler<Outbound> for Sink {
    type Result = ();

    fn handle(&mut self, msg: Outbound, _ctx: &mut Context<Self>) {
        match msg {
            Outbound::Frame { text, .. } => {
                black_box(text.len());
                self.backlog.written(1);
            }
            Outbound::Frames { texts, .. } => {
                for text in texts.iter() {
                    black_box(text.len());
                }
                self.backlog.written(texts.len());
            }
            _ => {}
        }
    }
}

/// One flush's 20 messages pushed to 40 sessions on another thread, until every session took
/// them: one mailbox message per message and session (before), or one per flush and session.
fn pushes(c: &mut Criterion) {
    const SESSIONS: u64 = 40;
    const PER_FLUSH: usize = 20;
    let _system = System::new();
    let arbiter = Arbiter::new();
    let handles: Vec<SessionHandle> = (0..SESSIONS)
        .map(|i| {
            let backlog = Backlog::new(1 << 30);
            let sink = Sink {
                backlog: backlog.clone(),
            };
            SessionHandle {
                id: i,
                user: UserId::parse(&format!("u{i}")).expect("user id"),
                outbox: Sink::start_in_arbiter(&arbiter.handle(), |_| sink).recipient(),
                backlog,
            }
        })
        .collect();
    let frame = sample_msg().to_text();
    let texts: Arc<[FrameText]> = (0..PER_FLUSH)
        .map(|_| FrameText::from(frame.clone()))
        .collect();
    let drained = |handles: &[SessionHandle]| {
        while handles.iter().any(|h| h.backlog.queued() > 0) {
            std::thread::yield_now();
        }
    };
    let mut g = c.benchmark_group("push");
    g.throughput(Throughput::Elements(SESSIONS * PER_FLUSH as u64));
    g.bench_function("flush_20_msgs_to_40_sessions/envelope_per_message", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                for text in texts.iter() {
                    for h in &handles {
                        h.offer("msg", text).expect("queued");
                    }
                }
            }
            drained(&handles);
            t.elapsed()
        })
    });
    g.bench_function("flush_20_msgs_to_40_sessions/envelope_per_flush", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                for h in &handles {
                    h.offer_all("msg", &texts).expect("queued");
                }
            }
            drained(&handles);
            t.elapsed()
        })
    });
    g.finish();
    arbiter.stop();
}

criterion_group!(benches, frames, frame_counters, receipts, store, pushes);
criterion_main!(benches);
