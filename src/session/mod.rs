//! The session actor: one per WebSocket connection, relaying frames between the client and the
//! group actors.
//!
//! It owns the socket (and is the only module that imports actix-web-actors, so moving to
//! actix-ws later touches this module only), the heartbeat, `welcome`, and the translation from
//! client frames to group commands: one function per frame type in `commands/`, as mini-redis's
//! `cmd/` does. It holds no group state and no group addresses: every frame resolves its group
//! through the registry.
//!
//! Outbound flow control: group actors `try_send` [`Outbound`] frames into this actor's mailbox,
//! whose capacity is `--session-queue`. When it is full the group evicts the session with
//! [`Outbound::Evict`]; the session closes with code 4000 (`lagging`) and the client resyncs from
//! its cursor. (actix-web-actors' own write buffer has no bound, which is why the mailbox is the
//! place to measure "behind".) While the socket takes no bytes at all, this actor is not run (the
//! HTTP dispatcher stops polling its stream), so neither the eviction nor the heartbeat can close
//! it: the kernel does, after `client_timeout` without progress (`TCP_USER_TIMEOUT`, set in
//! `server.rs`), and the actor stops when the dispatcher drops the stream.

mod commands;
mod frame_limit;

use frame_limit::{FrameLimit, TransportFailed, TOO_LARGE_MARK};

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;

use crate::auth::Credential;
use crate::group::{DetachSession, GroupActor, GroupError};
use crate::ids::{GroupId, UserId};
use crate::presence::{Backlog, Outbound, SessionHandle, SessionPermit};
use crate::protocol::{ClientFrame, ErrorCode, Refusal, RequestId, ServerFrame};
use crate::registry::Registry;

/// Upgrades an authenticated request to a WebSocket session for `user`, admitted by `permit`.
pub(crate) fn upgrade(
    req: &HttpRequest,
    stream: web::Payload,
    credential: Credential,
    permit: SessionPermit,
    registry: Arc<Registry>,
) -> Result<HttpResponse, actix_web::Error> {
    let config = Arc::clone(registry.config());
    let transport_failed = TransportFailed::default();
    let session = Session {
        id: registry.presence().next_session_id(),
        user: credential.user.clone(),
        credential,
        registry,
        last_heard: Instant::now(),
        attached: Vec::new(),
        sends_in_flight: 0,
        permit,
        transport_failed: transport_failed.clone(),
        cursor_batch: commands::CursorBatch::default(),
        backlog: Backlog::new(config.session_queue),
    };
    // FrameLimit skips oversized frames before actix buffers them; actix's own limit stays as a
    // second line.
    ws::WsResponseBuilder::new(
        session,
        req,
        FrameLimit::new(stream, config.max_frame_bytes, transport_failed),
    )
    .frame_size(config.max_frame_bytes)
    .start()
}

/// One WebSocket connection.
pub(crate) struct Session {
    id: u64,
    user: UserId,
    /// The token it was admitted with (checked again once registered, see `welcome`).
    credential: Credential,
    registry: Arc<Registry>,
    last_heard: Instant,
    /// The groups this session attached to (for detaching on close).
    attached: Vec<GroupId>,
    /// `send`s forwarded to groups and not yet answered.
    sends_in_flight: usize,
    /// This session's place under `--max-sessions-per-user` (freed when the actor is dropped),
    /// and the user's write budget.
    permit: SessionPermit,
    /// Set by [`FrameLimit`] when reading the socket failed.
    transport_failed: TransportFailed,
    /// `ack`s and `read`s read and not yet sent to their groups (see `commands/cursor.rs`).
    cursor_batch: commands::CursorBatch,
    /// The frames queued for this session (bounded by `--session-queue`).
    backlog: Backlog,
}

type Ctx = ws::WebsocketContext<Session>;

impl Session {
    fn session_handle(&self, ctx: &mut Ctx) -> SessionHandle {
        SessionHandle {
            id: self.id,
            user: self.user.clone(),
            outbox: ctx.address().recipient(),
            backlog: self.backlog.clone(),
        }
    }

    fn send_frame(&self, frame: &ServerFrame, ctx: &mut Ctx) {
        self.registry.metrics().frame_out(frame.kind());
        ctx.text(frame.to_text());
    }

    /// Runs `answer` and writes the frame it yields, while the session keeps serving.
    fn reply_later<F>(&self, ctx: &mut Ctx, answer: F)
    where
        F: Future<Output = ServerFrame> + 'static,
    {
        ctx.spawn(
            answer
                .into_actor(self)
                .map(|frame, act, ctx| act.send_frame(&frame, ctx)),
        );
    }

    /// The actor of the group a frame names.
    fn group(&self, group: &str) -> Result<Addr<GroupActor>, Refusal> {
        let id =
            GroupId::parse(group).map_err(|e| Refusal::new(ErrorCode::BadFrame, e.to_string()))?;
        match self.registry.group(&id) {
            Ok(Some(addr)) => Ok(addr),
            Ok(None) => Err(Refusal::new(
                ErrorCode::NoSuchGroup,
                format!("no group {id}"),
            )),
            Err(e) => {
                log::error!("loading group {id} for {} failed: {e}", self.user);
                Err(Refusal::new(
                    ErrorCode::Storage,
                    "the group could not be read; retry later",
                ))
            }
        }
    }

