//! This server's side of `compare`: Phoenix channels with the 1.0.0 JSON serializer, encoded and parsed
//! by [`crate::frames`] (so this stays in step with `realtime-proto`). Room `r` is topic `realtime:r`,
//! joined with `self: false` (publishers do not receive their own messages, as on the peers) and no
//! acks; published messages are `broadcast` pushes of user event [`EVENT`].

use realtime_proto::Vsn;
use tokio_tungstenite::tungstenite::Message;

use super::Incoming;
use crate::frames::{self, BroadcastPayload, Event};
use crate::payload::Stamp;
use crate::publisher::EVENT;

/// The serializer: JSON text frames, as the peers' messages are.
pub const VSN: Vsn = Vsn::V1;

/// The refs one connection has used: its join ref and the last message ref.
#[derive(Debug, Clone, Default)]
pub struct Refs {
    join_ref: Option<String>,
    last: u64,
}

impl Refs {
    fn take(&mut self) -> String {
        self.last += 1;
        self.last.to_string()
    }
}

/// The topic of room `room`.
pub fn topic(room: &str) -> String {
    format!("realtime:{room}")
}

/// Path and query of the WebSocket URL.
pub fn path(token: &str) -> String {
    format!("/socket/websocket?apikey={token}&vsn={VSN}")
}

fn text(message: Message) -> String {
    match message {
        Message::Text(text) => text.as_str().to_owned(),
        // 1.0.0 pushes are always text; nothing else is encoded here.
        other => other.to_string(),
    }
}

/// `phx_join` for the room, remembering its ref.
pub fn join(refs: &mut Refs, room: &str, token: &str) -> String {
    let join_ref = refs.take();
    let frame = frames::join_with_payload(VSN, &join_ref, &topic(room), &frames::join_payload(token));
    refs.join_ref = Some(join_ref);
    text(frame)
}

/// A `broadcast` of JSON `data` to the room.
pub fn publish(refs: &mut Refs, room: &str, data: &str) -> String {
    let msg_ref = refs.take();
    let join_ref = refs.join_ref.clone().unwrap_or_default();
    // 1.0.0 broadcasts are JSON pushes; encoding one cannot fail.
    frames::broadcast(VSN, &join_ref, &msg_ref, &topic(room), EVENT, data).map(text).unwrap_or_default()
}

/// A heartbeat.
pub fn heartbeat(refs: &mut Refs) -> String {
    text(frames::heartbeat(VSN, &refs.take()))
}

/// What a server frame means.
pub fn parse(refs: &Refs, frame: &str) -> Incoming {
    match frames::parse(VSN, Message::text(frame)) {
        Some(Event::Broadcast { payload: BroadcastPayload::Json(json), .. }) => {
            Stamp::decode_wrapped(&json).map_or(Incoming::BadDelivery, Incoming::Delivery)
        }
        Some(Event::Broadcast { payload: BroadcastPayload::User(bytes), .. }) => {
            Stamp::decode(&bytes).map_or(Incoming::BadDelivery, Incoming::Delivery)
        }
        Some(Event::Reply { msg_ref, ok, response, .. }) if msg_ref.is_some() && msg_ref == refs.join_ref => {
            if ok {
                Incoming::Joined
            } else {
                Incoming::Refused(frames::error_reason(&response))
            }
        }
        Some(Event::Reply { ok: false, response, .. }) => {
            Incoming::Ended(format!("error reply: {}", frames::error_reason(&response)))
        }
        Some(Event::ChannelClosed { event, .. }) => Incoming::Ended(event),
        Some(Event::System { payload, .. }) => Incoming::Ended(format!("system: {payload}")),
        Some(Event::Undecodable) => Incoming::Undecodable,
        _ => Incoming::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_publish_heartbeat_refs() {
        let mut refs = Refs::default();
        let join = join(&mut refs, "room-1", "tok");
        let v: serde_json::Value = serde_json::from_str(&join).unwrap();
        assert_eq!(v["event"], "phx_join");
        assert_eq!(v["topic"], "realtime:room-1");
        assert_eq!((v["ref"].as_str(), v["join_ref"].as_str()), (Some("1"), Some("1")));
        assert_eq!(v["payload"]["config"]["broadcast"]["self"], false);
        assert_eq!(v["payload"]["access_token"], "tok");

        let p: serde_json::Value = serde_json::from_str(&publish(&mut refs, "room-1", r#"{"t":1}"#)).unwrap();
        assert_eq!(p["event"], "broadcast");
        assert_eq!((p["ref"].as_str(), p["join_ref"].as_str()), (Some("2"), Some("1")));
        assert_eq!(p["payload"]["payload"]["t"], 1);
        assert_eq!(p["payload"]["event"], EVENT);

        let h: serde_json::Value = serde_json::from_str(&heartbeat(&mut refs)).unwrap();
        assert_eq!(
            (h["topic"].as_str(), h["event"].as_str(), h["ref"].as_str()),
            (Some("phoenix"), Some("heartbeat"), Some("3"))
        );
    }

    #[test]
    fn parses_server_frames() {
        let mut refs = Refs::default();
        join(&mut refs, "room-1", "tok");
        let reply = |r: &str, status: &str| {
            format!(
                r#"{{"topic":"realtime:room-1","event":"phx_reply","payload":{{"status":"{status}","response":{{"reason":"no"}}}},"ref":"{r}"}}"#
            )
        };
        assert_eq!(parse(&refs, &reply("1", "ok")), Incoming::Joined);
        assert_eq!(parse(&refs, &reply("1", "error")), Incoming::Refused("no".into()));
        assert_eq!(parse(&refs, &reply("7", "ok")), Incoming::Ignored);
        let b = r#"{"topic":"realtime:room-1","event":"broadcast","payload":{"event":"load","payload":{"t":9,"p":0,"s":4},"type":"broadcast"},"ref":null}"#;
        assert_eq!(
            parse(&refs, b),
            Incoming::Delivery(Stamp { scheduled_unix_nanos: 9, publisher: 0, seq: 4 })
        );
        let bad = r#"{"topic":"realtime:room-1","event":"broadcast","payload":{"event":"load","payload":{"x":1},"type":"broadcast"},"ref":null}"#;
        assert_eq!(parse(&refs, bad), Incoming::BadDelivery);
        let close = r#"{"topic":"realtime:room-1","event":"phx_close","payload":{},"ref":"1"}"#;
        assert_eq!(parse(&refs, close), Incoming::Ended("phx_close".into()));
        assert_eq!(parse(&refs, "nope"), Incoming::Undecodable);
    }
}
