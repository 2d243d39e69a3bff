//! The session actor: one per WebSocket connection, relaying frames between the client and the
//! group actors.
//!
//! It owns the socket (and is the only module that imports actix-web-actors, so moving to
//! actix-ws later touches this file only), the heartbeat, and the translation from client frames
//! to group commands. It holds no group state and no group addresses: every frame resolves its
//! group through the registry.
//!
//! Outbound flow control: group actors `try_send` [`Outbound`] frames into this actor's mailbox,
//! whose capacity is `--session-queue`. When it is full the group evicts the session with
//! [`Outbound::Evict`]; the session closes with code 4000 (`lagging`) and the client resyncs from
//! its cursor. (actix-web-actors' own write buffer has no bound, which is why the mailbox is the
//! place to measure "behind".)
//!
//! Sends are forwarded with `do_send` so they reach the group in the order the client sent them;
//! their replies come back on a oneshot after the flush.

mod frame_limit;
mod limits;

use frame_limit::{FrameLimit, TOO_LARGE_MARK};

pub use limits::{SessionCounts, SessionPermit, TokenBucket};

use std::time::Duration;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;

use crate::group::{
    reply_channel, AdvanceCursor, AttachSession, Cursor, DetachSession, FetchMessages, GroupActor,
    GroupError, ListReaders, ListReceipts, Page, PostMessage, ReceiptQuery,
};
use crate::ids::{GroupId, UserId};
use crate::protocol::{
    check_send, page_limit, ClientFrame, ErrorCode, GroupSummary, ServerFrame, UserEntry, MAX_PAGE,
};
use crate::registry::Registry;

/// A frame for a session, from a group actor.
#[derive(Message)]
#[rtype(result = "()")]
pub enum Outbound {
    /// An already serialized frame (shared by every recipient of a push).
    Frame { kind: &'static str, text: Arc<str> },
    /// The session fell behind: close it so the client resyncs.
    Evict,
    /// The server is shutting down: close with 1001 (`going away`).
    GoingAway,
}

/// How a group reaches one online session.
#[derive(Clone)]
pub struct SessionHandle {
    pub id: u64,
    pub user: UserId,
    pub outbox: Recipient<Outbound>,
}

/// Upgrades an authenticated request to a WebSocket session for `user`, admitted by `permit`.
pub fn upgrade(
    req: &HttpRequest,
    stream: web::Payload,
    user: UserId,
    permit: SessionPermit,
    registry: Arc<Registry>,
) -> Result<HttpResponse, actix_web::Error> {
    let config = Arc::clone(registry.config());
    let session = Session {
        id: registry.next_session_id(),
        user,
        registry,
        last_heard: Instant::now(),
        attached: Vec::new(),
        sends_in_flight: 0,
        permit,
    };
    // FrameLimit skips oversized frames before actix buffers them; actix's own limit stays as a
    // second line.
    ws::WsResponseBuilder::new(
        session,
        req,
        FrameLimit::new(stream, config.max_frame_bytes),
    )
    .frame_size(config.max_frame_bytes)
    .start()
}

/// One WebSocket connection.
pub struct Session {
    id: u64,
    user: UserId,
    registry: Arc<Registry>,
    last_heard: Instant,
    /// The groups this session attached to (for detaching on close).
    attached: Vec<GroupId>,
    /// `send`s forwarded to groups and not yet answered.
    sends_in_flight: usize,
    /// This session's place under `--max-sessions-per-user` (freed when the actor is dropped),
    /// and the user's write budget.
    permit: SessionPermit,
}

/// Why a frame addressed to a group was refused before reaching it.
type Refusal = (ErrorCode, String);

impl Session {
    fn session_handle(&self, ctx: &mut ws::WebsocketContext<Self>) -> SessionHandle {
        SessionHandle {
            id: self.id,
            user: self.user.clone(),
            outbox: ctx.address().recipient(),
        }
    }

