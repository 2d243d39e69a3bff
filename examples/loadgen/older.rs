//! The older single-group scenarios' result blocks: `throughput` (every member online, several
//! closed-loop senders) and `receipts` (the receipt-traffic count with a paced sender, against
//! the naive push + ack + receipt per reader). They run through `storm.rs` like the storm.

use crate::report::{fmt_ms, per, percentile};
use crate::storm_report::Tally;

/// `throughput`: sends/s, latencies and frames per message.
pub fn throughput_result(t: &Tally) {
    let (b, a) = (t.before, t.after);
    let (sent_lat, all_delivered) = (&t.sent_lat[..], &t.all_delivered[..]);
    let (answered, send_span_s) = (t.answered, t.send_span_s);
    let (stored, flushes, in_total, out_total) = (t.stored, t.flushes, t.in_total, t.out_total);
    let sends_per_s = if send_span_s > 0.0 {
        answered as f64 / send_span_s
    } else {
        f64::NAN
    };
    println!("--- result ---");
    println!("sends/s                 : {sends_per_s:.0} (sent replies over {send_span_s:.2} s, first send → last sent)");
    println!(
        "send→sent latency       : median {} ms, p99 {} ms",
        fmt_ms(percentile(sent_lat, 0.5)),
        fmt_ms(percentile(sent_lat, 0.99))
    );
    println!(
        "send→delivered-to-all   : median {} ms",
        fmt_ms(percentile(all_delivered, 0.5))
    );
    println!(
        "flushes / messages/flush: {flushes} / {:.1}",
        per(stored, flushes)
    );
    println!(
        "frames out per message  : {:.2} (msg {:.2}, sent {:.2}, receipt {:.4})",
        per(out_total, stored),
        per(b.frames(a, "out", "msg"), stored),
        per(b.frames(a, "out", "sent"), stored),
        per(b.frames(a, "out", "receipt"), stored)
    );
    println!(
        "frames in per message   : {:.2} (send {:.2}, ack {:.2})",
        per(in_total, stored),
        per(b.frames(a, "in", "send"), stored),
        per(b.frames(a, "in", "ack"), stored)
    );
}

/// `receipts`: frames per posted message, compared with the naive design, and receipt storage.
pub fn receipts_result(t: &Tally) {
    let plan = t.plan;
    let (b, a) = (t.before, t.after);
    let (data_before, data_after) = (t.data_before, t.data_after);
    let n = plan.messages as f64;
    let readers = (plan.online - 1) as f64;
    let fin = b.frames(a, "in", "send") + b.frames(a, "in", "ack") + b.frames(a, "in", "read");
    let fout = b.frames(a, "out", "sent")
        + b.frames(a, "out", "msg")
        + b.frames(a, "out", "receipt")
        + b.frames(a, "out", "read_sync");
    let receipts = b.frames(a, "out", "receipt");
    let msg_out = b.frames(a, "out", "msg");
    let cursor_in = b.frames(a, "in", "ack") + b.frames(a, "in", "read");
    let all_read = &t.all_read[..];
    let sender_receipts = t.outcomes.first().map_or(0, |o| o.receipt_frames);
    // Reader pushes only: the sender's own session also gets each msg (1 per message).
    let reader_msgs = msg_out - n;
    let comparable = reader_msgs + cursor_in + receipts;
    let naive = 3.0 * readers;
    let member_bytes = plan.members as f64 * 25.0;
    println!("--- result (per posted message, M={}) ---", plan.messages);
    println!(
        "frames received by server (send+ack/read)       : {:.2}  (send {:.2}, ack/read {:.2})",
        fin / n,
        b.frames(a, "in", "send") / n,
        cursor_in / n
    );
    println!(
        "frames sent by server (sent+msg+receipt+read_sync): {:.2}  (sent {:.2}, msg {:.2}, receipt {:.4}, read_sync {:.2})",
        fout / n,
        b.frames(a, "out", "sent") / n,
        msg_out / n,
        receipts / n,
        b.frames(a, "out", "read_sync") / n
    );
    println!(
        "receipt frames only                             : {:.4}  ({receipts} in all; sender saw {sender_receipts})",
        receipts / n
    );
    println!(
        "naive design (push+ack+receipt per reader)      : {naive:.0} frames  ({readers} pushes + {readers} acks + {readers} receipts); {readers} stored receipt rows"
    );
    println!(
        "rollcall, same count (reader msg+read+receipt)  : {:.2} frames  ({:.1}% of naive); 0 stored receipt rows",
        comparable / n,
        100.0 * comparable / n / naive
    );
    println!(
        "send → receipt with all {readers} read          : median {} ms, p99 {} ms ({} messages)",
        fmt_ms(percentile(all_read, 0.5)),
        fmt_ms(percentile(all_read, 0.99)),
        all_read.len()
    );
    println!(
        "receipt storage: no per-message receipt data; member records {} x 25 B = {member_bytes:.0} B per group → {:.1} B per message at M={} (fixed per member, independent of how many read)",
        plan.members,
        member_bytes / n,
        plan.messages
    );
    if let (Some(x), Some(y)) = (data_before, data_after) {
        println!(
            "data dir size: before {x} B, after {y} B (sled preallocates segments; Δ {} B)",
            y as i64 - x as i64
        );
    }
}
