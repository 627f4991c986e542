//! Byte layouts of serializer 2.0.0's binary frames (PROTOCOL.md §1.5).
//!
//! The first byte is the kind; every length field is one unsigned byte (so names are at most 255 bytes)
//! and the payload runs to the end of the frame. Clients send kind 0 (`push`) and kind 3
//! (`user_broadcast_push`); the server only ever sends kind 4 (`user_broadcast`), the one kind
//! realtime-js can decode. The client-side encoder and decoder live here too, for tests and the load
//! tester.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::envelope::{InboundFrame, InboundPayload, UserBroadcast};

/// Kind byte of a client push with an opaque binary payload.
pub const KIND_PUSH: u8 = 0;
/// Kind byte of a client user broadcast.
pub const KIND_USER_BROADCAST_PUSH: u8 = 3;
/// Kind byte of a server user broadcast, the only binary kind the server sends.
pub const KIND_USER_BROADCAST: u8 = 4;

/// How a user broadcast's payload bytes are to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryEncoding {
    /// Opaque bytes (an `ArrayBuffer` in realtime-js).
    Raw,
    /// UTF-8 JSON text.
    Json,
}

impl BinaryEncoding {
    fn from_byte(b: u8) -> Result<Self, BinaryError> {
        match b {
            0 => Ok(Self::Raw),
            1 => Ok(Self::Json),
            other => Err(BinaryError::UnknownEncoding(other)),
        }
    }

    fn byte(self) -> u8 {
        match self {
            Self::Raw => 0,
            Self::Json => 1,
        }
    }
}

/// Why a binary frame is not a valid 2.0.0 frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BinaryError {
    #[error("empty binary frame")]
    Empty,
    #[error("binary kind {0} is not accepted from clients")]
    UnknownKind(u8),
    #[error("binary frame is shorter than its header says")]
    Truncated,
    #[error("binary frame field is not valid UTF-8")]
    NotUtf8,
    #[error("unknown user broadcast encoding {0}")]
    UnknownEncoding(u8),
    #[error("field `{0}` is longer than 255 bytes")]
    FieldTooLong(&'static str),
}

/// Reads length-prefixed fields off a frame.
struct Reader {
    bytes: Bytes,
    pos: usize,
}

impl Reader {
    fn byte(&mut self) -> Result<u8, BinaryError> {
        let b = *self.bytes.get(self.pos).ok_or(BinaryError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, len: u8) -> Result<Bytes, BinaryError> {
        let end = self.pos + usize::from(len);
        if end > self.bytes.len() {
            return Err(BinaryError::Truncated);
        }
        let out = self.bytes.slice(self.pos..end);
        self.pos = end;
        Ok(out)
    }

    fn string(&mut self, len: u8) -> Result<String, BinaryError> {
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| BinaryError::NotUtf8)
    }

