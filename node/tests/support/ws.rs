//! The WebSocket client core shared by both suites: connecting, pushes in either serializer, reading
//! frames normalised to one shape, and the bounded waits both suites use. Each suite has its own frame
//! type (see [`WireFrame`]) and adds its own helpers in an `impl Client<Frame>` block.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use realtime_proto::Vsn;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a suite represents one frame from the server.
pub trait WireFrame: Clone + std::fmt::Debug {
    /// A text frame: `value` is the frame normalised by [`normalise`], `raw` its text.
    fn from_text(value: Value, raw: &str) -> Self;
    /// A binary frame that arrived on a socket of serializer `vsn`.
    fn from_binary(vsn: Vsn, data: Bytes) -> Self;
    /// The server closed the socket (close code if a close frame was received).
    fn from_close(code: Option<u16>) -> Self;
    /// The normalised value of a text frame.
    fn json(&self) -> Option<&Value>;
    /// `Some(code)` when this is the end of the socket.
    fn close_code(&self) -> Option<Option<u16>>;

    fn is_heartbeat_reply(&self) -> bool {
        matches!(self.json(), Some(v) if v["topic"] == "phoenix" && v["event"] == "phx_reply")
    }
}

/// A server text frame normalised to `{"topic","event","payload","ref","join_ref"}` (`join_ref` is
/// always null for 1.0.0, which never sends it); panics on a frame of the wrong shape for `vsn`.
pub fn normalise(vsn: Vsn, text: &str) -> Value {
    let v: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("server text frame is not JSON ({e}): {text:?}"));
    match vsn {
        Vsn::V1 => {
            let obj = v.as_object().unwrap_or_else(|| panic!("1.0.0 frame is not an object: {text}"));
            assert!(!obj.contains_key("join_ref"), "1.0.0 server frames never carry join_ref: {text}");
            for k in ["topic", "event", "payload", "ref"] {
                assert!(obj.contains_key(k), "1.0.0 frame lacks `{k}`: {text}");
            }
            assert_eq!(obj.len(), 4, "1.0.0 frame has extra keys: {text}");
            json!({"topic": v["topic"], "event": v["event"], "payload": v["payload"], "ref": v["ref"],
                   "join_ref": null})
        }
        Vsn::V2 => {
            let arr = v.as_array().unwrap_or_else(|| panic!("2.0.0 frame is not an array: {text}"));
            assert_eq!(arr.len(), 5, "2.0.0 frame must have 5 elements: {text}");
            json!({"topic": arr[2], "event": arr[3], "payload": arr[4], "ref": arr[1], "join_ref": arr[0]})
        }
    }
}

pub struct Client<F> {
    ws: Ws,
    pub vsn: Vsn,
    next_ref: u64,
    /// Frames read while looking for something else; `recv` returns them first.
    pending: VecDeque<F>,
    closed: Option<Option<u16>>,
    /// Reason text of the close frame, once one arrived.
    pub close_reason: Option<String>,
    /// How the socket ended when it was not a close frame (`EOF` or the read error).
    pub ended_by: Option<String>,
}

