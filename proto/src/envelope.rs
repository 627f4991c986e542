//! The Phoenix envelope of a client frame, before its event is interpreted.
//!
//! Decoding is strict about shape (a frame that is not an envelope is a [`DecodeError`], which the node
//! counts and ignores, as the reference does) and lenient about refs (numbers are accepted as strings).

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use thiserror::Error;

use crate::binary::{self, BinaryEncoding};
use crate::vsn::Vsn;

/// One decoded client frame: `topic`, `event`, refs and a payload.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundFrame {
    /// The join ref of the channel this push belongs to (`null` for heartbeats).
    pub join_ref: Option<String>,
    /// The push's own ref; replies echo it.
    pub msg_ref: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: InboundPayload,
}

/// What a client frame carries as its payload.
#[derive(Debug, Clone)]
pub enum InboundPayload {
    /// JSON text, kept verbatim so a broadcast is forwarded byte for byte.
    Json(Box<RawValue>),
    /// A binary kind-0 push: opaque bytes.
    Binary(Bytes),
    /// A binary kind-3 user broadcast (event `broadcast`).
    UserBroadcast(UserBroadcast),
}

impl PartialEq for InboundPayload {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Json(a), Self::Json(b)) => a.get() == b.get(),
            (Self::Binary(a), Self::Binary(b)) => a == b,
            (Self::UserBroadcast(a), Self::UserBroadcast(b)) => a == b,
            _ => false,
        }
    }
}

/// A user broadcast as realtime-js 2.x sends it in a binary kind-3 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserBroadcast {
    /// The application's event name (`cursor`).
    pub event: String,
    pub encoding: BinaryEncoding,
    /// Client metadata (JSON text); the reference discards it and so do we when relaying.
    pub metadata: Bytes,
    /// The user payload: JSON text when `encoding` is JSON, raw bytes otherwise.
    pub data: Bytes,
}

/// Why a frame could not be decoded into an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("frame is not valid JSON: {0}")]
    Json(String),
    #[error("a 2.0.0 text frame must be a JSON array of at least 5 elements")]
    NotAnArray,
    #[error("field `{0}` has the wrong type")]
    FieldType(&'static str),
    #[error("binary frames are not part of serializer 1.0.0")]
    BinaryOnV1,
    #[error(transparent)]
    Binary(#[from] binary::BinaryError),
}

/// A ref or join_ref: realtime-js sends strings; numbers are tolerated.
#[derive(Deserialize)]
#[serde(untagged)]
enum RefValue {
    Str(String),
    Int(i64),
}

fn ref_to_string(value: Option<RefValue>) -> Option<String> {
    value.map(|r| match r {
        RefValue::Str(s) => s,
        RefValue::Int(i) => i.to_string(),
    })
}

#[derive(Deserialize)]
struct V1Object {
    topic: String,
    event: String,
    payload: Box<RawValue>,
    #[serde(rename = "ref", default)]
    msg_ref: Option<RefValue>,
    #[serde(default)]
    join_ref: Option<RefValue>,
}

/// Decodes a text frame for the given serializer.
pub fn decode_text(vsn: Vsn, text: &str) -> Result<InboundFrame, DecodeError> {
    match vsn {
        Vsn::V1 => {
            let obj: V1Object = serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
            Ok(InboundFrame {
                join_ref: ref_to_string(obj.join_ref),
                msg_ref: ref_to_string(obj.msg_ref),
                topic: obj.topic,
                event: obj.event,
                payload: InboundPayload::Json(obj.payload),
            })
        }
        Vsn::V2 => decode_v2_array(text),
    }
}

fn decode_v2_array(text: &str) -> Result<InboundFrame, DecodeError> {
    let items: Vec<Box<RawValue>> = match serde_json::from_str(text) {
        Ok(items) => items,
        Err(e) if e.is_data() => return Err(DecodeError::NotAnArray),
        Err(e) => return Err(DecodeError::Json(e.to_string())),
    };
    // A pattern rather than a length check and indexing: a short array cannot reach a panic.
    let mut items = items.into_iter();
    let (Some(join_ref), Some(msg_ref), Some(topic), Some(event), Some(payload)) =
        (items.next(), items.next(), items.next(), items.next(), items.next())
    else {
        return Err(DecodeError::NotAnArray);
    };
    let join_ref = parse_ref(&join_ref, "join_ref")?;
    let msg_ref = parse_ref(&msg_ref, "ref")?;
    let topic = parse_string(&topic, "topic")?;
    let event = parse_string(&event, "event")?;
    Ok(InboundFrame { join_ref, msg_ref, topic, event, payload: InboundPayload::Json(payload) })
}

fn parse_ref(raw: &RawValue, field: &'static str) -> Result<Option<String>, DecodeError> {
    serde_json::from_str::<Option<RefValue>>(raw.get())
        .map(ref_to_string)
        .map_err(|_| DecodeError::FieldType(field))
}

fn parse_string(raw: &RawValue, field: &'static str) -> Result<String, DecodeError> {
    serde_json::from_str::<String>(raw.get()).map_err(|_| DecodeError::FieldType(field))
}

/// Decodes a binary frame (2.0.0 only: kinds 0 and 3).
pub fn decode_binary(vsn: Vsn, bytes: Bytes) -> Result<InboundFrame, DecodeError> {
    match vsn {
        Vsn::V1 => Err(DecodeError::BinaryOnV1),
        Vsn::V2 => Ok(binary::decode_client_frame(bytes)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_object_with_and_without_join_ref() {
        let f = decode_text(Vsn::V1, r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"11"}"#)
            .unwrap();
        assert_eq!(f.join_ref, None);
        assert_eq!(f.msg_ref.as_deref(), Some("11"));
        assert_eq!(f.topic, "phoenix");
        let f = decode_text(
            Vsn::V1,
            r#"{"topic":"realtime:a","event":"x","payload":{"a":1},"ref":7,"join_ref":"6"}"#,
        )
        .unwrap();
        assert_eq!(f.msg_ref.as_deref(), Some("7"));
        assert_eq!(f.join_ref.as_deref(), Some("6"));
    }

    #[test]
    fn v1_rejects_missing_fields() {
        assert!(decode_text(Vsn::V1, r#"{"topic":"a","event":"b"}"#).is_err());
        assert!(decode_text(Vsn::V1, r#"[null,"1","phoenix","heartbeat",{}]"#).is_err());
        assert!(decode_text(Vsn::V1, "not json").is_err());
    }

    #[test]
    fn v2_array_rules() {
        let f = decode_text(Vsn::V2, r#"[null,"11","phoenix","heartbeat",{},"extra"]"#).unwrap();
        assert_eq!(f.event, "heartbeat");
        assert_eq!(decode_text(Vsn::V2, r#"[null,"1","t","e"]"#), Err(DecodeError::NotAnArray));
        assert_eq!(decode_text(Vsn::V2, r#"{"topic":"t"}"#), Err(DecodeError::NotAnArray));
        assert_eq!(decode_text(Vsn::V2, r#"[null,"1",5,"e",{}]"#), Err(DecodeError::FieldType("topic")));
        assert!(matches!(decode_text(Vsn::V2, "[1,2"), Err(DecodeError::Json(_))));
    }

    #[test]
    fn binary_is_refused_on_v1() {
        assert_eq!(decode_binary(Vsn::V1, Bytes::from_static(&[3, 0])), Err(DecodeError::BinaryOnV1));
    }
}
