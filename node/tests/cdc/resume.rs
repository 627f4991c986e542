//! Resumable delivery (`REALTIME_RESUMABLE_TOPICS`): every broadcast on a resumable channel (socket,
//! REST, `realtime.send`) carries `meta.position`; a client that lost its connection rejoins with
//! `config.broadcast.resume = {position}` and gets exactly what it missed, in order, before anything
//! live; or a `system` message saying the gap could not be filled.

use std::time::Duration;

use realtime_proto::Vsn;
use serde_json::{json, Value};

use crate::common::*;

const RESUMABLE: &str = "--resumable-topics=room:*";

fn room() -> (String, String) {
    let sub = format!("room:{}", new_uuid());
    (format!("realtime:{sub}"), sub)
}

fn resume_join(position: Option<&str>) -> Value {
    json!({"config": {"broadcast": {"self": false, "resume": {"position": position}}}})
}

/// A member `a` (joined to resume) and a sender `s` (joined with acks) on a new room, once the room's
/// messages stream: `(topic, sub_topic, a, s, s's join ref)`.
async fn live_room(server: &Server, token: &str, vsn: Vsn) -> (String, String, Client, Client, String) {
    let (t, sub) = room();
    let mut a = server.client(token, vsn).await;
    let (_, reply) = a.join_with(&t, &resume_join(None)).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let mut s = server.client(token, vsn).await;
    let (s_ref, reply) = s.join_with(&t, &json!({"config": {"broadcast": {"ack": true}}})).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    until_live(&mut s, &s_ref, &t, &mut a).await;
    (t, sub, a, s, s_ref)
}

/// Sends probes until `a` receives one (the stream is live), then drains what the probes left.
async fn until_live(s: &mut Client, join_ref: &str, t: &str, a: &mut Client) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    'probing: loop {
        let r = s
            .push(
                Some(join_ref),
                t,
                "broadcast",
                &json!({"type": "broadcast", "event": "probe", "payload": {}}),
            )
            .await;
        let _ = s.expect_reply(&r, T).await;
        let until = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Some(f) = a.recv(until.saturating_duration_since(tokio::time::Instant::now())).await {
            if f.value().is_some_and(|v| v["event"] == "broadcast" && v["payload"]["event"] == "probe") {
                break 'probing;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "resumable broadcasts never went live");
    }
    a.drain(Duration::from_millis(300)).await;
}

fn ns(got: &[Value]) -> Vec<i64> {
    got.iter().map(|p| p["payload"]["n"].as_i64().unwrap_or(-1)).collect()
}

fn positions(got: &[Value]) -> Vec<String> {
    got.iter().map(|p| p["meta"]["position"].as_str().expect("meta.position").to_owned()).collect()
}

#[tokio::test]
async fn t130_a_client_that_lost_its_connection_gets_exactly_what_it_missed_then_live() {
    let db = Db::migrated("").await;
    let server = db.server(&[RESUMABLE]);
    let token = db.token("authenticated", &new_uuid());
    let service = db.token("service_role", &new_uuid());
    let http = reqwest::Client::new();
    for vsn in VSNS {
        let (t, sub, mut a, mut s, s_ref) = live_room(&server, &token, vsn).await;

        for n in 1..=3 {
            s.broadcast_acked(&s_ref, &t, n).await;
        }
        let got = a.broadcasts(&t, 3).await;
        assert_eq!(ns(&got), vec![1, 2, 3], "{vsn}: {got:?}");
        let seen = positions(&got);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{vsn}: positions increase: {seen:?}");
        assert!(got.iter().all(|p| p["meta"]["id"].is_string()), "{got:?}");
        drop(a); // the connection is lost

        // Missed: two socket sends, a REST send and a database send.
        s.broadcast_acked(&s_ref, &t, 4).await;
        s.broadcast_acked(&s_ref, &t, 5).await;
        let rest = http
            .post(format!("http://127.0.0.1:{}/api/broadcast", server.port))
            .bearer_auth(&service)
            .json(&json!({"messages": [{"topic": sub, "event": "m", "payload": {"n": 6}}]}))
            .send()
            .await
            .expect("REST broadcast");
        assert_eq!(rest.status(), 202, "the REST send is answered once stored");
        db.exec(&format!("select realtime.send('{{\"n\": 7}}', 'm', '{sub}', false)")).await;

        let mut a = server.client(&token, vsn).await;
        let (_, reply) = a.join_with(&t, &resume_join(Some(&seen[2]))).await;
        assert_eq!(reply["status"], "ok", "{reply}");
        let got = a.broadcasts(&t, 4).await;
        assert_eq!(ns(&got), vec![4, 5, 6, 7], "{vsn}: exactly what was missed, in order: {got:?}");
        assert!(positions(&got).iter().all(|p| *p > seen[2]));
        s.broadcast_acked(&s_ref, &t, 8).await;
        let got = a.broadcasts(&t, 1).await;
        assert_eq!(ns(&got), vec![8], "{vsn}: then live");
        a.expect_silence(Duration::from_millis(500)).await; // nothing twice

        // Resuming from the newest position again: nothing is owed, live goes on.
        let last = positions(&got)[0].clone();
        let mut b = server.client(&token, vsn).await;
        let (_, reply) = b.join_with(&t, &resume_join(Some(&last))).await;
        assert_eq!(reply["status"], "ok", "{reply}");
        s.broadcast_acked(&s_ref, &t, 9).await;
        assert_eq!(ns(&b.broadcasts(&t, 1).await), vec![9], "{vsn}");
        b.expect_silence(Duration::from_millis(300)).await;
        // The sender joined without `self`: of its own messages none came back to it, only the others'.
        let frames = s.drain(Duration::from_millis(200)).await;
        let got: Vec<Value> = frames
            .iter()
            .filter_map(|f| f.value())
            .filter(|v| v["event"] == "broadcast" && v["payload"]["event"] == "m")
            .map(|v| v["payload"].clone())
            .collect();
        assert_eq!(ns(&got), vec![6, 7], "{vsn}");
    }
}

