//! Fuzz target: the `phx_join` payload (`JoinPayload::from_value`, `JoinConfig`), alone and as it
//! arrives inside a frame of either serializer.
//!
//! The join parser is lenient by design (a value of the wrong type falls back to its default), so the
//! risk is less a refusal than a panic or a silent misreading. The generators build join payloads
//! whose every key may be missing, `null`, of the wrong type, a near-miss spelling of a boolean
//! (`"TRUE"`, `"yes"`, `1`), nested or extreme, and compare the result with an oracle that restates
//! PROTOCOL.md §2.4 as `join.rs` documents it. Cases per property: `REALTIME_FUZZ_CASES` (see
//! `support`).

mod support;

use proptest::prelude::*;
use realtime_proto::client::{ClientEvent, ClientMessage};
use realtime_proto::envelope::decode_text;
use realtime_proto::join::{
    flexible_bool, BroadcastConfig, JoinConfig, JoinPayload, PostgresChangesOptions, PresenceConfig,
};
use realtime_proto::Vsn;
use serde_json::{json, Map, Value};
use support::{check_client_message, edits, mutate, text};

// Every generator is boxed: the nested strategy types of an unboxed join payload are large enough to
// overflow a test thread's stack in a debug build.

/// A value for a boolean option: the accepted spellings, near misses, and anything else.
fn flag() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => prop::sample::select(vec![
            json!(true), json!(false), json!("true"), json!("false"), json!("TRUE"), json!("False"),
            json!("tRuE"), json!("yes"), json!("1"), json!(1), json!(0), json!(null), json!(""), json!(" true"),
            json!("truE\u{0}"), json!(["true"]), json!({"true": true}),
        ]),
        1 => support::wrong(),
    ]
    .boxed()
}

/// An object from optional entries (an absent entry is left out), plus a few unknown keys.
fn object(entries: Vec<(&'static str, Option<Value>)>, extra: Vec<(String, Value)>) -> Value {
    let mut map: Map<String, Value> = extra.into_iter().collect();
    for (key, value) in entries {
        match value {
            Some(value) => map.insert(key.to_owned(), value),
            None => map.remove(key),
        };
    }
    Value::Object(map)
}

fn extra() -> impl Strategy<Value = Vec<(String, Value)>> {
    prop::collection::vec((text(), support::wrong()), 0..2)
}

/// `Some(valid)` mostly, else absent or any value at all.
fn entry(valid: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Option<Value>> {
    prop_oneof![6 => valid.prop_map(Some), 1 => Just(None), 1 => support::wrong().prop_map(Some)].boxed()
}

fn broadcast() -> BoxedStrategy<Value> {
    (entry(flag()), entry(flag()), entry(support::json()), entry(flag()), extra())
        .prop_map(|(self_, ack, replay, ready, extra)| {
            object(
                vec![("self", self_), ("ack", ack), ("replay", replay), ("replication_ready", ready)],
                extra,
            )
        })
        .boxed()
}

fn presence() -> BoxedStrategy<Value> {
    let key = prop_oneof![
        text().prop_map(Value::String),
        Just(json!("")),
        Just(Value::Null),
        support::number().prop_map(Value::Number),
        support::wrong(),
    ];
    (entry(key), entry(flag()), extra())
        .prop_map(|(key, enabled, extra)| object(vec![("key", key), ("enabled", enabled)], extra))
        .boxed()
}

fn postgres_changes() -> BoxedStrategy<Value> {
    let change = prop_oneof![
        4 => (entry(text().prop_map(Value::String)), entry(text().prop_map(Value::String)), extra())
            .prop_map(|(schema, table, extra)| object(vec![("schema", schema), ("table", table)], extra)),
        1 => support::wrong(),
    ];
    prop::collection::vec(change, 0..5).prop_map(Value::Array).boxed()
}

fn options() -> BoxedStrategy<Value> {
    let timeout = prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(json!(5000.0)),
        Just(json!("5000")),
        support::wrong(),
    ];
    (entry(flag()), entry(timeout), extra())
        .prop_map(|(wait, timeout, extra)| object(vec![("wait", wait), ("timeout", timeout)], extra))
        .boxed()
}

fn config() -> BoxedStrategy<Value> {
    (
        entry(broadcast()),
        entry(presence()),
        entry(postgres_changes()),
        entry(options()),
        entry(flag()),
        extra(),
    )
        .prop_map(|(broadcast, presence, changes, options, private, extra)| {
            object(
                vec![
                    ("broadcast", broadcast),
                    ("presence", presence),
                    ("postgres_changes", changes),
                    ("postgres_changes_options", options),
                    ("private", private),
                ],
                extra,
            )
        })
        .boxed()
}

/// A join payload as realtime-js sends it, with every part possibly wrong.
fn join_payload() -> BoxedStrategy<Value> {
    let token = prop_oneof![text().prop_map(Value::String), Just(Value::Null), support::wrong()];
    let payload = (entry(config()), entry(token.clone()), entry(token), extra()).prop_map(
        |(config, access_token, user_token, extra)| {
            object(
                vec![("config", config), ("access_token", access_token), ("user_token", user_token)],
                extra,
            )
        },
    );
    prop_oneof![8 => payload, 1 => support::json()].boxed()
}

// The oracle: PROTOCOL.md §2.4 as `join.rs` documents it, written out again.

fn flag_of(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

fn expected_config(value: &Value) -> JoinConfig {
    let Some(map) = value.as_object() else { return JoinConfig::default() };
    let broadcast = match map.get("broadcast") {
        Some(Value::Object(b)) => BroadcastConfig {
            self_broadcast: flag_of(b.get("self")),
            ack: flag_of(b.get("ack")),
            replay: b.get("replay").filter(|v| !v.is_null()).cloned(),
            resume: b.get("resume").filter(|v| !matches!(v, Value::Null | Value::Bool(false))).cloned(),
            replication_ready: flag_of(b.get("replication_ready")),
        },
        _ => BroadcastConfig::default(),
    };
    let presence = match map.get("presence") {
        Some(Value::Object(p)) => PresenceConfig {
            key: match p.get("key") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => (!s.is_empty()).then(|| s.clone()),
                Some(other) => Some(other.to_string()),
            },
            enabled: match p.get("enabled") {
                Some(Value::Bool(b)) => *b,
                Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
                // Absent or neither boolean spelling: legacy clients (realtime-js 2.9/2.10) mean enabled.
                _ => true,
            },
            counts_only: flag_of(p.get("counts_only")),
        },
        _ => PresenceConfig::default(),
    };
    let postgres_changes = match map.get("postgres_changes") {
        Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_object().cloned()).collect(),
        _ => Vec::new(),
    };
    let postgres_changes_options = match map.get("postgres_changes_options") {
        Some(Value::Object(o)) => Some(PostgresChangesOptions {
            wait: flag_of(o.get("wait")),
            timeout_ms: o.get("timeout").and_then(Value::as_u64),
        }),
        _ => None,
    };
    JoinConfig {
        broadcast,
        presence,
        postgres_changes,
        postgres_changes_options,
        private: flag_of(map.get("private")),
    }
}

