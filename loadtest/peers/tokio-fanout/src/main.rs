//! tokio-fanout: a minimal WebSocket fan-out on tokio, with no protocol beyond the room: the reference
//! `realtime-loadtest compare` measures for what the hardware allows (one core, the kernel's sockets,
//! WebSocket framing) when nothing else is done per message.
//!
//! The contract is the FastAPI peer's plain JSON one, so the same client drives both: a client opens
//! `/ws/{room}` (the room is the raw path segment) and is told `{"type":"joined","room":…}` once in it;
//! a text frame `{"type":"publish","payload":DATA}` reaches every *other* member of the room as
//! `{"type":"msg","payload":DATA}`. Anything else a client sends is ignored.
//!
//! Per published message: its payload is cut out of the frame as raw JSON (not re-parsed), the `msg`
//! text is built once, and every member gets the same bytes (a [`Message::Text`] holds a `Bytes`;
//! each connection's WebSocket layer only adds its 2–10 byte frame header as it writes). Each member
//! has a bounded queue drained by its own writer task, which writes what has queued up in one go.
//! Nothing is dropped: a full queue makes the publisher wait ([`rooms::Rooms::publish`]), which in turn
//! stops reading that publisher's socket (backpressure to the client). The one exception is a member
//! whose socket takes no bytes for [`WRITE_STALL`]: it is disconnected (its client sees the close),
//! not skipped while still connected. Writers never wait on other queues, so the waits cannot form a
//! cycle. No compression (tungstenite has no permessage-deflate), `TCP_NODELAY` on.
//!
//! One core: `compare` pins each server to one core with `taskset`, so this runs on tokio's
//! current-thread runtime (a multi-thread runtime would add cross-thread wakeups with no second core to
//! use).
//!
//! Usage: `PORT=4104 HOST=127.0.0.1 target/release/tokio-fanout`.

mod rooms;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::value::RawValue;
use thiserror::Error;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::rooms::Rooms;

/// Time a client gets to complete the WebSocket handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Time a member's socket may take no bytes before the member is disconnected.
const WRITE_STALL: Duration = Duration::from_secs(30);
/// Frames a member's queue holds before publishers wait for its writer.
const QUEUE: usize = 256;
/// Frames a writer takes off its queue for one write.
const BATCH: usize = 64;
/// Connections the kernel may hold waiting for `accept`.
const LISTEN_BACKLOG: u32 = 4096;
/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Why a connection ended other than by the client closing it.
#[derive(Debug, Error)]
enum ConnError {
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error("not a room path")]
    NotARoom,
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
}

/// A client frame of the plain JSON protocol.
#[derive(Deserialize)]
struct ClientFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

/// The `msg` frame for a client's `publish` frame (built once per message), or `None` for anything else.
fn msg_frame(text: &str) -> Option<Message> {
    let frame: ClientFrame<'_> = serde_json::from_str(text).ok()?;
    if frame.kind != "publish" {
        return None;
    }
    let payload = frame.payload.map_or("null", RawValue::get);
    Some(Message::text(format!(r#"{{"type":"msg","payload":{payload}}}"#)))
}

fn joined_frame(room: &str) -> Message {
    Message::text(format!(r#"{{"type":"joined","room":{}}}"#, serde_json::Value::from(room)))
}

/// The room of a request path `/ws/{room}`.
fn room_of(path: &str) -> Option<&str> {
    path.strip_prefix("/ws/").filter(|r| !r.is_empty() && !r.contains('/'))
}

/// Drains a member's queue into its socket until the queue closes, the socket fails or stalls.
async fn write(mut sink: SplitSink<WebSocketStream<TcpStream>, Message>, mut rx: mpsc::Receiver<Message>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let sent = async {
            for frame in batch.drain(..) {
                sink.feed(frame).await?;
            }
            sink.flush().await
        };
        if !matches!(timeout(WRITE_STALL, sent).await, Ok(Ok(()))) {
            return;
        }
    }
    let _ = timeout(WRITE_STALL, sink.close()).await;
}

async fn serve(stream: TcpStream, rooms: Arc<Rooms>) -> Result<(), ConnError> {
    let _ = stream.set_nodelay(true);
    let mut room = None;
    let check = |request: &Request, response: Response| match room_of(request.uri().path()) {
        Some(r) => {
            room = Some(r.to_owned());
            Ok(response)
        }
        None => {
            let mut refusal = ErrorResponse::new(Some("not found: use /ws/{room}".into()));
            *refusal.status_mut() = StatusCode::NOT_FOUND;
            Err(refusal)
        }
    };
    // A 4 KiB read buffer (tungstenite's default is 128 KiB): members only read small frames.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let ws = timeout(HANDSHAKE, tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config)))
        .await
        .map_err(|_| ConnError::HandshakeTimeout)??;
    let room = room.ok_or(ConnError::NotARoom)?;
    let (sink, mut incoming) = ws.split();
    let (tx, rx) = mpsc::channel(QUEUE);
    let writer = tokio::spawn(write(sink, rx));
    let id = rooms.join(&room, tx.clone());
    let mut result = Ok(());
    if tx.send(joined_frame(&room)).await.is_ok() {
        loop {
            let next = tokio::select! {
                next = incoming.next() => next,
                // The writer ended (the socket failed or stalled): the connection is over.
                () = tx.closed() => break,
            };
            match next {
                Some(Ok(Message::Text(text))) => {
                    if let Some(frame) = msg_frame(&text) {
                        rooms.publish(&room, id, frame).await;
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    result = Err(e.into());
                    break;
                }
            }
        }
    }
    rooms.leave(&room, id);
    drop(tx);
    let _ = writer.await;
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
                            if !matches!(e, ConnError::Ws(_)) {
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
    fn frames() {
        let msg = msg_frame(r#"{"type":"publish","payload":{"t":1, "s":[2,3]}}"#);
        assert_eq!(msg, Some(Message::text(r#"{"type":"msg","payload":{"t":1, "s":[2,3]}}"#)));
        assert_eq!(
            msg_frame(r#"{"type":"publish"}"#),
            Some(Message::text(r#"{"type":"msg","payload":null}"#))
        );
        assert_eq!(msg_frame(r#"{"type":"other","payload":1}"#), None);
        assert_eq!(msg_frame("nope"), None);
        assert_eq!(joined_frame("a\"b"), Message::text(r#"{"type":"joined","room":"a\"b"}"#));
        assert_eq!(room_of("/ws/room-1"), Some("room-1"));
        assert_eq!(room_of("/ws/"), None);
        assert_eq!(room_of("/ws/a/b"), None);
        assert_eq!(room_of("/other"), None);
    }
}
