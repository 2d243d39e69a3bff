//! The frame dispatch: which request a server frame answers, and the queries.
//!
//! Every frame the client writes that expects a reply is in the request table (`in_flight`)
//! under its id; a reply is routed by its id to the mechanism that wrote it (a query's caller,
//! the outbox, a sync), and a push (`msg`, `receipt`, `joined`, ...) by its type. Routing by id
//! rather than by the reply's type is what lets a query and the client's own sync both be
//! answered by `messages`. An `error` whose id is in no table entry may belong to a cursor frame
//! (`engine/marks.rs`). Ids are read from frames only through `frame_id`, so this file does not
//! know their wire type.
//!
//! Queries are the requests whose reply goes back to the caller as it is. Every query of the
//! protocol is idempotent, so one waits for a connection instead of failing while disconnected,
//! and one whose connection dropped is sent again on the next (see `on_disconnected`). A reply
//! of the wrong type for its request is logged; a send keeps waiting for its `sent`, and a sync
//! gives up on its gap.

use super::{frame_id, Engine, InFlight, QueryReply};
use crate::client::{ClientError, Event, Sent};
use crate::protocol::{ClientFrame, ErrorCode, ServerFrame};

/// A query waiting for a connection.
pub(super) struct QueuedQuery {
    pub(super) frame: ClientFrame,
    pub(super) reply: QueryReply,
}

impl Engine {
    /// A query from the handle: written when connected, queued otherwise.
    pub(super) fn on_query(&mut self, frame: ClientFrame, reply: QueryReply) {
        if self.connected {
            self.write_query(frame, reply);
        } else {
            self.queued_queries.push(QueuedQuery { frame, reply });
        }
    }

    pub(super) fn write_query(&mut self, frame: ClientFrame, reply: QueryReply) {
        if reply.is_closed() {
            // The caller stopped waiting.
            return;
        }
        let id = self.push_frame(frame.clone());
        self.in_flight.insert(id, InFlight::Query { frame, reply });
    }

    /// A frame that could not be parsed; `id` is its request id if one could be read.
    pub(crate) fn on_unparsed(&mut self, id: Option<u64>, reason: String) {
        let Some(entry) = id.and_then(|id| self.in_flight.remove(&id)) else {
            // Unknown frame types are to be ignored (PROTOCOL.md §1).
            log::debug!("client: ignoring a frame: {reason}");
            return;
        };
        log::warn!("client: unreadable reply: {reason}");
        match entry {
            InFlight::Query { reply, .. } => {
                let _ = reply.send(Err(ClientError::UnexpectedReply(reason)));
            }
            InFlight::Send { number } => {
                if let Some(send) = self.outbox.remove(number) {
                    send.answer(Err(ClientError::UnexpectedReply(reason)));
                }
            }
            InFlight::Sync { group } => self.abandon_sync(&group),
        }
    }

