//! REST broadcast (PROTOCOL §3.5-3.6): the batch endpoint and the single-message endpoint, under
//! `/api` and `/realtime/v1/api`.

use realtime_proto::binary::BinaryEncoding;
use realtime_proto::Vsn;
use serde_json::{json, Value};

use crate::common::*;

const PREFIXES: [&str; 2] = ["/api", "/realtime/v1/api"];
const UNSUPPORTED_MEDIA: &str = "Unsupported Media Type. Use application/json or application/octet-stream";

async fn post_batch(
    server: &Server,
    prefix: &str,
    auth: Option<&str>,
    body: &Value,
) -> (u16, String, String) {
    let mut req = http().post(server.http(&format!("{prefix}/broadcast"))).json(body);
    if let Some(t) = auth {
        req = req.bearer_auth(t);
    }
    read_response(req.send().await.expect("POST /broadcast")).await
}

async fn post_single(
    server: &Server,
    prefix: &str,
    path: &str,
    auth: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, String, String) {
    let mut req = http()
        .post(server.http(&format!("{prefix}/broadcast/{path}")))
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = auth {
        req = req.bearer_auth(t);
    }
    read_response(req.send().await.expect("POST /broadcast/:topic/events/:event")).await
}

/// A V1 and a V2 subscriber of `realtime:<sub>`.
async fn subscribers(server: &Server, sub: &str) -> (Client, Client) {
    let topic = format!("realtime:{sub}");
    let mut v1 = server.client(Vsn::V1).await;
    v1.join_ok(&topic, default_config()).await;
    let mut v2 = server.client(Vsn::V2).await;
    v2.join_ok(&topic, default_config()).await;
    (v1, v2)
}

#[tokio::test]
async fn t40_batch_broadcast_reaches_both_serializers() {
    let server = Server::start(&[]);
    for prefix in PREFIXES {
        let sub = unique("restbatch");
        let topic = format!("realtime:{sub}");
        let (mut v1, mut v2) = subscribers(&server, &sub).await;
        let body = json!({"messages": [
            {"topic": sub, "event": "first", "payload": {"n": 1}},
            {"topic": sub, "event": "second", "payload": {"n": 2}, "private": false},
            {"topic": "some-other-topic", "event": "elsewhere", "payload": {}}
        ]});
        let (status, _ct, resp) = post_batch(&server, prefix, Some(&server.token()), &body).await;
        assert_eq!((status, resp.as_str()), (202, ""), "{prefix}: 202 with an empty body");
        for c in [&mut v1, &mut v2] {
            for (event, n) in [("first", 1), ("second", 2)] {
                let got = c.expect_event("broadcast", T).await;
                assert_eq!(
                    got,
                    json!({"topic": topic, "event": "broadcast",
                           "payload": {"type": "broadcast", "event": event, "payload": {"n": n}},
                           "ref": null, "join_ref": null}),
                    "{prefix} {}: REST batch message",
                    c.vsn
                );
            }
            c.expect_silence(QUIET).await;
        }
    }
}

#[tokio::test]
async fn t40_batch_with_apikey_header_and_id_meta() {
    let server = Server::start(&[]);
    let sub = unique("restid");
    let (mut v1, mut v2) = subscribers(&server, &sub).await;
    let body = json!({"messages": [{"topic": sub, "event": "e", "payload": {"a": true}, "id": "msg-1"}]});
    let resp = http()
        .post(server.http("/api/broadcast"))
        .header("apikey", server.token())
        .json(&body)
        .send()
        .await
        .expect("POST");
    let (status, _ct, text) = read_response(resp).await;
    assert_eq!((status, text.as_str()), (202, ""), "apikey header is accepted");
    for c in [&mut v1, &mut v2] {
        let got = c.expect_event("broadcast", T).await;
        assert_eq!(
            got["payload"],
            json!({"type": "broadcast", "event": "e", "payload": {"a": true}, "meta": {"id": "msg-1"}}),
            "{}",
            c.vsn
        );
    }
}

