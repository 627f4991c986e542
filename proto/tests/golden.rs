//! Frames captured from the unmodified realtime-js 2.119.1 (both serializers) decode into the messages
//! the client meant, and the server's encoders produce the byte-exact frames of PROTOCOL.md.

use bytes::Bytes;
use realtime_proto::binary::BinaryEncoding;
use realtime_proto::client::{BroadcastPush, ClientEvent, ClientMessage};
use realtime_proto::envelope::{decode_binary, decode_text};
use realtime_proto::{server, Vsn};
use serde_json::{json, Value};

struct Captured {
    vsn: Vsn,
    message: ClientMessage,
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn captured() -> Vec<Captured> {
    let text = include_str!("fixtures/realtime-js-2.119.1-client-frames.jsonl");
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["dir"] == "c2s")
        .map(|v| {
            let vsn: Vsn = v["vsn"].as_str().unwrap().parse().unwrap();
            let frame = match (v["text"].as_str(), v["binary_hex"].as_str()) {
                (Some(text), _) => decode_text(vsn, text).unwrap(),
                (None, Some(hex)) => decode_binary(vsn, Bytes::from(unhex(hex))).unwrap(),
                _ => panic!("frame without body"),
            };
            Captured { vsn, message: ClientMessage::from_frame(frame) }
        })
        .collect()
}

#[test]
fn both_versions_send_the_same_session() {
    let frames = captured();
    for vsn in Vsn::ALL {
        let session: Vec<&ClientMessage> =
            frames.iter().filter(|c| c.vsn == vsn).map(|c| &c.message).collect();
        assert_eq!(session.len(), 8, "{vsn}");
        let ClientEvent::Join(join) = &session[0].event else { panic!("first frame is the join") };
        assert_eq!(session[0].topic, "realtime:room1");
        assert_eq!((session[0].join_ref.as_deref(), session[0].msg_ref.as_deref()), (Some("6"), Some("6")));
        let config = join.config.as_ref().unwrap();
        assert!(config.broadcast.self_broadcast && config.broadcast.ack);
        assert_eq!(config.presence.key.as_deref(), Some("alice"));
        assert!(config.presence.enabled && !config.private);
        assert_eq!(
            Value::Object(config.postgres_changes[0].clone()),
            json!({"event":"INSERT","schema":"public","table":"todos","filter":"id=eq.1"})
        );

        let ClientEvent::Broadcast(push) = &session[1].event else { panic!("broadcast") };
        assert_eq!(session[1].msg_ref.as_deref(), Some("7"));
        match (vsn, push) {
            (Vsn::V1, BroadcastPush::Json(raw)) => assert_eq!(
                serde_json::from_str::<Value>(raw.get()).unwrap(),
                json!({"type":"broadcast","event":"cursor","payload":{"x":1,"s":"é"}})
            ),
            (Vsn::V2, BroadcastPush::User(ub)) => {
                assert_eq!(ub.event, "cursor");
                assert_eq!(ub.encoding, BinaryEncoding::Json);
                assert_eq!(serde_json::from_slice::<Value>(&ub.data).unwrap(), json!({"x":1,"s":"é"}));
            }
            other => panic!("unexpected broadcast form {other:?}"),
        }
        let ClientEvent::Presence(track) = &session[2].event else { panic!("track") };
        assert_eq!(track.event.as_deref(), Some("track"));
        assert_eq!(track.payload, Some(json!({"online": true})));
        let ClientEvent::Presence(untrack) = &session[3].event else { panic!("untrack") };
        assert_eq!(untrack.event.as_deref(), Some("untrack"));
        assert!(matches!(&session[4].event, ClientEvent::AccessToken(Some(t)) if t == "NEWTOKEN"));
        assert!(matches!(session[5].event, ClientEvent::Heartbeat));
        assert_eq!(session[5].join_ref, None);
        assert!(matches!(session[6].event, ClientEvent::Heartbeat));
        assert!(matches!(session[7].event, ClientEvent::Leave));
        assert_eq!(session[7].msg_ref.as_deref(), Some("13"));
    }
}

/// PROTOCOL.md §2.13, the server's side of the example session, byte for byte.
#[test]
fn server_frames_of_the_example_session() {
    let topic = "realtime:room1";
    let reply = server::reply(
        Vsn::V2,
        Some("1"),
        Some("1"),
        topic,
        server::ReplyStatus::Ok,
        r#"{"postgres_changes":[{"event":"INSERT","schema":"public","table":"messages","id":96423573}]}"#,
    );
    assert_eq!(
        reply.as_text().unwrap(),
        r#"["1","1","realtime:room1","phx_reply",{"status":"ok","response":{"postgres_changes":[{"event":"INSERT","schema":"public","table":"messages","id":96423573}]}}]"#
    );
    let state = server::channel_push(Vsn::V2, Some("1"), topic, "presence_state", "{}");
    assert_eq!(state.as_text().unwrap(), r#"["1",null,"realtime:room1","presence_state",{}]"#);
    let kind4 =
        server::user_broadcast(Vsn::V2, topic, "cursor", BinaryEncoding::Json, br#"{"x":1}"#, None).unwrap();
    let mut want = vec![0x04, 0x0e, 0x06, 0x00, 0x01];
    want.extend_from_slice(b"realtime:room1cursor{\"x\":1}");
    assert_eq!(kind4, server::OutFrame::Binary(Bytes::from(want)));
    let heartbeat = server::reply(Vsn::V2, None, Some("4"), "phoenix", server::ReplyStatus::Ok, "{}");
    assert_eq!(
        heartbeat.as_text().unwrap(),
        r#"[null,"4","phoenix","phx_reply",{"status":"ok","response":{}}]"#
    );
    let close = server::close(Vsn::V2, Some("1"), topic);
    assert_eq!(close.as_text().unwrap(), r#"["1","1","realtime:room1","phx_close",{}]"#);
}
