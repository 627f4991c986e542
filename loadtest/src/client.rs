//! A thin realtime client over tokio-tungstenite: connect, join, heartbeat, broadcast, receive.
//!
//! One [`Client`] is one WebSocket. Its socket buffers are kept small (4 KiB read buffer instead of
//! tungstenite's 128 KiB) because a worker process holds thousands of them. Every failure is a
//! [`ClientError`] whose [`ClientError::kind`] is the label the report counts it under.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use realtime_proto::binary::BinaryError;
use realtime_proto::Vsn;
use thiserror::Error;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use crate::frames::{self, Event};

/// realtime-js's heartbeat period (PROTOCOL.md §2.3); the server closes sockets idle for 60 s.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(25);

/// Bounded time for a close frame to go out when a client shuts down.
pub const CLOSE_BUDGET: Duration = Duration::from_millis(500);

/// Why a connection failed; [`ClientError::kind`] groups them for the report.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("bad target: {0}")]
    BadTarget(String),
    #[error("connect refused")]
    ConnectRefused,
    #[error("connect error: {0}")]
    ConnectIo(std::io::Error),
    #[error("connect timeout")]
    ConnectTimeout,
    #[error("http status {0}")]
    HttpStatus(u16),
    #[error("handshake error: {0}")]
    Handshake(tungstenite::Error),
    #[error("join error: {0}")]
    JoinRejected(String),
    #[error("join timeout")]
    JoinTimeout,
    #[error("closed (code {code:?})")]
    Closed { code: Option<u16> },
    #[error("send error: {0}")]
    Send(tungstenite::Error),
    #[error("encode error: {0}")]
    Encode(#[from] BinaryError),
}

impl ClientError {
    /// The report label: stable across runs, detailed enough to act on.
    pub fn kind(&self) -> String {
        match self {
            ClientError::BadTarget(_) => "bad target".into(),
            ClientError::ConnectRefused => "connect refused".into(),
            ClientError::ConnectIo(e) => format!("connect error: {:?}", e.kind()),
            ClientError::ConnectTimeout => "connect timeout".into(),
            ClientError::HttpStatus(status) => format!("http status {status}"),
            ClientError::Handshake(tungstenite::Error::Io(e)) => format!("handshake io: {:?}", e.kind()),
            ClientError::Handshake(_) => "handshake error".into(),
            ClientError::JoinRejected(reason) => format!("join error: {reason}"),
            ClientError::JoinTimeout => "join timeout".into(),
            ClientError::Closed { code } => closed_kind("closed", *code),
            ClientError::Send(_) => "send error".into(),
            ClientError::Encode(_) => "encode error".into(),
        }
    }
}

/// `"<what> (1001)"` or `"<what> (no close frame)"`.
pub fn closed_kind(what: &str, code: Option<u16>) -> String {
    match code {
        Some(code) => format!("{what} ({code})"),
        None => format!("{what} (no close frame)"),
    }
}

/// Where and how to connect, resolved once and shared by every client of a process.
#[derive(Debug, Clone)]
pub struct Endpoint {
    url: String,
    addr: SocketAddr,
    vsn: Vsn,
    token: String,
}

