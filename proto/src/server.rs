//! Encoders for every frame the server sends (PROTOCOL.md §1.4, §1.5, §2).
//!
//! Server → client frames differ by serializer: 1.0.0 sends `{"topic","event","payload","ref"}` objects
//! (never `join_ref`), 2.0.0 sends `[join_ref, ref, topic, event, payload]` arrays and kind-4 binary frames
//! for user broadcasts. Payloads are passed in as JSON text so a broadcast is serialised once per version
//! and shared by every recipient.

use std::fmt::Write;

use bytes::Bytes;

use crate::binary::{self, BinaryEncoding};
use crate::vsn::Vsn;

/// A frame ready to be written to a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutFrame {
    Text(String),
    Binary(Bytes),
}

impl OutFrame {
    /// Bytes on the wire (for metrics).
    pub fn len(&self) -> usize {
        match self {
            OutFrame::Text(t) => t.len(),
            OutFrame::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text of a text frame.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            OutFrame::Text(t) => Some(t),
            OutFrame::Binary(_) => None,
        }
    }
}

/// Appends `s` as a JSON string literal. Topics and event names rarely need escaping: those are copied
/// as they are, the rest go through serde_json (which escapes exactly `"`, `\\` and control characters).
fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        // Serialising a &str into a String cannot fail.
        out.push_str(&serde_json::to_string(s).expect("string serialisation"));
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

fn push_opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_json_str(out, s),
        None => out.push_str("null"),
    }
}

/// The general envelope: any event with a JSON payload. 1.0.0 drops `join_ref`, as Phoenix does.
pub fn message(
    vsn: Vsn,
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    event: &str,
    payload_json: &str,
) -> OutFrame {
    message_with(vsn, join_ref, msg_ref, topic, event, payload_json.len(), |out| out.push_str(payload_json))
}

/// [`message`] with its payload written by `payload` (about `payload_len` bytes) straight into the frame.
fn message_with(
    vsn: Vsn,
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    event: &str,
    payload_len: usize,
    payload: impl FnOnce(&mut String),
) -> OutFrame {
    let mut out = String::with_capacity(payload_len + topic.len() + event.len() + 48);
    match vsn {
        Vsn::V1 => {
            out.push_str("{\"topic\":");
            push_json_str(&mut out, topic);
            out.push_str(",\"event\":");
            push_json_str(&mut out, event);
            out.push_str(",\"payload\":");
            payload(&mut out);
            out.push_str(",\"ref\":");
            push_opt_str(&mut out, msg_ref);
            out.push('}');
        }
        Vsn::V2 => {
            out.push('[');
            push_opt_str(&mut out, join_ref);
            out.push(',');
            push_opt_str(&mut out, msg_ref);
            out.push(',');
            push_json_str(&mut out, topic);
            out.push(',');
            push_json_str(&mut out, event);
            out.push(',');
            payload(&mut out);
            out.push(']');
        }
    }
    OutFrame::Text(out)
}

/// Reply status of a `phx_reply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStatus {
    Ok,
    Error,
}

impl ReplyStatus {
    fn as_str(self) -> &'static str {
        match self {
            ReplyStatus::Ok => "ok",
            ReplyStatus::Error => "error",
        }
    }
}

/// `phx_reply` to a push: `{"status": s, "response": r}` echoing the push's refs and topic.
pub fn reply(
    vsn: Vsn,
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    status: ReplyStatus,
    response_json: &str,
) -> OutFrame {
    let payload = format!("{{\"status\":\"{}\",\"response\":{}}}", status.as_str(), response_json);
    message(vsn, join_ref, msg_ref, topic, "phx_reply", &payload)
}

/// An error reply with `{"reason": reason}`.
pub fn error_reply(
    vsn: Vsn,
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    reason: &str,
) -> OutFrame {
    let response = serde_json::json!({ "reason": reason }).to_string();
    reply(vsn, join_ref, msg_ref, topic, ReplyStatus::Error, &response)
}

/// `phx_close` for a channel: `ref` and `join_ref` are both the join ref (PROTOCOL.md §2.8).
pub fn close(vsn: Vsn, join_ref: Option<&str>, topic: &str) -> OutFrame {
    message(vsn, join_ref, join_ref, topic, "phx_close", "{}")
}

/// A channel push (`presence_state`, `system`): `ref` null, `join_ref` the channel's.
pub fn channel_push(
    vsn: Vsn,
    join_ref: Option<&str>,
    topic: &str,
    event: &str,
    payload_json: &str,
) -> OutFrame {
    message(vsn, join_ref, None, topic, event, payload_json)
}

/// A fastlane broadcast (`broadcast`, `presence_diff`, `postgres_changes`): both refs null.
pub fn fastlane(vsn: Vsn, topic: &str, event: &str, payload_json: &str) -> OutFrame {
    message(vsn, None, None, topic, event, payload_json)
}

/// A `postgres_changes` push to one channel, `{"ids":[…],"data":<data_json>}`, written in one allocation:
/// each channel's frame is its own (its topic and subscription ids), the `data` is shared text.
pub fn postgres_changes(vsn: Vsn, topic: &str, ids: &[u32], data_json: &str) -> OutFrame {
    let payload_len = data_json.len() + 20 + ids.len() * 11;
    message_with(vsn, None, None, topic, "postgres_changes", payload_len, |out| {
        out.push_str("{\"ids\":[");
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Writing into a String cannot fail.
            let _ = write!(out, "{id}");
        }
        out.push_str("],\"data\":");
        out.push_str(data_json);
        out.push('}');
    })
}