    /// Answers a write over the user's budget with `rate_limited`.
    fn rate_limited(
        &self,
        id: Option<serde_json::Value>,
        wait: Duration,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let config = self.registry.config();
        // Rounded up, so a client that waits exactly this long finds a token.
        let millis = wait.as_micros().div_ceil(1000);
        let frame = ServerFrame::Error {
            id,
            code: ErrorCode::RateLimited,
            message: format!(
                "more than {} writes per second (burst {}); retry later",
                config.send_rate, config.send_burst
            ),
            retry_after_ms: Some(millis.try_into().unwrap_or(u64::MAX)),
        };
        self.send_frame(&frame, ctx);
    }

    fn send_frame(&self, frame: &ServerFrame, ctx: &mut ws::WebsocketContext<Self>) {
        self.registry.metrics().frame_out(frame.kind());
        ctx.text(frame.to_text());
    }

    /// Runs `answer` and writes the frame it yields, while the session keeps serving.
    fn reply_later<F>(&self, ctx: &mut ws::WebsocketContext<Self>, answer: F)
    where
        F: Future<Output = ServerFrame> + 'static,
    {
        ctx.spawn(
            answer
                .into_actor(self)
                .map(|frame, act, ctx| act.send_frame(&frame, ctx)),
        );
    }

    fn group(&self, group: &str) -> Result<Addr<GroupActor>, Refusal> {
        let id = GroupId::parse(group).map_err(|e| (ErrorCode::BadFrame, e.to_string()))?;
        match self.registry.group(&id) {
            Ok(Some(addr)) => Ok(addr),
            Ok(None) => Err((ErrorCode::NoSuchGroup, format!("no group {id}"))),
            Err(e) => {
                log::error!("loading group {id} for {} failed: {e}", self.user);
                Err((ErrorCode::Internal, "storage failure; retry later".into()))
            }
        }
    }

    /// Connects: registers the session, attaches it to the user's groups, sends `welcome`.
    /// Runs under `ctx.wait`, so nothing else (pushes included) is written before `welcome`.
    fn welcome(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let handle = self.session_handle(ctx);
        if !self.registry.register_session(handle.clone()) {
            going_away(ctx);
            return;
        }
        let registry = Arc::clone(&self.registry);
        let user = self.user.clone();
        let attach = async move {
            let ids = match registry.store().user_groups(&user) {
                Ok(ids) => ids,
                Err(e) => {
                    log::error!("listing the groups of {user} failed: {e}");
                    Vec::new()
                }
            };
            let mut groups: Vec<(GroupId, GroupSummary)> = Vec::new();
            for id in ids {
                let addr = match registry.group(&id) {
                    Ok(Some(addr)) => addr,
                    Ok(None) => continue,
                    Err(e) => {
                        log::error!("loading group {id} for {user} failed: {e}");
                        continue;
                    }
                };
                if let Ok(Some(summary)) = addr
                    .send(AttachSession {
                        session: handle.clone(),
                    })
                    .await
                {
                    groups.push((id, summary));
                }
            }
            groups
        };
        ctx.wait(attach.into_actor(self).map(|groups, act, ctx| {
            act.attached = groups.iter().map(|(id, _)| id.clone()).collect();
            let frame = ServerFrame::Welcome {
                user: act.user.to_string(),
                groups: groups.into_iter().map(|(_, s)| s).collect(),
            };
            act.send_frame(&frame, ctx);
        }));
    }

    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        let frame = match ClientFrame::parse(text) {
            Ok(frame) => frame,
            Err(e) => {
                self.registry.metrics().frame_in("invalid");
                log::debug!(
                    "session {} of {}: refused frame: {}",
                    self.id,
                    self.user,
                    e.message
                );
                self.send_frame(&ServerFrame::error(e.id, e.code, e.message), ctx);
                return;
            }
        };
        self.registry.metrics().frame_in(frame.kind());
        let id = frame.id().cloned();
        if let Err((code, message)) = self.dispatch(frame, ctx) {
            log::debug!(
                "session {} of {}: {}: {message}",
                self.id,
                self.user,
                code.as_str()
            );
            self.send_frame(&ServerFrame::error(id, code, message), ctx);
        }
    }