    /// Connects: registers the session, attaches it to the user's groups, sends `welcome`.
    /// Runs under `ctx.wait`, so nothing else (pushes included) is written before `welcome`.
    fn welcome(&mut self, ctx: &mut Ctx) {
        let handle = self.session_handle(ctx);
        if !self.registry.presence().register(handle.clone()) {
            going_away(ctx);
            return;
        }
        // A revoke that raced with this connect raised the generation before telling the
        // sessions it found: read it again now that this one is findable.
        match self.registry.store().account(&self.user) {
            Ok(account)
                if self
                    .credential
                    .is_current(&account.clone().unwrap_or_default()) =>
            {
                self.registry.session_opened(&self.user);
            }
            Ok(_) => {
                unauthorized(ctx, "tokens revoked");
                return;
            }
            Err(e) => {
                log::error!("reading the account of {} failed: {e}", self.user);
                going_away(ctx);
                return;
            }
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
            commands::summaries(registry, handle, ids).await
        };
        ctx.wait(attach.into_actor(self).map(|mut groups, act, ctx| {
            act.attached = groups.iter().map(|a| a.summary.group.clone()).collect();
            let unread_total = groups.iter().map(|a| a.summary.unread).sum();
            let reminders = groups
                .iter()
                .flat_map(|a| a.reminders.iter().cloned().map(Into::into))
                .collect();
            // The most recently active first; `groups` pages through all of them by id.
            groups.sort_by(|a, b| {
                (b.summary.last_ts, &a.summary.group).cmp(&(a.summary.last_ts, &b.summary.group))
            });
            let limit = act.registry.config().welcome_groups;
            let more_groups = groups.len() > limit;
            groups.truncate(limit);
            let frame = ServerFrame::Welcome {
                user: act.user.to_string(),
                groups: groups.into_iter().map(|a| a.summary.into()).collect(),
                reminders,
                more_groups,
                unread_total,
            };
            act.send_frame(&frame, ctx);
        }));
    }

    fn on_text(&mut self, text: &str, ctx: &mut Ctx) {
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
        if let Err(refusal) = commands::dispatch(self, frame, ctx) {
            log::debug!(
                "session {} of {}: {}: {}",
                self.id,
                self.user,
                refusal.code.as_str(),
                refusal.message
            );
            self.send_frame(&refused(id, refusal), ctx);
        }
    }
}

impl Actor for Session {
    type Context = Ctx;

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

    fn stopped(&mut self, ctx: &mut Self::Context) {
        // Moves read before the close still count.
        commands::flush_cursors_closing(self, ctx);
        self.registry.metrics().sessions.dec();
        self.registry.presence().unregister(&self.user, self.id);
        self.registry.session_closed(&self.user);
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
                self.backlog.written(1);
                self.registry.metrics().frame_out(kind);
                ctx.text(text);
            }
            Outbound::Frames { kind, texts } => {
                self.backlog.written(texts.len());
                self.registry.metrics().frames_out(kind, texts.len());
                for text in texts.iter() {
                    ctx.text(text.clone());
                }
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
            Outbound::Restart => {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Restart,
                    description: Some("this node stopped serving; reconnect".into()),
                }));
                ctx.stop();
            }
            Outbound::Unauthorized(why) => {
                log::info!("session {} of {}: closing ({why})", self.id, self.user);
                unauthorized(ctx, why);
            }
        }
    }
}

/// Closes a session whose token is no longer good: 4001 (`unauthorized`), saying why.
fn unauthorized(ctx: &mut Ctx, why: &str) {
    ctx.close(Some(ws::CloseReason {
        code: ws::CloseCode::Other(4001),
        description: Some(why.to_owned()),
    }));
    ctx.stop();
}

/// Closes a session because the server is shutting down.
fn going_away(ctx: &mut Ctx) {
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
            // actix-web-actors reports two things as an I/O error: a failed read of the socket
            // (FrameLimit saw it) and a text frame that is not UTF-8, after consuming that
            // frame, with the stream itself intact.
            Err(ws::ProtocolError::Io(_)) if !self.transport_failed.get() => {
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

/// The `error` frame for a refused request.
fn refused(id: Option<RequestId>, refusal: Refusal) -> ServerFrame {
    ServerFrame::refused(id, refusal)
}

/// The `error` frame for a request a group refused.
fn group_error(id: Option<RequestId>, e: GroupError) -> ServerFrame {
    if let GroupError::Storage(detail) = &e {
        // The group or the disk guard logged the cause already.
        log::debug!("group request failed: {detail}");
    }
    refused(id, e.into())
}

/// The `error` frame for a request whose group actor went away.
fn unavailable(id: Option<RequestId>) -> ServerFrame {
    ServerFrame::error(
        id,
        ErrorCode::Internal,
        "the group is unavailable; retry later",
    )
}
