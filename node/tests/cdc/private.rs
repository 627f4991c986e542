//! Private channels (PROTOCOL.md §6.2): joins, broadcasts, tracks and REST sends authorised by RLS
//! policies on `realtime.messages`, written the way Supabase documents them (`realtime.topic()`,
//! `auth.uid()`, `extension`), against a real PostgreSQL with the node's own `realtime` schema.

use std::time::Duration;

use realtime_proto::Vsn;
use serde_json::{json, Value};

use crate::common::*;

/// `room-read-*` topics: authenticated users read; `room-write-*`: read and write; `room-mine-*`: only
/// the user whose id is the topic's suffix reads; `room-boom-*`: the policy raises.
const POLICIES: &str = "
create policy read_rooms on realtime.messages for select to authenticated
  using (realtime.topic() like 'room-read-%' or realtime.topic() like 'room-write-%'
         or realtime.topic() = 'room-mine-' || auth.uid()::text
         or (realtime.topic() like 'room-boom-%' and 1 / (length(realtime.topic()) * 0) = 1));
create policy write_rooms on realtime.messages for insert to authenticated
  with check (realtime.topic() like 'room-write-%' and extension in ('broadcast', 'presence'));
";

/// A database with the `realtime` schema and the policies, and a server on it.
async fn with_policies(flags: &[&str]) -> (Db, Server) {
    let db = Db::migrated(POLICIES).await;
    let server = db.server(flags);
    (db, server)
}

fn private_join(extra: Value) -> Value {
    let mut config =
        json!({"private": true, "broadcast": {"self": false, "ack": true}, "presence": {"enabled": true}});
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            config.insert(k.clone(), v.clone());
        }
    }
    json!({ "config": config })
}

fn unauthorized_read(sub: &str) -> Value {
    json!({"status": "error", "response": {"reason": format!(
        "Unauthorized: You do not have permissions to read from this Channel topic: {sub}")}})
}

#[tokio::test]
async fn t90_private_joins_are_decided_by_the_select_policy_for_both_serializers() {
    let (db, server) = with_policies(&[]).await;
    for vsn in VSNS {
        let user = new_uuid();
        let token = db.token("authenticated", &user);
        let mut c = server.client(&token, vsn).await;
        let (t, _) = topic("room-read");
        let (_, reply) = c.join_with(&t, &private_join(json!({}))).await;
        assert_eq!(reply["status"], "ok", "{vsn}: a readable topic: {reply}");
        // The policy names the user: only that user's token reads it.
        let mine = format!("realtime:room-mine-{user}");
        let (_, reply) = c.join_with(&mine, &private_join(json!({}))).await;
        assert_eq!(reply["status"], "ok", "{vsn}: the user's own topic: {reply}");
        let other = format!("room-mine-{}", new_uuid());
        let (_, reply) = c.join_with(&format!("realtime:{other}"), &private_join(json!({}))).await;
        assert_eq!(reply, unauthorized_read(&other), "{vsn}");
        // No policy for anon: refused; the same topic joined as public needs no policy.
        let mut anon = server.client(&db.token("anon", &new_uuid()), vsn).await;
        let (_, sub) = topic("room-read");
        let (_, reply) = anon.join_with(&format!("realtime:{sub}"), &private_join(json!({}))).await;
        assert_eq!(reply, unauthorized_read(&sub), "{vsn}");
        let (_, reply) = anon.join_with(&format!("realtime:{sub}"), &json!({"config": {}})).await;
        assert_eq!(reply["status"], "ok", "{vsn}: public: {reply}");
    }
}

#[tokio::test]
async fn t91_broadcast_and_presence_writes_follow_the_insert_policy() {
    let (db, server) = with_policies(&[]).await;
    let writer_token = db.token("authenticated", &new_uuid());
    let reader_token = db.token("authenticated", &new_uuid());
    // A topic where both read and write; the reader's policy allows writes there too, so use a
    // read-only topic for the refusal.
    let (t, _) = topic("room-write");
    let (ro, ro_sub) = topic("room-read");
    let mut writer = server.client(&writer_token, Vsn::V2).await;
    let mut reader = server.client(&reader_token, Vsn::V1).await;
    let (wj, reply) = writer.join_with(&t, &private_join(json!({}))).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let (_, reply) = reader.join_with(&t, &private_join(json!({}))).await;
    assert_eq!(reply["status"], "ok", "{reply}");

    // Allowed: the ack says ok and the other member receives it.
    let msg = json!({"type": "broadcast", "event": "hello", "payload": {"n": 1}});
    let r = writer.push(Some(&wj), &t, "broadcast", &msg).await;
    assert_eq!(writer.expect_reply(&r, T).await["payload"]["status"], "ok");
    let got = reader.broadcasts(&t, 1).await.remove(0);
    assert_eq!(got["payload"], json!({"n": 1}));
    let track = json!({"type": "presence", "event": "track", "payload": {"name": "w"}});
    let r = writer.push(Some(&wj), &t, "presence", &track).await;
    assert_eq!(writer.expect_reply(&r, T).await["payload"]["status"], "ok");

    // Not allowed on a read-only topic: the ack is an error, nobody receives it; a track is refused.
    let (rj, reply) = writer.join_with(&ro, &private_join(json!({}))).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let (_, reply) = reader.join_with(&ro, &private_join(json!({}))).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let denied = json!({"status": "error", "response": {"reason": format!(
        "Unauthorized: You do not have permissions to write to this Channel topic: {ro_sub}")}});
    for n in 0..3 {
        let msg = json!({"type": "broadcast", "event": "nope", "payload": {"n": n}});
        let r = writer.push(Some(&rj), &ro, "broadcast", &msg).await;
        assert_eq!(writer.expect_reply(&r, T).await["payload"], denied, "broadcast {n}");
    }
    let r = writer.push(Some(&rj), &ro, "presence", &track).await;
    assert_eq!(writer.expect_reply(&r, T).await["payload"], denied, "track");
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Some(f) = reader.recv(deadline.saturating_duration_since(tokio::time::Instant::now())).await {
        let v = f.value().cloned().unwrap_or(Value::Null);
        assert!(!(v["topic"] == ro && v["event"] == "broadcast"), "a denied broadcast arrived: {v}");
    }
}

