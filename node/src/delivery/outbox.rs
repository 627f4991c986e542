//! The per-socket outbox: a queue bounded in bytes and frames, filled by producers on any thread and
//! drained by the socket's writer ([`OutboxWriter`]) only as fast as the connection takes it.
//!
//! Overflow policy: a frame that would pass either bound is not queued; the socket is closed as a slow
//! consumer instead (its queued frames are dropped at once, a [`Close::SlowConsumer`] close frame is
//! queued, and the connection is aborted if even that cannot be written within the close grace). The producer is told [`Offer::Closed`] and drops the member: one stalled client
//! never grows memory past its bound and never slows the producer.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use actix_codec::Encoder;
use actix_http::ws::{CloseCode, CloseReason, Codec, Message};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;

use super::frame::WireFrame;
use super::link::Link;
use super::watchdog::Closing;
use crate::close::{Close, SlowCause};
use crate::metrics::{metrics, SlowClose};

/// Most bytes of frames encoded into one chunk written to the connection: a chunk is taken from the
/// queue only when the previous one was written, so at most this much sits outside the bound.
const CHUNK_BYTES: usize = 32 * 1024;

/// The bounds of one outbox and how long its close frame may take.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    pub max_bytes: usize,
    pub max_frames: usize,
    /// After a close, how long the close frame may wait before the connection is aborted.
    pub close_grace: Duration,
}

fn slow_metric(cause: SlowCause) -> SlowClose {
    match cause {
        SlowCause::Overflow => SlowClose::Overflow,
        SlowCause::WriteTimeout => SlowClose::WriteTimeout,
        SlowCause::FlushDeadline => SlowClose::FlushDeadline,
    }
}

/// What became of an offered frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The socket is closing or gone (perhaps because of this frame): drop the member.
    Closed,
}

#[derive(Debug)]
enum Item {
    Frame { frame: WireFrame, received_at: Option<Instant> },
    Pong(Bytes),
}

impl Item {
    fn len(&self) -> usize {
        match self {
            Item::Frame { frame, .. } => frame.len(),
            Item::Pong(bytes) => bytes.len(),
        }
    }
}

#[derive(Debug)]
enum State {
    Open,
    /// The close frame (until written) and when the connection is aborted if it is still open.
    Closing {
        close: Option<CloseReason>,
        deadline: Instant,
    },
    /// The close frame was written or the writer is gone.
    Done,
}

#[derive(Debug)]
struct Queue {
    items: VecDeque<Item>,
    bytes: usize,
    /// Frames ever queued, and ever taken by the writer.
    queued: u64,
    taken: u64,
    /// The link's drained epoch when the writer last took frames.
    taken_epoch: u64,
    /// When the writer last took frames, or the queue last became non-empty.
    progress_at: Instant,
    state: State,
    /// The first close, kept after its frame is written: how the socket ended.
    closed_with: Option<Close>,
    writer: Option<Waker>,
}

#[derive(Debug)]
struct Inner {
    limits: OutboxLimits,
    link: Link,
    closing: Arc<Closing>,
    queue: Mutex<Queue>,
}

/// A cloneable handle on one socket's outbox; producers hold one per recipient.
#[derive(Debug, Clone)]
pub struct Outbox(Arc<Inner>);

