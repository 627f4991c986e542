//! Shared fixtures: the server process, a WebSocket client that speaks both serializers, an HTTP
//! helper and JWT builders (valid and hostile).
//!
//! Every wait here is bounded. Each test starts its own server, so tests run in parallel.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey};
use realtime_proto::binary::{self, BinaryEncoding, ServerUserBroadcast};
use realtime_proto::Vsn;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

pub use crate::support::jwt::{now, sign};
use crate::support::process::{self, KillOnDrop};
use crate::support::ws::{self, WireFrame};
pub use crate::support::VSNS;

/// Default bound for anything that is expected to happen.
pub const T: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(600);

// ---------------------------------------------------------------------------------------------------
// Server process

/// A running `realtime` process bound to an ephemeral port.
pub struct Server {
    pub port: u16,
    pub secret: String,
    pub proc: KillOnDrop,
}

impl Server {
    /// Starts the server with the base test flags plus `extra` and waits (≤ 15 s) for its
    /// `realtime listening on http://127.0.0.1:<PORT>` line.
    pub fn start(extra: &[&str]) -> Server {
        Self::start_with_env(extra, &[])
    }

    /// Like [`Server::start`], with extra environment variables for the process.
    pub fn start_with_env(extra: &[&str], envs: &[(&str, &str)]) -> Server {
        Self::start_with_files(extra, envs, None)
    }

    /// Like [`Server::start_with_env`]; with `files`, under that open-files limit (soft and hard).
    pub fn start_with_files(extra: &[&str], envs: &[(&str, &str)], files: Option<u64>) -> Server {
        let secret = format!("it-secret-{}", uuid::Uuid::new_v4().simple());
        let log = std::env::temp_dir().join(format!("realtime-it-{}.log", uuid::Uuid::new_v4().simple()));
        // Only what the test asks for: no inherited settings, and no database (Postgres changes and
        // private channels are refused as the contract says).
        let (proc, lines) = process::spawn_with_files(&secret, extra, envs, log, 60, files);
        let port = process::wait_listening(&lines, Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("server did not print its listening line within 15 s: {e}"));
        Server { port, secret, proc }
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// `ws://…/socket/websocket?apikey=<valid>&vsn=<vsn>`.
    pub fn ws_url(&self, vsn: Vsn) -> String {
        self.ws_url_at("/socket/websocket", &format!("apikey={}&vsn={vsn}", self.token()))
    }

    pub fn ws_url_at(&self, path: &str, query: &str) -> String {
        format!("ws://127.0.0.1:{}{}?{}", self.port, path, query)
    }

    /// A valid token (role `authenticated`, one hour).
    pub fn token(&self) -> String {
        token(&self.secret, 3600)
    }

    pub async fn client(&self, vsn: Vsn) -> Client {
        Client::connect(&self.ws_url(vsn), vsn).await.unwrap_or_else(|e| panic!("connect {vsn}: {e}"))
    }

    /// Sends SIGTERM with `kill -TERM <pid>`.
    pub fn sigterm(&self) {
        let status = self.proc.sigterm().expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed: {status}");
    }
}

// ---------------------------------------------------------------------------------------------------
// HTTP

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(T).build().expect("reqwest client")
}

/// Status, content-type and body of a response.
pub async fn read_response(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body = resp.text().await.expect("response body");
    (status, ct, body)
}

/// A WebSocket upgrade attempted with plain HTTP, so a refusal's status and body can be read.
pub async fn raw_upgrade(url: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut req = http()
        .get(url)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    read_response(resp).await
}

pub fn parse_json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {body:?}"))
}

// ---------------------------------------------------------------------------------------------------
// JWT (`now` and `sign` are the shared ones)

