//! Socket and channel lifecycle (PROTOCOL §1-2): heartbeat, join replies, leave, re-join, join errors.

use realtime_proto::Vsn;
use serde_json::{json, Map, Value};

use crate::common::*;

const PG_DISABLED: &str = "Unable to subscribe to changes with given parameters. Postgres changes are disabled on this server (DATABASE_URL is not set)";

/// `join_ref` as a client of `vsn` sees it on a reply or channel push.
fn seen_join_ref(vsn: Vsn, join_ref: &str) -> Value {
    match vsn {
        Vsn::V1 => Value::Null,
        Vsn::V2 => json!(join_ref),
    }
}

#[tokio::test]
async fn t10_heartbeat_reply_on_both_paths_and_serializers() {
    let server = Server::start(&[]);
    for path in ["/socket/websocket", "/realtime/v1/websocket"] {
        for vsn in VSNS {
            let url = server.ws_url_at(path, &format!("apikey={}&vsn={vsn}", server.token()));
            let mut c = Client::connect(&url, vsn).await.unwrap_or_else(|e| panic!("{path} {vsn}: {e}"));
            let text = c.encode(None, Some("7"), "phoenix", "heartbeat", &json!({}));
            c.send_text(text).await;
            let reply = c.recv(T).await.unwrap_or_else(|| panic!("{path} {vsn}: no heartbeat reply"));
            assert_eq!(
                reply.text().cloned(),
                Some(json!({"topic": "phoenix", "event": "phx_reply",
                            "payload": {"status": "ok", "response": {}}, "ref": "7", "join_ref": null})),
                "{path} {vsn}"
            );
            // Several heartbeats in a row, each answered with its own ref.
            for _ in 0..3 {
                c.heartbeat().await;
            }
            c.close().await;
        }
    }
}

#[tokio::test]
async fn t10_missing_vsn_means_1_0_0() {
    let server = Server::start(&[]);
    let url = server.ws_url_at("/socket/websocket", &format!("apikey={}", server.token()));
    // The client parses replies as 1.0.0 objects: a 2.0.0 array would fail the normalisation.
    let mut c = Client::connect(&url, Vsn::V1).await.expect("connect without vsn");
    c.heartbeat().await;
    let jr = c.join_ok("realtime:default-vsn", default_config()).await;
    assert_eq!(jr, "2");
}

#[tokio::test]
async fn t10_unsupported_vsn_is_403() {
    let server = Server::start(&[]);
    let url = server.http(&format!("/socket/websocket?apikey={}&vsn=3.0.0", server.token()));
    let (status, _ct, body) = raw_upgrade(&url, &[]).await;
    assert_eq!(status, 403, "vsn=3.0.0: {body}");
    assert_eq!(parse_json(&body), json!({"error": "Unsupported serializer version: 3.0.0"}));
}

#[tokio::test]
async fn t11_join_reply_exact_shape() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let mut c = server.client(vsn).await;
        let topic = "realtime:room1";
        // What realtime-js sends, including the unknown `version` key and an access_token.
        let payload = json!({"config": default_config(), "access_token": server.token(),
                             "version": "realtime-js/2.119.1"});
        let (jr, reply) = c.join(topic, &payload).await;
        assert_eq!(
            reply,
            json!({"topic": topic, "event": "phx_reply",
                   "payload": {"status": "ok", "response": {"postgres_changes": []}},
                   "ref": jr, "join_ref": seen_join_ref(vsn, &jr)}),
            "{vsn}"
        );
        // Presence disabled, no postgres_changes: nothing else is pushed.
        c.expect_silence(QUIET).await;
        c.heartbeat().await;
    }
}

#[tokio::test]
async fn t11_join_echoes_postgres_changes_then_system_error() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let mut c = server.client(vsn).await;
        let topic = "realtime:room1";
        let entries = json!([
            {"event": "INSERT", "schema": "public", "table": "messages"},
            {"event": "*", "schema": "public", "table": "todos", "filter": "id=eq.1", "select": ["id", "title"]},
            {"event": "DELETE", "schema": "public"}
        ]);
        let mut cfg = default_config();
        cfg["postgres_changes"] = entries.clone();
        let (jr, reply) = c.join(topic, &join_payload(cfg)).await;
        assert_eq!(reply["payload"]["status"], "ok", "{vsn}: {reply}");
        assert_eq!(reply["ref"], jr.as_str());
        let got = reply["payload"]["response"]["postgres_changes"]
            .as_array()
            .unwrap_or_else(|| panic!("{vsn}: postgres_changes is not an array: {reply}"));
        assert_eq!(got.len(), 3, "{vsn}: every entry is echoed: {reply}");
        let mut ids = Vec::new();
        for (i, (got, sent)) in got.iter().zip(entries.as_array().unwrap()).enumerate() {
            let mut got: Map<String, Value> = got.as_object().cloned().expect("entry object");
            let id = got.remove("id").unwrap_or_else(|| panic!("{vsn}: entry {i} has no id: {reply}"));
            assert!(id.is_i64() || id.is_u64(), "{vsn}: entry {i} id must be an integer: {id}");
            assert_eq!(&Value::Object(got), sent, "{vsn}: entry {i} echoed as sent, in order");
            ids.push(id);
        }
        ids.sort_by_key(|v| v.to_string());
        ids.dedup();
        assert_eq!(ids.len(), 3, "{vsn}: distinct subscriptions get distinct ids");

        let sys = c.expect_event("system", T).await;
        assert_eq!(
            sys,
            json!({"topic": topic, "event": "system",
                   "payload": {"extension": "postgres_changes", "status": "error", "message": PG_DISABLED,
                               "channel": "room1"},
                   "ref": null, "join_ref": seen_join_ref(vsn, &jr)}),
            "{vsn}"
        );
        // The channel itself stays joined.
        c.heartbeat().await;
        c.broadcast_json(&jr, topic, "still-here", &json!({})).await;
        c.expect_silence(QUIET).await;
    }
}