#[tokio::test]
async fn t41_batch_unauthorized() {
    let server = Server::start(&[]);
    let body = json!({"messages": [{"topic": "room", "event": "e", "payload": {}}]});
    let mut tokens: Vec<(String, Option<String>)> = vec![("missing".into(), None)];
    for (name, tok, _) in hostile::all(&server.secret) {
        tokens.push((name.into(), Some(tok)));
    }
    for prefix in PREFIXES {
        for (name, tok) in &tokens {
            let (status, _ct, resp) = post_batch(&server, prefix, tok.as_deref(), &body).await;
            assert_eq!(status, 401, "{prefix} token {name}: {resp}");
            assert_eq!(parse_json(&resp), json!({"message": "Unauthorized"}), "{prefix} token {name}");
        }
    }
}

#[tokio::test]
async fn t42_batch_validation_errors_are_422() {
    let server = Server::start(&[]);
    let tok = server.token();
    for prefix in PREFIXES {
        let body = json!({"messages": [{"topic": "room"}, {"topic": "room", "event": "e", "payload": {}}]});
        let (status, _ct, resp) = post_batch(&server, prefix, Some(&tok), &body).await;
        assert_eq!(status, 422, "{prefix}: {resp}");
        assert_eq!(
            parse_json(&resp),
            json!({"errors": {"messages": [{"payload": ["can't be blank"], "event": ["can't be blank"]}, {}]}}),
            "{prefix}: per-message errors"
        );
        // No `messages` at all, and a payload that is not an object.
        for body in [json!({}), json!({"messages": [{"topic": "room", "event": "e", "payload": "str"}]})] {
            let (status, _ct, resp) = post_batch(&server, prefix, Some(&tok), &body).await;
            assert_eq!(status, 422, "{prefix} {body}: {resp}");
            assert!(parse_json(&resp)["errors"].is_object(), "{prefix} {body}: an `errors` object: {resp}");
        }
    }
}

#[tokio::test]
async fn t43_rest_rate_limit_is_429() {
    let server = Server::start(&["--max-rest-events-per-second", "3"]);
    let tok = server.token();
    let body = json!({"messages": [{"topic": "room", "event": "e", "payload": {}}]});
    let mut statuses = Vec::new();
    let mut limited_body = None;
    for _ in 0..30 {
        let (status, _ct, resp) = post_batch(&server, "/api", Some(&tok), &body).await;
        statuses.push(status);
        if status == 429 {
            limited_body = Some(resp);
            break;
        }
    }
    assert_eq!(statuses[0], 202, "the first request is within the limit: {statuses:?}");
    let limited = limited_body.unwrap_or_else(|| panic!("no 429 after 30 quick requests: {statuses:?}"));
    assert_eq!(parse_json(&limited), json!({"message": "You have exceeded your rate limit"}));
    // The single endpoint shares the limit.
    let (status, _ct, resp) =
        post_single(&server, "/api", "room/events/e", Some(&tok), "application/json", b"{}".to_vec()).await;
    assert_eq!(status, 429, "single endpoint while limited: {resp}");
    assert_eq!(parse_json(&resp), json!({"message": "You have exceeded your rate limit"}));
}

