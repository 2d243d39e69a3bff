//! The background task that owns the WebSocket: connecting, the read/write loop, and reconnects.
//!
//! This is the only part of the client that touches the network or the clock. Every decision
//! (what to send, what to hand to the application) is delegated to the engine (`engine.rs`);
//! this module only moves frames between the socket and the engine, and turns the ack timer,
//! the idle timeout and socket failures into engine calls.
//!
//! One task does both reading and writing, with `tokio::select!` over the socket, the command
//! channel and a timer. The rejected option was to split the socket into a reader task and a
//! writer task: that doubles the places a dropped connection must be noticed and coordinated,
//! and the only gain, writing while a read is pending, is already had here because the select
//! returns as soon as either side is ready. While disconnected the task keeps taking commands
//! (sends and queries queue up in the engine), so callers never block on a reconnect.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::engine::{Command, Engine};
use super::{ClientConfig, ClientError};
use crate::protocol::{ClientFrame, GroupSummary, Reminder, ServerFrame};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An open connection whose `welcome` has arrived.
pub(crate) struct Connection {
    socket: Socket,
    pub(crate) user: String,
    pub(crate) groups: Vec<GroupSummary>,
    pub(crate) reminders: Vec<Reminder>,
    /// Frames that arrived while the rest of the groups were paged in after `welcome`.
    early: Vec<ServerFrame>,
}

/// The largest `groups` page the client asks for after a `welcome` with `more_groups`.
const GROUPS_PAGE: usize = 500;

/// Why the read/write loop of one connection ended.
enum Ending {
    /// The socket failed, closed, went silent, or a test asked to drop it.
    Dropped,
    /// The server closed with 4001: the token is no longer good; reconnecting is pointless.
    Unauthorized(String),
    /// The client was closed, or every handle is gone.
    Shutdown,
}

/// Opens one connection and waits for `welcome`, within `config.connect_timeout`.
pub(crate) async fn connect(config: &ClientConfig) -> Result<Connection, ClientError> {
    match tokio::time::timeout(config.connect_timeout, connect_inner(config)).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Connect(format!(
            "no welcome within {} ms",
            config.connect_timeout.as_millis()
        ))),
    }
}

async fn connect_inner(config: &ClientConfig) -> Result<Connection, ClientError> {
    let mut request = config
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| ClientError::Connect(format!("bad URL {}: {e}", config.url)))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", config.token))
        .map_err(|_| ClientError::Connect("the token is not a valid header value".into()))?;
    request.headers_mut().insert(AUTHORIZATION, bearer);
    // TCP_NODELAY, as the server and browsers do: without it a small frame (a `sync` page
    // request after an `ack`) waits for the peer's delayed ACK, ~20 ms per round trip.
    let (mut socket, _response) = tokio_tungstenite::connect_async_with_config(request, None, true)
        .await
        .map_err(|e| match e {
            tungstenite::Error::Http(response) => ClientError::Rejected {
                status: response.status().as_u16(),
            },
            other => ClientError::Connect(other.to_string()),
        })?;
    loop {
        let text = match socket.next().await {
            Some(Ok(WsMessage::Text(text))) => text,
            Some(Ok(WsMessage::Close(close))) => {
                return Err(ClientError::Connect(format!(
                    "closed before welcome: {close:?}"
                )))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ClientError::Connect(e.to_string())),
            None => return Err(ClientError::Connect("closed before welcome".into())),
        };
        match ServerFrame::parse(&text) {
            Ok(ServerFrame::Welcome {
                user,
                mut groups,
                reminders,
                more_groups,
                ..
            }) => {
                let mut early = Vec::new();
                if more_groups {
                    // `welcome` listed only the most recently active groups: page in the rest,
                    // so every group is caught up as after any connect.
                    groups = all_groups(&mut socket, groups, &mut early).await?;
                }
                return Ok(Connection {
                    socket,
                    user,
                    groups,
                    reminders,
                    early,
                });
            }
            Ok(ServerFrame::Error { code, message, .. }) => {
                return Err(ClientError::Server { code, message })
            }
            Ok(_) => {
                return Err(ClientError::Connect(
                    "the first frame was not welcome".into(),
                ))
            }
            Err(e) => log::debug!("client: ignoring a frame before welcome: {e}"),
        }
    }
}