    /// One frame from the server.
    pub(crate) fn on_frame(&mut self, frame: ServerFrame) {
        match frame {
            ServerFrame::Welcome { user, .. } => {
                log::warn!("client: ignoring a second welcome (user {user}) on one connection");
            }
            ServerFrame::Sent {
                id,
                group,
                client_id,
                seq,
                ts,
                duplicate,
            } => self.on_sent(
                frame_id(id.as_ref()),
                Sent {
                    group,
                    client_id,
                    seq,
                    ts,
                    duplicate,
                },
            ),
            ServerFrame::Msg(message) => self.on_push(message),
            ServerFrame::Messages {
                id,
                group,
                messages,
                more,
                last_seq,
                first_seq,
            } => {
                let id = frame_id(id.as_ref());
                if let Some(sync_group) = id.and_then(|id| self.take_sync(id)) {
                    if sync_group != group {
                        log::warn!("client: sync of {sync_group} answered for {group}");
                    }
                    self.on_sync_page(&sync_group, messages, more, first_seq);
                } else {
                    self.answer(
                        id,
                        ServerFrame::Messages {
                            id: None,
                            group,
                            messages,
                            more,
                            last_seq,
                            first_seq,
                        },
                    );
                }
            }
            ServerFrame::Direct { ref id, .. }
            | ServerFrame::Receipts { ref id, .. }
            | ServerFrame::Readers { ref id, .. }
            | ServerFrame::Users { ref id, .. }
            | ServerFrame::Groups { ref id, .. }
            | ServerFrame::Settings { ref id, .. }
            | ServerFrame::GroupCreated { ref id, .. }
            | ServerFrame::Edited { ref id, .. }
            | ServerFrame::Deleted { ref id, .. }
            | ServerFrame::Members { ref id, .. }
            | ServerFrame::Reminded {
                id: ref id @ Some(_),
                ..
            }
            | ServerFrame::Pong { ref id } => self.answer(frame_id(id.as_ref()), frame),
            ServerFrame::Reminded {
                id: None,
                group,
                seq,
                count,
                users,
            } => self.emit(Event::Reminded {
                group,
                seq,
                count,
                users,
            }),
            ServerFrame::Reminder(reminder) => self.emit(Event::Reminder(reminder)),
            ServerFrame::MsgEdited {
                group,
                seq,
                body,
                edited_ts,
            } => self.emit(Event::MessageEdited {
                group,
                seq,
                body,
                edited_ts,
            }),
            ServerFrame::MsgDeleted { group, seq } => {
                self.emit(Event::MessageDeleted { group, seq })
            }
            ServerFrame::Typing { group, user } => self.emit(Event::Typing { group, user }),
            ServerFrame::Presence { user, online } => self.emit(Event::Presence { user, online }),
            ServerFrame::GroupUpdated {
                ref id,
                ref group,
                ref name,
                receipts,
                ..
            } => {
                let event = Event::GroupUpdated {
                    group: group.clone(),
                    name: name.clone(),
                    receipts,
                };
                if id.is_some() {
                    self.answer(frame_id(id.as_ref()), frame.clone());
                }
                self.emit(event);
            }
            ServerFrame::Receipt { group, items } => self.emit(Event::Receipt { group, items }),
            ServerFrame::ReadSync {
                group,
                seq,
                marked_unread,
            } => {
                self.emit(Event::ReadSync {
                    group: group.clone(),
                    seq,
                });
                if let Some(marked_unread) = marked_unread {
                    self.emit(Event::MarkedUnread {
                        group,
                        marked_unread,
                    });
                }
            }
            ServerFrame::Joined { summary } => self.on_joined(summary),
            ServerFrame::Left {
                ref id, ref group, ..
            } => {
                let group = group.clone();
                if id.is_some() {
                    self.answer(frame_id(id.as_ref()), frame.clone());
                }
                self.on_left(group);
            }
            ServerFrame::Error {
                id, code, message, ..
            } => self.on_error(frame_id(id.as_ref()), code, message),
            ServerFrame::Unknown => log::debug!("client: ignoring a frame of an unknown type"),
        }
    }

    fn on_error(&mut self, id: Option<u64>, code: ErrorCode, message: String) {
        let Some(id) = id else {
            log::warn!(
                "client: server error without id: {} ({message})",
                code.as_str()
            );
            return;
        };
        match self.in_flight.remove(&id) {
            Some(InFlight::Query { reply, .. }) => {
                let _ = reply.send(Ok(ServerFrame::error(None, code, message)));
            }
            Some(InFlight::Send { number }) => self.on_send_refused(number, code, message),
            Some(InFlight::Sync { group }) => {
                log::warn!(
                    "client: sync of group {group} refused: {} ({message})",
                    code.as_str()
                );
                self.abandon_sync(&group);
            }
            None => self.on_mark_refused(id, code, message),
        }
    }

    /// Hands a query's reply to its caller.
    fn answer(&mut self, id: Option<u64>, frame: ServerFrame) {
        match id.and_then(|id| self.in_flight.remove(&id)) {
            Some(InFlight::Query { reply, .. }) => {
                let _ = reply.send(Ok(frame));
            }
            Some(other) => {
                // A reply type that does not fit what was asked. A send keeps waiting for its
                // `sent` (or its resend after a reconnect); a sync gives up on its gap.
                log::warn!("client: reply of the wrong type for request {id:?}");
                match other {
                    InFlight::Send { number } => {
                        if let Some(id) = id {
                            self.in_flight.insert(id, InFlight::Send { number });
                        }
                    }
                    InFlight::Sync { group } => self.abandon_sync(&group),
                    InFlight::Query { .. } => {}
                }
            }
            None => log::debug!("client: reply for unknown request {id:?}"),
        }
    }
}
