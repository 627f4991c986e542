//! The wire protocols of the servers `compare` measures side by side, as pure frame encoding and
//! parsing (no I/O, so each is unit-tested here): [`phoenix`] (this server: Phoenix channels, the
//! 1.0.0 JSON serializer), [`plain_json`] (the FastAPI peer's own JSON messages, which the
//! tokio-fanout peer speaks too) and [`socketio`] (Socket.IO 4 over a raw WebSocket, i.e. Engine.IO v4
//! packets: the Node and the socketioxide peers).
//!
//! A [`Conversation`] is one connection's side of a protocol: the URL path to open, the frames to send
//! once open, how to publish to its room, and what each server frame means ([`Incoming`]), including
//! the frames the client must answer (Socket.IO's handshake and pings).

pub mod phoenix;
pub mod plain_json;
pub mod socketio;

use crate::payload::Stamp;

/// Which protocol a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Phoenix channels (this server), `vsn=1.0.0`.
    Phoenix,
    /// The FastAPI and tokio-fanout peers' `{"type":…}` JSON messages, one room per URL path.
    PlainJson,
    /// Socket.IO 4 (Engine.IO v4), WebSocket transport only: the Node and socketioxide peers.
    SocketIo,
}

/// What one text frame from the server means to the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A published message reached this member of the room.
    Delivery(Stamp),
    /// A message without a readable stamp.
    BadDelivery,
    /// The room is joined.
    Joined,
    /// The join was refused (the reason).
    Refused(String),
    /// The client must send this frame back (a pong, the next handshake step).
    Reply(String),
    /// The server ended the session or the channel (why).
    Ended(String),
    /// Anything else (replies to heartbeats and publishes, other events).
    Ignored,
    /// Not a frame of this protocol.
    Undecodable,
}

/// The name of room `i` (a Phoenix topic's subtopic, a URL path segment, a Socket.IO room).
pub fn room_name(i: usize) -> String {
    format!("room-{i}")
}

/// One connection's protocol state.
#[derive(Debug, Clone)]
pub struct Conversation {
    protocol: Protocol,
    room: String,
    token: String,
    phoenix: phoenix::Refs,
}

impl Conversation {
    /// A connection that joins room `room` (a name from [`room_name`]); `token` is the JWT this server
    /// wants (the peers ignore it).
    pub fn new(protocol: Protocol, room: String, token: &str) -> Conversation {
        Conversation { protocol, room, token: token.to_owned(), phoenix: phoenix::Refs::default() }
    }

    /// Path and query of the WebSocket URL.
    pub fn path(&self) -> String {
        match self.protocol {
            Protocol::Phoenix => phoenix::path(&self.token),
            Protocol::PlainJson => plain_json::path(&self.room),
            Protocol::SocketIo => socketio::PATH.to_owned(),
        }
    }

    /// Frames to send as soon as the WebSocket is open (Socket.IO waits for the server's open packet).
    pub fn opening(&mut self) -> Vec<String> {
        match self.protocol {
            Protocol::Phoenix => vec![phoenix::join(&mut self.phoenix, &self.room, &self.token)],
            Protocol::PlainJson | Protocol::SocketIo => Vec::new(),
        }
    }

    /// What a text frame from the server means.
    pub fn on_text(&mut self, text: &str) -> Incoming {
        match self.protocol {
            Protocol::Phoenix => phoenix::parse(&self.phoenix, text),
            Protocol::PlainJson => plain_json::parse(text),
            Protocol::SocketIo => socketio::parse(text, &self.room),
        }
    }

    /// The frame that publishes the JSON `data` to this connection's room.
    pub fn publish(&mut self, data: &str) -> String {
        match self.protocol {
            Protocol::Phoenix => phoenix::publish(&mut self.phoenix, &self.room, data),
            Protocol::PlainJson => plain_json::publish(data),
            Protocol::SocketIo => socketio::publish(&self.room, data),
        }
    }

    /// A keep-alive the client must send every [`crate::client::HEARTBEAT_INTERVAL`], for protocols
    /// whose server expects one (Phoenix; Socket.IO's server pings instead, FastAPI's uses WebSocket
    /// pings that the WebSocket library answers).
    pub fn heartbeat(&mut self) -> Option<String> {
        match self.protocol {
            Protocol::Phoenix => Some(phoenix::heartbeat(&mut self.phoenix)),
            Protocol::PlainJson | Protocol::SocketIo => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: &str = r#"{"t":5,"p":1,"s":2}"#;

    fn stamp() -> Stamp {
        Stamp { scheduled_unix_nanos: 5, publisher: 1, seq: 2 }
    }

    /// Each protocol, end to end: open, join, publish, and the frame a member then receives.
    #[test]
    fn conversations() {
        let mut c = Conversation::new(Protocol::Phoenix, room_name(3), "tok");
        assert_eq!(c.path(), "/socket/websocket?apikey=tok&vsn=1.0.0");
        let join = c.opening();
        assert_eq!(join.len(), 1);
        assert!(join[0].contains(r#""topic":"realtime:room-3""#), "{}", join[0]);
        let reply = r#"{"topic":"realtime:room-3","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"1"}"#;
        assert_eq!(c.on_text(reply), Incoming::Joined);
        let published = c.publish(STAMP);
        assert!(published.contains(r#""event":"broadcast""#), "{published}");
        assert!(c.heartbeat().is_some());

        let mut c = Conversation::new(Protocol::PlainJson, room_name(3), "tok");
        assert_eq!(c.path(), "/ws/room-3");
        assert!(c.opening().is_empty());
        assert_eq!(c.on_text(r#"{"type":"joined","room":"room-3"}"#), Incoming::Joined);
        assert_eq!(c.on_text(&format!(r#"{{"type":"msg","payload":{STAMP}}}"#)), Incoming::Delivery(stamp()));
        assert_eq!(c.heartbeat(), None);

        let mut c = Conversation::new(Protocol::SocketIo, room_name(3), "tok");
        assert_eq!(c.path(), "/socket.io/?EIO=4&transport=websocket");
        assert!(c.opening().is_empty());
        let open =
            r#"0{"sid":"a","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        assert_eq!(c.on_text(open), Incoming::Reply("40".into()));
        assert_eq!(c.on_text(r#"40{"sid":"b"}"#), Incoming::Reply(r#"420["join","room-3"]"#.into()));
        assert_eq!(c.on_text(r#"430["ok"]"#), Incoming::Joined);
        assert_eq!(c.on_text(&format!(r#"42["msg",{STAMP}]"#)), Incoming::Delivery(stamp()));
        assert_eq!(c.publish(STAMP), format!(r#"42["publish",{{"room":"room-3","payload":{STAMP}}}]"#));
    }
}
