//! A byte-level guard in front of actix-web-actors' WebSocket decoder that enforces
//! `--max-frame-bytes` without buffering oversized frames.
//!
//! actix-web-actors appends every incoming chunk to an unbounded buffer and actix-http drops an
//! oversized frame only once all of it has arrived, so a client announcing a huge frame could
//! make the server buffer it whole; and a frame announcing a length with the top bit set makes
//! the decoder fail without consuming it, forever. This wrapper reads the client's frame headers
//! itself (RFC 6455 §5.2: 2 bytes, an extended length of 2 or 8 bytes, a 4-byte mask), passes
//! frames within the limit through untouched, and *skips* a larger frame's header and payload as
//! they arrive. In its place it passes one masked pong frame carrying [`TOO_LARGE_MARK`], which
//! the session answers with `too_large` (a control frame may come between fragments, so this is
//! valid wherever the skipped frame was). The session then goes on reading.
//!
//! It also records whether reading the socket itself failed ([`TransportFailed`]):
//! actix-web-actors reports both that and a text frame that is not UTF-8 as the same
//! `ProtocolError::Io`, and the session must close on the first but answer `bad_frame` and go on
//! after the second. A typed flag set where the failure is seen, rather than matching the
//! error's text.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::error::PayloadError;
use actix_web::web::{Bytes, BytesMut};
use futures_util::Stream;

/// Where the guard is within the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a frame header (kept in `header`).
    Header,
    /// Passing this many more payload bytes of an accepted frame.
    Pass(u64),
    /// Discarding this many more payload bytes of an oversized frame.
    Skip(u64),
}

/// The payload of the pong frame that stands in for a skipped oversized frame.
pub const TOO_LARGE_MARK: &[u8] = b"rollcall: frame too large";

/// Wraps a client byte stream; see the module documentation.
pub struct FrameLimit<S> {
    inner: S,
    max: u64,
    state: State,
    header: Vec<u8>,
    failed: TransportFailed,
}

/// Whether reading the client's bytes failed (set once, by [`FrameLimit`]).
#[derive(Debug, Clone, Default)]
pub struct TransportFailed(Arc<AtomicBool>);

impl TransportFailed {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl<S> FrameLimit<S> {
    /// Limits the frames of `inner` to `max` payload bytes; `failed` is set if reading fails.
    pub fn new(inner: S, max: usize, failed: TransportFailed) -> FrameLimit<S> {
        FrameLimit {
            inner,
            max: u64::try_from(max).unwrap_or(u64::MAX),
            state: State::Header,
            header: Vec::with_capacity(14),
            failed,
        }
    }

    /// Runs `chunk` through the state machine; returns the bytes to pass on.
    fn filter(&mut self, mut chunk: &[u8]) -> BytesMut {
        let mut out = BytesMut::with_capacity(chunk.len());
        while !chunk.is_empty() {
            match self.state {
                State::Pass(n) | State::Skip(n) => {
                    let take = chunk.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                    if matches!(self.state, State::Pass(_)) {
                        out.extend_from_slice(&chunk[..take]);
                    }
                    chunk = &chunk[take..];
                    let left = n - take as u64;
                    self.state = match (self.state, left) {
                        (_, 0) => State::Header,
                        (State::Pass(_), left) => State::Pass(left),
                        (_, left) => State::Skip(left),
                    };
                }
                State::Header => {
                    self.header.push(chunk[0]);
                    chunk = &chunk[1..];
                    if let Some(length) = payload_length(&self.header) {
                        if length > self.max {
                            // FIN + pong, masked with a zero key, so the payload reads as is.
                            out.extend_from_slice(&[0x8a, 0x80 | TOO_LARGE_MARK.len() as u8]);
                            out.extend_from_slice(&[0, 0, 0, 0]);
                            out.extend_from_slice(TOO_LARGE_MARK);
                            self.state = State::Skip(length);
                        } else {
                            out.extend_from_slice(&self.header);
                            self.state = if length == 0 {
                                State::Header
                            } else {
                                State::Pass(length)
                            };
                        }
                        self.header.clear();
                    }
                }
            }
        }
        out
    }
}

/// The payload length once `header` holds a whole frame header; `None` while it is incomplete.
fn payload_length(header: &[u8]) -> Option<u64> {
    let second = *header.get(1)?;
    let masked = second & 0x80 != 0;
    let big_endian = |bytes: &[u8]| bytes.iter().fold(0u64, |n, &b| (n << 8) | u64::from(b));
    let (extended, length) = match second & 0x7f {
        126 => (2, big_endian(header.get(2..4)?)),
        127 => (8, big_endian(header.get(2..10)?)),
        short => (0, u64::from(short)),
    };
    let complete = 2 + extended + if masked { 4 } else { 0 };
    (header.len() >= complete).then_some(length)
}

impl<S> Stream for FrameLimit<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let passed = self.filter(&chunk);
                    if !passed.is_empty() {
                        return Poll::Ready(Some(Ok(passed.freeze())));
                    }
                    // All skipped, or an incomplete header: read on.
                }
                Poll::Ready(Some(Err(e))) => {
                    self.failed.set();
                    return Poll::Ready(Some(Err(e)));
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame header for `len` payload bytes.
    fn header(len: u64) -> Vec<u8> {
        let mut h = vec![0x81];
        if len < 126 {
            h.push(0x80 | len as u8);
        } else if len <= u64::from(u16::MAX) {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    fn frame(len: u64) -> Vec<u8> {
        let mut f = header(len);
        f.extend(std::iter::repeat_n(b'x', len as usize));
        f
    }

    #[test]
    fn frames_within_the_limit_pass_unchanged_in_any_chunking() {
        let mut input = frame(10);
        input.extend(frame(0));
        input.extend(frame(300));
        input.extend(frame(100));
        for chunk_size in [1, 2, 3, 7, 64, 1000] {
            let mut limit = FrameLimit::new((), 300, TransportFailed::default());
            let mut out = Vec::new();
            for chunk in input.chunks(chunk_size) {
                out.extend_from_slice(&limit.filter(chunk));
            }
            assert_eq!(out, input, "chunks of {chunk_size}");
        }
    }

    #[test]
    fn an_oversized_frame_is_skipped_and_the_next_one_passes() {
        let mut input = frame(5000);
        input.extend(frame(20));
        for chunk_size in [1, 5, 4096] {
            let mut limit = FrameLimit::new((), 4096, TransportFailed::default());
            let mut out = Vec::new();
            for chunk in input.chunks(chunk_size) {
                out.extend_from_slice(&limit.filter(chunk));
            }
            let mut expected = vec![0x8a, 0x80 | TOO_LARGE_MARK.len() as u8, 0, 0, 0, 0];
            expected.extend_from_slice(TOO_LARGE_MARK);
            expected.extend(frame(20));
            assert_eq!(out, expected, "chunks of {chunk_size}");
        }
    }

    #[test]
    fn an_absurd_length_is_skipped_without_buffering() {
        let mut limit = FrameLimit::new((), 4096, TransportFailed::default());
        let mut h = vec![0x81, 0x80 | 127];
        h.extend_from_slice(&u64::MAX.to_be_bytes());
        h.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            limit.filter(&h).len(),
            6 + TOO_LARGE_MARK.len(),
            "only the stand-in"
        );
        assert!(limit.filter(&vec![0u8; 1 << 20]).is_empty());
        assert!(matches!(limit.state, State::Skip(_)));
    }
}