/// A user broadcast (binary kind-3 push, REST single, JSON or raw bytes) for one serializer.
///
/// 2.0.0 gets a kind-4 frame; if a name is too long for the binary header a JSON user broadcast falls
/// back to a text frame that realtime-js decodes identically. 1.0.0 gets
/// `{"event":E,"payload":<json>,"type":"broadcast"}` (+ `meta`); raw bytes cannot be sent to 1.0.0 and
/// give `None`. `data` must be valid JSON text when `encoding` is JSON.
pub fn user_broadcast(
    vsn: Vsn,
    topic: &str,
    event: &str,
    encoding: BinaryEncoding,
    data: &[u8],
    meta_json: Option<&str>,
) -> Option<OutFrame> {
    if vsn == Vsn::V2 {
        let meta = meta_json.unwrap_or("").as_bytes();
        if let Ok(frame) = binary::encode_user_broadcast(topic, event, meta, encoding, data) {
            return Some(OutFrame::Binary(frame));
        }
    }
    if encoding == BinaryEncoding::Raw {
        return None;
    }
    let data = std::str::from_utf8(data).ok()?;
    Some(fastlane(vsn, topic, "broadcast", &user_broadcast_json(event, data, meta_json)))
}

/// The JSON form of a user broadcast: `{"event":E,"payload":P,"type":"broadcast"[,"meta":M]}`.
pub fn user_broadcast_json(event: &str, payload_json: &str, meta_json: Option<&str>) -> String {
    let mut out = String::with_capacity(payload_json.len() + event.len() + 48);
    out.push_str("{\"event\":");
    push_json_str(&mut out, event);
    out.push_str(",\"payload\":");
    out.push_str(payload_json);
    out.push_str(",\"type\":\"broadcast\"");
    if let Some(meta) = meta_json {
        out.push_str(",\"meta\":");
        out.push_str(meta);
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn parse(f: &OutFrame) -> Value {
        serde_json::from_str(f.as_text().unwrap()).unwrap()
    }

    #[test]
    fn reply_shapes() {
        let v1 = reply(
            Vsn::V1,
            Some("1"),
            Some("1"),
            "realtime:room1",
            ReplyStatus::Ok,
            r#"{"postgres_changes":[]}"#,
        );
        assert_eq!(
            v1.as_text().unwrap(),
            r#"{"topic":"realtime:room1","event":"phx_reply","payload":{"status":"ok","response":{"postgres_changes":[]}},"ref":"1"}"#
        );
        let v2 = reply(Vsn::V2, None, Some("7"), "phoenix", ReplyStatus::Ok, "{}");
        assert_eq!(
            v2.as_text().unwrap(),
            r#"[null,"7","phoenix","phx_reply",{"status":"ok","response":{}}]"#
        );
        let err = error_reply(Vsn::V2, Some("1"), Some("2"), "x", "unmatched topic");
        assert_eq!(
            parse(&err),
            json!(["1", "2", "x", "phx_reply", {"status": "error", "response": {"reason": "unmatched topic"}}])
        );
    }

    #[test]
    fn close_and_pushes() {
        assert_eq!(
            close(Vsn::V2, Some("3"), "realtime:r").as_text().unwrap(),
            r#"["3","3","realtime:r","phx_close",{}]"#
        );
        assert_eq!(
            parse(&close(Vsn::V1, Some("3"), "realtime:r")),
            json!({"topic":"realtime:r","event":"phx_close","payload":{},"ref":"3"})
        );
        assert_eq!(
            channel_push(Vsn::V2, Some("1"), "t", "presence_state", "{}").as_text().unwrap(),
            r#"["1",null,"t","presence_state",{}]"#
        );
        assert_eq!(
            fastlane(Vsn::V1, "t\"q", "broadcast", "[1]").as_text().unwrap(),
            r#"{"topic":"t\"q","event":"broadcast","payload":[1],"ref":null}"#
        );
    }

    #[test]
    fn json_strings_are_escaped_only_when_needed() {
        for s in ["realtime:room1", "", "é ü 日本", "a\"b", "back\\slash", "tab\there", "nul\u{0}", "\u{7f}"]
        {
            let mut out = String::new();
            push_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn postgres_changes_is_the_fastlane_of_its_payload() {
        for vsn in [Vsn::V1, Vsn::V2] {
            for ids in [&[][..], &[7][..], &[1, 22, 4_000_000_000][..]] {
                let data = r#"{"type":"INSERT","record":{"id":1}}"#;
                let payload = format!(r#"{{"ids":{},"data":{data}}}"#, serde_json::to_string(ids).unwrap());
                assert_eq!(
                    postgres_changes(vsn, "realtime:db", ids, data),
                    fastlane(vsn, "realtime:db", "postgres_changes", &payload)
                );
            }
        }
    }

    #[test]
    fn user_broadcast_per_version() {
        let v2 =
            user_broadcast(Vsn::V2, "realtime:room1", "cursor", BinaryEncoding::Json, b"{\"x\":1}", None)
                .unwrap();
        let OutFrame::Binary(b) = &v2 else { panic!() };
        assert_eq!(b[0], 4);
        let v1 =
            user_broadcast(Vsn::V1, "realtime:room1", "cursor", BinaryEncoding::Json, b"{\"x\":1}", None)
                .unwrap();
        assert_eq!(
            parse(&v1),
            json!({"topic":"realtime:room1","event":"broadcast","payload":{"event":"cursor","payload":{"x":1},"type":"broadcast"},"ref":null})
        );
        assert_eq!(user_broadcast(Vsn::V1, "t", "e", BinaryEncoding::Raw, &[1, 2], None), None);
        let long = "e".repeat(300);
        let fallback =
            user_broadcast(Vsn::V2, "t", &long, BinaryEncoding::Json, b"1", Some(r#"{"id":"x"}"#)).unwrap();
        assert_eq!(parse(&fallback)[4]["meta"], json!({"id": "x"}));
    }
}