/// A valid token: role `authenticated`, `exp` = now + `ttl_secs`.
pub fn token(secret: &str, ttl_secs: i64) -> String {
    sign(secret, &json!({"role": "authenticated", "sub": "it-user", "iat": now(), "exp": now() + ttl_secs}))
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Tokens a server must refuse, with the message of PROTOCOL §1.3 each one gets at the handshake.
pub mod hostile {
    use super::*;

    /// `alg: none`, empty signature.
    pub fn alg_none() -> String {
        let claims = json!({"role": "authenticated", "exp": now() + 3600});
        format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims))
    }

    /// Header says RS256 but the signature is HMAC-SHA256 with the shared secret (alg confusion).
    pub fn rs256_signed_with_hmac(secret: &str) -> String {
        let claims = json!({"role": "authenticated", "exp": now() + 3600});
        let msg = format!("{}.{}", b64(&json!({"alg": "RS256", "typ": "JWT"})), b64(&claims));
        let sig = jsonwebtoken::crypto::sign(
            msg.as_bytes(),
            &EncodingKey::from_secret(secret.as_bytes()),
            Algorithm::HS256,
        )
        .expect("hmac");
        format!("{msg}.{sig}")
    }

    pub fn wrong_secret() -> String {
        token("definitely-not-the-server-secret-0123456789", 3600)
    }

    pub fn expired(secret: &str) -> String {
        sign(secret, &json!({"role": "authenticated", "exp": now() - 120}))
    }

    pub fn missing_exp(secret: &str) -> String {
        sign(secret, &json!({"role": "authenticated"}))
    }

    pub fn missing_role(secret: &str) -> String {
        sign(secret, &json!({"exp": now() + 3600}))
    }

    pub fn not_a_jwt() -> String {
        "this-is-not-a-jwt".to_owned()
    }

    /// Every hostile token with the exact handshake message it must produce.
    pub fn all(secret: &str) -> Vec<(&'static str, String, &'static str)> {
        const SIGNER: &str = "Failed to generate JWT signer, check your JWT secret or JWKS configuration";
        const CLAIMS: &str = "Fields `role` and `exp` are required in JWT";
        const NOT_JWT: &str = "The token provided is not a valid JWT";
        vec![
            ("alg none", alg_none(), SIGNER),
            ("RS256 header, HMAC signature", rs256_signed_with_hmac(secret), SIGNER),
            ("wrong secret", wrong_secret(), "Failed to validate JWT signature"),
            ("expired", expired(secret), "Token has expired"),
            ("missing exp", missing_exp(secret), CLAIMS),
            ("missing role", missing_role(secret), CLAIMS),
            ("not a JWT", not_a_jwt(), NOT_JWT),
            ("three dots of garbage", "abc.def.ghi".to_owned(), NOT_JWT),
            ("opaque sb_ key", "sb_publishable_abcdefghijklmnop".to_owned(), NOT_JWT),
        ]
    }
}

// ---------------------------------------------------------------------------------------------------
// Join configs

/// A realtime-js style join payload.
pub fn join_payload(config: Value) -> Value {
    json!({ "config": config })
}

/// A full realtime-js config with broadcast `self`/`ack` and presence settings.
pub fn config(self_: bool, ack: bool, presence_key: &str, presence_enabled: bool) -> Value {
    json!({
        "broadcast": {"ack": ack, "self": self_},
        "presence": {"key": presence_key, "enabled": presence_enabled},
        "postgres_changes": [],
        "private": false
    })
}

/// realtime-js defaults.
pub fn default_config() -> Value {
    config(false, false, "", false)
}

// ---------------------------------------------------------------------------------------------------
// WebSocket client

/// One frame from the server.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A text frame, normalised to `{"topic","event","payload","ref","join_ref"}` (`join_ref` is always
    /// null for 1.0.0, which never sends it).
    Text(Value),
    /// A kind-4 binary frame.
    Binary(ServerUserBroadcast),
    /// The server closed the socket (close code if a close frame was received).
    Close(Option<u16>),
}

impl Frame {
    pub fn text(&self) -> Option<&Value> {
        match self {
            Frame::Text(v) => Some(v),
            _ => None,
        }
    }

    fn is_event(&self, event: &str) -> bool {
        matches!(self, Frame::Text(v) if v["event"] == event)
    }
}

impl WireFrame for Frame {
    fn from_text(value: Value, _raw: &str) -> Self {
        Frame::Text(value)
    }

    fn from_binary(vsn: Vsn, b: Bytes) -> Self {
        assert_eq!(vsn, Vsn::V2, "binary frame sent to a 1.0.0 socket: {b:?}");
        let decoded = binary::decode_server_frame(b.clone())
            .unwrap_or_else(|e| panic!("server sent a binary frame that is not kind 4 ({e}): {b:?}"));
        Frame::Binary(decoded)
    }

    fn from_close(code: Option<u16>) -> Self {
        Frame::Close(code)
    }