/// Each sender (the token's `sub`) has its own budget besides the node's: one sender flooding is
/// refused while another's sends are accepted, and what the flooder is refused does not spend the
/// node's budget.
#[tokio::test]
async fn t43_one_senders_flood_does_not_refuse_another_sender() {
    let server =
        Server::start(&["--max-token-rest-events-per-second", "5", "--max-rest-events-per-second", "10"]);
    let user = |sub: &str| {
        sign(&server.secret, &json!({"role": "authenticated", "sub": sub, "iat": now(), "exp": now() + 3600}))
    };
    let (flooder, other) = (user("flooder"), user("other"));
    let sub = unique("persender");
    let mut rx = server.client(Vsn::V2).await;
    rx.join_ok(&format!("realtime:{sub}"), default_config()).await;
    let body = |n: u32| json!({"messages": [{"topic": sub, "event": "e", "payload": {"n": n}}]});
    let mut statuses = Vec::new();
    let mut refusal = None;
    for n in 0..30 {
        let (status, _ct, resp) = post_batch(&server, "/api", Some(&flooder), &body(n)).await;
        statuses.push(status);
        if status == 429 {
            refusal = Some(resp);
            break;
        }
    }
    assert_eq!(statuses[0], 202, "the flooder's first message is within its budget: {statuses:?}");
    let refusal = refusal.unwrap_or_else(|| panic!("the flooder was never refused: {statuses:?}"));
    assert_eq!(
        parse_json(&refusal),
        json!({"message": "You have exceeded your rate limit: at most 5 messages per second per sender"})
    );
    // Another sender is accepted, and its messages are delivered.
    for n in 100..103 {
        let (status, _ct, resp) = post_batch(&server, "/api", Some(&other), &body(n)).await;
        assert_eq!(status, 202, "another sender while the flooder is refused: {resp}");
    }
    // The single endpoint spends the same sender budget: of 6 quick sends, one at least is refused.
    let mut single = Vec::new();
    for _ in 0..6 {
        let (status, _ct, _) =
            post_single(&server, "/api", "room/events/e", Some(&flooder), "application/json", b"{}".to_vec())
                .await;
        single.push(status);
    }
    assert!(single.contains(&429), "the flooder on the single endpoint: {single:?}");
    let mut delivered = Vec::new();
    while delivered.len() < statuses.len() - 1 + 3 {
        let b = rx.wait_event("broadcast", T).await;
        delivered.push(b["payload"]["payload"]["n"].as_u64().expect("n"));
    }
    assert!(delivered.ends_with(&[100, 101, 102]), "delivered: {delivered:?}");
    let refused = crate::support::raw::metric(server.port, "realtime_refusals_total").await;
    assert!(refused >= 2.0, "realtime_refusals_total = {refused}");
}

/// The project's backend (`service_role`) spends only the node's budget: its batches pass whole where
/// a user's batch above the per-sender budget is refused.
#[tokio::test]
async fn t46_a_service_role_sender_spends_only_the_nodes_budget() {
    let server = Server::start(&["--max-token-rest-events-per-second", "2"]);
    let token = |role: &str| {
        sign(&server.secret, &json!({"role": role, "sub": "backend", "iat": now(), "exp": now() + 3600}))
    };
    let sub = unique("servicerole");
    let batch: Vec<Value> =
        (0..5).map(|n| json!({"topic": sub, "event": "e", "payload": {"n": n}})).collect();
    let body = json!({"messages": batch});
    let (status, _ct, resp) = post_batch(&server, "/api", Some(&token("service_role")), &body).await;
    assert_eq!(status, 202, "service_role batch of 5 with a per-sender budget of 2: {resp}");
    let (status, _ct, resp) = post_batch(&server, "/api", Some(&token("authenticated")), &body).await;
    assert_eq!(status, 429, "a user's batch of 5 over its budget of 2: {resp}");
}