impl Outbox {
    pub fn new(limits: OutboxLimits, link: Link, closing: Arc<Closing>) -> Outbox {
        let queue = Queue {
            items: VecDeque::new(),
            bytes: 0,
            queued: 0,
            taken: 0,
            taken_epoch: 0,
            progress_at: Instant::now(),
            state: State::Open,
            closed_with: None,
            writer: None,
        };
        Outbox(Arc::new(Inner { limits, link, closing, queue: Mutex::new(queue) }))
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.0.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame, or closes the socket as a slow consumer when it would pass a bound.
    /// `received_at` (when the node received what the frame carries) feeds the delivery latency.
    pub fn offer(&self, frame: WireFrame, received_at: Option<Instant>) -> Offer {
        self.push(Item::Frame { frame, received_at })
    }

    /// Queues the answer to a ping (counted against the same bounds).
    pub fn pong(&self, payload: Bytes) -> Offer {
        self.push(Item::Pong(payload))
    }

    fn push(&self, item: Item) -> Offer {
        let len = item.len();
        let waker = {
            let mut q = self.lock();
            if !matches!(q.state, State::Open) {
                return Offer::Closed;
            }
            let limits = &self.0.limits;
            if q.bytes + len > limits.max_bytes || q.items.len() >= limits.max_frames {
                drop(q);
                self.close_slow(SlowCause::Overflow);
                return Offer::Closed;
            }
            if q.items.is_empty() {
                q.progress_at = Instant::now();
            }
            q.items.push_back(item);
            q.bytes += len;
            q.queued += 1;
            q.writer.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Offer::Queued
    }

    /// Closes the socket with `close` once what is queued is written. Later offers are refused; the
    /// connection is aborted if the close frame is not written within the close grace.
    pub fn close(&self, close: Close) {
        self.begin_close(close, false);
    }

    /// Closes a socket that does not keep up: its queued frames are dropped now, the close frame says
    /// why, and the close is counted.
    pub fn close_slow(&self, cause: SlowCause) {
        if self.begin_close(Close::SlowConsumer(cause), true) {
            metrics().slow_closed(slow_metric(cause));
            tracing::debug!(cause = cause.reason(), "socket closed as a slow consumer");
        }
    }

    /// `true` when this call started the close.
    fn begin_close(&self, close: Close, drop_queued: bool) -> bool {
        let waker = {
            let mut q = self.lock();
            if !matches!(q.state, State::Open) {
                return false;
            }
            if drop_queued {
                q.items = VecDeque::new();
                q.bytes = 0;
            }
            let deadline = Instant::now() + self.0.limits.close_grace;
            let reason = CloseReason {
                code: CloseCode::from(close.code()),
                description: Some(close.reason().into_owned()),
            };
            q.closed_with = Some(close);
            q.state = State::Closing { close: Some(reason), deadline };
            q.writer.take()
        };
        self.0.closing.add(self.clone());
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// The first close queued on this outbox (`None` while open, or when the connection ended without
    /// one).
    pub fn closed_with(&self) -> Option<Close> {
        self.lock().closed_with
    }

    /// Whether offers are still accepted.
    pub fn is_open(&self) -> bool {
        matches!(self.lock().state, State::Open)
    }

    /// A mark covering every frame queued so far, for [`Outbox::reached`].
    pub fn mark(&self) -> u64 {
        self.lock().queued
    }

    /// Whether every frame up to `mark` is in the kernel's buffer (or the socket is closed, so there
    /// is nothing left to wait for).
    pub fn reached(&self, mark: u64) -> bool {
        let q = self.lock();
        if !matches!(q.state, State::Open) {
            return true;
        }
        q.taken >= mark && self.0.link.drained_epoch() > q.taken_epoch
    }

    /// The write-timeout check: frames have waited with no progress for longer than `timeout`.
    pub fn stalled(&self, now: Instant, timeout: Duration) -> bool {
        let q = self.lock();
        matches!(q.state, State::Open)
            && !q.items.is_empty()
            && now.saturating_duration_since(q.progress_at) > timeout
    }

    /// The close-grace check: `true` when this closing outbox's connection must be aborted now, `false`
    /// while it may still finish; `None` when it no longer needs watching.
    pub(super) fn overdue(&self, now: Instant) -> Option<bool> {
        if self.0.link.is_aborted() || self.0.link.is_closed() {
            return None;
        }
        match self.lock().state {
            State::Open => None,
            State::Closing { deadline, .. } => Some(now >= deadline),
            State::Done => Some(true),
        }
    }

    pub(super) fn abort(&self) {
        let waker = {
            let mut q = self.lock();
            q.items = VecDeque::new();
            q.bytes = 0;
            q.state = State::Done;
            q.writer.take()
        };
        self.0.link.abort();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The stream of encoded chunks that writes this outbox to its connection.
    pub fn writer(&self) -> OutboxWriter {
        OutboxWriter { outbox: self.clone() }
    }
}

/// The outbox as a stream of encoded WebSocket chunks: encodes queued frames when the writer asks for
/// more, ends after the close frame, fails when the connection was aborted.
pub struct OutboxWriter {
    outbox: Outbox,
}

impl OutboxWriter {
    fn next_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let outbox = &self.outbox;
        if outbox.0.link.is_aborted() {
            return Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "aborted"))));
        }
        let mut taken = VecDeque::new();
        let close = {
            let mut q = outbox.lock();
            let mut bytes = 0;
            if q.bytes <= CHUNK_BYTES {
                // All of it: the queue itself is taken, so an idle socket's outbox keeps no buffer
                // (a queue drained in place would keep its capacity for the life of the socket).
                taken = std::mem::take(&mut q.items);
                bytes = q.bytes;
            } else {
                while bytes < CHUNK_BYTES {
                    let Some(item) = q.items.pop_front() else { break };
                    bytes += item.len();
                    taken.push_back(item);
                }
            }
            if !taken.is_empty() {
                q.bytes -= bytes;
                q.taken += taken.len() as u64;
                q.taken_epoch = outbox.0.link.drained_epoch();
                q.progress_at = Instant::now();
                None
            } else {
                match &mut q.state {
                    State::Open => {
                        q.writer = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                    State::Closing { close, .. } => match close.take() {
                        Some(reason) => Some(reason),
                        None => {
                            q.state = State::Done;
                            return Poll::Ready(None);
                        }
                    },
                    State::Done => return Poll::Ready(None),
                }
            }
        };
        let mut codec = Codec::new();
        let mut buf = BytesMut::new();
        let encoded = match close {
            Some(reason) => codec.encode(Message::Close(Some(reason)), &mut buf),
            None => encode_items(&mut codec, taken, &mut buf),
        };
        if let Err(error) = encoded {
            return Poll::Ready(Some(Err(io::Error::other(error.to_string()))));
        }
        Poll::Ready(Some(Ok(buf.freeze())))
    }
}