    fn json(&self) -> Option<&Value> {
        self.text()
    }

    fn close_code(&self) -> Option<Option<u16>> {
        match self {
            Frame::Close(code) => Some(*code),
            _ => None,
        }
    }
}

/// The shared client ([`ws::Client`]) with this suite's frames; the helpers below are the raw-frame
/// tests' own.
pub type Client = ws::Client<Frame>;

impl Client {
    pub async fn connect(url: &str, vsn: Vsn) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let req = url.into_client_request()?;
        Self::connect_req(req, vsn).await
    }

    /// Connects with extra request headers.
    pub async fn connect_with_headers(
        url: &str,
        vsn: Vsn,
        headers: &[(&'static str, &str)],
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let mut req = url.into_client_request()?;
        for (k, v) in headers {
            req.headers_mut().insert(*k, HeaderValue::from_str(v).expect("header value"));
        }
        Self::connect_req(req, vsn).await
    }

    // ---- sending

    pub async fn send_binary(&mut self, data: impl Into<Bytes>) {
        self.try_send(Message::binary(data.into())).await.expect("send binary frame");
    }

    /// A JSON broadcast push `{"type":"broadcast","event":E,"payload":P}` (text frame in both versions).
    pub async fn broadcast_json(
        &mut self,
        join_ref: &str,
        topic: &str,
        event: &str,
        payload: &Value,
    ) -> String {
        let body = json!({"type": "broadcast", "event": event, "payload": payload});
        self.push(Some(join_ref), topic, "broadcast", &body).await
    }

    /// A 2.0.0 binary kind-3 user broadcast push.
    pub async fn broadcast_binary(
        &mut self,
        join_ref: &str,
        topic: &str,
        event: &str,
        encoding: BinaryEncoding,
        data: &[u8],
    ) -> String {
        assert_eq!(self.vsn, Vsn::V2, "binary pushes are 2.0.0 only");
        let r = self.make_ref();
        let frame = binary::encode_user_broadcast_push(join_ref, &r, topic, event, encoding, data)
            .expect("encode kind-3");
        self.send_binary(frame).await;
        r
    }

    /// Sends a heartbeat and waits for its exact ok reply; other frames stay queued.
    pub async fn heartbeat(&mut self) {
        let r = self.push(None, "phoenix", "heartbeat", &json!({})).await;
        let reply = self.expect_reply(&r, T).await;
        assert_eq!(
            reply,
            json!({"topic": "phoenix", "event": "phx_reply", "payload": {"status": "ok", "response": {}},
                   "ref": r, "join_ref": null}),
            "heartbeat reply ({})",
            self.vsn
        );
    }

    /// Sends `phx_join` (ref == join_ref) and returns `(join_ref, reply)`; frames that arrive before
    /// the reply stay queued.
    pub async fn join(&mut self, topic: &str, payload: &Value) -> (String, Value) {
        let r = self.send_join(topic, payload).await;
        let reply = self.expect_reply(&r, T).await;
        (r, reply)
    }

    /// Joins and asserts the exact successful reply; returns the join ref.
    pub async fn join_ok(&mut self, topic: &str, config: Value) -> String {
        let (r, reply) = self.join(topic, &join_payload(config)).await;
        assert_eq!(
            reply["payload"],
            json!({"status": "ok", "response": {"postgres_changes": []}}),
            "join {topic} ({}) reply: {reply}",
            self.vsn
        );
        r
    }

    /// Joins and returns the error reason of a refused join (panics on anything else).
    pub async fn join_err(&mut self, topic: &str, config: Value) -> String {
        let (_r, reply) = self.join(topic, &join_payload(config)).await;
        assert_eq!(reply["payload"]["status"], "error", "join {topic} ({}) should fail: {reply}", self.vsn);
        reply["payload"]["response"]["reason"]
            .as_str()
            .unwrap_or_else(|| panic!("join error without a string reason: {reply}"))
            .to_owned()
    }

    // ---- receiving

    /// The next non-heartbeat frame must be a text frame with this event.
    pub async fn expect_event(&mut self, event: &str, timeout: Duration) -> Value {
        match self.next_frame(timeout).await {
            Frame::Text(v) if v["event"] == event => v,
            other => panic!("{}: expected event `{event}`, got {other:?}", self.vsn),
        }
    }

    /// Skips frames until a text frame with this event arrives (skipped frames are dropped).
    pub async fn wait_event(&mut self, event: &str, timeout: Duration) -> Value {
        let f = self.wait_for(timeout, &format!("event `{event}`"), |f| f.is_event(event)).await;
        f.text().cloned().expect("text frame")
    }

    /// Skips frames until one satisfies `pred`; a close ends the wait with a panic.
    pub async fn wait_for(&mut self, timeout: Duration, what: &str, pred: impl Fn(&Frame) -> bool) -> Frame {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                Some(f) if pred(&f) => return f,
                Some(Frame::Close(code)) => {
                    panic!(
                        "{}: socket closed ({code:?}) while waiting for {what}; skipped {skipped:?}",
                        self.vsn
                    )
                }
                Some(f) => skipped.push(f),
                None => panic!("{}: no {what} within {timeout:?}; skipped {skipped:?}", self.vsn),
            }
        }
    }

    /// Skips frames until the socket closes; returns the close code (None: no close frame).
    pub async fn expect_close(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left).await {
                Some(Frame::Close(code)) => return code,
                Some(f) => skipped.push(f),
                None => panic!("{}: socket not closed within {timeout:?}; got {skipped:?}", self.vsn),
            }
        }
    }

    /// Waits for a kind-4 binary frame.
    pub async fn expect_binary(&mut self, timeout: Duration) -> ServerUserBroadcast {
        match self.next_frame(timeout).await {
            Frame::Binary(b) => b,
            other => panic!("{}: expected a kind-4 binary frame, got {other:?}", self.vsn),
        }
    }
}