/// Pages through `groups` until `more` is false; returns the union with `listed` (the
/// `welcome` entries, which a page repeats). Other frames that arrive meanwhile go to `early`.
async fn all_groups(
    socket: &mut Socket,
    listed: Vec<GroupSummary>,
    early: &mut Vec<ServerFrame>,
) -> Result<Vec<GroupSummary>, ClientError> {
    let mut all: std::collections::BTreeMap<String, GroupSummary> =
        listed.into_iter().map(|g| (g.group.clone(), g)).collect();
    let mut after: Option<String> = None;
    loop {
        let ask = ClientFrame::Groups {
            id: None,
            after: after.clone(),
            limit: Some(GROUPS_PAGE),
        };
        socket
            .send(WsMessage::text(ask.to_text()))
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let (page, more) = loop {
            let text = match socket.next().await {
                Some(Ok(WsMessage::Text(text))) => text,
                Some(Ok(WsMessage::Close(close))) => {
                    return Err(ClientError::Connect(format!(
                        "closed while paging groups: {close:?}"
                    )))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(ClientError::Connect(e.to_string())),
                None => return Err(ClientError::Connect("closed while paging groups".into())),
            };
            match ServerFrame::parse(&text) {
                Ok(ServerFrame::Groups { groups, more, .. }) => break (groups, more),
                Ok(ServerFrame::Error { code, message, .. }) => {
                    return Err(ClientError::Server { code, message })
                }
                Ok(frame) => early.push(frame),
                Err(e) => log::debug!("client: ignoring a frame while paging groups: {e}"),
            }
        };
        let Some(last) = page.last().map(|g| g.group.clone()) else {
            return Ok(all.into_values().collect());
        };
        after = Some(last);
        // A page's summary is as new as the welcome's or newer.
        all.extend(page.into_iter().map(|g| (g.group.clone(), g)));
        if !more {
            return Ok(all.into_values().collect());
        }
    }
}

/// The close code of a session whose token is no longer good (docs/PROTOCOL.md §3.4).
const UNAUTHORIZED_CLOSE: u16 = 4001;

/// The worker task: serves connections until the client is closed, reconnecting after drops.
pub(crate) async fn run(
    config: ClientConfig,
    mut engine: Engine,
    mut commands: mpsc::UnboundedReceiver<Command>,
    first: Connection,
) {
    let mut next = Some(first);
    loop {
        let connection = match next.take() {
            Some(connection) => connection,
            None => match reconnect(&config, &mut engine, &mut commands).await {
                Some(connection) => connection,
                None => break,
            },
        };
        let Connection {
            mut socket,
            user,
            groups,
            reminders,
            early,
        } = connection;
        engine.on_connected(user, groups, reminders);
        for frame in early {
            engine.on_frame(frame);
        }
        match serve(&config, &mut socket, &mut engine, &mut commands).await {
            Ending::Dropped => {
                // Dropping the socket without a close handshake is what a failed network does;
                // the server notices the closed TCP connection.
                drop(socket);
                engine.on_disconnected();
            }
            Ending::Shutdown => {
                if let Err(e) = socket.close(None).await {
                    log::debug!("client: closing the socket failed: {e}");
                }
                break;
            }
            Ending::Unauthorized(reason) => {
                log::error!("client: the server refused the token ({reason}); stopping");
                engine.on_unauthorized(reason);
                break;
            }
        }
    }
    engine.shutdown();
    log::info!("client: stopped");
}

/// Reads and writes one connection until it ends.
async fn serve(
    config: &ClientConfig,
    socket: &mut Socket,
    engine: &mut Engine,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Ending {
    let mut ticker = tokio::time::interval(config.ack_interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    // Whether a `ping` probe went out since the server was last heard from.
    let mut probed = false;
    loop {
        // Write what the last step queued (on the first pass: what on_connected queued).
        if let Err(e) = write_all(socket, engine).await {
            log::warn!("client: write failed, reconnecting: {e}");
            return Ending::Dropped;
        }
        tokio::select! {
            incoming = socket.next() => {
                last_heard = Instant::now();
                probed = false;
                match incoming {
                    Some(Ok(WsMessage::Text(text))) => match ServerFrame::parse(&text) {
                        Ok(frame) => engine.on_frame(frame),
                        Err(e) => engine.on_unparsed(raw_id(&text), e.to_string()),
                    },
                    Some(Ok(WsMessage::Close(Some(close))))
                        if u16::from(close.code) == UNAUTHORIZED_CLOSE =>
                    {
                        return Ending::Unauthorized(close.reason.to_string());
                    }
                    Some(Ok(WsMessage::Close(close))) => {
                        log::warn!("client: server closed the connection: {close:?}");
                        return Ending::Dropped;
                    }
                    // Pings are answered by tungstenite itself; binary frames are not ours.
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        log::warn!("client: connection failed: {e}");
                        return Ending::Dropped;
                    }
                    None => {
                        log::warn!("client: connection ended");
                        return Ending::Dropped;
                    }
                }
            }
            command = commands.recv() => match command {
                None | Some(Command::Close) => return Ending::Shutdown,
                Some(Command::DropConnection) => {
                    log::info!("client: dropping the connection on request");
                    return Ending::Dropped;
                }
                Some(command) => engine.on_command(command),
            },
            _ = ticker.tick() => {
                if last_heard.elapsed() > config.idle_timeout {
                    log::warn!(
                        "client: nothing heard for {} ms, reconnecting",
                        config.idle_timeout.as_millis()
                    );
                    return Ending::Dropped;
                }
                if !probed && last_heard.elapsed() > config.idle_timeout / 3 {
                    // A quiet server is asked for a `pong`, so that silence means a dead link
                    // whatever the server's own heartbeat period is.
                    probed = true;
                    let probe = ClientFrame::Ping { id: None }.to_text();
                    if let Err(e) = socket.send(WsMessage::text(probe)).await {
                        log::warn!("client: write failed, reconnecting: {e}");
                        return Ending::Dropped;
                    }
                }
                engine.on_tick();
            }
        }
    }
}

/// Waits `reconnect_delay`, then tries to connect, again and again, while still taking commands.
/// Returns `None` when the client is closed meanwhile.
async fn reconnect(
    config: &ClientConfig,
    engine: &mut Engine,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Option<Connection> {
    loop {
        let delay = tokio::time::sleep(config.reconnect_delay);
        tokio::pin!(delay);
        loop {
            tokio::select! {
                _ = &mut delay => break,
                command = commands.recv() => offline_command(engine, command)?,
            }
        }
        let attempt = connect(config);
        tokio::pin!(attempt);
        let result = loop {
            tokio::select! {
                result = &mut attempt => break result,
                command = commands.recv() => offline_command(engine, command)?,
            }
        };
        match result {
            Ok(connection) => return Some(connection),
            Err(ClientError::Rejected { status: 401 }) => {
                log::error!("client: the server refuses the token now (401); stopping");
                engine.on_unauthorized("the token was refused (401)".into());
                return None;
            }
            Err(e) => log::warn!("client: reconnect to {} failed: {e}", config.url),
        }
    }
}

/// Handles a command while disconnected; `None` means the client is closing.
fn offline_command(engine: &mut Engine, command: Option<Command>) -> Option<()> {
    match command {
        None | Some(Command::Close) => None,
        Some(Command::DropConnection) => Some(()),
        Some(command) => {
            engine.on_command(command);
            Some(())
        }
    }
}

/// Writes every frame the engine queued, then flushes once.
async fn write_all(socket: &mut Socket, engine: &mut Engine) -> Result<(), tungstenite::Error> {
    let frames = engine.take_outgoing();
    if frames.is_empty() {
        return Ok(());
    }
    for frame in frames {
        socket.feed(WsMessage::text(frame.to_text())).await?;
    }
    socket.flush().await
}

/// The integer `id` of a frame that did not parse as a [`ServerFrame`], if it has one.
fn raw_id(text: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()?
        .get("id")?
        .as_u64()
}
