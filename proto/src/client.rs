//! Typed client messages: an [`InboundFrame`] interpreted by its topic and event.
//!
//! The node matches on [`ClientEvent`]; it never looks at event strings itself.

use serde_json::value::RawValue;
use serde_json::Value;

use crate::envelope::{InboundFrame, InboundPayload, UserBroadcast};
use crate::join::JoinPayload;
use crate::topic;

/// A decoded client push with its refs.
#[derive(Debug, Clone)]
pub struct ClientMessage {
    pub join_ref: Option<String>,
    pub msg_ref: Option<String>,
    pub topic: String,
    pub event: ClientEvent,
}

/// What the client asks for.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// `phoenix` / `heartbeat`.
    Heartbeat,
    /// `phx_join` with its parsed payload.
    Join(JoinPayload),
    /// `phx_leave`.
    Leave,
    /// `broadcast`, either JSON (forwarded verbatim) or a binary user broadcast.
    Broadcast(BroadcastPush),
    /// `presence` (track / untrack).
    Presence(PresencePush),
    /// `access_token` refresh; `None` when the token is absent or not a string.
    AccessToken(Option<String>),
    /// Any other event, or a payload that does not fit the event (binary where JSON is required).
    Other { event: String },
    /// A join, presence or token push whose payload passed the envelope but cannot be read as a JSON
    /// value (nested past serde_json's recursion limit, a lone surrogate escape): answered with an
    /// error rather than read as an empty payload.
    Unreadable { event: String },
}

/// A broadcast pushed by a client.
#[derive(Debug, Clone)]
pub enum BroadcastPush {
    /// A JSON payload (`{"type":"broadcast","event":…,"payload":…}` from realtime-js), relayed unchanged.
    Json(Box<RawValue>),
    /// A 2.0.0 kind-3 user broadcast.
    User(UserBroadcast),
}

impl BroadcastPush {
    /// Size of the payload the limits apply to.
    pub fn payload_len(&self) -> usize {
        match self {
            BroadcastPush::Json(raw) => raw.get().len(),
            BroadcastPush::User(ub) => ub.data.len(),
        }
    }
}

/// A `presence` push: `{"type":"presence","event":"track","payload":{…}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct PresencePush {
    /// Lower-cased `event` (`track`, `untrack`, …); `None` when absent.
    pub event: Option<String>,
    /// The meta to track (`payload.payload`), as sent.
    pub payload: Option<Value>,
}

impl ClientMessage {
    /// Interprets a frame. Never fails: what does not fit becomes [`ClientEvent::Other`].
    pub fn from_frame(frame: InboundFrame) -> ClientMessage {
        let InboundFrame { join_ref, msg_ref, topic, event, payload } = frame;
        let event = interpret(&topic, event, payload);
        ClientMessage { join_ref, msg_ref, topic, event }
    }
}

fn interpret(topic_name: &str, event: String, payload: InboundPayload) -> ClientEvent {
    if topic_name == topic::PHOENIX && event == "heartbeat" {
        return ClientEvent::Heartbeat;
    }
    match (event.as_str(), payload) {
        ("broadcast", InboundPayload::UserBroadcast(ub)) => ClientEvent::Broadcast(BroadcastPush::User(ub)),
        ("broadcast", InboundPayload::Json(raw)) => ClientEvent::Broadcast(BroadcastPush::Json(raw)),
        ("phx_join", InboundPayload::Json(raw)) => match serde_json::from_str::<Value>(raw.get()) {
            Ok(value) => ClientEvent::Join(JoinPayload::from_value(&value)),
            Err(_) => ClientEvent::Unreadable { event },
        },
        ("phx_leave", _) => ClientEvent::Leave,
        ("presence", InboundPayload::Json(raw)) => match serde_json::from_str::<Value>(raw.get()) {
            Ok(value) => ClientEvent::Presence(PresencePush {
                event: value.get("event").and_then(Value::as_str).map(str::to_ascii_lowercase),
                payload: value.get("payload").cloned(),
            }),
            Err(_) => ClientEvent::Unreadable { event },
        },
        ("access_token", InboundPayload::Json(raw)) => match serde_json::from_str::<Value>(raw.get()) {
            Ok(value) => {
                ClientEvent::AccessToken(value.get("access_token").and_then(Value::as_str).map(str::to_owned))
            }
            Err(_) => ClientEvent::Unreadable { event },
        },
        _ => ClientEvent::Other { event },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::decode_text;
    use crate::vsn::Vsn;

    fn msg(vsn: Vsn, text: &str) -> ClientMessage {
        ClientMessage::from_frame(decode_text(vsn, text).unwrap())
    }

    #[test]
    fn events() {
        assert!(matches!(
            msg(Vsn::V2, r#"[null,"1","phoenix","heartbeat",{}]"#).event,
            ClientEvent::Heartbeat
        ));
        assert!(matches!(msg(Vsn::V2, r#"["1","2","realtime:a","phx_leave",{}]"#).event, ClientEvent::Leave));
        let m = msg(
            Vsn::V2,
            r#"["1","2","realtime:a","presence",{"type":"presence","event":"TRACK","payload":{"a":1}}]"#,
        );
        let ClientEvent::Presence(p) = m.event else { panic!() };
        assert_eq!(p.event.as_deref(), Some("track"));
        assert_eq!(p.payload, Some(serde_json::json!({"a":1})));
        let m = msg(
            Vsn::V1,
            r#"{"topic":"realtime:a","event":"access_token","payload":{"access_token":"T"},"ref":"3"}"#,
        );
        assert!(matches!(m.event, ClientEvent::AccessToken(Some(ref t)) if t == "T"));
        let m = msg(
            Vsn::V1,
            r#"{"topic":"realtime:a","event":"broadcast","payload":{"type":"broadcast","event":"e","payload":[1]},"ref":"3"}"#,
        );
        let ClientEvent::Broadcast(BroadcastPush::Json(raw)) = m.event else { panic!() };
        assert_eq!(raw.get(), r#"{"type":"broadcast","event":"e","payload":[1]}"#);
        assert!(matches!(
            msg(Vsn::V1, r#"{"topic":"phoenix","event":"nope","payload":{},"ref":"3"}"#).event,
            ClientEvent::Other { .. }
        ));
    }

    #[test]
    fn unreadable_payloads_are_not_read_as_empty() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        for event in ["presence", "phx_join", "access_token"] {
            let text = format!(
                r#"{{"topic":"realtime:a","event":"{event}","payload":{{"type":"presence","event":"track","payload":{deep}}},"ref":"3"}}"#
            );
            let Ok(frame) = decode_text(Vsn::V1, &text) else { continue };
            let m = ClientMessage::from_frame(frame);
            assert!(matches!(m.event, ClientEvent::Unreadable { .. }), "{event}: {:?}", m.event);
        }
        let surrogate =
            r#"{"topic":"realtime:a","event":"phx_join","payload":{"config":{},"x":"\ud800"},"ref":"3"}"#;
        if let Ok(frame) = decode_text(Vsn::V1, surrogate) {
            assert!(matches!(ClientMessage::from_frame(frame).event, ClientEvent::Unreadable { .. }));
        }
    }
}
