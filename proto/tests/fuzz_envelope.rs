//! Fuzz target: the text frame decoders of both serializers (`envelope::decode_text`, 1.0.0 objects and
//! 2.0.0 arrays) and the typed message built from a frame (`ClientMessage::from_frame`).
//!
//! This is the first code a client's text reaches, so no input may panic it. Beyond arbitrary text the
//! generators build real envelopes whose fields are missing, of the wrong type, extra, huge or nested,
//! and edit valid frames character by character, so the inputs get past the JSON parser into the
//! envelope rules. Where the answer is known it is checked: an envelope is accepted exactly when its
//! shape is right (the oracle below restates the rules of `envelope.rs`), and every frame the server
//! encodes (`server::message` and the helpers on it) decodes back to the same refs, topic, event and
//! payload. Cases per property: `REALTIME_FUZZ_CASES` (see `support`).

mod support;

use proptest::prelude::*;
use realtime_proto::envelope::{decode_text, DecodeError, InboundFrame, InboundPayload};
use realtime_proto::server::{self, OutFrame, ReplyStatus};
use realtime_proto::Vsn;
use serde_json::{json, Map, Value};
use support::{any_text, check_client_message, edits, json_soup, mutate, text};

fn vsn() -> impl Strategy<Value = Vsn> {
    prop_oneof![Just(Vsn::V1), Just(Vsn::V2)]
}

/// A ref as clients send it (string, integer, null) or as they should not (any other JSON value).
fn ref_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => "[0-9]{1,4}".prop_map(Value::String),
        1 => Just(Value::Null),
        1 => text().prop_map(Value::String),
        1 => any::<i64>().prop_map(Value::from),
        1 => support::wrong(),
    ]
}

/// A topic or event: mostly a string, sometimes any JSON value.
fn name_value() -> impl Strategy<Value = Value> {
    prop_oneof![4 => text().prop_map(Value::String), 1 => support::wrong()]
}

/// An envelope field: present (from `valid`) most of the time, absent otherwise.
fn field(valid: impl Strategy<Value = Value>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![8 => valid.prop_map(Some), 1 => Just(None)]
}

/// What a ref must decode to: `null`/absent is none, a string itself, an i64 its decimal text; any other
/// value refuses the frame.
fn expected_ref(value: Option<&Value>) -> Result<Option<String>, ()> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => n.as_i64().map(|i| Some(i.to_string())).ok_or(()),
        Some(_) => Err(()),
    }
}

/// The fields of a decoded frame: join_ref, ref, topic, event and the payload's JSON text.
type Fields = (Option<String>, Option<String>, String, String, String);

/// The frame `decode_text` must give for these fields, or `None` when it must refuse them.
fn expected_frame(
    join_ref: Option<&Value>,
    msg_ref: Option<&Value>,
    topic: Option<&Value>,
    event: Option<&Value>,
    payload: Option<&Value>,
) -> Option<Fields> {
    Some((
        expected_ref(join_ref).ok()?,
        expected_ref(msg_ref).ok()?,
        topic?.as_str()?.to_owned(),
        event?.as_str()?.to_owned(),
        payload?.to_string(),
    ))
}

fn assert_frame(frame: &InboundFrame, expected: &Fields) {
    let (join_ref, msg_ref, topic, event, payload) = expected;
    assert_eq!(&frame.join_ref, join_ref);
    assert_eq!(&frame.msg_ref, msg_ref);
    assert_eq!(&frame.topic, topic);
    assert_eq!(&frame.event, event);
    let InboundPayload::Json(raw) = &frame.payload else { panic!("a text frame has a JSON payload") };
    assert_eq!(raw.get(), payload, "the payload is kept verbatim");
}

/// Decodes any text with both serializers; what decodes must interpret without panicking.
fn decode_anything(text: &str) {
    for vsn in Vsn::ALL {
        if let Ok(frame) = decode_text(vsn, text) {
            check_client_message(&frame);
        }
    }
}

