//! The outbox: every send is kept, in the order it was made, until the server answers it.
//!
//! A send gets its `client_id` once, when it enters the outbox, and keeps it for every write:
//! on each (re)connect the whole outbox is written again in order, and a send refused for a
//! passing reason (`rate_limited`, `storage`, `busy`: nothing was stored) is written again on the
//! next ack tick. The server dedupes by `client_id`, so a resend of a message it did store is
//! answered with the original seq. The rejected option, failing a send whose connection
//! dropped, would leave the caller unable to tell whether the message was stored, and a retry
//! under a new `client_id` would store it twice.
//!
//! A `sent` is matched to its send by request id, or, for a reply from an older connection, by
//! (group, `client_id`). [`Outbox`] is its own struct because its entries are read by nothing
//! else; the `impl Engine` half below writes them and routes the answers.

use std::collections::BTreeMap;

use super::{Engine, InFlight, SendReply};
use crate::client::{ClientError, Sent};
use crate::protocol::{ClientFrame, ErrorCode};

/// Sends waiting for their `sent`, and the numbers that order them.
pub(super) struct Outbox {
    /// Random per client, so generated `client_id`s of two clients never collide.
    client_nonce: u64,
    n_generated_client_ids: u64,
    next_number: u64,
    /// Sends not yet answered, in the order they were made.
    entries: BTreeMap<u64, PendingSend>,
    /// Sends refused for a passing reason (`rate_limited`, `storage`, `busy`), still in the
    /// outbox, written again on the next tick.
    retries: Vec<u64>,
}

/// A send as the handle asked for it.
pub(super) struct NewSend {
    pub(super) group: String,
    /// `None`: the outbox generates one.
    pub(super) client_id: Option<String>,
    pub(super) body: String,
    pub(super) remind_after_secs: Option<u64>,
}

/// A message waiting for its `sent`.
pub(super) struct PendingSend {
    group: String,
    client_id: String,
    body: String,
    remind_after_secs: Option<u64>,
    /// `None` once the caller is gone or was answered.
    reply: Option<SendReply>,
}

impl PendingSend {
    /// Tells the caller how the send ended.
    pub(super) fn answer(self, result: Result<Sent, ClientError>) {
        if let Some(reply) = self.reply {
            // The caller may have stopped waiting; then there is nobody to tell.
            let _ = reply.send(result);
        }
    }
}

impl Outbox {
    pub(super) fn new() -> Outbox {
        Outbox {
            client_nonce: rand::random(),
            n_generated_client_ids: 0,
            next_number: 0,
            entries: BTreeMap::new(),
            retries: Vec::new(),
        }
    }

    /// Adds a send (with a generated `client_id` if it has none); returns its number.
    fn add(&mut self, send: NewSend, reply: SendReply) -> u64 {
        let NewSend {
            group,
            client_id,
            body,
            remind_after_secs,
        } = send;
        let client_id = client_id.unwrap_or_else(|| self.generate_client_id());
        let number = self.next_number;
        self.next_number += 1;
        self.entries.insert(
            number,
            PendingSend {
                group,
                client_id,
                body,
                remind_after_secs,
                reply: Some(reply),
            },
        );
        number
    }

    /// How many sends wait.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The `send` frame of send `number` (without an id), if it still waits.
    fn frame(&self, number: u64) -> Option<ClientFrame> {
        let entry = self.entries.get(&number)?;
        Some(ClientFrame::Send {
            id: None,
            group: entry.group.clone(),
            client_id: entry.client_id.clone(),
            body: entry.body.clone(),
            remind_after_secs: entry.remind_after_secs,
            reply_to: None,
        })
    }

    /// The number of the waiting send of `group` with `client_id`.
    fn find(&self, group: &str, client_id: &str) -> Option<u64> {
        self.entries
            .iter()
            .find(|(_, entry)| entry.group == group && entry.client_id == client_id)
            .map(|(number, _)| *number)
    }

    /// Takes send `number` out of the outbox, to answer it.
    pub(super) fn remove(&mut self, number: u64) -> Option<PendingSend> {
        self.entries.remove(&number)
    }

    /// Forgets the retries of the last tick: the whole outbox is written again on connect.
    pub(super) fn forget_retries(&mut self) {
        self.retries.clear();
    }

    /// The session ends: every send still waiting fails with [`ClientError::Closed`].
    pub(super) fn close(&mut self) {
        for (_, entry) in std::mem::take(&mut self.entries) {
            entry.answer(Err(ClientError::Closed));
        }
    }

    fn generate_client_id(&mut self) -> String {
        self.n_generated_client_ids += 1;
        format!("{:016x}-{}", self.client_nonce, self.n_generated_client_ids)
    }
}

impl Engine {
    /// A new send from the handle: into the outbox, and written at once when connected.
    pub(super) fn on_send(&mut self, send: NewSend, reply: SendReply) {
        let number = self.outbox.add(send, reply);
        if self.connected {
            self.write_send(number);
        }
    }

    /// Writes every waiting send, in the order they were made (on connect).
    pub(super) fn write_outbox(&mut self) {
        let numbers: Vec<u64> = self.outbox.entries.keys().copied().collect();
        for number in numbers {
            self.write_send(number);
        }
    }

    /// Writes again the sends refused for now since the last tick.
    pub(super) fn write_retries(&mut self) {
        for number in std::mem::take(&mut self.outbox.retries) {
            self.write_send(number);
        }
    }

    /// The server's `sent`: the send is stored, its caller gets the seq.
    pub(super) fn on_sent(&mut self, id: Option<u64>, sent: Sent) {
        let mut number = None;
        if let Some(id) = id {
            if let Some(InFlight::Send { number: n }) = self.in_flight.get(&id) {
                number = Some(*n);
                self.in_flight.remove(&id);
            }
        }
        // Without a matching id (a reply from an older connection), match by client_id.
        let number = number.or_else(|| self.outbox.find(&sent.group, &sent.client_id));
        let Some(entry) = number.and_then(|number| self.outbox.remove(number)) else {
            log::debug!(
                "client: sent for group {} client_id {} matches no pending send",
                sent.group,
                sent.client_id
            );
            return;
        };
        log::debug!(
            "client: group {} stored client_id {} as seq {} (duplicate: {})",
            sent.group,
            sent.client_id,
            sent.seq,
            sent.duplicate
        );
        // The message is stored whether or not the caller still waits.
        entry.answer(Ok(sent));
    }

    /// The server refused send `number` with an `error`.
    pub(super) fn on_send_refused(&mut self, number: u64, code: ErrorCode, message: String) {
        if is_passing(code) {
            // Nothing was stored: write it again, same client_id, on the next tick.
            log::debug!("client: send refused for now ({}); retrying", code.as_str());
            self.outbox.retries.push(number);
            return;
        }
        if let Some(entry) = self.outbox.remove(number) {
            log::warn!(
                "client: send to group {} refused: {} ({message})",
                entry.group,
                code.as_str()
            );
            entry.answer(Err(ClientError::Server { code, message }));
        }
    }

    fn write_send(&mut self, number: u64) {
        let Some(frame) = self.outbox.frame(number) else {
            return;
        };
        let id = self.push_frame(frame);
        self.in_flight.insert(id, InFlight::Send { number });
    }
}

/// Errors after which the same send succeeds later: the client retries instead of failing.
fn is_passing(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::RateLimited | ErrorCode::Storage | ErrorCode::Busy
    )
}