fn encode_items(
    codec: &mut Codec,
    items: VecDeque<Item>,
    buf: &mut BytesMut,
) -> Result<(), actix_http::ws::ProtocolError> {
    let m = metrics();
    let now = Instant::now();
    buf.reserve(items.iter().map(|i| i.len() + 10).sum());
    for item in items {
        match item {
            Item::Frame { frame, received_at } => {
                m.messages_out.increment(1);
                m.bytes_out.increment(frame.len() as u64);
                if let Some(received_at) = received_at {
                    m.delivery_latency.record(now.saturating_duration_since(received_at).as_secs_f64());
                }
                match frame {
                    WireFrame::Text(text) => codec.encode(Message::Text(text), buf)?,
                    WireFrame::Binary(bytes) => codec.encode(Message::Binary(bytes), buf)?,
                }
            }
            Item::Pong(payload) => codec.encode(Message::Pong(payload), buf)?,
        }
    }
    Ok(())
}

impl Stream for OutboxWriter {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().next_chunk(cx)
    }
}

impl Drop for OutboxWriter {
    /// The connection is gone (or finished): nothing more can be written.
    fn drop(&mut self) {
        let mut q = self.outbox.lock();
        q.items = VecDeque::new();
        q.bytes = 0;
        q.state = State::Done;
        q.writer = None;
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    fn outbox(max_bytes: usize, max_frames: usize) -> Outbox {
        let limits = OutboxLimits { max_bytes, max_frames, close_grace: Duration::from_millis(10) };
        Outbox::new(limits, Link::default(), Arc::default())
    }

    fn text(s: &str) -> WireFrame {
        WireFrame::Text(s.into())
    }

    #[tokio::test]
    async fn bounded_in_bytes_then_closed_with_a_reason() {
        let outbox = outbox(10, 100);
        assert_eq!(outbox.offer(text("12345"), None), Offer::Queued);
        assert_eq!(outbox.offer(text("12345"), None), Offer::Queued);
        assert_eq!(outbox.offer(text("1"), None), Offer::Closed, "11 bytes > 10");
        assert!(!outbox.is_open());
        assert_eq!(outbox.offer(text("1"), None), Offer::Closed);
        let mut writer = outbox.writer();
        let close = writer.next().await.unwrap().unwrap();
        // Queued frames were dropped: the first thing written is the close frame (0x88).
        assert_eq!(close[0], 0x88);
        assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1008);
        assert_eq!(&close[4..], SlowCause::Overflow.reason().as_bytes());
        assert_eq!(outbox.closed_with(), Some(Close::SlowConsumer(SlowCause::Overflow)));
        assert!(writer.next().await.is_none());
    }

