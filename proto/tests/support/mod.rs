//! What the `fuzz_*` targets share: how many cases a property runs, and generators of JSON values.
//!
//! The case count comes from `REALTIME_FUZZ_CASES` so that `cargo test` stays quick (a few thousand
//! inputs per property) while a long run (`REALTIME_FUZZ_CASES=1000000`, release mode) uses the same
//! code. Failures are not persisted to `proptest-regressions/` files: a crash found here becomes a
//! named regression unit test next to the decoder, which says what broke and why.

#![allow(dead_code)] // Each target uses part of this module.

use proptest::prelude::*;
use proptest::test_runner::Config;
use realtime_proto::client::{BroadcastPush, ClientEvent, ClientMessage};
use realtime_proto::envelope::{InboundFrame, InboundPayload};
use realtime_proto::join::JoinPayload;
use serde_json::{Map, Number, Value};

/// Cases per property when `REALTIME_FUZZ_CASES` is not set: small enough for every `cargo test`.
pub const DEFAULT_CASES: u32 = 2_000;

/// The proptest configuration of every fuzz property.
pub fn config() -> Config {
    Config { cases: cases(), failure_persistence: None, ..Config::default() }
}

/// `REALTIME_FUZZ_CASES` (underscores allowed: `1_000_000`), else [`DEFAULT_CASES`]. A value that is
/// not a count fails the run rather than silently running the default.
pub fn cases() -> u32 {
    match std::env::var("REALTIME_FUZZ_CASES") {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("REALTIME_FUZZ_CASES={v:?} is not a count")),
        Err(_) => DEFAULT_CASES,
    }
}

/// Short strings that hit the interesting cases: empty, ASCII words, escapes, controls, multi-byte and
/// astral characters, and the words the decoders look for.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(prop::sample::select(&b"abcdefghijklmnopqrstuvwxyz_:"[..]), 0..12)
            .prop_map(|bytes| bytes.into_iter().map(char::from).collect()),
        2 => prop::collection::vec(any::<char>(), 0..24).prop_map(String::from_iter),
        1 => prop::sample::select(vec![
            "", "phoenix", "heartbeat", "phx_join", "phx_leave", "broadcast", "presence", "access_token",
            "realtime:", "realtime:room1", "true", "TRUE", "false", "null", "NULL", "*", "INSERT", "ınsert",
            "\u{0}", "\"", "\\", "é", "😀", "\u{feff}", "#{x}",
        ])
        .prop_map(str::to_owned),
    ]
}

/// A JSON number of any kind: small and extreme integers, and finite floats over the whole range.
pub fn number() -> impl Strategy<Value = Number> {
    prop_oneof![
        any::<i64>().prop_map(Number::from),
        any::<u64>().prop_map(Number::from),
        (-1000i64..1000).prop_map(Number::from),
        any::<f64>().prop_filter_map("finite", Number::from_f64),
        (-1e6f64..1e6).prop_filter_map("finite", Number::from_f64),
    ]
}

/// A JSON scalar: null, boolean, number or string.
pub fn scalar() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number().prop_map(Value::Number),
        text().prop_map(Value::String),
    ]
    .boxed()
}

/// A value of the wrong type for a field, cheaper to make than [`json`]: a scalar, or a flat array or
/// object of scalars.
pub fn wrong() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => scalar(),
        1 => prop::collection::vec(scalar(), 0..4).prop_map(Value::Array),
        1 => prop::collection::vec((text(), scalar()), 0..4)
            .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
    ]
    .boxed()
}

/// Any JSON value, nested a few levels deep.
pub fn json() -> BoxedStrategy<Value> {
    scalar()
        .prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((text(), inner), 0..6)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
            ]
        })
        .boxed()
}

/// Text built from JSON tokens and frame words: mostly not JSON, but close enough to get past the
/// first byte of a JSON parser into its error paths.
pub fn json_soup() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        " ",
        "null",
        "true",
        "false",
        "0",
        "-1",
        "1e999",
        "-0.0",
        "18446744073709551616",
        "9223372036854775807",
        "\"",
        "\"\\u0000\"",
        "\"\\ud800\"",
        "\"x\"",
        "\"topic\"",
        "\"event\"",
        "\"payload\"",
        "\"ref\"",
        "\"join_ref\"",
        "\"phoenix\"",
        "\"heartbeat\"",
        "\"phx_join\"",
        "\"config\"",
        "\\",
        "\u{0}",
        "é",
    ]);
    prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
}