#[tokio::test]
async fn t12_leave_replies_ok_then_phx_close_with_join_ref() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let mut c = server.client(vsn).await;
        let topic = "realtime:leave-me";
        let jr = c.join_ok(topic, default_config()).await;
        let r = c.push(Some(&jr), topic, "phx_leave", &json!({})).await;
        let reply = c.expect_event("phx_reply", T).await;
        assert_eq!(
            reply,
            json!({"topic": topic, "event": "phx_reply", "payload": {"status": "ok", "response": {}},
                   "ref": r, "join_ref": seen_join_ref(vsn, &jr)}),
            "{vsn}: leave reply"
        );
        let close = c.expect_event("phx_close", T).await;
        assert_phx_close(vsn, &close, topic, &jr);

        // The topic is no longer joined: a push on it is an unmatched topic.
        let r = c.broadcast_json(&jr, topic, "ev", &json!({})).await;
        let reply = c.expect_reply(&r, T).await;
        assert_eq!(
            reply["payload"],
            json!({"status": "error", "response": {"reason": "unmatched topic"}}),
            "{vsn}: push after leave"
        );
        // Leaving a topic that is not joined is a plain ok.
        let r = c.push(Some("99"), "realtime:never-joined", "phx_leave", &json!({})).await;
        let reply = c.expect_reply(&r, T).await;
        assert_eq!(
            reply["payload"],
            json!({"status": "ok", "response": {}}),
            "{vsn}: leave of unjoined topic"
        );
        c.heartbeat().await;
    }
}

#[tokio::test]
async fn t13_second_join_on_same_topic_replaces_the_first() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let topic = format!("realtime:{}", unique("rejoin"));
        let mut other = server.client(Vsn::V1).await;
        let other_jr = other.join_ok(&topic, default_config()).await;

        let mut c = server.client(vsn).await;
        let jr1 = c.join_ok(&topic, config(false, false, "", false)).await;
        let jr2 = c.join_ok(&topic, config(true, false, "", false)).await;
        assert_ne!(jr1, jr2);
        // The old channel is closed with its own join_ref.
        let close = c.expect_event("phx_close", T).await;
        assert_phx_close(vsn, &close, &topic, &jr1);

        // The new config (self: true) is in force and the old channel is gone: exactly one copy.
        c.broadcast_json(&jr2, &topic, "mine", &json!({"n": 1})).await;
        let got = c.expect_event("broadcast", T).await;
        assert_eq!(got["payload"], json!({"type": "broadcast", "event": "mine", "payload": {"n": 1}}));
        c.expect_silence(QUIET).await;
        let got = other.expect_event("broadcast", T).await;
        assert_eq!(got["payload"]["event"], "mine");
        other.expect_silence(QUIET).await;

        // A broadcast from elsewhere arrives once, not once per join.
        other.broadcast_json(&other_jr, &topic, "theirs", &json!({})).await;
        let got = c.expect_event("broadcast", T).await;
        assert_eq!(got["payload"]["event"], "theirs");
        c.expect_silence(QUIET).await;
    }
}

