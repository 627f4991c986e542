//! tokio-fanout: a minimal WebSocket fan-out on tokio, with no protocol beyond the room: the reference
//! `realtime-loadtest compare` measures for what the hardware allows (one core, the kernel's sockets,
//! WebSocket framing) when nothing else is done per message or kept per connection.
//!
//! The contract is the FastAPI peer's plain JSON one, so the same client drives both: a client opens
//! `/ws/{room}` (the room is the raw path segment) and is told `{"type":"joined","room":…}` once in it;
//! a text frame `{"type":"publish","payload":DATA}` reaches every *other* member of the room as
//! `{"type":"msg","payload":DATA}`. Pings are answered; anything else a client sends is ignored.
//!
//! Per published message: its payload is cut out of the frame as raw JSON (not re-parsed), and the
//! whole WebSocket frame (header included) is encoded once; every member's queue gets the same bytes.
//! Per connection: one task, its socket, a bounded queue of shared frames, and a read buffer that holds
//! only a partly received frame (the handshake's is dropped once answered; a member that only receives
//! holds none). The task writes what has queued up in one vectored write. Nothing is dropped: a full
//! queue makes the publisher wait ([`rooms::Rooms::publish`]), which stops reading that publisher's
//! socket (backpressure to the client) while its own queue is still written, so two publishers waiting
//! on each other's queues cannot deadlock. The one exception is a member whose socket takes no bytes
//! for [`WRITE_STALL`]: it is disconnected, not skipped while still connected. No compression,
//! `TCP_NODELAY` on. The handshake and frames are parsed here ([`handshake`], [`frame`]): a WebSocket
//! library's per-connection buffers are what this reference measures the absence of.
//!
//! One core: `compare` pins each server to one core with `taskset`, so this runs on tokio's
//! current-thread runtime (a multi-thread runtime would add cross-thread wakeups with no second core to
//! use).
//!
//! Usage: `PORT=4104 HOST=127.0.0.1 target/release/tokio-fanout`.

mod frame;
mod handshake;
mod rooms;

use std::borrow::Cow;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde::Deserialize;
use serde_json::value::RawValue;
use thiserror::Error;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::frame::FrameError;
use crate::handshake::Refused;
use crate::rooms::{Frame, MemberId, Rooms};

