//! Fuzz target: the 2.0.0 binary frames (`envelope::decode_binary` for client kinds 0 and 3, and the
//! client-side `binary::decode_server_frame` for kind 4) and their encoders.
//!
//! A binary frame is a kind byte, one-byte lengths and fields, so the dangerous inputs are short
//! headers and lengths that lie. Every input here is compared with a model: a second, slice-based
//! reading of the layout in PROTOCOL.md §1.5 that says which frame, or which typed error, the decoder
//! must give. Lengths are single bytes, so no header can ask for more than 255 bytes per field; the
//! model checks the decoder refuses (`Truncated`) rather than reads past the frame. Round trips: the
//! client encoder (`encode_user_broadcast_push`), the server's kind-4 encoder and
//! `server::user_broadcast` (binary, or the text fallback) decode back to what they were given.
//! Cases per property: `REALTIME_FUZZ_CASES` (see `support`).

mod support;

use bytes::Bytes;
use proptest::prelude::*;
use realtime_proto::binary::{
    decode_server_frame, encode_user_broadcast, encode_user_broadcast_push, BinaryEncoding, BinaryError,
    ServerUserBroadcast,
};
use realtime_proto::envelope::{
    decode_binary, decode_text, DecodeError, InboundFrame, InboundPayload, UserBroadcast,
};
use realtime_proto::server::{self, OutFrame};
use realtime_proto::Vsn;
use serde_json::Value;
use support::{any_text, check_client_message, text};

/// Reads `len` bytes off the front of `body`.
fn field<'a>(body: &mut &'a [u8], len: u8) -> Result<&'a [u8], BinaryError> {
    let len = usize::from(len);
    if body.len() < len {
        return Err(BinaryError::Truncated);
    }
    let (head, tail) = body.split_at(len);
    *body = tail;
    Ok(head)
}

fn utf8(bytes: &[u8]) -> Result<String, BinaryError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| BinaryError::NotUtf8)
}

fn encoding(byte: u8) -> Result<BinaryEncoding, BinaryError> {
    match byte {
        0 => Ok(BinaryEncoding::Raw),
        1 => Ok(BinaryEncoding::Json),
        other => Err(BinaryError::UnknownEncoding(other)),
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// The model of a client frame: kind 0 `0, jl, rl, tl, el, join_ref, ref, topic, event, payload…`;
/// kind 3 `3, jl, rl, tl, el, ml, encoding, join_ref, ref, topic, event, metadata, data…`. Fields are
/// read in order and the first one that fails names the error.
fn model_client(frame: &[u8]) -> Result<InboundFrame, BinaryError> {
    let (&kind, rest) = frame.split_first().ok_or(BinaryError::Empty)?;
    let header_len = match kind {
        0 => 4,
        3 => 6,
        other => return Err(BinaryError::UnknownKind(other)),
    };
    let header = rest.get(..header_len).ok_or(BinaryError::Truncated)?;
    let mut body = &rest[header_len..];
    let enc = if kind == 3 { Some(encoding(header[5])?) } else { None };
    let join_ref = non_empty(utf8(field(&mut body, header[0])?)?);
    let msg_ref = non_empty(utf8(field(&mut body, header[1])?)?);
    let topic = utf8(field(&mut body, header[2])?)?;
    let name = utf8(field(&mut body, header[3])?)?;
    let (event, payload) = match enc {
        None => (name, InboundPayload::Binary(Bytes::copy_from_slice(body))),
        Some(encoding) => {
            let metadata = Bytes::copy_from_slice(field(&mut body, header[4])?);
            let data = Bytes::copy_from_slice(body);
            (
                "broadcast".to_owned(),
                InboundPayload::UserBroadcast(UserBroadcast { event: name, encoding, metadata, data }),
            )
        }
    };
    Ok(InboundFrame { join_ref, msg_ref, topic, event, payload })
}

/// The model of a server frame: `4, tl, el, ml, encoding, topic, event, metadata, data…`.
fn model_server(frame: &[u8]) -> Result<ServerUserBroadcast, BinaryError> {
    let (&kind, rest) = frame.split_first().ok_or(BinaryError::Empty)?;
    if kind != 4 {
        return Err(BinaryError::UnknownKind(kind));
    }
    let header = rest.get(..4).ok_or(BinaryError::Truncated)?;
    let mut body = &rest[4..];
    let encoding = encoding(header[3])?;
    let topic = utf8(field(&mut body, header[0])?)?;
    let event = utf8(field(&mut body, header[1])?)?;
    let metadata = Bytes::copy_from_slice(field(&mut body, header[2])?);
    Ok(ServerUserBroadcast { topic, event, metadata, encoding, data: Bytes::copy_from_slice(body) })
}

/// Decodes `frame` every way and compares with the models.
fn check(frame: &[u8]) {
    let bytes = Bytes::copy_from_slice(frame);
    let decoded = decode_binary(Vsn::V2, bytes.clone());
    assert_eq!(decoded, model_client(frame).map_err(DecodeError::Binary), "{frame:?}");
    if let Ok(frame) = &decoded {
        check_client_message(frame);
    }
    assert_eq!(decode_binary(Vsn::V1, bytes.clone()), Err(DecodeError::BinaryOnV1));
    assert_eq!(decode_server_frame(bytes), model_server(frame), "{frame:?}");
}

/// Field bytes: valid UTF-8 text most of the time, else arbitrary bytes.
fn field_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => text().prop_map(String::into_bytes),
        1 => any_text(40).prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ]
}

