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
//!
//! With several URLs (`ClientConfig::fallback_urls`), which URL each attempt goes to, and how
//! long it waits first, is `failover.rs`'s [`Rotation`]; this module only reports to it how each
//! attempt and connection ended.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{AUTHORIZATION, RETRY_AFTER};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::engine::{Command, Engine};
use super::failover::{loggable, parse_retry_after, Rotation};
use super::{ClientConfig, ClientError};
use crate::protocol::{ClientFrame, GroupSummary, Reminder, ServerFrame};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An open connection whose `welcome` has arrived.
pub(crate) struct Connection {
    socket: Socket,
    /// The URL it was opened to, and that URL's place in `ClientConfig::urls`.
    pub(crate) url: String,
    url_index: usize,
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

/// Why one connection attempt failed.
struct Failed {
    error: ClientError,
    /// The `Retry-After` of a refused upgrade (a standby's `503`), capped.
    retry_after: Option<Duration>,
}

impl From<ClientError> for Failed {
    fn from(error: ClientError) -> Failed {
        Failed {
            error,
            retry_after: None,
        }
    }
}

/// The first connection: each of `config.urls()` once, in order, until one sends `welcome`.
/// A `401` ends it at once (every node checks the same token); otherwise the last URL's
/// failure is the answer.
pub(crate) async fn connect_first(config: &ClientConfig) -> Result<Connection, ClientError> {
    let mut last_error = None;
    for (index, url) in config.urls().enumerate() {
        match connect(config, index, url).await {
            Ok(connection) => return Ok(connection),
            Err(Failed {
                error: ClientError::Rejected { status: 401 },
                ..
            }) => return Err(ClientError::Rejected { status: 401 }),
            Err(failed) => {
                log::warn!(
                    "client: connecting to {} failed: {}",
                    loggable(url),
                    failed.error
                );
                last_error = Some(failed.error);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| ClientError::Connect("no URL".into())))
}

/// Opens one connection to `url` (number `index` of `config.urls()`) and waits for `welcome`,
/// within `config.connect_timeout`.
async fn connect(config: &ClientConfig, index: usize, url: &str) -> Result<Connection, Failed> {
    match tokio::time::timeout(config.connect_timeout, connect_inner(config, index, url)).await {
        Ok(result) => result,
        Err(_) => Err(Failed::from(ClientError::Connect(format!(
            "no welcome within {} ms",
            config.connect_timeout.as_millis()
        )))),
    }
}

async fn connect_inner(
    config: &ClientConfig,
    index: usize,
    url: &str,
) -> Result<Connection, Failed> {
    let mut request = url
        .into_client_request()
        .map_err(|e| ClientError::Connect(format!("bad URL {}: {e}", loggable(url))))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", config.token))
        .map_err(|_| ClientError::Connect("the token is not a valid header value".into()))?;
    request.headers_mut().insert(AUTHORIZATION, bearer);
    // TCP_NODELAY, as the server and browsers do: without it a small frame (a `sync` page
    // request after an `ack`) waits for the peer's delayed ACK, ~20 ms per round trip.
    let (mut socket, _response) = tokio_tungstenite::connect_async_with_config(request, None, true)
        .await
        .map_err(|e| match e {
            tungstenite::Error::Http(response) => Failed {
                error: ClientError::Rejected {
                    status: response.status().as_u16(),
                },
                retry_after: response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(parse_retry_after),
            },
            other => Failed::from(ClientError::Connect(other.to_string())),
        })?;
    loop {
        let text = match socket.next().await {
            Some(Ok(WsMessage::Text(text))) => text,
            Some(Ok(WsMessage::Close(close))) => {
                return Err(Failed::from(ClientError::Connect(format!(
                    "closed before welcome: {close:?}"
                ))))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(Failed::from(ClientError::Connect(e.to_string()))),
            None => {
                return Err(Failed::from(ClientError::Connect(
                    "closed before welcome".into(),
                )))
            }
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
                    url: url.to_owned(),
                    url_index: index,
                    user,
                    groups,
                    reminders,
                    early,
                });
            }
            Ok(ServerFrame::Error { code, message, .. }) => {
                return Err(Failed::from(ClientError::Server { code, message }))
            }
            Ok(_) => {
                return Err(Failed::from(ClientError::Connect(
                    "the first frame was not welcome".into(),
                )))
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

/// The close code of a node that stops taking sessions (a fenced active node stepping down to
/// standby, docs/PROTOCOL.md §3.4): another URL is to be tried.
const SERVICE_RESTART_CLOSE: u16 = 1012;

/// The worker task: serves connections until the client is closed, reconnecting after drops.
pub(crate) async fn run(
    config: ClientConfig,
    mut engine: Engine,
    mut commands: mpsc::UnboundedReceiver<Command>,
    first: Connection,
) {
    let urls: Vec<String> = config.urls().map(str::to_owned).collect();
    let mut rotation = Rotation::starting_at(urls.len(), first.url_index);
    let mut next = Some(first);
    loop {
        let connection = match next.take() {
            Some(connection) => connection,
            None => {
                let delay = rotation.on_dropped(config.reconnect_delay);
                match reconnect(
                    &config,
                    &urls,
                    &mut rotation,
                    delay,
                    &mut engine,
                    &mut commands,
                )
                .await
                {
                    Some(connection) => connection,
                    None => break,
                }
            }
        };
        let Connection {
            mut socket,
            url,
            user,
            groups,
            reminders,
            early,
            ..
        } = connection;
        engine.on_connected(&url, user, groups, reminders);
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
                    Some(Ok(WsMessage::Close(Some(close))))
                        if u16::from(close.code) == SERVICE_RESTART_CLOSE =>
                    {
                        log::info!(
                            "client: the server stopped taking sessions (1012); trying the next URL"
                        );
                        return Ending::Dropped;
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

/// Waits `delay`, then tries the URL `rotation` is at, and again after each failure with the
/// wait the rotation says, while still taking commands. Returns `None` when the client is
/// closed meanwhile, or when the token is refused (401).
async fn reconnect(
    config: &ClientConfig,
    urls: &[String],
    rotation: &mut Rotation,
    mut delay: Duration,
    engine: &mut Engine,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> Option<Connection> {
    loop {
        if !delay.is_zero() {
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    command = commands.recv() => offline_command(engine, command)?,
                }
            }
        }
        let index = rotation.current();
        let url = urls.get(index).map_or(config.url.as_str(), String::as_str);
        let attempt = connect(config, index, url);
        tokio::pin!(attempt);
        let result = loop {
            tokio::select! {
                result = &mut attempt => break result,
                command = commands.recv() => offline_command(engine, command)?,
            }
        };
        match result {
            Ok(connection) => {
                rotation.on_connected();
                return Some(connection);
            }
            Err(Failed {
                error: ClientError::Rejected { status: 401 },
                ..
            }) => {
                log::error!("client: the server refuses the token now (401); stopping");
                engine.on_unauthorized("the token was refused (401)".into());
                return None;
            }
            Err(failed) => {
                log::warn!(
                    "client: reconnect to {} failed: {}",
                    loggable(url),
                    failed.error
                );
                delay = rotation.on_failed(failed.retry_after, config.reconnect_delay);
            }
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