impl<F: WireFrame> Client<F> {
    /// Connects (the handshake must complete within 10 s).
    pub async fn connect_req(req: impl IntoClientRequest + Unpin, vsn: Vsn) -> Result<Self, WsError> {
        let (ws, _resp) =
            tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(req))
                .await
                .expect("websocket handshake timed out")?;
        Ok(Client {
            ws,
            vsn,
            next_ref: 0,
            pending: VecDeque::new(),
            closed: None,
            close_reason: None,
            ended_by: None,
        })
    }

    pub fn make_ref(&mut self) -> String {
        self.next_ref += 1;
        self.next_ref.to_string()
    }

    // ---- sending

    /// Sends without panicking on a socket error (for frames the server may refuse by closing);
    /// a send that cannot complete within 10 s still panics.
    pub async fn try_send(&mut self, msg: Message) -> Result<(), WsError> {
        tokio::time::timeout(Duration::from_secs(10), self.ws.send(msg))
            .await
            .unwrap_or_else(|_| panic!("{}: send blocked for 10 s", self.vsn))
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        let vsn = self.vsn;
        self.try_send(Message::text(text.into()))
            .await
            .unwrap_or_else(|e| panic!("{vsn}: send text frame failed: {e}"));
    }

    /// The text frame of a push in this client's serializer.
    pub fn encode(
        &self,
        join_ref: Option<&str>,
        msg_ref: Option<&str>,
        topic: &str,
        event: &str,
        payload: &Value,
    ) -> String {
        match self.vsn {
            Vsn::V1 => json!({"topic": topic, "event": event, "payload": payload, "ref": msg_ref, "join_ref": join_ref})
                .to_string(),
            Vsn::V2 => json!([join_ref, msg_ref, topic, event, payload]).to_string(),
        }
    }

    /// Sends a push with a fresh ref; returns the ref.
    pub async fn push(
        &mut self,
        join_ref: Option<&str>,
        topic: &str,
        event: &str,
        payload: &Value,
    ) -> String {
        let r = self.make_ref();
        let text = self.encode(join_ref, Some(&r), topic, event, payload);
        self.send_text(text).await;
        r
    }

    /// Sends `phx_join` (ref == join_ref) with `payload`; returns the join ref without waiting.
    pub async fn send_join(&mut self, topic: &str, payload: &Value) -> String {
        let r = self.make_ref();
        let text = self.encode(Some(&r), Some(&r), topic, "phx_join", payload);
        self.send_text(text).await;
        r
    }

    // ---- receiving

    /// The next frame (queued ones first), or `None` after `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Option<F> {
        if let Some(f) = self.pending.pop_front() {
            return Some(f);
        }
        self.read_socket(timeout).await
    }

    /// The next frame from the socket itself, or `None` after `timeout`.
    async fn read_socket(&mut self, timeout: Duration) -> Option<F> {
        if let Some(code) = self.closed {
            return Some(F::from_close(code));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()?;
            let msg = match next {
                Some(Ok(m)) => m,
                end => {
                    self.ended_by = Some(match end {
                        Some(Err(e)) => e.to_string(),
                        _ => "EOF".to_owned(),
                    });
                    self.closed = Some(None);
                    return Some(F::from_close(None));
                }
            };
            match msg {
                Message::Text(t) => return Some(F::from_text(normalise(self.vsn, t.as_str()), t.as_str())),
                Message::Binary(b) => return Some(F::from_binary(self.vsn, b)),
                Message::Close(cf) => {
                    self.close_reason = cf.as_ref().map(|c| c.reason.as_str().to_owned());
                    let code = cf.map(|c| u16::from(c.code));
                    self.closed = Some(code);
                    return Some(F::from_close(code));
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            }
        }
    }

    /// The next frame that is not a heartbeat reply; panics after `timeout`.
    pub async fn next_frame(&mut self, timeout: Duration) -> F {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                Some(f) if f.is_heartbeat_reply() => continue,
                Some(f) => return f,
                None => panic!("{}: nothing received within {timeout:?}", self.vsn),
            }
        }
    }

    /// Waits for the `phx_reply` with this ref; other frames stay queued in order.
    pub async fn expect_reply(&mut self, msg_ref: &str, timeout: Duration) -> Value {
        let is_reply =
            |f: &F| matches!(f.json(), Some(v) if v["event"] == "phx_reply" && v["ref"] == msg_ref);
        if let Some(pos) = self.pending.iter().position(is_reply) {
            return self.pending.remove(pos).and_then(|f| f.json().cloned()).expect("queued reply");
        }
        let deadline = Instant::now() + timeout;
        let mut kept = Vec::new();
        let found = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(f) = self.read_socket(left).await else { break None };
            if is_reply(&f) {
                break f.json().cloned();
            }
            if let Some(code) = f.close_code() {
                panic!(
                    "{}: socket closed ({code:?}) while waiting for reply {msg_ref}; got {kept:?}",
                    self.vsn
                )
            }
            kept.push(f);
        };
        self.pending.extend(kept.iter().cloned());
        found.unwrap_or_else(|| {
            panic!("{}: no reply to ref {msg_ref} within {timeout:?}; got {kept:?}", self.vsn)
        })
    }

    /// Asserts that nothing but heartbeat replies arrives for `dur`.
    pub async fn expect_silence(&mut self, dur: Duration) {
        let deadline = Instant::now() + dur;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.recv(left).await {
                None => return,
                Some(f) if f.is_heartbeat_reply() => continue,
                Some(f) => panic!("{}: expected silence, got {f:?}", self.vsn),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }
}

/// One frame from the server, for suites that only receive text (JSON) frames.
#[derive(Debug, Clone)]
pub enum JsonFrame {
    /// A text frame normalised to `{"topic","event","payload","ref","join_ref"}` (`join_ref` null for
    /// 1.0.0), and its raw text.
    Text(Value, String),
    /// The server closed the socket (close code if a close frame was received).
    Close(Option<u16>),
}

impl JsonFrame {
    pub fn value(&self) -> Option<&Value> {
        match self {
            JsonFrame::Text(v, _) => Some(v),
            JsonFrame::Close(_) => None,
        }
    }

    pub fn is_event(&self, event: &str) -> bool {
        matches!(self, JsonFrame::Text(v, _) if v["event"] == event)
    }
}

impl WireFrame for JsonFrame {
    fn from_text(value: Value, raw: &str) -> Self {
        JsonFrame::Text(value, raw.to_owned())
    }

    /// A 2.0.0 user broadcast (kind 4) with a JSON payload, as realtime-js presents it: event
    /// `broadcast` with `{type, event, payload, meta}`; anything else fails the test.
    fn from_binary(vsn: Vsn, b: Bytes) -> Self {
        let frame = realtime_proto::binary::decode_server_frame(b.clone())
            .unwrap_or_else(|e| panic!("{vsn}: unexpected binary frame {b:?}: {e}"));
        assert_eq!(
            frame.encoding,
            realtime_proto::binary::BinaryEncoding::Json,
            "{vsn}: raw binary frame {b:?}"
        );
        let payload: Value = serde_json::from_slice(&frame.data).expect("JSON payload of a kind-4 frame");
        let mut inner = json!({"type": "broadcast", "event": frame.event, "payload": payload});
        if !frame.metadata.is_empty() {
            inner["meta"] = serde_json::from_slice(&frame.metadata).expect("JSON metadata of a kind-4 frame");
        }
        let value = json!({"topic": frame.topic, "event": "broadcast", "payload": inner, "ref": null, "join_ref": null});
        let raw = value.to_string();
        JsonFrame::Text(value, raw)
    }

    fn from_close(code: Option<u16>) -> Self {
        JsonFrame::Close(code)
    }

    fn json(&self) -> Option<&Value> {
        self.value()
    }

    fn close_code(&self) -> Option<Option<u16>> {
        match self {
            JsonFrame::Close(code) => Some(*code),
            JsonFrame::Text(..) => None,
        }
    }
}