/// A length byte: the true one, or a lie (off by a little, or anything).
fn length(actual: usize) -> impl Strategy<Value = u8> {
    let actual = actual.min(255) as u8;
    prop_oneof![
        6 => Just(actual),
        1 => (-3i16..=3).prop_map(move |d| (i16::from(actual) + d).clamp(0, 255) as u8),
        1 => any::<u8>(),
    ]
}

/// A frame of kind 0, 3 or 4 (or another kind) built from fields, with lengths that may lie, then
/// possibly cut short.
fn structured_frame() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop_oneof![3 => Just(0u8), 3 => Just(3), 2 => Just(4), 1 => any::<u8>()];
    let encoding = prop_oneof![4 => 0u8..2, 1 => any::<u8>()];
    let fields = prop::collection::vec(field_bytes(), 5);
    let data = prop::collection::vec(any::<u8>(), 0..64);
    (kind, encoding, fields, data)
        .prop_flat_map(|(kind, encoding, fields, data)| {
            let lens: Vec<_> = fields.iter().map(|f| length(f.len())).collect();
            (
                Just((kind, encoding, fields, data)),
                lens,
                prop::option::weighted(0.2, any::<prop::sample::Index>()),
            )
        })
        .prop_map(|((kind, encoding, fields, data), lens, cut)| {
            let (header, used): (Vec<u8>, usize) = match kind {
                0 => (lens[..4].to_vec(), 4),
                3 => ([&lens[..5], &[encoding][..]].concat(), 5),
                4 => ([&lens[..3], &[encoding][..]].concat(), 3),
                _ => (lens.clone(), 5),
            };
            let mut frame = vec![kind];
            frame.extend(header);
            for f in &fields[..used] {
                frame.extend(f);
            }
            frame.extend(data);
            if let Some(cut) = cut {
                frame.truncate(cut.index(frame.len() + 1));
            }
            frame
        })
}

fn vsn() -> impl Strategy<Value = Vsn> {
    prop_oneof![Just(Vsn::V1), Just(Vsn::V2)]
}

fn binary_encoding() -> impl Strategy<Value = BinaryEncoding> {
    prop_oneof![Just(BinaryEncoding::Raw), Just(BinaryEncoding::Json)]
}

/// A name up to ~100 bytes, sometimes past the 255-byte limit of a length field.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![8 => text(), 1 => "[a-z]{250,260}", 1 => any_text(80)]
}

