//! Client broadcasts over the WebSocket (PROTOCOL §3.1-3.4): self, ack, the V1/V2 delivery matrix and
//! the payload size limit.

use realtime_proto::binary::BinaryEncoding;
use realtime_proto::Vsn;
use serde_json::{json, Value};

use crate::common::*;

/// A JSON broadcast as every subscriber sees it (both refs null).
fn json_broadcast(topic: &str, payload: Value) -> Value {
    json!({"topic": topic, "event": "broadcast", "payload": payload, "ref": null, "join_ref": null})
}

/// The next `n` non-heartbeat frames.
async fn frames(c: &mut Client, n: usize) -> Vec<Frame> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(c.next_frame(T).await);
    }
    out
}

#[tokio::test]
async fn t20_self_off_excludes_sender_self_on_echoes_and_ack_replies() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let topic = format!("realtime:{}", unique("self"));
        let mut quiet = server.client(vsn).await; // self: false, ack: false
        let quiet_jr = quiet.join_ok(&topic, config(false, false, "", false)).await;
        let mut echo = server.client(vsn).await; // self: true, ack: true
        let echo_jr = echo.join_ok(&topic, config(true, true, "", false)).await;

        // self: false — the other member gets it, the sender does not, and there is no reply.
        let body = json!({"type": "broadcast", "event": "ping", "payload": {"n": 1}});
        quiet.broadcast_json(&quiet_jr, &topic, "ping", &json!({"n": 1})).await;
        let got = echo.expect_event("broadcast", T).await;
        assert_eq!(got, json_broadcast(&topic, body.clone()), "{vsn}: delivered to the other member");
        quiet.expect_silence(QUIET).await;

        // self: true + ack: true — the sender gets its own message and an ok reply (either order).
        let r = echo.broadcast_json(&echo_jr, &topic, "ping", &json!({"n": 2})).await;
        let got = frames(&mut echo, 2).await;
        let body2 = json!({"type": "broadcast", "event": "ping", "payload": {"n": 2}});
        let reply = got.iter().filter_map(Frame::text).find(|v| v["event"] == "phx_reply").cloned();
        let own = got.iter().filter_map(Frame::text).find(|v| v["event"] == "broadcast").cloned();
        let want_jr = if vsn == Vsn::V2 { json!(echo_jr) } else { Value::Null };
        assert_eq!(
            reply,
            Some(json!({"topic": topic, "event": "phx_reply", "payload": {"status": "ok", "response": {}},
                        "ref": r, "join_ref": want_jr})),
            "{vsn}: ack reply; frames {got:?}"
        );
        assert_eq!(own, Some(json_broadcast(&topic, body2.clone())), "{vsn}: self echo; frames {got:?}");
        echo.expect_silence(QUIET).await;
        let got = quiet.expect_event("broadcast", T).await;
        assert_eq!(got, json_broadcast(&topic, body2));

        if vsn == Vsn::V2 {
            // The realtime-js 2.x path: a binary kind-3 push with ack and self.
            let r =
                echo.broadcast_binary(&echo_jr, &topic, "cursor", BinaryEncoding::Json, br#"{"x":1}"#).await;
            let got = frames(&mut echo, 2).await;
            let reply = got.iter().filter_map(Frame::text).find(|v| v["event"] == "phx_reply").cloned();
            assert_eq!(
                reply.map(|v| (v["ref"].clone(), v["payload"].clone())),
                Some((json!(r), json!({"status": "ok", "response": {}}))),
                "kind-3 ack; frames {got:?}"
            );
            let own = got.iter().find_map(|f| match f {
                Frame::Binary(b) => Some(b.clone()),
                _ => None,
            });
            let own = own.unwrap_or_else(|| panic!("kind-3 self echo missing; frames {got:?}"));
            assert_eq!((own.topic.as_str(), own.event.as_str()), (topic.as_str(), "cursor"));
            assert_eq!(&own.data[..], br#"{"x":1}"#);
        }
    }
}

#[tokio::test]
async fn t20_ack_false_sends_no_reply() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let topic = format!("realtime:{}", unique("noack"));
        let mut c = server.client(vsn).await;
        let jr = c.join_ok(&topic, config(false, false, "", false)).await;
        c.broadcast_json(&jr, &topic, "e", &json!({})).await;
        if vsn == Vsn::V2 {
            c.broadcast_binary(&jr, &topic, "e", BinaryEncoding::Json, b"{}").await;
        }
        c.expect_silence(QUIET).await;
        c.heartbeat().await;
    }
}

