//! Client-side frame encoding and server-frame interpretation, as pure functions over
//! `realtime-proto`'s codecs (so a protocol change breaks this crate's build or its tests).
//!
//! Outgoing: 2.0.0 text frames share the server's array layout `[join_ref, ref, topic, event, payload]`
//! (PROTOCOL.md §1.5), so [`server::message`] encodes them; 1.0.0 client objects carry `join_ref`, which
//! the server's 1.0.0 encoder drops, so they are written here. 2.0.0 broadcasts are binary kind 3.
//! Incoming: kind-4 binary frames and text envelopes become an [`Event`].

use bytes::Bytes;
use realtime_proto::binary::{self, BinaryEncoding, BinaryError};
use realtime_proto::envelope::{decode_text, InboundPayload};
use realtime_proto::{server, topic, OutFrame, Vsn};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

/// What the server said, as far as a load client cares.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A broadcast delivered to a channel.
    Broadcast { topic: String, payload: BroadcastPayload },
    /// A `phx_reply` to one of our pushes.
    Reply { msg_ref: Option<String>, topic: String, ok: bool, response: String },
    /// `phx_close` or `phx_error` for a channel: it is no longer joined.
    ChannelClosed { topic: String, event: String },
    /// A `system` message (rate limits, shutdown notices).
    System { topic: String, payload: String },
    /// A `postgres_changes` event: its whole payload (`{"ids":[…],"data":{…}}`).
    PostgresChanges { topic: String, payload: String },
    /// `presence_state` (`diff: false`) or `presence_diff` (`diff: true`) with its JSON payload.
    Presence { topic: String, diff: bool, payload: String },
    /// Any other event.
    Other { event: String },
    /// A frame that is not a valid envelope or kind-4 frame.
    Undecodable,
    /// The socket was closed (close frame code, if there was one).
    Closed { code: Option<u16> },
}

/// The user payload of a broadcast, in the form the serializer delivered it.
#[derive(Debug, Clone, PartialEq)]
pub enum BroadcastPayload {
    /// Kind-4 binary frame: the user payload bytes.
    User(Bytes),
    /// Text frame: the whole broadcast payload (`{"event":…,"payload":…,"type":"broadcast"}`).
    Json(String),
}

#[derive(Deserialize)]
struct ReplyPayload<'a> {
    status: String,
    #[serde(borrow)]
    response: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    reason: Option<String>,
}

/// Appends `s` as a JSON string literal.
fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn into_message(frame: OutFrame) -> Message {
    match frame {
        OutFrame::Text(text) => Message::text(text),
        OutFrame::Binary(bytes) => Message::Binary(bytes),
    }
}

/// A client push with a JSON payload, in the serializer's client layout.
pub fn push(
    vsn: Vsn,
    join_ref: Option<&str>,
    msg_ref: &str,
    topic: &str,
    event: &str,
    payload: &str,
) -> Message {
    match vsn {
        Vsn::V2 => into_message(server::message(vsn, join_ref, Some(msg_ref), topic, event, payload)),
        Vsn::V1 => Message::text(format!(
            "{{\"topic\":{},\"event\":{},\"payload\":{},\"ref\":{},\"join_ref\":{}}}",
            json_str(topic),
            json_str(event),
            payload,
            json_str(msg_ref),
            join_ref.map_or_else(|| "null".to_owned(), json_str),
        )),
    }
}

/// The `phx_join` payload realtime-js sends by default, with `self` and `ack` off.
pub fn join_payload(access_token: &str) -> String {
    join_payload_with_postgres_changes(access_token, "[]")
}

/// The same payload with `config.postgres_changes` set to `postgres_changes_json` (a JSON array of
/// `{event, schema, table, filter?}` objects, as realtime-js sends its bindings).
pub fn join_payload_with_postgres_changes(access_token: &str, postgres_changes_json: &str) -> String {
    join_payload_config(access_token, postgres_changes_json, false)
}

/// The default payload with `config.private` set as asked: a private channel is authorised at join
/// by the RLS policies on `realtime.messages` (PROTOCOL.md §6.2).
pub fn join_payload_private(access_token: &str, private: bool) -> String {
    join_payload_config(access_token, "[]", private)
}