impl Endpoint {
    /// Adds `apikey` and `vsn` to `target` (a `ws://` URL) and resolves its host.
    pub async fn resolve(target: &str, token: &str, vsn: Vsn) -> Result<Endpoint, ClientError> {
        let sep = if target.contains('?') { '&' } else { '?' };
        let url = format!("{target}{sep}apikey={token}&vsn={vsn}");
        let request =
            url.as_str().into_client_request().map_err(|e| ClientError::BadTarget(e.to_string()))?;
        let uri = request.uri();
        if uri.scheme_str() != Some("ws") {
            return Err(ClientError::BadTarget("only ws:// targets are supported".into()));
        }
        let host = uri.host().ok_or_else(|| ClientError::BadTarget("no host".into()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| ClientError::BadTarget(format!("cannot resolve {host}: {e}")))?
            .next()
            .ok_or_else(|| ClientError::BadTarget(format!("{host} has no address")))?;
        Ok(Endpoint { url, addr, vsn, token: token.to_owned() })
    }

    /// The resolved server address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token clients of this endpoint present (for join payloads built by the caller).
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// TCP connect to `addr` (with `SO_RCVBUF` set to `recv_buffer` bytes first, when given) and the
/// WebSocket handshake for `url`, both before `deadline`; small socket buffers, Nagle off. Shared by
/// [`Client`] and the clients of other servers' protocols ([`crate::peer_client`]).
pub async fn connect_ws(
    addr: SocketAddr,
    url: &str,
    deadline: Instant,
    recv_buffer: Option<u32>,
) -> Result<WebSocketStream<TcpStream>, ClientError> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() };
    let socket = socket.map_err(ClientError::ConnectIo)?;
    if let Some(bytes) = recv_buffer {
        socket.set_recv_buffer_size(bytes).map_err(ClientError::ConnectIo)?;
    }
    let stream = match timeout_at(deadline, socket.connect(addr)).await {
        Err(_) => return Err(ClientError::ConnectTimeout),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(ClientError::ConnectRefused)
        }
        Ok(Err(e)) => return Err(ClientError::ConnectIo(e)),
        Ok(Ok(stream)) => stream,
    };
    // Latency numbers should not include Nagle delays; failure to set it is harmless.
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default().read_buffer_size(4 * 1024).write_buffer_size(0);
    let handshake = tokio_tungstenite::client_async_with_config(url, stream, Some(config));
    match timeout_at(deadline, handshake).await {
        Err(_) => Err(ClientError::ConnectTimeout),
        Ok(Err(tungstenite::Error::Http(response))) => {
            Err(ClientError::HttpStatus(response.status().as_u16()))
        }
        Ok(Err(e)) => Err(ClientError::Handshake(e)),
        Ok(Ok((ws, _response))) => Ok(ws),
    }
}

/// One open WebSocket.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    vsn: Vsn,
    token: String,
    next_ref: u64,
}

impl Client {
    /// TCP connect plus WebSocket handshake, both before `deadline`.
    pub async fn connect(endpoint: &Endpoint, deadline: Instant) -> Result<Client, ClientError> {
        Client::connect_with_recv_buffer(endpoint, deadline, None).await
    }

    /// [`Client::connect`] with the socket's `SO_RCVBUF` set to `recv_buffer` bytes before connecting
    /// (so the TCP window is small from the start), when given.
    pub async fn connect_with_recv_buffer(
        endpoint: &Endpoint,
        deadline: Instant,
        recv_buffer: Option<u32>,
    ) -> Result<Client, ClientError> {
        let ws = connect_ws(endpoint.addr, &endpoint.url, deadline, recv_buffer).await?;
        Ok(Client { ws, vsn: endpoint.vsn, token: endpoint.token.clone(), next_ref: 1 })
    }

    fn take_ref(&mut self) -> String {
        let r = self.next_ref;
        self.next_ref += 1;
        r.to_string()
    }

    async fn send(&mut self, message: Message) -> Result<(), ClientError> {
        self.ws.send(message).await.map_err(ClientError::Send)
    }

    /// Joins `topic` and waits for the `phx_reply` before `deadline`; returns the join ref.
    /// Frames for other pushes that arrive meanwhile are dropped.
    pub async fn join(&mut self, topic: &str, deadline: Instant) -> Result<String, ClientError> {
        let payload = frames::join_payload(&self.token);
        self.join_with_payload(topic, &payload, deadline).await
    }

    /// Joins `topic` as a private (RLS-authorised) or public channel.
    pub async fn join_channel(
        &mut self,
        topic: &str,
        private: bool,
        deadline: Instant,
    ) -> Result<String, ClientError> {
        let payload = frames::join_payload_private(&self.token, private);
        self.join_with_payload(topic, &payload, deadline).await
    }

    /// Joins `topic` with `postgres_changes` bindings (a JSON array) in the join config.
    pub async fn join_postgres_changes(
        &mut self,
        topic: &str,
        postgres_changes_json: &str,
        deadline: Instant,
    ) -> Result<String, ClientError> {
        let payload = frames::join_payload_with_postgres_changes(&self.token, postgres_changes_json);
        self.join_with_payload(topic, &payload, deadline).await
    }