#[tokio::test]
async fn t21_delivery_matrix_v1_v2() {
    let server = Server::start(&[]);
    let topic = format!("realtime:{}", unique("matrix"));
    let mut s1 = server.client(Vsn::V1).await;
    s1.join_ok(&topic, default_config()).await;
    let mut s2 = server.client(Vsn::V2).await;
    s2.join_ok(&topic, default_config()).await;
    let mut p1 = server.client(Vsn::V1).await;
    let p1_jr = p1.join_ok(&topic, default_config()).await;
    let mut p2 = server.client(Vsn::V2).await;
    let p2_jr = p2.join_ok(&topic, default_config()).await;

    // 1. V1 JSON push → V1 object, V2 text array, payload verbatim.
    let body =
        json!({"type": "broadcast", "event": "a", "payload": {"x": 1, "nested": {"k": [1, "two", null]}}});
    p1.push(Some(&p1_jr), &topic, "broadcast", &body).await;
    assert_eq!(s1.expect_event("broadcast", T).await, json_broadcast(&topic, body.clone()), "V1 JSON → V1");
    assert_eq!(s2.expect_event("broadcast", T).await, json_broadcast(&topic, body.clone()), "V1 JSON → V2");

    // 2. V2 JSON-array text push → same.
    let body = json!({"type": "broadcast", "event": "b", "payload": {"y": "é"}});
    p2.push(Some(&p2_jr), &topic, "broadcast", &body).await;
    assert_eq!(s1.expect_event("broadcast", T).await, json_broadcast(&topic, body.clone()), "V2 JSON → V1");
    assert_eq!(s2.expect_event("broadcast", T).await, json_broadcast(&topic, body.clone()), "V2 JSON → V2");

    // 3. V2 binary kind-3 push, JSON encoding → V2 kind 4 byte for byte, V1 user-broadcast JSON.
    let data = r#"{"x":2,"s":"é"}"#.as_bytes();
    p2.broadcast_binary(&p2_jr, &topic, "cur", BinaryEncoding::Json, data).await;
    let b = s2.expect_binary(T).await;
    assert_eq!(b.topic, topic, "kind 4 topic");
    assert_eq!(b.event, "cur", "kind 4 event");
    assert!(b.metadata.is_empty(), "kind 4 metadata: {:?}", b.metadata);
    assert_eq!(b.encoding, BinaryEncoding::Json, "kind 4 encoding");
    assert_eq!(&b.data[..], data, "kind 4 payload bytes");
    assert_eq!(
        s1.expect_event("broadcast", T).await,
        json_broadcast(&topic, json!({"event": "cur", "payload": {"x": 2, "s": "é"}, "type": "broadcast"})),
        "V2 kind-3 JSON → V1"
    );

    // 4. V2 binary kind-3 push, raw encoding → V2 kind 4 encoding 0; V1 gets nothing.
    let raw = [0u8, 1, 2, 255, 254];
    p2.broadcast_binary(&p2_jr, &topic, "raw", BinaryEncoding::Raw, &raw).await;
    let b = s2.expect_binary(T).await;
    assert_eq!(
        (b.topic.as_str(), b.event.as_str(), b.encoding),
        (topic.as_str(), "raw", BinaryEncoding::Raw)
    );
    assert_eq!(&b.data[..], &raw[..], "raw bytes");
    // The next thing V1 sees is the following JSON broadcast, so the raw one was dropped, not delayed.
    let body = json!({"type": "broadcast", "event": "after-raw", "payload": {}});
    p1.push(Some(&p1_jr), &topic, "broadcast", &body).await;
    assert_eq!(
        s1.expect_event("broadcast", T).await,
        json_broadcast(&topic, body.clone()),
        "raw skipped on V1"
    );
    assert_eq!(s2.expect_event("broadcast", T).await, json_broadcast(&topic, body));

    // 5. Client metadata in a kind-3 push is discarded (PROTOCOL §3.1).
    let meta = br#"{"k":1}"#;
    let mut frame = vec![3, p2_jr.len() as u8, 2, topic.len() as u8, 4, meta.len() as u8, 1];
    frame.extend_from_slice(p2_jr.as_bytes());
    frame.extend_from_slice(b"90");
    frame.extend_from_slice(topic.as_bytes());
    frame.extend_from_slice(b"meta");
    frame.extend_from_slice(meta);
    frame.extend_from_slice(br#"{"m":1}"#);
    p2.send_binary(frame).await;
    let b = s2.expect_binary(T).await;
    assert_eq!(b.event, "meta");
    assert!(b.metadata.is_empty(), "client metadata is not relayed: {:?}", b.metadata);
    assert_eq!(&b.data[..], br#"{"m":1}"#);
    assert_eq!(
        s1.expect_event("broadcast", T).await,
        json_broadcast(&topic, json!({"event": "meta", "payload": {"m": 1}, "type": "broadcast"})),
        "no meta for V1 either"
    );

    // 6. The V1 sender also received the V2 sender's messages, the V2 sender the V1 sender's.
    let p1_got = p1.expect_event("broadcast", T).await;
    assert_eq!(p1_got["payload"]["event"], "b", "p1 sees p2's first message");
    s1.expect_silence(QUIET).await;
    s2.expect_silence(QUIET).await;
}

#[tokio::test]
async fn t22_oversize_payload() {
    let server = Server::start(&["--max-payload-bytes", "100"]);
    let big = json!({"data": "x".repeat(1000)});
    for vsn in VSNS {
        let topic = format!("realtime:{}", unique("big"));
        let mut rx = server.client(Vsn::V1).await;
        rx.join_ok(&topic, default_config()).await;
        let mut acked = server.client(vsn).await;
        let acked_jr = acked.join_ok(&topic, config(false, true, "", false)).await;
        let mut silent = server.client(vsn).await;
        let silent_jr = silent.join_ok(&topic, config(false, false, "", false)).await;

        // With ack: an error reply, nothing delivered.
        let r = acked.broadcast_json(&acked_jr, &topic, "big", &big).await;
        let reply = acked.expect_reply(&r, T).await;
        assert_eq!(
            reply["payload"],
            json!({"status": "error", "response": "payload_size_exceeded"}),
            "{vsn}: oversize JSON broadcast with ack"
        );
        if vsn == Vsn::V2 {
            let data = big.to_string();
            let r =
                acked.broadcast_binary(&acked_jr, &topic, "big", BinaryEncoding::Json, data.as_bytes()).await;
            let reply = acked.expect_reply(&r, T).await;
            assert_eq!(
                reply["payload"],
                json!({"status": "error", "response": "payload_size_exceeded"}),
                "oversize kind-3 broadcast with ack"
            );
            let r = acked.broadcast_binary(&acked_jr, &topic, "big", BinaryEncoding::Raw, &[7u8; 1000]).await;
            let reply = acked.expect_reply(&r, T).await;
            assert_eq!(reply["payload"]["response"], "payload_size_exceeded", "oversize raw kind-3");
        }
        // Without ack: dropped silently.
        silent.broadcast_json(&silent_jr, &topic, "big", &big).await;
        silent.expect_silence(QUIET).await;
        rx.expect_silence(QUIET).await;

        // A small payload still goes through on the same channels.
        let r = acked.broadcast_json(&acked_jr, &topic, "small", &json!({"a": 1})).await;
        let reply = acked.expect_reply(&r, T).await;
        assert_eq!(reply["payload"], json!({"status": "ok", "response": {}}), "{vsn}: small payload acked");
        let got = rx.expect_event("broadcast", T).await;
        assert_eq!(got["payload"]["event"], "small");
        acked.heartbeat().await;
        silent.heartbeat().await;
    }
}

#[tokio::test]
async fn t23_flexible_boolean_strings() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let topic = format!("realtime:{}", unique("flexbool"));
        let mut c = server.client(vsn).await;
        let cfg = json!({"broadcast": {"ack": "true", "self": "TRUE"}, "presence": {"key": "", "enabled": "false"},
                         "postgres_changes": [], "private": "false"});
        let jr = c.join_ok(&topic, cfg).await;
        c.expect_silence(QUIET).await; // presence "false": no presence_state
        let r = c.broadcast_json(&jr, &topic, "flex", &json!({})).await;
        let got = frames(&mut c, 2).await;
        assert!(
            got.iter().filter_map(Frame::text).any(|v| v["event"] == "phx_reply" && v["ref"] == r.as_str()),
            "{vsn}: ack \"true\" gives a reply: {got:?}"
        );
        assert!(
            got.iter().filter_map(Frame::text).any(|v| v["event"] == "broadcast"),
            "{vsn}: self \"TRUE\" echoes: {got:?}"
        );
    }
}