    fn dispatch(
        &mut self,
        frame: ClientFrame,
        ctx: &mut ws::WebsocketContext<Self>,
    ) -> Result<(), Refusal> {
        let user = self.user.clone();
        match frame {
            ClientFrame::Ping { id } => self.send_frame(&ServerFrame::Pong { id }, ctx),
            ClientFrame::Send {
                id,
                group,
                client_id,
                body,
            } => {
                check_send(&client_id, &body, self.registry.config().max_body_bytes)?;
                if let Err(wait) = self.permit.take_write(Instant::now()) {
                    self.rate_limited(id, wait, ctx);
                    return Ok(());
                }
                // `do_send` ignores the group's mailbox bound, so bound what one session may
                // have queued there; the client retries after some `sent` replies.
                let limit = self.registry.config().session_queue;
                if self.sends_in_flight >= limit {
                    return Err((
                        ErrorCode::Busy,
                        format!("{limit} sends are waiting for `sent`; retry later"),
                    ));
                }
                let addr = self.group(&group)?;
                let (reply, answer) = reply_channel();
                addr.do_send(PostMessage {
                    from: user,
                    client_id: client_id.clone(),
                    body,
                    reply,
                });
                self.sends_in_flight += 1;
                let answered = async move {
                    match answer.wait().await {
                        Ok(posted) => ServerFrame::Sent {
                            id,
                            group,
                            client_id,
                            seq: posted.seq,
                            ts: posted.ts,
                            duplicate: posted.duplicate,
                        },
                        Err(e) => group_error(id, &e),
                    }
                };
                ctx.spawn(answered.into_actor(self).map(|frame, act, ctx| {
                    act.sends_in_flight = act.sends_in_flight.saturating_sub(1);
                    act.send_frame(&frame, ctx);
                }));
            }
            ClientFrame::Ack { id, group, seq } => {
                self.advance(ctx, id, &group, Cursor::Delivered, seq)?
            }
            ClientFrame::Read { id, group, seq } => {
                self.advance(ctx, id, &group, Cursor::Read, seq)?
            }
            ClientFrame::Sync {
                id,
                group,
                after,
                limit,
            } => {
                let page = Page::After {
                    after,
                    limit: page_limit(limit),
                };
                self.fetch(ctx, id, &group, page)?
            }
            ClientFrame::History {
                id,
                group,
                before,
                limit,
            } => {
                let page = Page::Before {
                    before,
                    limit: page_limit(limit),
                };
                self.fetch(ctx, id, &group, page)?
            }
            ClientFrame::Direct { id, with } => {
                let other =
                    UserId::parse(&with).map_err(|e| (ErrorCode::BadFrame, e.to_string()))?;
                if other == user {
                    return Err((
                        ErrorCode::BadFrame,
                        "a direct conversation needs another user".into(),
                    ));
                }
                // Opening a new conversation writes (a user, a group, two members): it counts
                // against the same budget as a send.
                if let Err(wait) = self.permit.take_write(Instant::now()) {
                    self.rate_limited(id, wait, ctx);
                    return Ok(());
                }
                let registry = Arc::clone(&self.registry);
                self.reply_later(ctx, async move {
                    if let Err(e) = registry.ensure_user(&other) {
                        log::error!("creating user {other} failed: {e}");
                        return internal(id);
                    }
                    match registry.open_direct(&user, &other).await {
                        Ok(group) => ServerFrame::Direct {
                            id,
                            group: group.to_string(),
                        },
                        Err(e) => group_error(id, &e),
                    }
                });
            }
            ClientFrame::Receipts {
                id,
                group,
                mine,
                seqs,
                after,
                limit,
            } => {
                let query = match (seqs, mine) {
                    (Some(seqs), _) if seqs.len() > MAX_PAGE => {
                        return Err((
                            ErrorCode::TooLarge,
                            format!("at most {MAX_PAGE} seqs per request"),
                        ))
                    }
                    (Some(seqs), _) => ReceiptQuery::Seqs(seqs),
                    (None, true) => ReceiptQuery::Mine {
                        after,
                        limit: page_limit(limit),
                    },
                    (None, false) => {
                        return Err((
                            ErrorCode::BadFrame,
                            "receipts needs \"mine\": true or \"seqs\"".into(),
                        ))
                    }
                };
                // Queued now, in frame order (inside the future it would wait for a poll).
                let request = self.group(&group)?.send(ListReceipts { user, query });
                self.reply_later(ctx, async move {
                    match request.await {
                        Ok(Ok(page)) => ServerFrame::Receipts {
                            id,
                            group,
                            items: page.items,
                            more: page.more,
                        },
                        Ok(Err(e)) => group_error(id, &e),
                        Err(_) => internal(id),
                    }
                });
            }
            ClientFrame::Users { id, after, limit } => {
                let after = after
                    .map(|a| UserId::parse(&a))
                    .transpose()
                    .map_err(|e| (ErrorCode::BadFrame, e.to_string()))?;
                let limit = page_limit(limit);
                // One more than asked tells whether another page exists.
                let mut page = match self.registry.store().users(after.as_ref(), limit + 1) {
                    Ok(page) => page,
                    Err(e) => {
                        log::error!("listing users for {user} failed: {e}");
                        return Err((ErrorCode::Internal, "storage failure; retry later".into()));
                    }
                };
                let more = page.len() > limit;
                page.truncate(limit);
                let users = page
                    .into_iter()
                    .map(|(id, record)| UserEntry {
                        id: id.to_string(),
                        name: record.name,
                    })
                    .collect();
                self.send_frame(&ServerFrame::Users { id, users, more }, ctx);
            }
            ClientFrame::Readers { id, group, seq } => {
                let request = self.group(&group)?.send(ListReaders {
                    user: Some(user),
                    seq,
                });
                self.reply_later(ctx, async move {
                    match request.await {
                        Ok(Ok(readers)) => ServerFrame::Readers { id, readers },
                        Ok(Err(e)) => group_error(id, &e),
                        Err(_) => internal(id),
                    }
                });
            }
        }
        Ok(())
    }