    fn rest(self) -> Bytes {
        self.bytes.slice(self.pos..)
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Decodes a client binary frame (kind 0 or 3) into an envelope.
pub fn decode_client_frame(bytes: Bytes) -> Result<InboundFrame, BinaryError> {
    let mut r = Reader { bytes, pos: 0 };
    match r.byte().map_err(|_| BinaryError::Empty)? {
        KIND_PUSH => {
            let (jl, rl, tl, el) = (r.byte()?, r.byte()?, r.byte()?, r.byte()?);
            let join_ref = non_empty(r.string(jl)?);
            let msg_ref = non_empty(r.string(rl)?);
            let topic = r.string(tl)?;
            let event = r.string(el)?;
            let payload = InboundPayload::Binary(r.rest());
            Ok(InboundFrame { join_ref, msg_ref, topic, event, payload })
        }
        KIND_USER_BROADCAST_PUSH => {
            let (jl, rl, tl, ul, ml) = (r.byte()?, r.byte()?, r.byte()?, r.byte()?, r.byte()?);
            let encoding = BinaryEncoding::from_byte(r.byte()?)?;
            let join_ref = non_empty(r.string(jl)?);
            let msg_ref = non_empty(r.string(rl)?);
            let topic = r.string(tl)?;
            let event = r.string(ul)?;
            let metadata = r.take(ml)?;
            let data = r.rest();
            let payload = InboundPayload::UserBroadcast(UserBroadcast { event, encoding, metadata, data });
            Ok(InboundFrame { join_ref, msg_ref, topic, event: "broadcast".into(), payload })
        }
        other => Err(BinaryError::UnknownKind(other)),
    }
}

fn len_byte(field: &'static str, len: usize) -> Result<u8, BinaryError> {
    u8::try_from(len).map_err(|_| BinaryError::FieldTooLong(field))
}

/// Encodes the server's kind-4 user broadcast: `4, topic_len, event_len, metadata_len, encoding, topic,
/// event, metadata, payload`.
pub fn encode_user_broadcast(
    topic: &str,
    event: &str,
    metadata: &[u8],
    encoding: BinaryEncoding,
    data: &[u8],
) -> Result<Bytes, BinaryError> {
    let header = [
        KIND_USER_BROADCAST,
        len_byte("topic", topic.len())?,
        len_byte("event", event.len())?,
        len_byte("metadata", metadata.len())?,
        encoding.byte(),
    ];
    let mut out = BytesMut::with_capacity(5 + topic.len() + event.len() + metadata.len() + data.len());
    out.put_slice(&header);
    out.put_slice(topic.as_bytes());
    out.put_slice(event.as_bytes());
    out.put_slice(metadata);
    out.put_slice(data);
    Ok(out.freeze())
}

/// Client side: encodes a kind-3 user broadcast push exactly as realtime-js 2.x does.
pub fn encode_user_broadcast_push(
    join_ref: &str,
    msg_ref: &str,
    topic: &str,
    event: &str,
    encoding: BinaryEncoding,
    data: &[u8],
) -> Result<Bytes, BinaryError> {
    let header = [
        KIND_USER_BROADCAST_PUSH,
        len_byte("join_ref", join_ref.len())?,
        len_byte("ref", msg_ref.len())?,
        len_byte("topic", topic.len())?,
        len_byte("event", event.len())?,
        0,
        encoding.byte(),
    ];
    let mut out = BytesMut::with_capacity(
        header.len() + join_ref.len() + msg_ref.len() + topic.len() + event.len() + data.len(),
    );
    out.put_slice(&header);
    for part in [join_ref, msg_ref, topic, event] {
        out.put_slice(part.as_bytes());
    }
    out.put_slice(data);
    Ok(out.freeze())
}

/// A kind-4 frame as a client decodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUserBroadcast {
    pub topic: String,
    pub event: String,
    pub metadata: Bytes,
    pub encoding: BinaryEncoding,
    pub data: Bytes,
}

/// Client side: decodes a kind-4 frame; any other kind is an error, as in realtime-js.
pub fn decode_server_frame(bytes: Bytes) -> Result<ServerUserBroadcast, BinaryError> {
    let mut r = Reader { bytes, pos: 0 };
    match r.byte().map_err(|_| BinaryError::Empty)? {
        KIND_USER_BROADCAST => {
            let (tl, el, ml) = (r.byte()?, r.byte()?, r.byte()?);
            let encoding = BinaryEncoding::from_byte(r.byte()?)?;
            let topic = r.string(tl)?;
            let event = r.string(el)?;
            let metadata = r.take(ml)?;
            Ok(ServerUserBroadcast { topic, event, metadata, encoding, data: r.rest() })
        }
        other => Err(BinaryError::UnknownKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn decodes_the_protocol_example_kind3() {
        // PROTOCOL.md §2.13: 03 01 01 0E 06 00 01 "1" "3" "realtime:room1" "cursor" {"x":1}
        let mut frame = vec![3, 1, 1, 14, 6, 0, 1];
        frame.extend_from_slice(b"13realtime:room1cursor{\"x\":1}");
        let f = decode_client_frame(Bytes::from(frame)).unwrap();
        assert_eq!(f.join_ref.as_deref(), Some("1"));
        assert_eq!(f.msg_ref.as_deref(), Some("3"));
        assert_eq!(f.topic, "realtime:room1");
        assert_eq!(f.event, "broadcast");
        let InboundPayload::UserBroadcast(ub) = f.payload else { panic!("not a user broadcast") };
        assert_eq!(ub.event, "cursor");
        assert_eq!(ub.encoding, BinaryEncoding::Json);
        assert_eq!(&ub.data[..], b"{\"x\":1}");
        assert!(ub.metadata.is_empty());
    }

    #[test]
    fn encodes_the_protocol_example_kind4() {
        let out = encode_user_broadcast("realtime:room1", "cursor", b"", BinaryEncoding::Json, b"{\"x\":1}")
            .unwrap();
        let mut want = vec![4, 14, 6, 0, 1];
        want.extend_from_slice(b"realtime:room1cursor{\"x\":1}");
        assert_eq!(&out[..], &want[..]);
        let back = decode_server_frame(out).unwrap();
        assert_eq!(back.event, "cursor");
    }

    #[test]
    fn client_push_round_trips_byte_exact() {
        let hex =
            "0301010e06000136377265616c74696d653a726f6f6d31637572736f727b2278223a312c2273223a22c3a9227d";
        let ours = encode_user_broadcast_push(
            "6",
            "7",
            "realtime:room1",
            "cursor",
            BinaryEncoding::Json,
            "{\"x\":1,\"s\":\"é\"}".as_bytes(),
        )
        .unwrap();
        assert_eq!(&ours[..], &unhex(hex)[..]);
    }

    #[test]
    fn kind0_push() {
        let mut frame = vec![0, 1, 1, 3, 2];
        frame.extend_from_slice(b"12abcev\x00\x01");
        let f = decode_client_frame(Bytes::from(frame)).unwrap();
        assert_eq!((f.topic.as_str(), f.event.as_str()), ("abc", "ev"));
        assert_eq!(f.payload, InboundPayload::Binary(Bytes::from_static(&[0, 1])));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for frame in [
            &[][..],
            &[9][..],
            &[3, 200, 1, 1, 1, 0, 1][..],
            &[3, 1, 1, 1, 1, 0, 7, b'a', b'b', b'c', b'd'][..],
            &[4, 0, 0, 0, 1][..],
            &[0, 1][..],
        ] {
            assert!(decode_client_frame(Bytes::copy_from_slice(frame)).is_err(), "{frame:?}");
        }
        assert_eq!(
            decode_client_frame(Bytes::from_static(&[3, 0, 0, 2, 0, 0, 1, 0xff, 0xfe])),
            Err(BinaryError::NotUtf8)
        );
    }

    #[test]
    fn long_names_are_refused_when_encoding() {
        let long = "x".repeat(256);
        assert_eq!(
            encode_user_broadcast(&long, "e", b"", BinaryEncoding::Raw, b""),
            Err(BinaryError::FieldTooLong("topic"))
        );
    }
}