fn join_payload_config(access_token: &str, postgres_changes_json: &str, private: bool) -> String {
    format!(
        concat!(
            "{{\"config\":{{\"broadcast\":{{\"ack\":false,\"self\":false}},",
            "\"presence\":{{\"key\":\"\",\"enabled\":false}},\"postgres_changes\":{},\"private\":{}}},",
            "\"access_token\":{}}}"
        ),
        postgres_changes_json,
        private,
        json_str(access_token)
    )
}

/// The join payload of a presence client: `config.presence` with `key` and `enabled: true`, so the
/// server pushes `presence_state` after the join and `presence_diff` on every change.
pub fn join_payload_with_presence(access_token: &str, key: &str) -> String {
    join_payload_with_presence_counts(access_token, key, false)
}

/// [`join_payload_with_presence`] asking for presence counts instead of `presence_state` and
/// `presence_diff` (`config.presence.counts_only: true`) when `counts_only`; a node that does not know
/// the field ignores it and sends the full state and diffs.
pub fn join_payload_with_presence_counts(access_token: &str, key: &str, counts_only: bool) -> String {
    format!(
        concat!(
            "{{\"config\":{{\"broadcast\":{{\"ack\":false,\"self\":false}},",
            "\"presence\":{{\"key\":{},\"enabled\":true{}}},\"postgres_changes\":[],\"private\":false}},",
            "\"access_token\":{}}}"
        ),
        json_str(key),
        if counts_only { ",\"counts_only\":true" } else { "" },
        json_str(access_token)
    )
}

/// A `presence` push: `track` with the JSON object `meta`, or `untrack` when `meta` is `None`.
pub fn presence(vsn: Vsn, join_ref: &str, msg_ref: &str, topic: &str, meta: Option<&str>) -> Message {
    let payload = match meta {
        Some(meta) => format!("{{\"type\":\"presence\",\"event\":\"track\",\"payload\":{meta}}}"),
        None => "{\"type\":\"presence\",\"event\":\"untrack\"}".to_owned(),
    };
    push(vsn, Some(join_ref), msg_ref, topic, "presence", &payload)
}

/// `phx_leave` for a joined topic.
pub fn leave(vsn: Vsn, join_ref: &str, msg_ref: &str, topic: &str) -> Message {
    push(vsn, Some(join_ref), msg_ref, topic, "phx_leave", "{}")
}

/// `phx_join` for `topic` with a JSON payload ([`join_payload`] or
/// [`join_payload_with_postgres_changes`]); its ref is also its join ref.
pub fn join_with_payload(vsn: Vsn, join_ref: &str, topic: &str, payload: &str) -> Message {
    push(vsn, Some(join_ref), join_ref, topic, "phx_join", payload)
}

/// A heartbeat on the `phoenix` topic.
pub fn heartbeat(vsn: Vsn, msg_ref: &str) -> Message {
    push(vsn, None, msg_ref, topic::PHOENIX, "heartbeat", "{}")
}

/// A user broadcast of JSON `data` as realtime-js sends it: binary kind 3 on 2.0.0, a JSON push on 1.0.0.
pub fn broadcast(
    vsn: Vsn,
    join_ref: &str,
    msg_ref: &str,
    topic: &str,
    event: &str,
    data_json: &str,
) -> Result<Message, BinaryError> {
    match vsn {
        Vsn::V2 => binary::encode_user_broadcast_push(
            join_ref,
            msg_ref,
            topic,
            event,
            BinaryEncoding::Json,
            data_json.as_bytes(),
        )
        .map(Message::Binary),
        Vsn::V1 => {
            let payload = server::user_broadcast_json(event, data_json, None);
            Ok(push(vsn, Some(join_ref), msg_ref, topic, "broadcast", &payload))
        }
    }
}

/// Interprets one WebSocket message from the server; `None` for control frames (ping, pong).
pub fn parse(vsn: Vsn, message: Message) -> Option<Event> {
    match message {
        Message::Binary(bytes) => Some(match binary::decode_server_frame(bytes) {
            Ok(ub) => Event::Broadcast { topic: ub.topic, payload: BroadcastPayload::User(ub.data) },
            Err(_) => Event::Undecodable,
        }),
        Message::Text(text) => Some(parse_text(vsn, text.as_str())),
        Message::Close(frame) => Some(Event::Closed { code: frame.map(|f| u16::from(f.code)) }),
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
    }
}