#[tokio::test]
async fn t92_a_policy_that_raises_refuses_only_that_join() {
    let (db, server) = with_policies(&[]).await;
    let token = db.token("authenticated", &new_uuid());
    let mut c = server.client(&token, Vsn::V1).await;
    let (boom, boom_sub) = topic("room-boom");
    let (_, reply) = c.join_with(&boom, &private_join(json!({}))).await;
    assert_eq!(reply, unauthorized_read(&boom_sub));
    let (fine, _) = topic("room-read");
    let (_, reply) = c.join_with(&fine, &private_join(json!({}))).await;
    assert_eq!(reply["status"], "ok", "the same socket joins another private topic: {reply}");
}

#[tokio::test]
async fn t93_a_refreshed_token_that_may_no_longer_read_ends_the_channel() {
    let (db, server) = with_policies(&[]).await;
    let user = new_uuid();
    let token = db.token("authenticated", &user);
    let mut c = server.client(&token, Vsn::V2).await;
    let sub = format!("room-mine-{user}");
    let t = format!("realtime:{sub}");
    let (j, reply) = c.join_with(&t, &private_join(json!({}))).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    // The same user's fresh token keeps the channel; another user's ends it.
    c.push(Some(&j), &t, "access_token", &json!({"access_token": db.token("authenticated", &user)})).await;
    c.push(Some(&j), &t, "access_token", &json!({"access_token": db.token("authenticated", &new_uuid())}))
        .await;
    let mut system = c.next_frame(T).await.value().cloned().expect("a push");
    if system["event"] == "presence_state" {
        system = c.next_frame(T).await.value().cloned().expect("a system push");
    }
    assert_eq!(system["event"], "system", "{system}");
    assert_eq!(
        system["payload"]["message"],
        format!("You no longer have permission to read from this Channel topic: {sub}")
    );
    let close = c.next_frame(T).await.value().cloned().expect("phx_close");
    assert_eq!(close["event"], "phx_close", "{close}");
}

#[tokio::test]
async fn t94_rest_sends_to_private_channels_need_the_write_policy() {
    let (db, server) = with_policies(&[]).await;
    let token = db.token("authenticated", &new_uuid());
    let (t, sub) = topic("room-write");
    let (ro, ro_sub) = topic("room-read");
    let mut c = server.client(&token, Vsn::V1).await;
    for topic in [&t, &ro] {
        let (_, reply) = c.join_with(topic, &private_join(json!({}))).await;
        assert_eq!(reply["status"], "ok", "{reply}");
    }
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{}/api/broadcast", server.port);
    let body = json!({"messages": [
        {"topic": ro_sub, "event": "e", "payload": {"to": "read-only"}, "private": true},
        {"topic": sub, "event": "e", "payload": {"to": "writable"}, "private": true},
    ]});
    let resp = http.post(&url).bearer_auth(&token).json(&body).send().await.expect("POST");
    assert_eq!(resp.status(), 202);
    let got = c.broadcasts(&t, 1).await.remove(0);
    assert_eq!(got["payload"], json!({"to": "writable"}));
    // The single endpoint refuses the read-only topic outright.
    let single = format!("http://127.0.0.1:{}/api/broadcast/{ro_sub}/events/e?private=true", server.port);
    let resp = http.post(&single).bearer_auth(&token).json(&json!({"a": 1})).send().await.expect("POST");
    assert_eq!(resp.status(), 403);
    c.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn t95_private_only_refuses_public_joins() {
    let (db, server) = with_policies(&["--private-only", "true"]).await;
    let mut c = server.client(&db.token("authenticated", &new_uuid()), Vsn::V1).await;
    let (t, _) = topic("room-read");
    let (_, reply) = c.join_with(&t, &json!({"config": {}})).await;
    assert_eq!(
        reply,
        json!({"status": "error", "response": {"reason": "PrivateOnly: This project only allows private channels"}})
    );
    let (_, reply) = c.join_with(&t, &private_join(json!({}))).await;
    assert_eq!(reply["status"], "ok", "{reply}");
}