proptest! {
    #![proptest_config(support::config())]

    #[test]
    fn fuzz_binary_arbitrary_bytes(frame in prop::collection::vec(any::<u8>(), 0..300)) {
        check(&frame);
    }

    /// The same, starting with a kind the decoders know, so the bytes reach the header and fields.
    #[test]
    fn fuzz_binary_known_kind(kind in prop::sample::select(vec![0u8, 3, 4]), rest in prop::collection::vec(any::<u8>(), 0..300)) {
        check(&[&[kind][..], &rest].concat());
    }

    #[test]
    fn fuzz_binary_structured(frame in structured_frame()) {
        check(&frame);
    }

    /// Round trip of realtime-js's kind-3 push: what the client encodes, the server decodes.
    #[test]
    fn fuzz_binary_push_round_trip(
        join_ref in name(), msg_ref in name(), topic in name(), event in name(),
        encoding in binary_encoding(), data in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let encoded = encode_user_broadcast_push(&join_ref, &msg_ref, &topic, &event, encoding, &data);
        let too_long = [("join_ref", &join_ref), ("ref", &msg_ref), ("topic", &topic), ("event", &event)]
            .into_iter()
            .find(|(_, s)| s.len() > 255);
        match (encoded, too_long) {
            (Err(e), Some((field, _))) => prop_assert_eq!(e, BinaryError::FieldTooLong(field)),
            (Ok(frame), None) => {
                check(&frame);
                let decoded = decode_binary(Vsn::V2, frame).expect("the client's frame decodes");
                let ub = UserBroadcast { event, encoding, metadata: Bytes::new(), data: Bytes::from(data) };
                prop_assert_eq!(decoded, InboundFrame {
                    join_ref: non_empty(join_ref),
                    msg_ref: non_empty(msg_ref),
                    topic,
                    event: "broadcast".into(),
                    payload: InboundPayload::UserBroadcast(ub),
                });
            }
            (got, too_long) => panic!("got {got:?} with too long field {too_long:?}"),
        }
    }

    /// Round trip of the server's kind-4 frame: what the server encodes, realtime-js decodes.
    #[test]
    fn fuzz_binary_server_round_trip(
        topic in name(), event in name(), metadata in prop::collection::vec(any::<u8>(), 0..300),
        encoding in binary_encoding(), data in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let encoded = encode_user_broadcast(&topic, &event, &metadata, encoding, &data);
        let too_long = [("topic", topic.len()), ("event", event.len()), ("metadata", metadata.len())]
            .into_iter()
            .find(|(_, len)| *len > 255);
        match (encoded, too_long) {
            (Err(e), Some((field, _))) => prop_assert_eq!(e, BinaryError::FieldTooLong(field)),
            (Ok(frame), None) => {
                check(&frame);
                let expected = ServerUserBroadcast {
                    topic, event, metadata: Bytes::from(metadata), encoding, data: Bytes::from(data),
                };
                prop_assert_eq!(decode_server_frame(frame), Ok(expected));
            }
            (got, too_long) => panic!("got {got:?} with too long field {too_long:?}"),
        }
    }

    /// `server::user_broadcast`: a kind-4 frame for 2.0.0 when the names fit, else the JSON text form
    /// (JSON payloads only); raw bytes cannot reach 1.0.0.
    #[test]
    fn fuzz_user_broadcast_per_version(
        vsn in vsn(), topic in name(), event in name(), json in any::<bool>(),
        payload in support::json(), raw in prop::collection::vec(any::<u8>(), 0..64),
        meta in prop::option::of(support::json()),
    ) {
        let (encoding, data) =
            if json { (BinaryEncoding::Json, payload.to_string().into_bytes()) } else { (BinaryEncoding::Raw, raw) };
        let meta_json = meta.as_ref().map(Value::to_string);
        let out = server::user_broadcast(vsn, &topic, &event, encoding, &data, meta_json.as_deref());
        let fits = topic.len() <= 255 && event.len() <= 255 && meta_json.as_ref().map_or(0, String::len) <= 255;
        match out {
            Some(OutFrame::Binary(frame)) => {
                prop_assert!(vsn == Vsn::V2 && fits);
                let decoded = decode_server_frame(frame).expect("the server's frame decodes");
                prop_assert_eq!((decoded.topic, decoded.event, decoded.encoding), (topic, event, encoding));
                prop_assert_eq!(&decoded.metadata[..], meta_json.as_deref().unwrap_or("").as_bytes());
                prop_assert_eq!(&decoded.data[..], &data[..]);
            }
            Some(OutFrame::Text(text)) => {
                prop_assert!(json && (vsn == Vsn::V1 || !fits));
                let frame = decode_text(vsn, &text).expect("the server's frame decodes");
                prop_assert_eq!((&frame.topic, frame.event.as_str()), (&topic, "broadcast"));
                let InboundPayload::Json(raw) = &frame.payload else { panic!("JSON payload") };
                let got: Value = serde_json::from_str(raw.get()).expect("JSON");
                let mut expected = serde_json::json!({"event": event, "payload": payload, "type": "broadcast"});
                if let Some(meta) = meta {
                    expected["meta"] = meta;
                }
                // Compare through the same (inexact) float parsing.
                prop_assert_eq!(got, serde_json::from_str::<Value>(&expected.to_string()).expect("JSON"));
            }
            None => prop_assert!(!json && (vsn == Vsn::V1 || !fits)),
        }
    }
}

/// Every header claiming the largest lengths (255 per field) over bodies of every size up to what it
/// claims: the decoder reads no further than the frame and refuses with `Truncated` until the fields
/// are all there.
#[test]
fn lying_lengths_are_refused_until_the_fields_are_there() {
    for (kind, header, claimed) in [
        (0u8, vec![255u8; 4], 4 * 255),
        (3, vec![255, 255, 255, 255, 255, 0], 5 * 255),
        (4, vec![255, 255, 255, 1], 3 * 255),
    ] {
        for body_len in 0..=claimed + 2 {
            let frame = [&[kind][..], &header, &vec![b'a'; body_len]].concat();
            check(&frame);
            let complete = body_len >= claimed;
            let result = if kind == 4 {
                decode_server_frame(Bytes::from(frame)).err()
            } else {
                decode_binary(Vsn::V2, Bytes::from(frame)).err().map(|e| match e {
                    DecodeError::Binary(e) => e,
                    other => panic!("{other:?}"),
                })
            };
            assert_eq!(result, (!complete).then_some(BinaryError::Truncated), "kind {kind}, body {body_len}");
        }
        // Every header shorter than the kind's is truncated too.
        for len in 0..header.len() {
            let frame = [&[kind][..], &header[..len]].concat();
            check(&frame);
        }
    }
}
