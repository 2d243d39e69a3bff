//! The storm's receipt policy and private readers (`--receipts`, `--private-readers`): which
//! readers stop sharing reads (set through the admin API before the run) and, after the run,
//! the check that the receipts came out as docs/PROTOCOL.md §4.1–4.2 says. With `off` no
//! `receipt` frame at all may be sent. Otherwise each sender's final read count of its last
//! message is exactly the number of online readers who share reads (and no count it saw was
//! ever higher). Under every policy the admin receipts route must list exactly those readers
//! as `read` and the private ones as `delivered`, for a sample of seqs. A failed check makes
//! the run fail; the check runs after the second `/metrics` snapshot, outside the measurement.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::admin::Admin;
use crate::args::{Plan, Receipts, Scenario};
use crate::report::fig;
use crate::storm::Measured;
use crate::Error;

/// What the check found: whether it passed, and the lines that say so.
pub struct Check {
    pub ok: bool,
    pub lines: Vec<String>,
}

/// The online readers that do not share reads: the last `--private-readers` of the online
/// members (`users` is in the storm's order: senders, online readers, offline members).
pub fn private_readers<'a>(plan: &Plan, users: &'a [String]) -> &'a [String] {
    let online = plan.online.min(users.len());
    let first = online.saturating_sub(plan.private_readers);
    users.get(first..online).unwrap_or(&[])
}

/// Turns `share_reads` off for `users` (each change is durable when answered).
pub fn make_private(admin: &Admin, users: &[String]) -> Result<(), Error> {
    for user in users {
        let answer = admin.put(&format!("/api/users/{user}"), json!({"share_reads": false}))?;
        if answer["share_reads"] != Value::Bool(false) {
            return Err(format!("PUT /api/users/{user}: share_reads still on: {answer}").into());
        }
    }
    Ok(())
}

/// Checks the receipts of a finished storm-family run (other scenarios: nothing to check).
pub fn check(admin: &Admin, plan: &Plan, group: &str, users: &[String], m: &Measured) -> Check {
    let mut check = Check {
        ok: true,
        lines: Vec::new(),
    };
    if plan.relay
        || !matches!(
            plan.scenario,
            Scenario::Storm | Scenario::Ceiling | Scenario::Fanout
        )
    {
        return check;
    }
    let policy = plan.receipts.unwrap_or(Receipts::Full);
    fig("receipts", policy.as_str());
    fig("private_readers", plan.private_readers);
    let senders: Vec<_> = m
        .outcomes
        .iter()
        .filter(|o| o.index < plan.senders)
        .collect();
    let sender_frames: u64 = senders.iter().map(|o| o.receipt_frames).sum();
    fig("sender_receipt_frames", sender_frames);
    let mut verdict = |ok: bool, line: String| {
        check.ok &= ok;
        check
            .lines
            .push(format!("{line}: {}", if ok { "ok" } else { "FAILED" }));
    };

    if policy == Receipts::Off {
        let pushed = m
            .before
            .delta(&m.after, "rollcall_receipt_frames_sent_total");
        verdict(
            pushed == 0.0 && sender_frames == 0,
            format!(
                "receipts off              : {pushed} receipt frames sent (metrics Δ), senders got {sender_frames}; must be 0"
            ),
        );
    } else {
        let expected = plan.n_sharing_readers();
        fig("sharing_readers", expected);
        for o in &senders {
            let last = o.my_last_seq.unwrap_or(0);
            let ok = o.receipt_last == Some((last, expected)) && o.receipt_max_read <= expected;
            if o.index == 0 {
                fig(
                    "sender_final_read",
                    o.receipt_last.map_or(0, |(_, read)| read),
                );
            }
            verdict(
                ok,
                format!(
                    "{:<26}: last message (seq {last}) read by {} in its last receipt (highest seq {}), most ever {}; must be {expected} (sharing readers)",
                    format!("sender {} read count", o.index),
                    o.receipt_last.map_or("none".into(), |(_, read)| read.to_string()),
                    o.receipt_last.map_or("none".into(), |(seq, _)| seq.to_string()),
                    o.receipt_max_read
                ),
            );
        }
    }
    let (ok, line) = match audit(admin, plan, group, users) {
        Ok((ok, line)) => (ok, line),
        Err(e) => (false, format!("admin receipts route       : {e}")),
    };
    verdict(ok, line);
    fig("receipt_check_ok", check.ok);
    check
}

/// The admin receipts route for up to 10 seqs spread over the run: `read` must be exactly the
/// online readers who share reads, and every private reader must be `delivered`.
fn audit(
    admin: &Admin,
    plan: &Plan,
    group: &str,
    users: &[String],
) -> Result<(bool, String), Error> {
    let private: BTreeSet<&str> = private_readers(plan, users)
        .iter()
        .map(String::as_str)
        .collect();
    let sharing: BTreeSet<&str> = users
        .iter()
        .take(plan.online)
        .skip(plan.senders)
        .map(String::as_str)
        .filter(|u| !private.contains(u))
        .collect();
    let last_seq = admin.get(&format!("/api/groups/{group}"))?["last_seq"]
        .as_u64()
        .ok_or("no last_seq in the group")?;
    let seqs: BTreeSet<u64> = (0..10u64)
        .map(|k| 1 + k * last_seq.saturating_sub(1) / 9)
        .filter(|&s| s >= 1 && s <= last_seq)
        .collect();
    let mut first_mismatch = None;
    for &seq in &seqs {
        let answer = admin.get(&format!("/api/groups/{group}/messages/{seq}/receipts"))?;
        let list = |key: &str| -> BTreeSet<String> {
            answer[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect()
        };
        let (read, delivered) = (list("read"), list("delivered"));
        let read_ok =
            read.len() == sharing.len() && read.iter().all(|u| sharing.contains(u.as_str()));
        let private_ok = private.iter().all(|u| delivered.contains(*u));
        if !(read_ok && private_ok) && first_mismatch.is_none() {
            first_mismatch = Some(format!(
                " (seq {seq}: read {} of {} expected, {} of {} private readers delivered)",
                read.len(),
                sharing.len(),
                private.iter().filter(|u| delivered.contains(**u)).count(),
                private.len()
            ));
        }
    }
    let ok = first_mismatch.is_none() && !seqs.is_empty();
    Ok((
        ok,
        format!(
            "admin receipts route      : {} seqs of 1..{last_seq}: read = the {} sharing readers, the {} private readers delivered{}",
            seqs.len(),
            sharing.len(),
            private.len(),
            first_mismatch.unwrap_or_default()
        ),
    ))
}