fn parse_text(vsn: Vsn, text: &str) -> Event {
    let Ok(frame) = decode_text(vsn, text) else { return Event::Undecodable };
    let InboundPayload::Json(payload) = frame.payload else { return Event::Undecodable };
    match frame.event.as_str() {
        "broadcast" => {
            Event::Broadcast { topic: frame.topic, payload: BroadcastPayload::Json(payload.get().into()) }
        }
        "phx_reply" => match serde_json::from_str::<ReplyPayload<'_>>(payload.get()) {
            Ok(reply) => Event::Reply {
                msg_ref: frame.msg_ref,
                topic: frame.topic,
                ok: reply.status == "ok",
                response: reply.response.map_or_else(|| "null".to_owned(), |r| r.get().to_owned()),
            },
            Err(_) => Event::Undecodable,
        },
        "phx_close" | "phx_error" => Event::ChannelClosed { topic: frame.topic, event: frame.event },
        "system" => Event::System { topic: frame.topic, payload: payload.get().into() },
        "postgres_changes" => Event::PostgresChanges { topic: frame.topic, payload: payload.get().into() },
        "presence_state" | "presence_diff" => Event::Presence {
            diff: frame.event == "presence_diff",
            topic: frame.topic,
            payload: payload.get().into(),
        },
        _ => Event::Other { event: frame.event },
    }
}

/// The `reason` of an error reply's response, or the response text itself.
pub fn error_reason(response: &str) -> String {
    serde_json::from_str::<ErrorResponse>(response)
        .ok()
        .and_then(|r| r.reason)
        .unwrap_or_else(|| response.to_owned())
}

#[cfg(test)]
mod tests {
    use realtime_proto::binary::decode_client_frame;
    use realtime_proto::client::{BroadcastPush, ClientEvent, ClientMessage};
    use realtime_proto::server::ReplyStatus;

    use super::*;
    use crate::payload::Stamp;

    fn client_message(vsn: Vsn, message: Message) -> ClientMessage {
        let frame = match message {
            Message::Text(text) => decode_text(vsn, text.as_str()).unwrap(),
            Message::Binary(bytes) => decode_client_frame(bytes).unwrap(),
            other => panic!("unexpected {other:?}"),
        };
        ClientMessage::from_frame(frame)
    }

    #[test]
    fn join_decodes_as_the_server_sees_it() {
        for vsn in Vsn::ALL {
            let m = client_message(vsn, join_with_payload(vsn, "1", "realtime:load-3", &join_payload("tok")));
            assert_eq!(m.topic, "realtime:load-3");
            assert_eq!(m.msg_ref.as_deref(), Some("1"));
            assert_eq!(m.join_ref.as_deref(), Some("1"), "{vsn}");
            let ClientEvent::Join(payload) = m.event else { panic!("not a join") };
            assert_eq!(payload.access_token.as_deref(), Some("tok"));
            let config = payload.config.unwrap();
            assert!(!config.broadcast.self_broadcast && !config.broadcast.ack && !config.private);
            assert!(!config.presence.enabled);
        }
    }

    #[test]
    fn private_joins_decode_with_the_flag() {
        for vsn in Vsn::ALL {
            for private in [true, false] {
                let payload = join_payload_private("tok", private);
                let m = client_message(vsn, join_with_payload(vsn, "1", "realtime:load-x-1", &payload));
                let ClientEvent::Join(payload) = m.event else { panic!("not a join") };
                assert_eq!(payload.access_token.as_deref(), Some("tok"));
                let config = payload.config.unwrap();
                assert_eq!(config.private, private, "{vsn}");
                assert!(config.postgres_changes.is_empty() && !config.presence.enabled);
            }
        }
    }