#[tokio::test]
async fn t131_a_position_older_than_what_is_kept_gets_a_gap_message_then_live() {
    let db = Db::migrated("").await;
    let server = db.server(&[RESUMABLE, "--resume-retention-count=2"]);
    let token = db.token("authenticated", &new_uuid());
    let vsn = Vsn::V1;
    let (t, sub, mut a, mut s, s_ref) = live_room(&server, &token, vsn).await;
    // A member that stays: once it has 5, the node has handled (and evicted) everything before.
    let mut w = server.client(&token, vsn).await;
    assert_eq!(w.join_with(&t, &json!({})).await.1["status"], "ok");
    s.broadcast_acked(&s_ref, &t, 1).await;
    let first = positions(&a.broadcasts(&t, 1).await)[0].clone();
    drop(a);
    for n in 2..=5 {
        s.broadcast_acked(&s_ref, &t, n).await; // 2 and 3 are evicted: only 2 are kept
    }
    while ns(&w.broadcasts(&t, 1).await) != [5] {} // bounded: `broadcasts` fails after T
    let mut a = server.client(&token, vsn).await;
    let (_, reply) = a.join_with(&t, &resume_join(Some(&first))).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let f = a.next_frame(T).await;
    let v = f.value().expect("json").clone();
    assert_eq!(v["event"], "system", "{v}");
    assert_eq!(v["payload"]["extension"], "broadcast", "{v}");
    assert_eq!(v["payload"]["status"], "error", "{v}");
    assert_eq!(v["payload"]["channel"], sub, "{v}");
    let message = v["payload"]["message"].as_str().unwrap();
    assert!(message.starts_with(&format!("ResumeGap: Some messages after position {first}")), "{message}");
    a.expect_silence(Duration::from_millis(300)).await;
    s.broadcast_acked(&s_ref, &t, 6).await;
    assert_eq!(ns(&a.broadcasts(&t, 1).await), vec![6], "live after the gap");
}

#[tokio::test]
async fn t132_bad_resume_requests_are_refused_with_a_reason() {
    let db = Db::migrated("").await;
    let server = db.server(&[RESUMABLE]);
    let token = db.token("authenticated", &new_uuid());
    let mut c = server.client(&token, Vsn::V1).await;
    let (t, _) = room();
    for (payload, reason) in [
        (resume_join(Some("not-a-position")), "UnableToResume: a position is 24 hexadecimal digits"),
        (json!({"config": {"broadcast": {"resume": 5}}}), "UnableToResume: resume must be an object"),
    ] {
        let (_, reply) = c.join_with(&t, &payload).await;
        assert_eq!(reply["status"], "error", "{reply}");
        let got = reply["response"]["reason"].as_str().unwrap();
        assert!(got.starts_with(reason), "{got}");
    }
    let (_, reply) = c.join_with("realtime:lobby", &resume_join(None)).await;
    assert_eq!(reply["status"], "error", "{reply}");
    assert!(reply["response"]["reason"].as_str().unwrap().starts_with("ResumeUnavailable: "), "{reply}");
}