#[tokio::test]
async fn t44_single_endpoint_json_and_binary() {
    let server = Server::start(&[]);
    let tok = server.token();
    for prefix in PREFIXES {
        let sub = unique("single");
        let topic = format!("realtime:{sub}");
        let (mut v1, mut v2) = subscribers(&server, &sub).await;

        // JSON body → kind 4 (encoding 1) for V2, user-broadcast JSON for V1.
        let data = br#"{"x":1,"s":"\u00e9"}"#.to_vec();
        let (status, _ct, resp) = post_single(
            &server,
            prefix,
            &format!("{sub}/events/cursor"),
            Some(&tok),
            "application/json",
            data,
        )
        .await;
        assert_eq!((status, resp.as_str()), (202, ""), "{prefix}: JSON single");
        let b = v2.expect_binary(T).await;
        assert_eq!(
            (b.topic.as_str(), b.event.as_str(), b.encoding),
            (topic.as_str(), "cursor", BinaryEncoding::Json)
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&b.data).expect("kind 4 JSON payload"),
            json!({"x": 1, "s": "é"}),
            "{prefix}"
        );
        let got = v1.expect_event("broadcast", T).await;
        assert_eq!(
            got,
            json!({"topic": topic, "event": "broadcast",
                   "payload": {"event": "cursor", "payload": {"x": 1, "s": "é"}, "type": "broadcast"},
                   "ref": null, "join_ref": null}),
            "{prefix}: V1 gets the JSON form"
        );

        // Content-type parameters are allowed.
        let (status, _ct, resp) = post_single(
            &server,
            prefix,
            &format!("{sub}/events/withcharset"),
            Some(&tok),
            "application/json; charset=utf-8",
            b"[1,2]".to_vec(),
        )
        .await;
        assert_eq!(status, 202, "{prefix}: json with charset: {resp}");
        let b = v2.expect_binary(T).await;
        assert_eq!(b.event, "withcharset");
        v1.expect_event("broadcast", T).await;

        // octet-stream → kind 4 encoding 0 for V2, nothing for V1.
        let raw = vec![0u8, 159, 146, 150, 255];
        let (status, _ct, resp) = post_single(
            &server,
            prefix,
            &format!("{sub}/events/blob"),
            Some(&tok),
            "application/octet-stream",
            raw.clone(),
        )
        .await;
        assert_eq!((status, resp.as_str()), (202, ""), "{prefix}: octet-stream single");
        let b = v2.expect_binary(T).await;
        assert_eq!(
            (b.topic.as_str(), b.event.as_str(), b.encoding),
            (topic.as_str(), "blob", BinaryEncoding::Raw)
        );
        assert_eq!(&b.data[..], &raw[..], "{prefix}: raw bytes");
        v1.expect_silence(QUIET).await;

        // URL-encoded topic names.
        let sub2 = format!("{sub}:child");
        let (mut w1, mut w2) = subscribers(&server, &sub2).await;
        let path = format!("{sub}%3Achild/events/enc");
        let (status, _ct, resp) =
            post_single(&server, prefix, &path, Some(&tok), "application/json", b"{}".to_vec()).await;
        assert_eq!(status, 202, "{prefix}: encoded topic: {resp}");
        assert_eq!(w2.expect_binary(T).await.topic, format!("realtime:{sub2}"));
        assert_eq!(w1.expect_event("broadcast", T).await["topic"], format!("realtime:{sub2}"));
    }
}

#[tokio::test]
async fn t45_single_endpoint_refusals() {
    let server = Server::start(&[]);
    let tok = server.token();
    for prefix in PREFIXES {
        let (status, _ct, resp) =
            post_single(&server, prefix, "room/events/e", Some(&tok), "text/plain", b"hello".to_vec()).await;
        assert_eq!(status, 415, "{prefix}: text/plain: {resp}");
        assert_eq!(parse_json(&resp), json!({"error": UNSUPPORTED_MEDIA}), "{prefix}: 415 body");

        let (status, _ct, resp) =
            post_single(&server, prefix, "room/events/e", None, "application/json", b"{}".to_vec()).await;
        assert_eq!(status, 401, "{prefix}: no token: {resp}");
        assert_eq!(parse_json(&resp), json!({"message": "Unauthorized"}));

        let bad = hostile::expired(&server.secret);
        let (status, _ct, resp) =
            post_single(&server, prefix, "room/events/e", Some(&bad), "application/json", b"{}".to_vec())
                .await;
        assert_eq!(status, 401, "{prefix}: expired token: {resp}");
        assert_eq!(parse_json(&resp), json!({"message": "Unauthorized"}));
    }
}