    fn advance(
        &self,
        ctx: &mut ws::WebsocketContext<Self>,
        id: Option<serde_json::Value>,
        group: &str,
        cursor: Cursor,
        seq: u64,
    ) -> Result<(), Refusal> {
        let addr = self.group(group)?;
        let command = AdvanceCursor {
            user: self.user.clone(),
            cursor,
            seq,
            session_id: Some(self.id),
        };
        // Success has no reply (acks and reads are the hot path); only errors are written. The
        // command is queued now, so a later frame's command cannot overtake it.
        let request = addr.send(command);
        ctx.spawn(
            request
                .into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => act.send_frame(&group_error(id, &e), ctx),
                    Err(_) => act.send_frame(&internal(id), ctx),
                }),
        );
        Ok(())
    }

    fn fetch(
        &self,
        ctx: &mut ws::WebsocketContext<Self>,
        id: Option<serde_json::Value>,
        group: &str,
        page: Page,
    ) -> Result<(), Refusal> {
        let request = self.group(group)?.send(FetchMessages {
            user: Some(self.user.clone()),
            page,
        });
        let group = group.to_owned();
        self.reply_later(ctx, async move {
            match request.await {
                Ok(Ok(page)) => ServerFrame::Messages {
                    id,
                    group,
                    messages: page.messages,
                    more: page.more,
                    last_seq: page.last_seq,
                },
                Ok(Err(e)) => group_error(id, &e),
                Err(_) => internal(id),
            }
        });
        Ok(())
    }
}

