//! Limits (contract table, PROTOCOL §7): connections, channels per client, channel members, joins/s,
//! events/s, presence rate and payload size.

use std::time::{Duration, Instant};

use realtime_proto::binary::BinaryEncoding;
use realtime_proto::Vsn;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn t60_max_connections_refuses_with_429() {
    let server = Server::start(&["--max-connections", "2"]);
    let mut a = server.client(Vsn::V1).await;
    let b = server.client(Vsn::V2).await;
    let url = server.http(&format!("/socket/websocket?apikey={}&vsn=2.0.0", server.token()));
    let (status, ct, body) = raw_upgrade(&url, &[]).await;
    assert_eq!(status, 429, "third socket: {body}");
    assert_eq!(parse_json(&body), json!({"error": "Too many connected users"}));
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    assert!(Client::connect(&server.ws_url(Vsn::V1), Vsn::V1).await.is_err(), "third socket via ws");
    // The refused attempts did not disturb the existing sockets.
    a.heartbeat().await;
    // A slot frees up when a socket closes.
    b.close().await;
    let deadline = Instant::now() + T;
    loop {
        match Client::connect(&server.ws_url(Vsn::V2), Vsn::V2).await {
            Ok(mut c) => {
                c.heartbeat().await;
                break;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no slot after closing a socket: {e}"),
        }
    }
}

#[tokio::test]
async fn t61_max_channels_per_client() {
    let server = Server::start(&["--max-channels-per-client", "2"]);
    for vsn in VSNS {
        let mut c = server.client(vsn).await;
        let jr_a = c.join_ok("realtime:a", default_config()).await;
        c.join_ok("realtime:b", default_config()).await;
        let reason = c.join_err("realtime:c", default_config()).await;
        assert_eq!(reason, "ChannelRateLimitReached: Too many channels", "{vsn}");
        c.heartbeat().await;
        // Leaving one frees a slot.
        let r = c.push(Some(&jr_a), "realtime:a", "phx_leave", &json!({})).await;
        c.expect_reply(&r, T).await;
        c.wait_event("phx_close", T).await;
        c.join_ok("realtime:c", default_config()).await;
        // Another socket has its own budget.
        let mut d = server.client(vsn).await;
        d.join_ok("realtime:a", default_config()).await;
        d.join_ok("realtime:b", default_config()).await;
    }
}

#[tokio::test]
async fn t62_max_channel_members() {
    let server = Server::start(&["--max-channel-members", "2"]);
    for vsn in VSNS {
        let topic = format!("realtime:{}", unique("full"));
        let mut a = server.client(vsn).await;
        let a_jr = a.join_ok(&topic, default_config()).await;
        let mut b = server.client(vsn).await;
        b.join_ok(&topic, default_config()).await;
        let mut c = server.client(vsn).await;
        let reason = c.join_err(&topic, default_config()).await;
        assert_eq!(reason, "ChannelMembersLimitReached: Too many members in this channel", "{vsn}");
        // Other channels are unaffected and the refused socket stays usable.
        c.join_ok(&format!("realtime:{}", unique("other")), default_config()).await;
        // A leave frees a place.
        let r = a.push(Some(&a_jr), &topic, "phx_leave", &json!({})).await;
        a.expect_reply(&r, T).await;
        a.wait_event("phx_close", T).await;
        c.join_ok(&topic, default_config()).await;
    }
}

#[tokio::test]
async fn t63_joins_per_second_per_socket_closes_that_socket_with_1001() {
    let server = Server::start(&["--max-client-joins-per-second", "3"]);
    for vsn in VSNS {
        let mut c = server.client(vsn).await;
        let mut refs = Vec::new();
        for i in 0..12 {
            let r = c.make_ref();
            let text = c.encode(
                Some(&r),
                Some(&r),
                &format!("realtime:j{i}"),
                "phx_join",
                &join_payload(default_config()),
            );
            c.send_text(text).await;
            refs.push(r);
        }
        let mut ok_refs = Vec::new();
        let mut refused = Vec::new();
        let code = loop {
            match c.recv(T).await {
                Some(Frame::Close(code)) => break code,
                Some(Frame::Text(v)) if v["event"] == "phx_reply" => {
                    let r: u32 = v["ref"].as_str().and_then(|r| r.parse().ok()).expect("numeric ref");
                    if v["payload"]["status"] == "ok" {
                        ok_refs.push(r);
                    } else {
                        refused.push((r, v));
                    }
                }
                Some(other) => panic!("{vsn}: unexpected frame {other:?}"),
                None => {
                    panic!("{vsn}: socket not closed after join flood; ok={ok_refs:?} refused={refused:?}")
                }
            }
        };
        assert!(!refused.is_empty(), "{vsn}: no join refusal ({ok_refs:?} ok)");
        for (_, v) in &refused {
            assert_eq!(
                v["payload"],
                json!({"status": "error",
                       "response": {"reason": "ClientJoinRateLimitReached: Too many joins per second"}}),
                "{vsn}"
            );
        }
        let first_refused = refused.iter().map(|(r, _)| *r).min().unwrap();
        assert!(
            ok_refs.iter().all(|r| *r < first_refused),
            "{vsn}: only joins sent after the limit are refused: ok {ok_refs:?}, first refused {first_refused}"
        );
        assert!((1..12).contains(&ok_refs.len()), "{vsn}: some joins pass before the limit: {ok_refs:?}");
        assert_eq!(code, Some(1001), "{vsn}: close code after the joins/s refusal");
        // Wait out the window before the next serializer.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
}

#[tokio::test]
async fn t64_events_per_second_closes_channel() {
    let server = Server::start(&["--max-events-per-second", "5"]);
    for vsn in VSNS {
        let sub = unique("flood");
        let topic = format!("realtime:{sub}");
        let mut rx = server.client(Vsn::V1).await;
        rx.join_ok(&topic, default_config()).await;
        let mut c = server.client(vsn).await;
        let jr = c.join_ok(&topic, default_config()).await;
        for i in 0..40 {
            if vsn == Vsn::V2 && i % 2 == 1 {
                c.broadcast_binary(&jr, &topic, "f", BinaryEncoding::Json, b"{}").await;
            } else {
                c.broadcast_json(&jr, &topic, "f", &json!({"i": i})).await;
            }
        }
        let sys = c.expect_event("system", T).await;
        assert_eq!(sys["payload"], system_error("Too many messages per second", &sub), "{vsn}");
        let close = c.expect_event("phx_close", T).await;
        assert_phx_close(vsn, &close, &topic, &jr);
        // Only the flooding channel is closed: the socket answers and can join again.
        c.heartbeat().await;
        c.join_ok(&format!("realtime:{}", unique("after")), default_config()).await;
        // The receiver saw at most the allowed share, and never more than what was sent.
        let mut n = 0;
        while let Some(f) = rx.recv(Duration::from_millis(300)).await {
            if matches!(&f, Frame::Text(v) if v["event"] == "broadcast") {
                n += 1;
            }
        }
        assert!(n < 40, "{vsn}: the flood was cut off ({n} delivered)");
        rx.heartbeat().await;
    }
}

#[tokio::test]
async fn t65_presence_client_rate_limit() {
    let server = Server::start(&["--presence-max-calls", "2", "--presence-window-ms", "60000"]);
    for vsn in VSNS {
        let sub = unique("prate");
        let topic = format!("realtime:{sub}");
        let mut c = server.client(vsn).await;
        let jr = c.join_ok(&topic, config(false, false, "k", false)).await;
        for i in 0..2 {
            let r = c
                .push(
                    Some(&jr),
                    &topic,
                    "presence",
                    &json!({"type": "presence", "event": "track", "payload": {"i": i}}),
                )
                .await;
            let reply = c.expect_reply(&r, T).await;
            assert_eq!(reply["payload"]["status"], "ok", "{vsn}: call {i} is within the limit: {reply}");
        }
        for i in 2..6 {
            c.push(
                Some(&jr),
                &topic,
                "presence",
                &json!({"type": "presence", "event": "track", "payload": {"i": i}}),
            )
            .await;
        }
        let sys = c.wait_event("system", T).await;
        assert_eq!(sys["payload"], system_error("Client presence rate limit exceeded", &sub), "{vsn}");
        let close = c.expect_event("phx_close", T).await;
        assert_phx_close(vsn, &close, &topic, &jr);
        c.heartbeat().await;
    }
}

#[tokio::test]
async fn t66_payload_size_limits_presence_and_rest() {
    let server = Server::start(&["--max-payload-bytes", "200"]);
    let big = "x".repeat(2000);
    for vsn in VSNS {
        let sub = unique("bigtrack");
        let topic = format!("realtime:{sub}");
        let mut c = server.client(vsn).await;
        let jr = c.join_ok(&topic, config(false, false, "k", true)).await;
        c.expect_event("presence_state", T).await;
        c.push(
            Some(&jr),
            &topic,
            "presence",
            &json!({"type": "presence", "event": "track", "payload": {"big": big}}),
        )
        .await;
        let sys = c.wait_event("system", T).await;
        assert_eq!(sys["payload"], system_error("Track message size exceeded", &sub), "{vsn}");
        let close = c.expect_event("phx_close", T).await;
        assert_phx_close(vsn, &close, &topic, &jr);
        c.heartbeat().await;
    }
    // REST batch and single.
    let tok = server.token();
    let body = json!({"messages": [{"topic": "room", "event": "e", "payload": {"big": big}}]});
    let resp =
        http().post(server.http("/api/broadcast")).bearer_auth(&tok).json(&body).send().await.expect("POST");
    let (status, _ct, text) = read_response(resp).await;
    assert_eq!(status, 422, "oversize batch: {text}");
    assert_eq!(
        parse_json(&text),
        json!({"errors": {"messages": [{"payload": ["Payload size exceeds tenant limit"]}]}}),
        "oversize batch body"
    );
    let resp = http()
        .post(server.http("/api/broadcast/room/events/e"))
        .bearer_auth(&tok)
        .header("content-type", "application/json")
        .body(json!({"big": big}).to_string())
        .send()
        .await
        .expect("POST");
    let (status, _ct, text) = read_response(resp).await;
    assert_eq!(status, 422, "oversize single: {text}");
    assert_eq!(parse_json(&text), json!({"errors": {"payload": ["Payload size exceeds tenant limit"]}}));
}

/// Issue 19: a node whose open-files limit cannot hold `REALTIME_MAX_CONNECTIONS` says so at start, and
/// a handshake past what the limit holds gets 503 with a reason (counted), never an accept loop failing
/// on EMFILE; the sockets already open, the probes and a later handshake once one left are unaffected.
#[tokio::test]
async fn t67_a_connection_over_the_file_limit_is_refused_with_503() {
    const FILES: u64 = 600;
    let holds = (FILES - realtime_node::open_files::RESERVED) as usize;
    let server = Server::start_with_files(&[], &[], Some(FILES));
    let logged = server.proc.log_tail(usize::MAX);
    assert!(
        logged.contains("the open-files limit holds fewer sockets than REALTIME_MAX_CONNECTIONS"),
        "{logged}"
    );
    let mut open = Vec::new();
    for i in 0..holds {
        let c = Client::connect(&server.ws_url(Vsn::V1), Vsn::V1)
            .await
            .unwrap_or_else(|e| panic!("socket {i} of the {holds} the limit holds: {e}"));
        open.push(c);
    }
    let url = server.http(&format!("/socket/websocket?apikey={}&vsn=1.0.0", server.token()));
    let (status, _ct, body) = raw_upgrade(&url, &[]).await;
    assert_eq!((status, parse_json(&body)), (503, json!({"error": "Server is at its open-files limit"})));
    let (status, _, _) =
        read_response(http().get(server.http("/healthz")).send().await.expect("healthz")).await;
    assert_eq!(status, 200, "the probes still answer");
    let refused =
        crate::support::raw::metric(server.port, "realtime_refusals_total{reason=\"file_limit\"}").await;
    assert!(refused >= 1.0, "counted: {refused}");
    for c in open.iter_mut().take(3) {
        c.heartbeat().await;
    }
    // One leaves: a new socket fits again.
    open.pop().expect("a socket").close().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Client::connect(&server.ws_url(Vsn::V1), Vsn::V1).await {
            Ok(mut c) => {
                c.heartbeat().await;
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "no room after a socket left: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