/// Any text, control characters and lone multi-byte characters included (up to `max` characters).
pub fn any_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

/// One edit of a text: where (a fraction of its length), what (0 delete, 1 insert, 2 replace, 3 cut
/// the rest), and the character to insert or write.
pub type Edit = (f64, u8, char);

/// Edits for [`mutate`], biased towards the characters that matter to JSON and the filter grammar.
pub fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let c = prop_oneof![
        3 => prop::sample::select(vec!['"', '\\', '[', ']', '{', '}', ',', ':', '.', '=', '(', ')', '0', ' ', 'n']),
        1 => any::<char>(),
    ];
    prop::collection::vec((0.0f64..1.0, 0u8..4, c), 1..5)
}

/// Applies edits to a text character by character, so the result stays a `str`.
pub fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for &(at, op, c) in edits {
        let i = ((chars.len() as f64) * at) as usize;
        match op {
            0 if i < chars.len() => {
                chars.remove(i);
            }
            1 => chars.insert(i.min(chars.len()), c),
            2 if i < chars.len() => chars[i] = c,
            3 => chars.truncate(i),
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// Interprets a decoded frame and checks the typed message against the rules of `client.rs`, restated:
/// refs and topic are kept, and the event follows from the event name and payload kind alone.
pub fn check_client_message(frame: &InboundFrame) {
    let message = ClientMessage::from_frame(frame.clone());
    assert_eq!(
        (&message.join_ref, &message.msg_ref, &message.topic),
        (&frame.join_ref, &frame.msg_ref, &frame.topic)
    );
    // A payload that is not JSON the interpreter can parse (too deep, a lone surrogate) makes a join,
    // presence or token push `Unreadable`.
    let json = match &frame.payload {
        InboundPayload::Json(raw) => serde_json::from_str::<Value>(raw.get()).ok(),
        _ => None,
    };
    let readable = json.is_some() || !matches!(frame.payload, InboundPayload::Json(_));
    let event = frame.event.as_str();
    match (message.event, &frame.payload) {
        (ClientEvent::Heartbeat, _) => assert!(frame.topic == "phoenix" && event == "heartbeat"),
        _ if frame.topic == "phoenix" && event == "heartbeat" => panic!("a heartbeat was not recognised"),
        (ClientEvent::Join(join), InboundPayload::Json(_)) => {
            assert_eq!(event, "phx_join");
            assert_eq!(join, JoinPayload::from_value(json.as_ref().unwrap_or(&Value::Null)));
        }
        (ClientEvent::Leave, _) => assert_eq!(event, "phx_leave"),
        (ClientEvent::Broadcast(BroadcastPush::Json(raw)), InboundPayload::Json(sent)) => {
            assert_eq!(event, "broadcast");
            assert_eq!(raw.get(), sent.get(), "a JSON broadcast is relayed verbatim");
        }
        (ClientEvent::Broadcast(BroadcastPush::User(ub)), InboundPayload::UserBroadcast(sent)) => {
            assert_eq!(event, "broadcast");
            assert_eq!(&ub, sent);
        }
        (ClientEvent::Presence(push), InboundPayload::Json(_)) => {
            assert_eq!(event, "presence");
            let json = json.unwrap_or(Value::Null);
            let expected = json.get("event").and_then(Value::as_str).map(str::to_ascii_lowercase);
            assert_eq!(push.event, expected);
            assert_eq!(push.payload.as_ref(), json.get("payload"));
        }
        (ClientEvent::AccessToken(token), InboundPayload::Json(_)) => {
            assert_eq!(event, "access_token");
            let json = json.unwrap_or(Value::Null);
            assert_eq!(token.as_deref(), json.get("access_token").and_then(Value::as_str));
        }
        (ClientEvent::Unreadable { event: unreadable }, InboundPayload::Json(_)) => {
            assert_eq!(unreadable, event);
            assert!(!readable, "{event}: a readable payload was called unreadable");
            assert!(["phx_join", "presence", "access_token"].contains(&event));
        }
        (ClientEvent::Other { event: other }, payload) => {
            assert_eq!(other, event);
            let json_payload = matches!(payload, InboundPayload::Json(_));
            let known = ["broadcast", "phx_join", "phx_leave", "presence", "access_token"];
            assert!(!json_payload || !known.contains(&event), "{event} with JSON was not interpreted");
            assert!(!matches!(payload, InboundPayload::UserBroadcast(_)) || event != "broadcast");
        }
        (event, payload) => panic!("{event:?} does not fit its payload {payload:?}"),
    }
}