fn expected_join(payload: &Value) -> JoinPayload {
    let Some(map) = payload.as_object() else { return JoinPayload::default() };
    let token = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_owned);
    JoinPayload {
        config: map.get("config").map(expected_config),
        access_token: token("user_token").or_else(|| token("access_token")),
    }
}

proptest! {
    #![proptest_config(support::config())]

    #[test]
    fn fuzz_join_any_value(value in support::json()) {
        prop_assert_eq!(JoinPayload::from_value(&value), expected_join(&value));
    }

    #[test]
    fn fuzz_join_structured(payload in join_payload()) {
        prop_assert_eq!(JoinPayload::from_value(&payload), expected_join(&payload));
    }

    #[test]
    fn fuzz_flexible_bool(value in flag()) {
        let expected = match &value {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        };
        prop_assert_eq!(flexible_bool(Some(&value)), expected);
        prop_assert_eq!(flexible_bool(None), None);
    }

    /// The whole way in: a join frame of either serializer, as sent and with a few characters edited.
    #[test]
    fn fuzz_join_frames(payload in join_payload(), v1 in any::<bool>(), edits in prop::option::of(edits())) {
        let payload_json = payload.to_string();
        let text = if v1 {
            format!(r#"{{"topic":"realtime:room","event":"phx_join","payload":{payload_json},"ref":"1","join_ref":"1"}}"#)
        } else {
            format!(r#"["1","1","realtime:room","phx_join",{payload_json}]"#)
        };
        let vsn = if v1 { Vsn::V1 } else { Vsn::V2 };
        match edits {
            None => {
                let frame = decode_text(vsn, &text).expect("a join frame decodes");
                check_client_message(&frame);
                let ClientEvent::Join(join) = ClientMessage::from_frame(frame).event else {
                    panic!("not a join");
                };
                // Through the same (inexact) float parsing as the frame's payload.
                let reparsed: Value = serde_json::from_str(&payload_json).expect("JSON");
                prop_assert_eq!(join, expected_join(&reparsed));
            }
            Some(edits) => {
                if let Ok(frame) = decode_text(vsn, &mutate(&text, &edits)) {
                    check_client_message(&frame);
                }
            }
        }
    }
}

/// Very wide configs (many `postgres_changes` entries, long keys) are read without trouble; the limit
/// on entries is the node's business.
#[test]
fn wide_configs() {
    let changes: Vec<Value> =
        (0..10_000).map(|i| json!({"schema": "public", "table": format!("t{i}")})).collect();
    let key = "k".repeat(1 << 20);
    let payload =
        json!({"config": {"postgres_changes": changes, "presence": {"key": key}}, "access_token": key});
    let join = JoinPayload::from_value(&payload);
    assert_eq!(join, expected_join(&payload));
    assert_eq!(join.config.map(|c| c.postgres_changes.len()), Some(10_000));
}
