//! What a webhook carries: the lifecycle [`Event`]s, the [`DisconnectReason`] of a socket, and the
//! request body (`{"events": [...]}`). Pure data: nothing here sends anything.
//!
//! `at` is milliseconds since the Unix epoch (UTC) when the node produced the event: an integer that
//! every language reads without a date parser, and that orders events from one node.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::close::Close;

/// Which lifecycle event this is; the `name` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Name {
    #[serde(rename = "socket.connect")]
    SocketConnect,
    #[serde(rename = "socket.disconnect")]
    SocketDisconnect,
    #[serde(rename = "user.online")]
    UserOnline,
    #[serde(rename = "user.offline")]
    UserOffline,
}

/// Why a socket ended; the `reason` field of `socket.disconnect` (snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectReason {
    /// The client sent a close frame (`code` is the client's).
    ClientClosed,
    /// The connection ended without a close frame (network error, client process killed).
    ConnectionLost,
    /// Nothing (not even a heartbeat) arrived for `REALTIME_IDLE_TIMEOUT_MS`.
    HeartbeatTimeout,
    /// The node is draining (SIGTERM): 1012, reconnect to another node.
    ServerShutdown,
    /// The client did not read fast enough (outbox full, write timeout, flush deadline).
    SlowConsumer,
    /// Any other close by the server: protocol error, frame too large, ref over budget, join rate.
    PolicyViolation,
}

/// The close of one socket: its reason, the close code sent or received, and the server's message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disconnect {
    pub reason: DisconnectReason,
    /// `null` when no close frame was exchanged.
    pub code: Option<u16>,
    /// The close frame's reason text from the server (empty for a client close).
    pub message: String,
}

impl Disconnect {
    /// Classifies how a socket ended: `client_code` when the client sent a close frame; else the close
    /// the server queued on the outbox (first one wins), if any; else the connection was lost.
    pub fn classify(client_code: Option<u16>, server_close: Option<Close>) -> Disconnect {
        if let Some(code) = client_code {
            return Disconnect {
                reason: DisconnectReason::ClientClosed,
                code: Some(code),
                message: String::new(),
            };
        }
        let Some(close) = server_close else {
            return Disconnect {
                reason: DisconnectReason::ConnectionLost,
                code: None,
                message: String::new(),
            };
        };
        let reason = match close {
            Close::Shutdown => DisconnectReason::ServerShutdown,
            Close::IdleTimeout => DisconnectReason::HeartbeatTimeout,
            Close::SlowConsumer(_) => DisconnectReason::SlowConsumer,
            // Not seen here in practice: the client's code arrives first as `client_code`, and `Ended`
            // is queued only after the socket reported how it ended.
            Close::Echo { .. } | Close::Ended => DisconnectReason::PolicyViolation,
            Close::JoinFlood
            | Close::OrphanContinuation
            | Close::ProtocolError
            | Close::RefTooLong { .. }
            | Close::FrameTooLarge
            | Close::MessageTooLarge => DisconnectReason::PolicyViolation,
        };
        Disconnect { reason, code: Some(close.code()), message: close.reason().into_owned() }
    }
}

/// One lifecycle event as the receiver reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Unique per event (UUID v4): delivery is at least once, so receivers deduplicate on it.
    pub id: String,
    pub name: Name,
    /// Unix time in milliseconds when the node produced the event.
    pub at: u64,
    /// The node (`REALTIME_NODE_ID`) that produced it.
    pub node: String,
    /// The JWT `sub` (`null` for a socket whose token has none; user events always have one).
    pub user_id: Option<String>,
    /// The socket's id on `node` (unique per node process); `null` for user events.
    pub socket_id: Option<u64>,
    /// `socket.disconnect` only: `reason`, `code`, `message`.
    #[serde(flatten)]
    pub disconnect: Option<Disconnect>,
}

impl Event {
    fn new(name: Name, node: &str, user_id: Option<&str>, socket_id: Option<u64>) -> Event {
        Event {
            id: uuid::Uuid::new_v4().to_string(),
            name,
            at: unix_ms(),
            node: node.to_owned(),
            user_id: user_id.map(str::to_owned),
            socket_id,
            disconnect: None,
        }
    }

    pub fn connect(node: &str, user_id: Option<&str>, socket_id: u64) -> Event {
        Event::new(Name::SocketConnect, node, user_id, Some(socket_id))
    }

    pub fn disconnect(node: &str, user_id: Option<&str>, socket_id: u64, disconnect: Disconnect) -> Event {
        Event {
            disconnect: Some(disconnect),
            ..Event::new(Name::SocketDisconnect, node, user_id, Some(socket_id))
        }
    }

    pub fn user(name: Name, node: &str, user_id: &str) -> Event {
        Event::new(name, node, Some(user_id), None)
    }
}

/// The request body: `{"events": [...]}`.
pub fn body(events: &[Event]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        events: &'a [Event],
    }
    serde_json::to_vec(&Body { events }).expect("events serialize to JSON")
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::close::SlowCause;

    #[test]
    fn close_reasons_are_classified() {
        let reason = |client, server| Disconnect::classify(client, server).reason;
        assert_eq!(reason(Some(1000), None), DisconnectReason::ClientClosed);
        // The client's close wins over the echo the server queued.
        assert_eq!(reason(Some(4001), Some(Close::Echo { code: 4001 })), DisconnectReason::ClientClosed);
        assert_eq!(reason(None, None), DisconnectReason::ConnectionLost);
        assert_eq!(reason(None, Some(Close::IdleTimeout)), DisconnectReason::HeartbeatTimeout);
        assert_eq!(reason(None, Some(Close::Shutdown)), DisconnectReason::ServerShutdown);
        for cause in SlowCause::ALL {
            assert_eq!(reason(None, Some(Close::SlowConsumer(cause))), DisconnectReason::SlowConsumer);
        }
        for close in [Close::RefTooLong { max: 64 }, Close::ProtocolError, Close::JoinFlood] {
            assert_eq!(reason(None, Some(close)), DisconnectReason::PolicyViolation, "{close:?}");
        }
        let d = Disconnect::classify(None, Some(Close::FrameTooLarge));
        assert_eq!((d.code, d.message.as_str()), (Some(1009), "frame too large"));
    }

    #[test]
    fn events_serialize_to_the_documented_shape() {
        let close = Disconnect::classify(None, Some(Close::IdleTimeout));
        let events = [
            Event::connect("n1", Some("u1"), 7),
            Event::disconnect("n1", None, 7, close),
            Event::user(Name::UserOffline, "n1", "u1"),
        ];
        let v: Value = serde_json::from_slice(&body(&events)).unwrap();
        let e = &v["events"];
        assert_eq!(e.as_array().unwrap().len(), 3);
        assert_eq!(e[0]["name"], "socket.connect");
        assert_eq!(
            (&e[0]["user_id"], &e[0]["socket_id"], &e[0]["node"]),
            (&json!("u1"), &json!(7), &json!("n1"))
        );
        assert!(e[0].get("reason").is_none());
        assert_eq!(e[1]["name"], "socket.disconnect");
        assert_eq!(e[1]["user_id"], Value::Null);
        assert_eq!((&e[1]["reason"], &e[1]["code"]), (&json!("heartbeat_timeout"), &json!(1000)));
        assert_eq!(e[1]["message"], "idle timeout");
        assert_eq!((&e[2]["name"], &e[2]["socket_id"]), (&json!("user.offline"), &Value::Null));
        assert!(e[2]["at"].as_u64().unwrap() > 1_600_000_000_000, "unix ms");
        assert_ne!(e[0]["id"], e[2]["id"]);
    }
}
