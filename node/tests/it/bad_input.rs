//! Hostile and malformed input: after each, the socket still answers a heartbeat (or is closed with
//! the documented code) and an unrelated pair of clients in another channel still relays broadcasts.

use std::time::Duration;

use realtime_proto::binary::{encode_user_broadcast_push, BinaryEncoding};
use realtime_proto::Vsn;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

const TINY: Duration = Duration::from_millis(50);

/// Heartbeat, then nothing else may have been answered in between (replies are ordered before it).
async fn still_alive_and_quiet(c: &mut Client, after: &str) {
    c.heartbeat().await;
    let leftover = c.recv(TINY).await;
    assert!(leftover.is_none(), "{}: unexpected frame after {after}: {leftover:?}", c.vsn);
}

fn malformed_text(vsn: Vsn) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("invalid JSON", r#"{"topic":"phoenix","event":"#.to_owned()),
        ("empty frame", String::new()),
        ("JSON null", "null".to_owned()),
        ("JSON number", "42".to_owned()),
        ("JSON string", r#""heartbeat""#.to_owned()),
        ("deeply nested", format!("{}{}", "[".repeat(20_000), "]".repeat(20_000))),
        ("trailing garbage", r#"[null,"99","phoenix","heartbeat",{}] trailing"#.to_owned()),
    ];
    match vsn {
        Vsn::V1 => v.extend([
            ("2.0.0 array on a 1.0.0 socket", r#"[null,"99","phoenix","heartbeat",{}]"#.to_owned()),
            ("missing topic", r#"{"event":"heartbeat","payload":{},"ref":"99"}"#.to_owned()),
            ("missing event", r#"{"topic":"phoenix","payload":{},"ref":"99"}"#.to_owned()),
            ("missing payload", r#"{"topic":"phoenix","event":"heartbeat","ref":"99"}"#.to_owned()),
            ("topic not a string", r#"{"topic":5,"event":"heartbeat","payload":{},"ref":"99"}"#.to_owned()),
        ]),
        Vsn::V2 => v.extend([
            ("array of 4", r#"[null,"99","phoenix","heartbeat"]"#.to_owned()),
            ("empty array", "[]".to_owned()),
            (
                "object on a 2.0.0 socket",
                r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"99"}"#.to_owned(),
            ),
            ("topic not a string", r#"[null,"99",5,"heartbeat",{}]"#.to_owned()),
            ("event not a string", r#"[null,"99","phoenix",7,{}]"#.to_owned()),
        ]),
    }
    v
}

fn garbage_binary() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty binary", vec![]),
        ("unknown kind", vec![9, 9, 9]),
        ("header longer than frame", vec![3, 200, 1, 1, 1, 0, 1]),
        ("server kind 4 from a client", vec![4, 0, 0, 0, 1]),
        ("truncated kind 0", vec![0, 1]),
        ("kind 3 non-UTF-8 topic", vec![3, 0, 0, 2, 0, 0, 1, 0xff, 0xfe]),
        ("kind 3 unknown encoding", {
            let mut f = vec![3, 1, 1, 1, 1, 0, 7];
            f.extend_from_slice(b"abcd");
            f
        }),
        ("kind 1 reply from a client", vec![1, 0, 0, 0, 0]),
        ("all 0xff", vec![0xff; 64]),
    ]
}

#[tokio::test]
async fn t70_malformed_text_frames_are_ignored() {
    let server = Server::start(&[]);
    let mut obs = Observer::new(&server).await;
    for vsn in VSNS {
        let topic = format!("realtime:{}", unique("victim"));
        let mut c = server.client(vsn).await;
        let jr = c.join_ok(&topic, config(true, false, "", false)).await;
        for (name, text) in malformed_text(vsn) {
            c.send_text(text).await;
            still_alive_and_quiet(&mut c, name).await;
            obs.check(&format!("{vsn} {name}")).await;
        }
        // The victim's channel still works.
        c.broadcast_json(&jr, &topic, "alive", &json!({})).await;
        assert_eq!(c.expect_event("broadcast", T).await["payload"]["event"], "alive", "{vsn}");
    }
}

#[tokio::test]
async fn t71_unknown_event_on_phoenix_topic_is_unmatched() {
    let server = Server::start(&[]);
    let mut obs = Observer::new(&server).await;
    for vsn in VSNS {
        let mut c = server.client(vsn).await;
        // Not a heartbeat, and `phoenix` is not a joined channel → unmatched topic (Phoenix socket).
        let r = c.push(None, "phoenix", "foo", &json!({})).await;
        let reply = c.expect_reply(&r, T).await;
        assert_eq!(
            reply["payload"],
            json!({"status": "error", "response": {"reason": "unmatched topic"}}),
            "{vsn}: phoenix/foo"
        );
        still_alive_and_quiet(&mut c, "phoenix/foo").await;
        obs.check(&format!("{vsn} phoenix/foo")).await;
    }
}

/// Deliberate difference from the reference (whose catch-all only logs): an unknown event on a joined
/// channel gets a clear error reply, so a raw client does not wait for a reply that never comes.
#[tokio::test]
async fn t71_unknown_event_on_joined_channel_gets_an_error_reply() {
    let server = Server::start(&[]);
    let mut obs = Observer::new(&server).await;
    for vsn in VSNS {
        let topic = format!("realtime:{}", unique("unknown"));
        let mut c = server.client(vsn).await;
        let jr = c.join_ok(&topic, config(true, false, "", false)).await;
        let r = c.push(Some(&jr), &topic, "foo", &json!({"a": 1})).await;
        let reply = c.expect_reply(&r, T).await;
        assert_eq!(
            reply["payload"],
            json!({"status": "error", "response": {"reason": "unknown event"}}),
            "{vsn}: unknown event"
        );
        still_alive_and_quiet(&mut c, "unknown channel event").await;
        if vsn == Vsn::V2 {
            // The same as a binary kind-0 push.
            let mut kind0 = vec![0, jr.len() as u8, 2, topic.len() as u8, 3];
            kind0.extend_from_slice(jr.as_bytes());
            kind0.extend_from_slice(b"78");
            kind0.extend_from_slice(topic.as_bytes());
            kind0.extend_from_slice(b"foo");
            kind0.extend_from_slice(&[1, 2, 3]);
            c.send_binary(kind0).await;
            let reply = c.expect_reply("78", T).await;
            assert_eq!(reply["payload"]["response"], json!({"reason": "unknown event"}), "kind 0");
            still_alive_and_quiet(&mut c, "kind 0 unknown event").await;
        }
        obs.check(&format!("{vsn} unknown events")).await;
        c.broadcast_json(&jr, &topic, "alive", &json!({})).await;
        assert_eq!(c.expect_event("broadcast", T).await["payload"]["event"], "alive", "{vsn}");
    }
}

#[tokio::test]
async fn t72_binary_garbage_is_ignored_on_2_0_0() {
    let server = Server::start(&[]);
    let mut obs = Observer::new(&server).await;
    let topic = format!("realtime:{}", unique("bin"));
    let mut c = server.client(Vsn::V2).await;
    let jr = c.join_ok(&topic, config(true, false, "", false)).await;
    for (name, bytes) in garbage_binary() {
        c.send_binary(bytes).await;
        still_alive_and_quiet(&mut c, name).await;
        obs.check(name).await;
    }
    // A well-formed kind-3 push for a topic that is not joined → unmatched topic.
    let frame =
        encode_user_broadcast_push("1", "77", "realtime:not-joined", "e", BinaryEncoding::Json, b"{}")
            .expect("encode");
    c.send_binary(frame).await;
    let reply = c.expect_reply("77", T).await;
    assert_eq!(reply["payload"], json!({"status": "error", "response": {"reason": "unmatched topic"}}));
    c.broadcast_binary(&jr, &topic, "alive", BinaryEncoding::Json, b"{}").await;
    assert_eq!(c.expect_binary(T).await.event, "alive");
}

#[tokio::test]
async fn t73_binary_frame_on_1_0_0_is_ignored() {
    let server = Server::start(&[]);
    let mut obs = Observer::new(&server).await;
    let topic = format!("realtime:{}", unique("v1bin"));
    let mut rx = server.client(Vsn::V2).await;
    rx.join_ok(&topic, default_config()).await;
    let mut c = server.client(Vsn::V1).await;
    let jr = c.join_ok(&topic, config(true, true, "", false)).await;
    let frame = encode_user_broadcast_push(&jr, "50", &topic, "sneaky", BinaryEncoding::Json, b"{\"x\":1}")
        .expect("encode");
    c.send_binary(frame).await;
    still_alive_and_quiet(&mut c, "binary frame on 1.0.0").await;
    rx.expect_silence(QUIET).await;
    for (name, bytes) in garbage_binary() {
        c.send_binary(bytes).await;
        still_alive_and_quiet(&mut c, name).await;
    }
    obs.check("binary frames on 1.0.0").await;
}

#[tokio::test]
async fn t74_oversized_frame_closes_1009_and_large_frame_does_not() {
    let server = Server::start(&[]);
    let mut obs = Observer::new(&server).await;
    for vsn in VSNS {
        let topic = format!("realtime:{}", unique("huge"));
        let mut c = server.client(vsn).await;
        let jr = c.join_ok(&topic, default_config()).await;

        // Under the 5,000,000-byte frame limit (but over the payload limit): dropped, socket kept.
        let body = json!({"type": "broadcast", "event": "big", "payload": {"d": "y".repeat(4_000_000)}});
        let text = c.encode(Some(&jr), Some("60"), &topic, "broadcast", &body);
        assert!(text.len() < 5_000_000);
        c.send_text(text).await;
        still_alive_and_quiet(&mut c, "a 4 MB frame").await;

        // Over the limit: close 1009.
        let body = json!({"type": "broadcast", "event": "huge", "payload": {"d": "z".repeat(5_100_000)}});
        let text = c.encode(Some(&jr), Some("61"), &topic, "broadcast", &body);
        assert!(text.len() > 5_000_000);
        let _ = c.try_send(Message::text(text)).await;
        let code = c.expect_close(Duration::from_secs(10)).await;
        assert_eq!(code, Some(1009), "{vsn}: close code for a frame over 5,000,000 bytes");
        obs.check(&format!("{vsn} oversized frame")).await;
    }
    {
        let mut c = server.client(Vsn::V2).await;
        let jr = c.join_ok("realtime:hugebin", default_config()).await;
        let frame = encode_user_broadcast_push(
            &jr,
            "62",
            "realtime:hugebin",
            "e",
            BinaryEncoding::Raw,
            &vec![1u8; 5_100_000],
        )
        .expect("encode");
        let _ = c.try_send(Message::binary(frame)).await;
        let code = c.expect_close(Duration::from_secs(10)).await;
        assert_eq!(code, Some(1009), "close code for a binary frame over 5,000,000 bytes");
        obs.check("oversized binary frame").await;
    }
}

#[tokio::test]
async fn t75_garbage_flood() {
    let server = Server::start(&[]);
    let mut obs = Observer::new(&server).await;
    for vsn in VSNS {
        let topic = format!("realtime:{}", unique("flood"));
        let mut c = server.client(vsn).await;
        let jr = c.join_ok(&topic, config(true, false, "", false)).await;
        let texts = malformed_text(vsn);
        let bins = garbage_binary();
        for i in 0..1000 {
            if vsn == Vsn::V2 && i % 3 == 0 {
                c.send_binary(bins[i % bins.len()].1.clone()).await;
            } else {
                let (_, t) = &texts[i % texts.len()];
                c.send_text(t.clone()).await;
            }
        }
        c.heartbeat().await;
        let leftover = c.recv(TINY).await;
        assert!(leftover.is_none(), "{vsn}: unexpected frame after the flood: {leftover:?}");
        obs.check(&format!("{vsn} garbage flood")).await;
        c.broadcast_json(&jr, &topic, "alive", &json!({})).await;
        assert_eq!(c.expect_event("broadcast", T).await["payload"]["event"], "alive", "{vsn}");
    }
}