impl Actor for Session {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let config = Arc::clone(self.registry.config());
        ctx.set_mailbox_capacity(config.session_queue);
        self.registry.metrics().sessions.inc();
        log::info!("session {} of {} connected", self.id, self.user);
        ctx.run_interval(config.heartbeat_interval, move |act, ctx| {
            if act.last_heard.elapsed() > config.client_timeout {
                log::info!(
                    "session {} of {}: silent too long; closing",
                    act.id,
                    act.user
                );
                ctx.stop();
            } else {
                ctx.ping(b"");
            }
        });
        self.welcome(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.registry.metrics().sessions.dec();
        self.registry.unregister_session(&self.user, self.id);
        for id in self.attached.drain(..) {
            if let Some(addr) = self.registry.running_group(&id) {
                addr.do_send(DetachSession {
                    user: self.user.clone(),
                    session_id: self.id,
                });
            }
        }
        log::info!("session {} of {} closed", self.id, self.user);
    }
}

impl Handler<Outbound> for Session {
    type Result = ();

    fn handle(&mut self, msg: Outbound, ctx: &mut Self::Context) {
        match msg {
            Outbound::Frame { kind, text } => {
                self.registry.metrics().frame_out(kind);
                ctx.text(&*text);
            }
            Outbound::Evict => {
                log::warn!(
                    "session {} of {} evicted: outbound queue full",
                    self.id,
                    self.user
                );
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Other(4000),
                    description: Some("lagging".into()),
                }));
                ctx.stop();
            }
            Outbound::GoingAway => going_away(ctx),
        }
    }
}

/// Closes a session because the server is shutting down.
fn going_away(ctx: &mut ws::WebsocketContext<Session>) {
    ctx.close(Some(ws::CloseReason {
        code: ws::CloseCode::Away,
        description: Some("server shutting down".into()),
    }));
    ctx.stop();
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Session {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match item {
            Ok(ws::Message::Text(text)) => self.on_text(&text, ctx),
            Ok(ws::Message::Ping(payload)) => ctx.pong(&payload),
            Ok(ws::Message::Pong(payload)) if payload.as_ref() == TOO_LARGE_MARK => {
                let limit = self.registry.config().max_frame_bytes;
                log::debug!(
                    "session {} of {}: frame over {limit} bytes",
                    self.id,
                    self.user
                );
                self.registry.metrics().frame_in("invalid");
                let frame = ServerFrame::error(
                    None,
                    ErrorCode::TooLarge,
                    format!("frame over {limit} bytes; dropped"),
                );
                self.send_frame(&frame, ctx);
            }
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Binary(_)) | Ok(ws::Message::Continuation(_)) => {
                let frame = ServerFrame::error(
                    None,
                    ErrorCode::BadFrame,
                    "only single (unfragmented) text frames are accepted",
                );
                self.send_frame(&frame, ctx);
            }
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            // FrameLimit keeps oversized frames away from the decoder; should one get there
            // anyway, the decoder cannot skip it reliably: close (1009).
            Err(ws::ProtocolError::Overflow) => {
                log::info!(
                    "session {} of {}: frame overflow; closing",
                    self.id,
                    self.user
                );
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Size,
                    description: Some("frame too large".into()),
                }));
                ctx.stop();
            }
            // A text frame that is not UTF-8: actix-web-actors reports it as an I/O error after
            // consuming the frame; the stream itself is intact.
            Err(ws::ProtocolError::Io(e)) if e.to_string().contains("utf-8") => {
                self.registry.metrics().frame_in("invalid");
                let frame =
                    ServerFrame::error(None, ErrorCode::BadFrame, "text frame is not valid UTF-8");
                self.send_frame(&frame, ctx);
            }
            Err(e) => {
                log::info!("session {} of {}: protocol error: {e}", self.id, self.user);
                ctx.stop();
            }
        }
    }
}

fn group_error(id: Option<serde_json::Value>, e: &GroupError) -> ServerFrame {
    if let GroupError::Storage(detail) = e {
        // The group or the disk guard logged the cause already.
        log::debug!("group request failed: {detail}");
    }
    ServerFrame::error(id, e.code(), e.message())
}

fn internal(id: Option<serde_json::Value>) -> ServerFrame {
    ServerFrame::error(
        id,
        ErrorCode::Internal,
        "the group is unavailable; retry later",
    )
}