    #[tokio::test]
    async fn bounded_in_frames() {
        let outbox = outbox(1000, 2);
        assert_eq!(outbox.offer(text("a"), None), Offer::Queued);
        assert_eq!(outbox.offer(text("b"), None), Offer::Queued);
        assert_eq!(outbox.offer(text("c"), None), Offer::Closed);
    }

    #[tokio::test]
    async fn graceful_close_writes_what_was_queued_first() {
        let outbox = outbox(1000, 10);
        outbox.offer(text("hi"), None);
        let mark = outbox.mark();
        assert!(!outbox.reached(mark));
        outbox.close(Close::IdleTimeout);
        let mut writer = outbox.writer();
        let chunk = writer.next().await.unwrap().unwrap();
        assert_eq!(&chunk[..], &[0x81, 2, b'h', b'i']);
        let close = writer.next().await.unwrap().unwrap();
        assert_eq!(close[0], 0x88);
        assert!(writer.next().await.is_none());
        assert!(outbox.reached(mark), "closed: nothing left to wait for");
    }

    #[tokio::test]
    async fn a_drained_outbox_keeps_no_buffer_and_a_long_one_is_written_in_chunks() {
        let outbox = outbox(1 << 20, 100);
        outbox.offer(text("hi"), None);
        let mut writer = outbox.writer();
        assert_eq!(&writer.next().await.unwrap().unwrap()[..], &[0x81, 2, b'h', b'i']);
        assert_eq!(outbox.lock().items.capacity(), 0, "an idle socket's queue holds no allocation");
        let frame = "x".repeat(CHUNK_BYTES / 2);
        for _ in 0..3 {
            outbox.offer(text(&frame), None);
        }
        let first = writer.next().await.unwrap().unwrap();
        assert_eq!(first.len(), 2 * (frame.len() + 4), "up to CHUNK_BYTES per chunk");
        assert_eq!(writer.next().await.unwrap().unwrap().len(), frame.len() + 4);
    }

    #[tokio::test]
    async fn reached_needs_the_link_to_drain_after_the_take() {
        let outbox = outbox(1000, 10);
        outbox.offer(text("x"), None);
        let mark = outbox.mark();
        let mut writer = outbox.writer();
        let _ = writer.next().await.unwrap().unwrap();
        assert!(!outbox.reached(mark), "taken, but no write has drained the HTTP buffer since");
    }

    #[test]
    fn stalled_only_with_frames_waiting() {
        let outbox = outbox(1000, 10);
        let later = Instant::now() + Duration::from_secs(10);
        assert!(!outbox.stalled(later, Duration::from_secs(1)));
        outbox.offer(text("x"), None);
        assert!(outbox.stalled(later, Duration::from_secs(1)));
        assert!(!outbox.stalled(Instant::now(), Duration::from_secs(1)));
    }
}