#[tokio::test]
async fn t14_join_errors_have_exact_reasons() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let mut c = server.client(vsn).await;
        let cases = [
            ("realtime:", default_config(), "TopicNameRequired: You must provide a topic name"),
            ("room1", default_config(), "unmatched topic"),
            (
                "realtime:secret-room",
                json!({"broadcast": {"ack": false, "self": false}, "presence": {"key": "", "enabled": false},
                       "postgres_changes": [], "private": true}),
                "PrivateChannelsUnavailable: Private channels need DATABASE_URL for RLS authorization",
            ),
        ];
        for (topic, cfg, reason) in cases {
            let (jr, reply) = c.join(topic, &join_payload(cfg)).await;
            assert_eq!(
                reply,
                json!({"topic": topic, "event": "phx_reply",
                       "payload": {"status": "error", "response": {"reason": reason}},
                       "ref": jr, "join_ref": seen_join_ref(vsn, &jr)}),
                "{vsn}: join {topic}"
            );
        }
        // `private` as the string "true" is a private channel too (FlexibleBoolean).
        let mut cfg = default_config();
        cfg["private"] = json!("TRUE");
        let reason = c.join_err("realtime:secret-2", cfg).await;
        assert!(reason.starts_with("PrivateChannelsUnavailable"), "{vsn}: {reason}");

        // A push on a topic that was never joined.
        let r = c.broadcast_json("5", "realtime:nojoin", "ev", &json!({})).await;
        let reply = c.expect_reply(&r, T).await;
        assert_eq!(
            reply["payload"],
            json!({"status": "error", "response": {"reason": "unmatched topic"}}),
            "{vsn}: push on unjoined topic"
        );

        // The socket survives all of that and can still join.
        c.expect_silence(QUIET).await;
        c.heartbeat().await;
        c.join_ok("realtime:room1", default_config()).await;
    }
}

#[tokio::test]
async fn t11_postgres_changes_null_and_null_items() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let mut c = server.client(vsn).await;
        let mut cfg = default_config();
        cfg["postgres_changes"] = Value::Null;
        c.join_ok("realtime:pg-null", cfg).await;
        c.expect_silence(QUIET).await;
        let mut cfg = default_config();
        cfg["postgres_changes"] = json!([null, {"event": "*", "schema": "public"}, null]);
        let (_jr, reply) = c.join("realtime:pg-null-items", &join_payload(cfg)).await;
        let got = &reply["payload"]["response"]["postgres_changes"];
        assert_eq!(got.as_array().map(Vec::len), Some(1), "{vsn}: null entries are removed: {reply}");
        assert_eq!(got[0]["event"], "*");
        assert_eq!(got[0]["schema"], "public");
    }
}

#[tokio::test]
async fn t15_idle_timeout_closes_silent_sockets_only() {
    let server = Server::start(&["--idle-timeout-ms", "1500"]);
    for vsn in VSNS {
        let mut silent = server.client(vsn).await;
        silent.join_ok("realtime:idle", default_config()).await;
        let mut chatty = server.client(vsn).await;
        let started = std::time::Instant::now();
        // The chatty socket heartbeats every 400 ms for 3 s and must stay open.
        while started.elapsed() < std::time::Duration::from_millis(3000) {
            chatty.heartbeat().await;
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        }
        let code = silent.expect_close(T).await;
        assert_eq!(code, Some(1000), "{vsn}: idle close code");
        assert_eq!(silent.close_reason.as_deref(), Some("idle timeout"), "{vsn}: idle close reason");
        chatty.heartbeat().await;
    }
}

#[tokio::test]
async fn t16_join_ref_leniency() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let topic = format!("realtime:{}", unique("lenient"));
        let mut rx = server.client(Vsn::V1).await;
        rx.join_ok(&topic, default_config()).await;
        let mut c = server.client(vsn).await;
        c.join_ok(&topic, config(false, true, "", false)).await;
        // A stale join_ref and a missing one are still processed and answered (PROTOCOL §2.1).
        for jr in [Some("999"), None] {
            let body = json!({"type": "broadcast", "event": "lenient", "payload": {"jr": jr}});
            let r = c.push(jr, &topic, "broadcast", &body).await;
            let reply = c.expect_reply(&r, T).await;
            assert_eq!(reply["payload"], json!({"status": "ok", "response": {}}), "{vsn}: join_ref {jr:?}");
            let got = rx.expect_event("broadcast", T).await;
            assert_eq!(got["payload"], body, "{vsn}: join_ref {jr:?}");
        }
    }
}

#[tokio::test]
async fn t17_replay_on_public_channel_is_refused() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let mut c = server.client(vsn).await;
        let mut cfg = default_config();
        cfg["broadcast"]["replay"] = json!({"since": 1_760_000_000_000u64, "limit": 10});
        let reason = c.join_err("realtime:replay", cfg).await;
        assert_eq!(reason, "UnableToReplayMessages: Replay is not allowed for public channels", "{vsn}");
        c.heartbeat().await;
    }
}

/// `broadcast.replication_ready` without `DATABASE_URL`: there is no replication stream to wait for, so
/// the channel is told at once (system error) and closed; the socket stays usable.
#[tokio::test]
async fn t18_replication_ready_without_a_database_closes_the_channel() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let mut c = server.client(vsn).await;
        let topic = format!("realtime:{}", unique("ready"));
        let mut cfg = default_config();
        cfg["broadcast"]["replication_ready"] = json!(true);
        c.join_ok(&topic, cfg).await;
        let system = c.expect_event("system", T).await;
        assert_eq!(system["payload"]["status"], "error", "{vsn}: {system}");
        assert_eq!(
            system["payload"]["message"], "Replication connection was not established in time",
            "{vsn}"
        );
        c.expect_event("phx_close", T).await;
        c.heartbeat().await;
    }
}
