//! One WebSocket speaking any [`Protocol`] of `compare`: connect, join the room (answering the
//! handshake frames the protocol needs), publish, and receive what the room delivers.
//!
//! [`PeerClient::recv`] only reads (cancel-safe), so a caller that `select!`s over it and a timer loses
//! nothing; frames the client must answer come back as [`PeerEvent::Reply`] for the caller to send.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::client::{closed_kind, connect_ws, ClientError, CLOSE_BUDGET};
use crate::payload::Stamp;
use crate::peer_protocol::{Conversation, Incoming};

/// What [`PeerClient::recv`] read.
#[derive(Debug)]
pub enum PeerEvent {
    Delivery(Stamp),
    /// A frame the caller must send back ([`PeerClient::send`]).
    Reply(String),
    /// The session is over (why); every later call returns this again or another `Ended`.
    Ended(String),
    /// A frame that is not a delivery (labelled for the error counts when it is a problem).
    Problem(&'static str),
    Other,
}

/// An open, joined connection.
pub struct PeerClient {
    ws: WebSocketStream<TcpStream>,
    conversation: Conversation,
}

impl PeerClient {
    /// Connects to `addr` (by `deadline`) and joins the conversation's room (by `join_deadline`).
    pub async fn connect(
        addr: SocketAddr,
        mut conversation: Conversation,
        deadline: Instant,
        join_deadline: Instant,
    ) -> Result<PeerClient, ClientError> {
        let url = format!("ws://{addr}{}", conversation.path());
        let ws = connect_ws(addr, &url, deadline, None).await?;
        let opening = conversation.opening();
        let mut client = PeerClient { ws, conversation };
        timeout_at(join_deadline, async {
            for frame in opening {
                client.send(frame).await?;
            }
            loop {
                let Some(message) = client.ws.next().await else {
                    return Err(ClientError::Closed { code: None });
                };
                match message {
                    Ok(Message::Text(text)) => match client.conversation.on_text(text.as_str()) {
                        Incoming::Joined => return Ok(()),
                        Incoming::Refused(reason) => return Err(ClientError::JoinRejected(reason)),
                        Incoming::Reply(frame) => client.send(frame).await?,
                        Incoming::Ended(_) => return Err(ClientError::Closed { code: None }),
                        _ => {}
                    },
                    Ok(Message::Close(frame)) => {
                        return Err(ClientError::Closed { code: frame.map(|f| u16::from(f.code)) })
                    }
                    Ok(_) => {}
                    Err(_) => return Err(ClientError::Closed { code: None }),
                }
            }
        })
        .await
        .map_err(|_| ClientError::JoinTimeout)??;
        Ok(client)
    }

    /// Sends one text frame.
    pub async fn send(&mut self, frame: String) -> Result<(), ClientError> {
        self.ws.send(Message::text(frame)).await.map_err(ClientError::Send)
    }

    /// Publishes JSON `data` to the room.
    pub async fn publish(&mut self, data: &str) -> Result<(), ClientError> {
        let frame = self.conversation.publish(data);
        self.send(frame).await
    }

    /// Sends the protocol's heartbeat, if it has one.
    pub async fn heartbeat(&mut self) -> Result<(), ClientError> {
        match self.conversation.heartbeat() {
            Some(frame) => self.send(frame).await,
            None => Ok(()),
        }
    }

    /// The next meaningful frame. Cancel-safe: the only await is the stream's `next`.
    pub async fn recv(&mut self) -> PeerEvent {
        match self.ws.next().await {
            None => PeerEvent::Ended("closed (eof)".into()),
            Some(Err(e)) => PeerEvent::Ended(format!("read error: {}", error_kind(&e))),
            Some(Ok(Message::Close(frame))) => {
                PeerEvent::Ended(closed_kind("closed", frame.map(|f| u16::from(f.code))))
            }
            Some(Ok(Message::Text(text))) => match self.conversation.on_text(text.as_str()) {
                Incoming::Delivery(stamp) => PeerEvent::Delivery(stamp),
                Incoming::Reply(frame) => PeerEvent::Reply(frame),
                Incoming::Ended(why) => PeerEvent::Ended(why),
                Incoming::BadDelivery => PeerEvent::Problem("message without a stamp"),
                Incoming::Undecodable => PeerEvent::Problem("undecodable frame"),
                Incoming::Refused(_) | Incoming::Joined | Incoming::Ignored => PeerEvent::Other,
            },
            Some(Ok(_)) => PeerEvent::Other,
        }
    }

    /// Sends a close frame (bounded in time) and drops the socket.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(CLOSE_BUDGET, self.ws.close(None)).await;
    }
}

fn error_kind(e: &tokio_tungstenite::tungstenite::Error) -> String {
    match e {
        tokio_tungstenite::tungstenite::Error::Io(io) => format!("{:?}", io.kind()),
        other => format!("{other}").chars().take(60).collect(),
    }
}