    async fn join_with_payload(
        &mut self,
        topic: &str,
        payload: &str,
        deadline: Instant,
    ) -> Result<String, ClientError> {
        let join_ref = self.take_ref();
        let message = frames::join_with_payload(self.vsn, &join_ref, topic, payload);
        timeout_at(deadline, self.send(message)).await.map_err(|_| ClientError::JoinTimeout)??;
        loop {
            let event = timeout_at(deadline, self.recv()).await.map_err(|_| ClientError::JoinTimeout)?;
            match event {
                Event::Reply { msg_ref: Some(r), ok, response, .. } if r == join_ref => {
                    return if ok {
                        Ok(join_ref)
                    } else {
                        Err(ClientError::JoinRejected(frames::error_reason(&response)))
                    };
                }
                Event::Closed { code } => return Err(ClientError::Closed { code }),
                _ => {}
            }
        }
    }

    /// Sends `phx_join` for `topic` with presence on under `key`, without waiting for the reply (a
    /// caller that must not miss what the server pushes meanwhile reads the reply itself); returns the
    /// join ref.
    pub async fn send_presence_join(&mut self, topic: &str, key: &str) -> Result<String, ClientError> {
        let join_ref = self.take_ref();
        let payload = frames::join_payload_with_presence(&self.token, key);
        self.send(frames::join_with_payload(self.vsn, &join_ref, topic, &payload)).await?;
        Ok(join_ref)
    }

    /// Sends `phx_join` for `topic` with a ready JSON `payload` (e.g.
    /// [`frames::join_payload_with_presence_counts`]) without waiting for the reply; returns the join ref.
    pub async fn send_join(&mut self, topic: &str, payload: &str) -> Result<String, ClientError> {
        let join_ref = self.take_ref();
        self.send(frames::join_with_payload(self.vsn, &join_ref, topic, payload)).await?;
        Ok(join_ref)
    }

    /// Sends a presence `track` of the JSON object `meta` (or `untrack` for `None`); returns its ref.
    pub async fn send_presence(
        &mut self,
        topic: &str,
        join_ref: &str,
        meta: Option<&str>,
    ) -> Result<String, ClientError> {
        let msg_ref = self.take_ref();
        self.send(frames::presence(self.vsn, join_ref, &msg_ref, topic, meta)).await?;
        Ok(msg_ref)
    }

    /// Sends `phx_leave` for a joined topic; returns its ref.
    pub async fn send_leave(&mut self, topic: &str, join_ref: &str) -> Result<String, ClientError> {
        let msg_ref = self.take_ref();
        self.send(frames::leave(self.vsn, join_ref, &msg_ref, topic)).await?;
        Ok(msg_ref)
    }

    /// Sends a heartbeat; returns its ref.
    pub async fn heartbeat(&mut self) -> Result<String, ClientError> {
        let msg_ref = self.take_ref();
        self.send(frames::heartbeat(self.vsn, &msg_ref)).await?;
        Ok(msg_ref)
    }

    /// Broadcasts JSON `data` under user event `event` on a joined channel.
    pub async fn broadcast(
        &mut self,
        topic: &str,
        join_ref: &str,
        event: &str,
        data: &str,
    ) -> Result<(), ClientError> {
        let msg_ref = self.take_ref();
        let message = frames::broadcast(self.vsn, join_ref, &msg_ref, topic, event, data)?;
        self.send(message).await
    }

    /// The next event; [`Event::Closed`] once the socket is gone (and on every call after that).
    /// Cancel-safe: the only await is the stream's `next`.
    pub async fn recv(&mut self) -> Event {
        loop {
            match self.ws.next().await {
                None | Some(Err(_)) => return Event::Closed { code: None },
                Some(Ok(message)) => {
                    if let Some(event) = frames::parse(self.vsn, message) {
                        return event;
                    }
                }
            }
        }
    }

    /// The local (ephemeral) port of the connection, if the socket can tell.
    pub fn local_port(&self) -> Option<u16> {
        self.ws.get_ref().local_addr().ok().map(|a| a.port())
    }

    /// The next raw WebSocket message, or how the socket ended (`None` after a clean end). For callers
    /// that need what [`Client::recv`] folds away: close reasons and I/O error kinds.
    pub async fn next_message(&mut self) -> Option<Result<Message, tungstenite::Error>> {
        self.ws.next().await
    }

    /// Sends a close frame (bounded in time) and drops the socket.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(CLOSE_BUDGET, self.ws.close(None)).await;
    }
}