    #[test]
    fn join_with_postgres_changes_decodes() {
        let changes = r#"[{"event":"INSERT","schema":"public","table":"lt_cdc"}]"#;
        for vsn in Vsn::ALL {
            let payload = join_payload_with_postgres_changes("tok", changes);
            let m = client_message(vsn, join_with_payload(vsn, "1", "realtime:lt-cdc-0", &payload));
            let ClientEvent::Join(payload) = m.event else { panic!("not a join") };
            assert_eq!(payload.access_token.as_deref(), Some("tok"));
            let config = payload.config.unwrap();
            assert_eq!(config.postgres_changes.len(), 1, "{vsn}");
            assert_eq!(config.postgres_changes[0]["table"], "lt_cdc");
        }
    }

    #[test]
    fn postgres_changes_parse_per_version() {
        let data = r#"{"ids":[7],"data":{"type":"INSERT","record":{"id":1}}}"#;
        for vsn in Vsn::ALL {
            let out = server::fastlane(vsn, "realtime:lt-cdc-0", "postgres_changes", data);
            assert_eq!(
                parse(vsn, into_message(out)),
                Some(Event::PostgresChanges { topic: "realtime:lt-cdc-0".into(), payload: data.into() })
            );
        }
    }

    #[test]
    fn presence_pushes_decode_as_the_server_sees_them() {
        use realtime_proto::client::PresencePush;
        for vsn in Vsn::ALL {
            let join = join_with_payload(vsn, "1", "realtime:p", &join_payload_with_presence("tok", "n0-c1"));
            let ClientEvent::Join(payload) = client_message(vsn, join).event else { panic!("not a join") };
            let config = payload.config.unwrap();
            assert!(config.presence.enabled);
            assert_eq!(config.presence.key.as_deref(), Some("n0-c1"));
            let counts = join_payload_with_presence_counts("tok", "m-1", true);
            let raw: serde_json::Value = serde_json::from_str(&counts).unwrap();
            assert_eq!(raw["config"]["presence"]["counts_only"], true);
            let join = join_with_payload(vsn, "1", "realtime:p", &counts);
            let ClientEvent::Join(payload) = client_message(vsn, join).event else { panic!("not a join") };
            let config = payload.config.unwrap();
            assert!(config.presence.enabled && payload.access_token.as_deref() == Some("tok"));
            assert_eq!(config.presence.key.as_deref(), Some("m-1"));
            assert_eq!(
                join_payload_with_presence_counts("tok", "m-1", false),
                join_payload_with_presence("tok", "m-1")
            );
            let presence_push = |message| match client_message(vsn, message).event {
                ClientEvent::Presence(push) => push,
                other => panic!("not a presence push: {other:?}"),
            };
            let track = presence_push(presence(vsn, "1", "2", "realtime:p", Some(r#"{"v":3}"#)));
            let want =
                PresencePush { event: Some("track".into()), payload: Some(serde_json::json!({"v": 3})) };
            assert_eq!(track, want);
            let untrack = presence_push(presence(vsn, "1", "3", "realtime:p", None));
            assert_eq!(untrack, PresencePush { event: Some("untrack".into()), payload: None });
            assert!(matches!(
                client_message(vsn, leave(vsn, "1", "4", "realtime:p")).event,
                ClientEvent::Leave
            ));
            let diff = server::channel_push(
                vsn,
                Some("1"),
                "realtime:p",
                "presence_diff",
                r#"{"joins":{},"leaves":{}}"#,
            );
            assert_eq!(
                parse(vsn, into_message(diff)),
                Some(Event::Presence {
                    topic: "realtime:p".into(),
                    diff: true,
                    payload: r#"{"joins":{},"leaves":{}}"#.into()
                })
            );
        }
    }

    #[test]
    fn heartbeat_decodes() {
        for vsn in Vsn::ALL {
            let m = client_message(vsn, heartbeat(vsn, "9"));
            assert!(matches!(m.event, ClientEvent::Heartbeat));
            assert_eq!(m.msg_ref.as_deref(), Some("9"));
        }
    }

    #[test]
    fn broadcast_decodes_per_version() {
        let stamp = Stamp { scheduled_unix_nanos: 77, publisher: 2, seq: 3 };
        let v2 = broadcast(Vsn::V2, "1", "4", "realtime:load-0", "load", &stamp.encode()).unwrap();
        assert!(matches!(v2, Message::Binary(_)));
        let ClientEvent::Broadcast(BroadcastPush::User(ub)) = client_message(Vsn::V2, v2).event else {
            panic!("not a user broadcast")
        };
        assert_eq!((ub.event.as_str(), ub.encoding), ("load", BinaryEncoding::Json));
        assert_eq!(Stamp::decode(&ub.data), Some(stamp));

        let v1 = broadcast(Vsn::V1, "1", "4", "realtime:load-0", "load", &stamp.encode()).unwrap();
        let m = client_message(Vsn::V1, v1);
        assert_eq!(m.join_ref.as_deref(), Some("1"));
        let ClientEvent::Broadcast(BroadcastPush::Json(raw)) = m.event else { panic!("not a broadcast") };
        assert_eq!(Stamp::decode_wrapped(raw.get()), Some(stamp));
    }

    #[test]
    fn server_broadcasts_parse_per_version() {
        let stamp = Stamp { scheduled_unix_nanos: 5, publisher: 0, seq: 8 };
        for vsn in Vsn::ALL {
            let out = server::user_broadcast(
                vsn,
                "realtime:load-1",
                "load",
                BinaryEncoding::Json,
                stamp.encode().as_bytes(),
                None,
            )
            .unwrap();
            let Some(Event::Broadcast { topic, payload }) = parse(vsn, into_message(out)) else {
                panic!("{vsn}")
            };
            assert_eq!(topic, "realtime:load-1");
            let decoded = match payload {
                BroadcastPayload::User(bytes) => Stamp::decode(&bytes),
                BroadcastPayload::Json(text) => Stamp::decode_wrapped(&text),
            };
            assert_eq!(decoded, Some(stamp), "{vsn}");
        }
        // A JSON broadcast relayed verbatim (1.0.0 publisher to a 2.0.0 subscriber).
        let relayed = server::fastlane(
            Vsn::V2,
            "realtime:x",
            "broadcast",
            &server::user_broadcast_json("load", &stamp.encode(), None),
        );
        let Some(Event::Broadcast { payload: BroadcastPayload::Json(text), .. }) =
            parse(Vsn::V2, into_message(relayed))
        else {
            panic!()
        };
        assert_eq!(Stamp::decode_wrapped(&text), Some(stamp));
    }

    #[test]
    fn replies_and_closes() {
        for vsn in Vsn::ALL {
            let ok = server::reply(
                vsn,
                Some("1"),
                Some("1"),
                "realtime:a",
                ReplyStatus::Ok,
                r#"{"postgres_changes":[]}"#,
            );
            assert_eq!(
                parse(vsn, into_message(ok)),
                Some(Event::Reply {
                    msg_ref: Some("1".into()),
                    topic: "realtime:a".into(),
                    ok: true,
                    response: r#"{"postgres_changes":[]}"#.into()
                })
            );
            let err = server::error_reply(
                vsn,
                Some("1"),
                Some("2"),
                "realtime:a",
                "ClientJoinRateLimitReached: Too many joins per second",
            );
            let Some(Event::Reply { ok: false, response, .. }) = parse(vsn, into_message(err)) else {
                panic!()
            };
            assert_eq!(error_reason(&response), "ClientJoinRateLimitReached: Too many joins per second");
            let close = server::close(vsn, Some("1"), "realtime:a");
            assert_eq!(
                parse(vsn, into_message(close)),
                Some(Event::ChannelClosed { topic: "realtime:a".into(), event: "phx_close".into() })
            );
            let system =
                server::channel_push(vsn, Some("1"), "realtime:a", "system", r#"{"status":"error"}"#);
            assert!(matches!(parse(vsn, into_message(system)), Some(Event::System { .. })));
        }
        assert_eq!(parse(Vsn::V2, Message::text("garbage")), Some(Event::Undecodable));
        assert_eq!(parse(Vsn::V2, Message::Binary(Bytes::from_static(&[9]))), Some(Event::Undecodable));
        assert_eq!(parse(Vsn::V1, Message::Ping(Bytes::new())), None);
        assert_eq!(error_reason("{}"), "{}");
    }
}