/// Time a client gets to complete the WebSocket handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Time a member's socket may take no bytes before the member is disconnected.
const WRITE_STALL: Duration = Duration::from_secs(30);
/// Frames a member's queue holds before publishers wait for its writer.
const QUEUE: usize = 256;
/// Frames taken off the queue for one write.
const BATCH: usize = 64;
/// Bytes read from a socket at a time (on the stack: a connection keeps only what a frame left over).
const READ_CHUNK: usize = 4096;
/// Connections the kernel may hold waiting for `accept`.
const LISTEN_BACKLOG: u32 = 4096;
/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Why a connection ended other than by the client closing it.
#[derive(Debug, Error)]
enum ConnError {
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("handshake refused: {0}")]
    Refused(#[from] Refused),
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    #[error("write stalled for {WRITE_STALL:?}")]
    WriteStall,
    #[error("io: {0}")]
    Io(#[from] io::Error),
}

/// A client frame of the plain JSON protocol.
#[derive(Deserialize)]
struct ClientFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

/// The `msg` text for a client's `publish` text (built once per message), or `None` for anything else.
fn msg_text(text: &[u8]) -> Option<String> {
    let frame: ClientFrame<'_> = serde_json::from_slice(text).ok()?;
    if frame.kind != "publish" {
        return None;
    }
    let payload = frame.payload.map_or("null", RawValue::get);
    Some(format!(r#"{{"type":"msg","payload":{payload}}}"#))
}

fn joined_text(room: &str) -> String {
    format!(r#"{{"type":"joined","room":{}}}"#, serde_json::Value::from(room))
}

/// Reads what the socket has into `buf` without waiting; `Ok(0)` at the end of the stream. The chunk
/// is on this function's stack, not in the connection's task.
fn read_ready(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let mut chunk = [0u8; READ_CHUNK];
    let n = stream.try_read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Reads and answers the upgrade request; returns the room. Bytes after it stay in `buf`.
async fn upgrade(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<String, ConnError> {
    loop {
        stream.readable().await?;
        match read_ready(stream, buf) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
        match handshake::parse(buf) {
            Ok(None) => {}
            Ok(Some(up)) => {
                stream.write_all(up.response.as_bytes()).await?;
                let _ = buf.split_to(up.consumed);
                return Ok(up.room);
            }
            Err(refused) => {
                stream.write_all(refused.response().as_bytes()).await?;
                return Err(refused.into());
            }
        }
    }
}

/// Writes `frames` whole in vectored writes, then empties the list.
async fn write_frames(stream: &mut TcpStream, frames: &mut Vec<Frame>) -> Result<(), ConnError> {
    let total: usize = frames.iter().map(Frame::len).sum();
    let mut done = 0;
    let write = async {
        while done < total {
            let written = {
                let mut skip = done;
                let slices: Vec<IoSlice<'_>> = frames
                    .iter()
                    .filter_map(|f| {
                        if skip >= f.len() {
                            skip -= f.len();
                            return None;
                        }
                        let slice = IoSlice::new(&f[skip..]);
                        skip = 0;
                        Some(slice)
                    })
                    .collect();
                stream.write_vectored(&slices).await?
            };
            if written == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            done += written;
        }
        Ok(())
    };
    timeout(WRITE_STALL, write).await.map_err(|_| ConnError::WriteStall)??;
    frames.clear();
    Ok(())
}

/// One member after its handshake: reads its frames and writes its queue until either side ends.
struct Member<'r> {
    stream: TcpStream,
    /// A partly received frame (empty, and without an allocation, between frames).
    buf: BytesMut,
    rooms: &'r Rooms,
    room: String,
    id: MemberId,
    rx: mpsc::Receiver<Frame>,
    batch: Vec<Frame>,
}

impl Member<'_> {
    async fn run(&mut self) -> Result<(), ConnError> {
        loop {
            tokio::select! {
                ready = self.stream.readable() => {
                    ready?;
                    match read_ready(&self.stream, &mut self.buf) {
                        Ok(0) => return Ok(()),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e.into()),
                    }
                    match self.frames().await {
                        Ok(true) => {}
                        Ok(false) => return Ok(()),
                        Err(ConnError::Frame(refused)) => {
                            // The client is told why before the connection ends.
                            let _ = self.send(frame::close(refused.close_code())).await;
                            return Err(refused.into());
                        }
                        Err(e) => return Err(e),
                    }
                }
                n = self.rx.recv_many(&mut self.batch, BATCH) => {
                    if n == 0 {
                        return Ok(());
                    }
                    write_frames(&mut self.stream, &mut self.batch).await?;
                }
            }
        }
    }

    /// Handles every whole frame in the buffer; `false` once the client closed.
    async fn frames(&mut self) -> Result<bool, ConnError> {
        while let Some(f) = frame::take(&mut self.buf)? {
            match f.opcode {
                frame::TEXT => {
                    if let Some(text) = msg_text(&f.payload) {
                        self.publish(frame::encode(frame::TEXT, text.as_bytes())).await?;
                    }
                }
                frame::PING => self.send(frame::encode(frame::PONG, &f.payload)).await?,
                frame::CLOSE => {
                    self.send(frame::close(1000)).await?;
                    return Ok(false);
                }
                _ => {}
            }
        }
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
        Ok(true)
    }

    /// Queues `msg` for the room; while it waits on full queues, this member's own queue is written.
    async fn publish(&mut self, msg: Frame) -> Result<(), ConnError> {
        let publish = self.rooms.publish(&self.room, self.id, msg);
        tokio::pin!(publish);
        loop {
            tokio::select! {
                _ = &mut publish => return Ok(()),
                n = self.rx.recv_many(&mut self.batch, BATCH) => {
                    if n > 0 {
                        write_frames(&mut self.stream, &mut self.batch).await?;
                    }
                }
            }
        }
    }

    /// Writes one frame of this connection's own after what is queued for it.
    async fn send(&mut self, own: Frame) -> Result<(), ConnError> {
        while let Ok(frame) = self.rx.try_recv() {
            self.batch.push(frame);
        }
        self.batch.push(own);
        write_frames(&mut self.stream, &mut self.batch).await
    }
}

async fn serve(mut stream: TcpStream, rooms: Arc<Rooms>) -> Result<(), ConnError> {
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::new();
    let room = timeout(HANDSHAKE, upgrade(&mut stream, &mut buf))
        .await
        .map_err(|_| ConnError::HandshakeTimeout)??;
    let (tx, rx) = mpsc::channel(QUEUE);
    let id = rooms.join(&room, tx);
    let mut member = Member { stream, buf, rooms: &rooms, room, id, rx, batch: Vec::new() };
    let joined = frame::encode(frame::TEXT, joined_text(&member.room).as_bytes());
    let mut result = member.send(joined).await;
    if result.is_ok() {
        result = member.run().await;
    }
    rooms.leave(&member.room, id);
    result
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = format!("{}:{}", env_or("HOST", "127.0.0.1"), env_or("PORT", "4104")).parse()?;
    // A deep accept queue, as this server's own listener has (the kernel caps it at
    // net.core.somaxconn): a connect storm on a busy core then waits in the queue instead of
    // overflowing it into 1 s SYN retransmits.
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(LISTEN_BACKLOG)?;
    let rooms = Arc::new(Rooms::default());
    eprintln!("tokio-fanout listening on ws://{addr}/ws/{{room}}");
    let accept = async {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let rooms = Arc::clone(&rooms);
                    tokio::spawn(async move {
                        if let Err(e) = serve(stream, rooms).await {
                            if !matches!(e, ConnError::Io(_)) {
                                eprintln!("tokio-fanout: connection: {e}");
                            }
                        }
                    });
                }
                Err(e) => {
                    eprintln!("tokio-fanout: accept: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    };
    tokio::select! {
        () = accept => {}
        () = stopped() => {}
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn stopped() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        let msg = msg_text(br#"{"type":"publish","payload":{"t":1, "s":[2,3]}}"#);
        assert_eq!(msg.as_deref(), Some(r#"{"type":"msg","payload":{"t":1, "s":[2,3]}}"#));
        assert_eq!(msg_text(br#"{"type":"publish"}"#).as_deref(), Some(r#"{"type":"msg","payload":null}"#));
        assert_eq!(msg_text(br#"{"type":"other","payload":1}"#), None);
        assert_eq!(msg_text(b"nope"), None);
        assert_eq!(joined_text("a\"b"), r#"{"type":"joined","room":"a\"b"}"#);
    }
}