/// The `system` payload a channel gets before it is shut down.
pub fn system_error(message: &str, channel: &str) -> Value {
    json!({"extension": "system", "status": "error", "message": message, "channel": channel})
}

/// Asserts `msg` is a `system` error whose message starts with `prefix`, for channel `sub`.
pub fn assert_system_error_prefix(msg: &Value, prefix: &str, sub: &str) {
    assert_eq!(msg["event"], "system", "{msg}");
    let p = &msg["payload"];
    assert_eq!(p["extension"], "system", "{msg}");
    assert_eq!(p["status"], "error", "{msg}");
    assert_eq!(p["channel"], sub, "{msg}");
    let m = p["message"].as_str().unwrap_or_else(|| panic!("system message not a string: {msg}"));
    assert!(m.starts_with(prefix), "system message {m:?} should start with {prefix:?}");
}

/// Asserts a `phx_close` for `topic` carrying `join_ref` (as `ref`, and as `join_ref` for 2.0.0).
pub fn assert_phx_close(vsn: Vsn, msg: &Value, topic: &str, join_ref: &str) {
    let want_join_ref = if vsn == Vsn::V2 { json!(join_ref) } else { Value::Null };
    assert_eq!(
        msg,
        &json!({"topic": topic, "event": "phx_close", "payload": {}, "ref": join_ref, "join_ref": want_join_ref}),
        "phx_close ({vsn})"
    );
}

/// Checks a pair of clients in a side channel still relay a broadcast (the node is healthy).
pub struct Observer {
    sender: Client,
    sender_ref: String,
    receiver: Client,
    topic: String,
    n: u32,
}

impl Observer {
    pub async fn new(server: &Server) -> Observer {
        let topic = format!("realtime:observer-{}", uuid::Uuid::new_v4().simple());
        let mut receiver = server.client(Vsn::V2).await;
        receiver.join_ok(&topic, default_config()).await;
        let mut sender = server.client(Vsn::V1).await;
        let sender_ref = sender.join_ok(&topic, default_config()).await;
        Observer { sender, sender_ref, receiver, topic, n: 0 }
    }

    pub async fn check(&mut self, after: &str) {
        self.n += 1;
        let payload = json!({"n": self.n});
        self.sender.broadcast_json(&self.sender_ref, &self.topic, "obs", &payload).await;
        let f = self
            .receiver
            .wait_for(T, &format!("observer broadcast after {after}"), |f| f.is_event("broadcast"))
            .await;
        assert_eq!(
            f.text().expect("text")["payload"],
            json!({"type": "broadcast", "event": "obs", "payload": payload}),
            "observer broadcast after {after}"
        );
    }
}

/// A unique sub-topic for a test.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}
