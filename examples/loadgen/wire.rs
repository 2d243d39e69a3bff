//! The wire as the load generator's own WebSocket clients see it (tokio-tungstenite, no client
//! module): connecting up to the `welcome`, turning reads into text frames, and the few fields of
//! a server frame it looks at.

use std::collections::BTreeMap;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// One client connection.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The writing half of a connection.
pub type Sink = SplitSink<Ws, Message>;

/// Connects and reads up to the `welcome` frame (returned as text).
pub async fn connect_welcome(
    url: &str,
    nodelay: bool,
    deadline: tokio::time::Instant,
) -> Result<(Ws, String), String> {
    let connect = tokio::time::timeout_at(
        deadline,
        tokio_tungstenite::connect_async_with_config(url, None, nodelay),
    );
    let mut ws = match connect.await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => return Err(format!("connect: {e}")),
        Err(_) => return Err("connect timed out".into()),
    };
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                if text.as_str().contains("\"type\":\"welcome\"") {
                    return Ok((ws, text.as_str().to_owned()));
                }
            }
            Ok(Some(Ok(_))) => {}
            Err(_) => return Err("no welcome: timed out".into()),
            Ok(None) => return Err("no welcome: closed".into()),
            Ok(Some(Err(e))) => return Err(format!("no welcome: {e}")),
        }
    }
}

/// What one read from a connection amounts to.
pub enum Read {
    Text(tokio_tungstenite::tungstenite::Utf8Bytes),
    /// Nothing to handle (a non-text frame, or a close/error already recorded in `lost`).
    Skip,
    /// The connection ended after its owner was done: stop reading.
    Stop,
}

/// Turns one read into a text frame, recording a closed or broken connection in `lost`.
pub fn frame_text(
    frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    lost: &mut Option<String>,
    done: bool,
) -> Read {
    match frame {
        Some(Ok(Message::Text(text))) => Read::Text(text),
        Some(Ok(Message::Close(reason))) => {
            lost.get_or_insert(format!("closed by server: {reason:?}"));
            Read::Skip
        }
        Some(Ok(_)) => Read::Skip,
        Some(Err(e)) => {
            lost.get_or_insert(format!("read: {e}"));
            if done {
                Read::Stop
            } else {
                Read::Skip
            }
        }
        None => {
            lost.get_or_insert("connection ended".to_string());
            if done {
                Read::Stop
            } else {
                Read::Skip
            }
        }
    }
}

/// Parses a server frame, counting an unparsable one in `errors` (and keeping the first).
pub fn parse_frame<'a>(
    text: &'a str,
    errors: &mut BTreeMap<String, u64>,
    first_error: &mut Option<String>,
) -> Option<Incoming<'a>> {
    match serde_json::from_str(text) {
        Ok(f) => Some(f),
        Err(e) => {
            *errors.entry("unparsable".into()).or_default() += 1;
            first_error.get_or_insert(format!("unparsable frame ({e}): {text}"));
            None
        }
    }
}

/// The fields of a server frame the load generator looks at (others are skipped unparsed).
#[derive(Deserialize)]
pub struct Incoming<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default, borrow)]
    pub client_id: Option<&'a str>,
    #[serde(default, borrow)]
    pub code: Option<&'a str>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub items: Option<Vec<ReceiptItem>>,
}

/// One entry of a `receipt` frame: how many members read up to `seq`.
#[derive(Deserialize)]
pub struct ReceiptItem {
    pub seq: u64,
    pub read: u64,
}

/// Counts an `error` frame by its code in `errors`, keeping the first as `first_error`.
pub fn note_error(
    f: &Incoming,
    errors: &mut BTreeMap<String, u64>,
    first_error: &mut Option<String>,
) {
    let code = f.code.unwrap_or("?").to_string();
    if first_error.is_none() {
        *first_error = Some(format!("{code}: {}", f.message.clone().unwrap_or_default()));
    }
    *errors.entry(code).or_default() += 1;
}

/// Queues one frame without flushing; false, with the write error in `lost`, when that failed.
pub async fn feed(sink: &mut Sink, frame: &Value, lost: &mut Option<String>) -> bool {
    match sink.feed(Message::text(frame.to_string())).await {
        Ok(()) => true,
        Err(e) => {
            *lost = Some(format!("write: {e}"));
            false
        }
    }
}

/// Flushes what `feed` queued (`fed` frames; none: nothing to do), a failure recorded in `lost`.
pub async fn flush(sink: &mut Sink, fed: usize, lost: &mut Option<String>) {
    if fed > 0 {
        if let Err(e) = sink.flush().await {
            lost.get_or_insert(format!("flush: {e}"));
        }
    }
}
