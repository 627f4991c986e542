//! The Socket.IO peers' protocol (`loadtest/peers/socketio/server.js` on Node, and
//! `loadtest/peers/socketioxide` in Rust) as a raw-WebSocket client sees it: Engine.IO v4 packets (a
//! digit for the packet type, then the data) carrying Socket.IO v5 packets in its `4` (message)
//! packets.
//!
//! Handshake: the server opens with `0{"sid",…,"pingInterval",…}`; the client connects to the main
//! namespace with `40`, the server answers `40{"sid":…}`; the client then emits `join` with ack id 0
//! (`420["join",room]`) and is in the room once the ack `430[…]` comes back. The server pings with `2`
//! every `pingInterval` and drops a client that does not answer `3` within `pingTimeout`. Publishing
//! is `42["publish",{"room":…,"payload":DATA}]`; members receive `42["msg",DATA]`.

use serde_json::value::RawValue;

use super::Incoming;
use crate::payload::Stamp;

/// Path and query of the WebSocket URL (Engine.IO v4, WebSocket transport from the start).
pub const PATH: &str = "/socket.io/?EIO=4&transport=websocket";

/// JSON string literal of `s`.
fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The `join` emit, with ack id 0.
pub fn join(room: &str) -> String {
    format!(r#"420["join",{}]"#, json_str(room))
}

/// The frame that publishes JSON `data` to `room`.
pub fn publish(room: &str, data: &str) -> String {
    format!(r#"42["publish",{{"room":{},"payload":{data}}}]"#, json_str(room))
}

/// What a server frame means to a client joining `room`.
pub fn parse(text: &str, room: &str) -> Incoming {
    let mut chars = text.chars();
    match chars.next() {
        // Engine.IO open: connect to the main namespace.
        Some('0') => Incoming::Reply("40".into()),
        Some('1') => Incoming::Ended("engine.io close".into()),
        Some('2') => Incoming::Reply(format!("3{}", chars.as_str())),
        Some('3') | Some('6') => Incoming::Ignored,
        Some('4') => socket_packet(chars.as_str(), room),
        _ => Incoming::Undecodable,
    }
}

/// A Socket.IO packet (inside an Engine.IO message).
fn socket_packet(packet: &str, room: &str) -> Incoming {
    let mut chars = packet.chars();
    match chars.next() {
        // CONNECT accepted: join the room.
        Some('0') => Incoming::Reply(join(room)),
        Some('1') => Incoming::Ended("socket.io disconnect".into()),
        Some('2') => event(chars.as_str()),
        // ACK of the join (the only emit sent with an ack id).
        Some('3') if chars.as_str().starts_with("0[") => Incoming::Joined,
        Some('4') => Incoming::Refused(format!("connect error: {}", chars.as_str())),
        Some(_) => Incoming::Ignored,
        None => Incoming::Undecodable,
    }
}

/// An EVENT packet's data: `["msg",DATA]` (no namespace, no ack id on what the server sends).
fn event(data: &str) -> Incoming {
    let Ok((name, payload)) = serde_json::from_str::<(&str, &RawValue)>(data) else {
        return Incoming::Undecodable;
    };
    if name != "msg" {
        return Incoming::Ignored;
    }
    Stamp::decode(payload.get().as_bytes()).map_or(Incoming::BadDelivery, Incoming::Delivery)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_and_pings() {
        assert_eq!(parse(r#"0{"sid":"x","pingInterval":25000}"#, "r"), Incoming::Reply("40".into()));
        assert_eq!(parse(r#"40{"sid":"y"}"#, "room-2"), Incoming::Reply(r#"420["join","room-2"]"#.into()));
        assert_eq!(parse(r#"430["ok"]"#, "room-2"), Incoming::Joined);
        assert_eq!(parse(r#"431["ok"]"#, "room-2"), Incoming::Ignored);
        assert_eq!(parse("2", "r"), Incoming::Reply("3".into()));
        assert_eq!(parse("1", "r"), Incoming::Ended("engine.io close".into()));
        assert_eq!(parse("41", "r"), Incoming::Ended("socket.io disconnect".into()));
        assert!(matches!(parse(r#"44{"message":"no"}"#, "r"), Incoming::Refused(_)));
        assert_eq!(parse("", "r"), Incoming::Undecodable);
        assert_eq!(parse("4", "r"), Incoming::Undecodable);
    }

    #[test]
    fn events() {
        assert_eq!(
            parse(r#"42["msg",{"t":7,"p":0,"s":1}]"#, "r"),
            Incoming::Delivery(Stamp { scheduled_unix_nanos: 7, publisher: 0, seq: 1 })
        );
        assert_eq!(parse(r#"42["msg",{"t":"no"}]"#, "r"), Incoming::BadDelivery);
        assert_eq!(parse(r#"42["other",1]"#, "r"), Incoming::Ignored);
        assert_eq!(parse(r#"42["msg"]"#, "r"), Incoming::Undecodable);
        assert_eq!(publish("a\"b", r#"{"t":1}"#), r#"42["publish",{"room":"a\"b","payload":{"t":1}}]"#);
        assert_eq!(join("room-0"), r#"420["join","room-0"]"#);
    }
}