proptest! {
    #![proptest_config(support::config())]

    #[test]
    fn fuzz_text_arbitrary(text in any_text(200)) {
        decode_anything(&text);
    }

    #[test]
    fn fuzz_text_bytes_lossy(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        decode_anything(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn fuzz_text_json_soup(text in json_soup()) {
        decode_anything(&text);
    }

    #[test]
    fn fuzz_text_any_json_value(value in support::json()) {
        decode_anything(&value.to_string());
    }

    /// 1.0.0 objects with every field present, missing, of the wrong type, plus unknown keys.
    #[test]
    fn fuzz_v1_object_fields(
        topic in field(name_value()),
        event in field(name_value()),
        payload in field(support::json()),
        msg_ref in field(ref_value()),
        join_ref in field(ref_value()),
        extra in prop::collection::vec((text(), support::wrong()), 0..3),
    ) {
        let mut map: Map<String, Value> = extra.into_iter().collect();
        for (key, value) in [("topic", &topic), ("event", &event), ("payload", &payload), ("ref", &msg_ref),
                             ("join_ref", &join_ref)] {
            match value {
                Some(value) => map.insert(key.to_owned(), value.clone()),
                None => map.remove(key),
            };
        }
        let text = Value::Object(map).to_string();
        let expected = expected_frame(join_ref.as_ref(), msg_ref.as_ref(), topic.as_ref(), event.as_ref(),
                                      payload.as_ref());
        match (decode_text(Vsn::V1, &text), expected) {
            (Ok(frame), Some(expected)) => {
                assert_frame(&frame, &expected);
                check_client_message(&frame);
            }
            (Err(DecodeError::Json(_)), None) => {}
            (got, expected) => panic!("{text}: got {got:?}, expected {expected:?}"),
        }
    }

    /// 2.0.0 arrays of any length whose elements may be of the wrong type.
    #[test]
    fn fuzz_v2_array_fields(
        join_ref in field(ref_value()),
        msg_ref in field(ref_value()),
        topic in field(name_value()),
        event in field(name_value()),
        payload in field(support::json()),
        extra in prop::collection::vec(support::wrong(), 0..3),
    ) {
        // An absent field shortens the array, so later ones move up a place.
        let items: Vec<Value> =
            [join_ref, msg_ref, topic, event, payload].into_iter().flatten().chain(extra).collect();
        let text = Value::Array(items.clone()).to_string();
        let result = decode_text(Vsn::V2, &text);
        if items.len() < 5 {
            prop_assert_eq!(result, Err(DecodeError::NotAnArray));
            return Ok(());
        }
        let expected = expected_frame(Some(&items[0]), Some(&items[1]), Some(&items[2]), Some(&items[3]),
                                      Some(&items[4]));
        match (result, expected) {
            (Ok(frame), Some(expected)) => {
                assert_frame(&frame, &expected);
                check_client_message(&frame);
            }
            (Err(DecodeError::FieldType(_)), None) => {}
            (got, expected) => panic!("{text}: got {got:?}, expected {expected:?}"),
        }
    }

    /// Valid frames of both serializers, edited a few characters at a time.
    #[test]
    fn fuzz_text_mutated_frames(
        vsn in vsn(),
        join_ref in prop::option::of(text()),
        msg_ref in prop::option::of(text()),
        topic in text(),
        event in text(),
        payload in support::json(),
        edits in edits(),
    ) {
        let frame = server::message(vsn, join_ref.as_deref(), msg_ref.as_deref(), &topic, &event,
                                    &payload.to_string());
        decode_anything(&mutate(frame.as_text().unwrap_or_default(), &edits));
    }

    /// Round trip: every envelope the server writes decodes to what it was given (1.0.0 drops join_ref).
    #[test]
    fn fuzz_server_message_round_trip(
        vsn in vsn(),
        join_ref in prop::option::of(text()),
        msg_ref in prop::option::of(text()),
        topic in text(),
        event in text(),
        payload in support::json(),
    ) {
        let payload_json = payload.to_string();
        let out = server::message(vsn, join_ref.as_deref(), msg_ref.as_deref(), &topic, &event, &payload_json);
        let frame = decode_text(vsn, out.as_text().expect("a text frame")).expect("the server's frame decodes");
        let join_ref = if vsn == Vsn::V1 { None } else { join_ref };
        assert_frame(&frame, &(join_ref, msg_ref, topic, event, payload_json));
    }

    /// Round trip of the helpers: replies, errors, closes, channel pushes and fastlane broadcasts.
    #[test]
    fn fuzz_server_helpers_round_trip(
        vsn in vsn(),
        join_ref in prop::option::of(text()),
        msg_ref in prop::option::of(text()),
        topic in text(),
        event in text(),
        reason in text(),
        ok in any::<bool>(),
        response in support::json(),
    ) {
        let (j, r) = (join_ref.as_deref(), msg_ref.as_deref());
        let v1 = vsn == Vsn::V1;
        let decoded = |out: OutFrame| -> (InboundFrame, Value) {
            let frame = decode_text(vsn, out.as_text().expect("a text frame")).expect("decodes");
            let InboundPayload::Json(raw) = &frame.payload else { panic!("JSON payload") };
            let payload = serde_json::from_str(raw.get()).expect("payload is JSON");
            (frame, payload)
        };
        // serde_json's float parsing is not exact, so compare with the expected value as parsed from text.
        let reparse = |v: Value| serde_json::from_str::<Value>(&v.to_string()).expect("JSON");

        let status = if ok { ReplyStatus::Ok } else { ReplyStatus::Error };
        let (f, p) = decoded(server::reply(vsn, j, r, &topic, status, &response.to_string()));
        prop_assert_eq!((&f.event, &f.topic, &f.msg_ref), (&"phx_reply".to_owned(), &topic, &msg_ref));
        prop_assert_eq!(&f.join_ref, if v1 { &None } else { &join_ref });
        prop_assert_eq!(p, reparse(json!({"status": if ok { "ok" } else { "error" }, "response": response})));

        let (f, p) = decoded(server::error_reply(vsn, j, r, &topic, &reason));
        prop_assert_eq!(&f.event, "phx_reply");
        prop_assert_eq!(p, json!({"status": "error", "response": {"reason": reason}}));

        let (f, p) = decoded(server::close(vsn, j, &topic));
        prop_assert_eq!((&f.event, &f.msg_ref, &p), (&"phx_close".to_owned(), &join_ref, &json!({})));
        prop_assert_eq!(&f.join_ref, if v1 { &None } else { &join_ref });

        let (f, p) = decoded(server::channel_push(vsn, j, &topic, &event, &response.to_string()));
        prop_assert_eq!((&f.event, &f.msg_ref, &p), (&event, &None, &reparse(response.clone())));
        prop_assert_eq!(&f.join_ref, if v1 { &None } else { &join_ref });

        let (f, p) = decoded(server::fastlane(vsn, &topic, &event, &response.to_string()));
        prop_assert_eq!((&f.event, &f.join_ref, &f.msg_ref, &p), (&event, &None, &None, &reparse(response)));
    }
}

/// Nesting far beyond serde_json's recursion limit (128) must neither overflow the stack nor be
/// mistaken for a valid join: the envelope keeps the payload as raw text (skipped without recursion)
/// and the interpreter reads a payload too deep to parse as `null`.
#[test]
fn deeply_nested_payloads_do_not_overflow_the_stack() {
    for depth in [129, 100_000] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        for payload in [&nested, &objects] {
            for event in ["phx_join", "presence", "access_token", "broadcast", "other"] {
                let v1 =
                    format!(r#"{{"topic":"realtime:a","event":"{event}","payload":{payload},"ref":"1"}}"#);
                let v2 = format!(r#"["1","2","realtime:a","{event}",{payload}]"#);
                for (vsn, text) in [(Vsn::V1, &v1), (Vsn::V2, &v2)] {
                    let frame = decode_text(vsn, text).expect("raw payloads are not depth-limited");
                    check_client_message(&frame);
                }
            }
            // Nesting in a field that must be a string or a ref is a type error, not a crash.
            let v2 = format!(r#"[{payload},"2","realtime:a","x",{{}}]"#);
            assert_eq!(decode_text(Vsn::V2, &v2), Err(DecodeError::FieldType("join_ref")));
            let v1 = format!(r#"{{"topic":{payload},"event":"x","payload":{{}}}}"#);
            assert!(matches!(decode_text(Vsn::V1, &v1), Err(DecodeError::Json(_))));
        }
        // Unbalanced nesting ends in a syntax error.
        assert!(decode_text(Vsn::V2, &"[".repeat(depth)).is_err());
        assert!(decode_text(Vsn::V1, &"{\"a\":[".repeat(depth)).is_err());
    }
}

/// Huge values in every position: numbers out of every range, megabyte strings, thousands of elements.
#[test]
fn huge_values_are_decoded_or_refused() {
    for number in
        ["1e999", "-1e999", "18446744073709551616", "9223372036854775808", "-9223372036854775809", "1.5"]
    {
        let v2 = format!(r#"[{number},"2","t","e",{{}}]"#);
        assert_eq!(decode_text(Vsn::V2, &v2), Err(DecodeError::FieldType("join_ref")), "{number}");
        let v1 = format!(r#"{{"topic":"t","event":"e","payload":{{}},"ref":{number}}}"#);
        assert!(matches!(decode_text(Vsn::V1, &v1), Err(DecodeError::Json(_))), "{number}");
    }
    let big = "x".repeat(1 << 20);
    let frame = decode_text(Vsn::V2, &format!(r#"["{big}","{big}","{big}","{big}","{big}"]"#)).unwrap();
    assert_eq!((frame.topic.len(), frame.event.len()), (big.len(), big.len()));
    check_client_message(&frame);
    let many = format!("[null,null,\"t\",\"phx_join\",{{}}{}]", ",0".repeat(200_000));
    check_client_message(&decode_text(Vsn::V2, &many).unwrap());
    let wide = format!("{{\"config\":{{\"postgres_changes\":[{}{{}}]}}}}", "{},".repeat(100_000));
    let frame = decode_text(Vsn::V2, &format!("[null,null,\"t\",\"phx_join\",{wide}]")).unwrap();
    check_client_message(&frame);
}
