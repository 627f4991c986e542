//! Presence (PROTOCOL §4): presence_state, track/update/untrack diffs, leaves on channel leave and
//! socket close, keys, and payload validation.

use realtime_proto::Vsn;
use serde_json::{json, Map, Value};

use crate::common::*;

fn other(vsn: Vsn) -> Vsn {
    match vsn {
        Vsn::V1 => Vsn::V2,
        Vsn::V2 => Vsn::V1,
    }
}

async fn track(c: &mut Client, jr: &str, topic: &str, meta: Value) -> Value {
    let r = c
        .push(Some(jr), topic, "presence", &json!({"type": "presence", "event": "track", "payload": meta}))
        .await;
    c.expect_reply(&r, T).await
}

async fn track_ok(c: &mut Client, jr: &str, topic: &str, meta: Value) {
    let reply = track(c, jr, topic, meta).await;
    assert_eq!(reply["payload"], json!({"status": "ok", "response": {}}), "{}: track reply {reply}", c.vsn);
    let want_jr = if c.vsn == Vsn::V2 { json!(jr) } else { Value::Null };
    assert_eq!(reply["join_ref"], want_jr, "track reply join_ref");
}

async fn untrack_ok(c: &mut Client, jr: &str, topic: &str) {
    let r = c.push(Some(jr), topic, "presence", &json!({"type": "presence", "event": "untrack"})).await;
    let reply = c.expect_reply(&r, T).await;
    assert_eq!(reply["payload"], json!({"status": "ok", "response": {}}), "{}: untrack reply {reply}", c.vsn);
}

/// The next presence_diff (skipping nothing but heartbeats); checks the envelope.
async fn diff(c: &mut Client, topic: &str) -> Value {
    let d = c.expect_event("presence_diff", T).await;
    assert_eq!(d["topic"], topic, "{d}");
    assert_eq!((&d["ref"], &d["join_ref"]), (&Value::Null, &Value::Null), "presence_diff refs are null: {d}");
    let p = d["payload"].clone();
    assert!(p["joins"].is_object() && p["leaves"].is_object(), "diff shape: {p}");
    assert_eq!(p.as_object().map(Map::len), Some(2), "diff has only joins and leaves: {p}");
    p
}

/// The next presence_diff with joins, skipping diffs of leaves only (clients of the same topic that
/// an earlier step dropped may still be leaving).
async fn joins_diff(c: &mut Client, topic: &str) -> Value {
    loop {
        let d = diff(c, topic).await;
        if d["joins"].as_object().is_some_and(|j| !j.is_empty()) {
            return d;
        }
    }
}

/// `phx_ref` of the single meta under `key` in a joins/leaves map, after checking the meta's payload.
fn single_meta_ref(side: &Value, key: &str, want: &Value) -> String {
    let metas = side[key]["metas"].as_array().unwrap_or_else(|| panic!("no metas for {key}: {side}"));
    assert_eq!(metas.len(), 1, "one meta for {key}: {side}");
    let mut meta = metas[0].as_object().cloned().expect("meta object");
    let r = meta.remove("phx_ref").unwrap_or_else(|| panic!("meta without phx_ref: {side}"));
    let r = r.as_str().filter(|s| !s.is_empty()).unwrap_or_else(|| panic!("bad phx_ref: {side}")).to_owned();
    meta.remove("phx_ref_prev");
    assert_eq!(&Value::Object(meta), want, "meta payload for {key}");
    r
}

#[tokio::test]
async fn t30_presence_state_only_when_enabled() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let topic = format!("realtime:{}", unique("pstate"));
        let mut a = server.client(vsn).await;
        let jr = a.join_ok(&topic, config(false, false, "alice", true)).await;
        let st = a.expect_event("presence_state", T).await;
        let want_jr = if vsn == Vsn::V2 { json!(jr) } else { Value::Null };
        assert_eq!(
            st,
            json!({"topic": topic, "event": "presence_state", "payload": {}, "ref": null, "join_ref": want_jr}),
            "{vsn}"
        );
        track_ok(&mut a, &jr, &topic, json!({"online": true})).await;
        let d = diff(&mut a, &topic).await;
        let r = single_meta_ref(&d["joins"], "alice", &json!({"online": true}));

        // A later joiner with presence enabled sees the current state.
        let mut b = server.client(other(vsn)).await;
        let b_jr = b.join_ok(&topic, config(false, false, "bob", true)).await;
        let st = b.expect_event("presence_state", T).await;
        assert_eq!(st["payload"], json!({"alice": {"metas": [{"online": true, "phx_ref": r}]}}), "{vsn}");

        // Presence disabled: no presence_state, no diffs.
        let mut c = server.client(vsn).await;
        c.join_ok(&topic, config(false, false, "carol", false)).await;
        c.expect_silence(QUIET).await;
        track_ok(&mut b, &b_jr, &topic, json!({"b": 1})).await;
        diff(&mut a, &topic).await;
        c.expect_silence(QUIET).await;
    }
}

#[tokio::test]
async fn t31_track_update_untrack_diffs() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let topic = format!("realtime:{}", unique("diffs"));
        let mut a = server.client(vsn).await;
        let a_jr = a.join_ok(&topic, config(false, false, "alice", true)).await;
        a.expect_event("presence_state", T).await;
        let mut b = server.client(other(vsn)).await;
        b.join_ok(&topic, config(false, false, "bob", true)).await;
        b.expect_event("presence_state", T).await;
        let mut off = server.client(vsn).await;
        off.join_ok(&topic, config(false, false, "carol", false)).await;

        // track → one join diff to every enabled member, including the sender.
        track_ok(&mut a, &a_jr, &topic, json!({"online": true})).await;
        let da = diff(&mut a, &topic).await;
        let db = diff(&mut b, &topic).await;
        assert_eq!(da, db, "{vsn}: same diff for everyone");
        assert_eq!(da["leaves"], json!({}));
        let r1 = single_meta_ref(&da["joins"], "alice", &json!({"online": true}));
        assert_eq!(
            da["joins"]["alice"]["metas"][0].as_object().map(Map::len),
            Some(2),
            "no phx_ref_prev: {da}"
        );

        // update → one diff: the new meta with phx_ref_prev, and a leave of the old meta.
        track_ok(&mut a, &a_jr, &topic, json!({"online": false})).await;
        let da = diff(&mut a, &topic).await;
        let db = diff(&mut b, &topic).await;
        assert_eq!(da, db, "{vsn}: same update diff for everyone");
        let r2 = single_meta_ref(&da["joins"], "alice", &json!({"online": false}));
        assert_ne!(r1, r2, "an update gets a new phx_ref");
        assert_eq!(da["joins"]["alice"]["metas"][0]["phx_ref_prev"], json!(r1), "{vsn}: phx_ref_prev: {da}");
        assert_eq!(
            da["leaves"],
            json!({"alice": {"metas": [{"online": true, "phx_ref": r1}]}}),
            "{vsn}: the update leaves the old meta"
        );
        a.expect_silence(QUIET).await;
        b.expect_silence(QUIET).await;

        // Identical payload → ok, no diff.
        track_ok(&mut a, &a_jr, &topic, json!({"online": false})).await;
        b.expect_silence(QUIET).await;

        // untrack → leave diff.
        untrack_ok(&mut a, &a_jr, &topic).await;
        let da = diff(&mut a, &topic).await;
        let db = diff(&mut b, &topic).await;
        assert_eq!(da, db);
        assert_eq!(da["joins"], json!({}), "{vsn}: untrack joins");
        let r = single_meta_ref(&da["leaves"], "alice", &json!({"online": false}));
        assert_eq!(r, r2, "{vsn}: the leave names the current meta");

        // The member that never enabled presence saw none of it.
        off.expect_silence(QUIET).await;
    }
}

#[tokio::test]
async fn t32_channel_leave_and_socket_close_send_leave_diffs() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let topic = format!("realtime:{}", unique("gone"));
        let mut watcher = server.client(other(vsn)).await;
        watcher.join_ok(&topic, config(false, false, "watcher", true)).await;
        watcher.expect_event("presence_state", T).await;

        // phx_leave
        let mut a = server.client(vsn).await;
        let jr = a.join_ok(&topic, config(false, false, "k1", false)).await;
        track_ok(&mut a, &jr, &topic, json!({"who": "a"})).await;
        let d = diff(&mut watcher, &topic).await;
        let r = single_meta_ref(&d["joins"], "k1", &json!({"who": "a"}));
        let lr = a.push(Some(&jr), &topic, "phx_leave", &json!({})).await;
        a.expect_reply(&lr, T).await;
        let d = diff(&mut watcher, &topic).await;
        assert_eq!(
            d,
            json!({"joins": {}, "leaves": {"k1": {"metas": [{"who": "a", "phx_ref": r}]}}}),
            "{vsn}: leave"
        );

        // Clean WebSocket close.
        let mut b = server.client(vsn).await;
        let jr = b.join_ok(&topic, config(false, false, "k2", true)).await;
        track_ok(&mut b, &jr, &topic, json!({"who": "b"})).await;
        let d = diff(&mut watcher, &topic).await;
        let r = single_meta_ref(&d["joins"], "k2", &json!({"who": "b"}));
        b.close().await;
        let d = diff(&mut watcher, &topic).await;
        assert_eq!(
            d,
            json!({"joins": {}, "leaves": {"k2": {"metas": [{"who": "b", "phx_ref": r}]}}}),
            "{vsn}: close"
        );

        // TCP drop without a close frame.
        let mut c = server.client(vsn).await;
        let jr = c.join_ok(&topic, config(false, false, "k3", true)).await;
        track_ok(&mut c, &jr, &topic, json!({"who": "c"})).await;
        let d = diff(&mut watcher, &topic).await;
        let r = single_meta_ref(&d["joins"], "k3", &json!({"who": "c"}));
        drop(c);
        let d = diff(&mut watcher, &topic).await;
        assert_eq!(
            d,
            json!({"joins": {}, "leaves": {"k3": {"metas": [{"who": "c", "phx_ref": r}]}}}),
            "{vsn}: drop"
        );
        watcher.expect_silence(QUIET).await;
    }
}

#[tokio::test]
async fn t33_two_channels_with_one_key_give_two_metas() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let topic = format!("realtime:{}", unique("samekey"));
        let mut a = server.client(vsn).await;
        let a_jr = a.join_ok(&topic, config(false, false, "same", true)).await;
        a.expect_event("presence_state", T).await;
        let mut b = server.client(other(vsn)).await;
        let b_jr = b.join_ok(&topic, config(false, false, "same", true)).await;
        b.expect_event("presence_state", T).await;

        track_ok(&mut a, &a_jr, &topic, json!({"dev": 1})).await;
        diff(&mut a, &topic).await;
        diff(&mut b, &topic).await;
        track_ok(&mut b, &b_jr, &topic, json!({"dev": 2})).await;
        let d = diff(&mut a, &topic).await;
        single_meta_ref(&d["joins"], "same", &json!({"dev": 2}));
        assert_eq!(d["leaves"], json!({}), "{vsn}: a second meta under the key is not an update");
        diff(&mut b, &topic).await;

        let mut c = server.client(vsn).await;
        c.join_ok(&topic, config(false, false, "observer", true)).await;
        let st = c.expect_event("presence_state", T).await;
        let metas = st["payload"]["same"]["metas"]
            .as_array()
            .unwrap_or_else(|| panic!("{vsn}: no metas for `same`: {st}"))
            .clone();
        assert_eq!(metas.len(), 2, "{vsn}: two metas under one key: {st}");
        let mut devs: Vec<i64> = metas.iter().map(|m| m["dev"].as_i64().expect("dev")).collect();
        devs.sort();
        assert_eq!(devs, vec![1, 2]);
        assert_ne!(metas[0]["phx_ref"], metas[1]["phx_ref"], "distinct phx_refs");
        assert_eq!(st["payload"].as_object().map(Map::len), Some(1), "only key `same`: {st}");
    }
}

#[tokio::test]
async fn t34_default_presence_key_is_a_uuid() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let topic = format!("realtime:{}", unique("uuidkey"));
        let mut keys = Vec::new();
        for presence in [
            json!({"key": "", "enabled": true}),
            json!({"enabled": true}),
            json!({"key": null, "enabled": true}),
        ] {
            let mut c = server.client(vsn).await;
            let cfg = json!({"broadcast": {"ack": false, "self": false}, "presence": presence,
                             "postgres_changes": [], "private": false});
            let jr = c.join_ok(&topic, cfg).await;
            c.expect_event("presence_state", T).await;
            track_ok(&mut c, &jr, &topic, json!({"x": 1})).await;
            let d = joins_diff(&mut c, &topic).await;
            let joins = d["joins"].as_object().expect("joins");
            assert_eq!(joins.len(), 1, "{vsn}: {d}");
            let key = joins.keys().next().unwrap().clone();
            assert!(uuid::Uuid::parse_str(&key).is_ok(), "{vsn}: presence key {key:?} is not a UUID");
            keys.push(key);
        }
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 3, "{vsn}: every join gets its own key");

        // Any JSON value is a key: a number becomes its text.
        let mut c = server.client(vsn).await;
        let cfg = json!({"broadcast": {"ack": false, "self": false}, "presence": {"key": 42, "enabled": true},
                         "postgres_changes": [], "private": false});
        let jr = c.join_ok(&topic, cfg).await;
        c.expect_event("presence_state", T).await;
        track_ok(&mut c, &jr, &topic, json!({"n": true})).await;
        let d = joins_diff(&mut c, &topic).await;
        single_meta_ref(&d["joins"], "42", &json!({"n": true}));
    }
}

#[tokio::test]
async fn t35_invalid_presence_pushes() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let topic = format!("realtime:{}", unique("badtrack"));
        let mut c = server.client(vsn).await;
        let jr = c.join_ok(&topic, config(false, false, "k", true)).await;
        c.expect_event("presence_state", T).await;
        for bad in [json!("hello"), json!([1, 2]), json!(42)] {
            let reply = track(&mut c, &jr, &topic, bad.clone()).await;
            assert_eq!(
                reply["payload"],
                json!({"status": "error", "response": {"reason": "Presence track payload must be a map"}}),
                "{vsn}: track payload {bad}"
            );
        }
        // Unknown presence event → error reply with an empty response.
        let r = c.push(Some(&jr), &topic, "presence", &json!({"type": "presence", "event": "dance"})).await;
        let reply = c.expect_reply(&r, T).await;
        assert_eq!(
            reply["payload"],
            json!({"status": "error", "response": {}}),
            "{vsn}: unknown presence event"
        );
        c.expect_silence(QUIET).await;
        // The event name is case-insensitive and the channel still works.
        let r = c
            .push(
                Some(&jr),
                &topic,
                "presence",
                &json!({"type": "presence", "event": "TRACK", "payload": {"ok": 1}}),
            )
            .await;
        let reply = c.expect_reply(&r, T).await;
        assert_eq!(reply["payload"], json!({"status": "ok", "response": {}}), "{vsn}: TRACK");
        let d = diff(&mut c, &topic).await;
        single_meta_ref(&d["joins"], "k", &json!({"ok": 1}));
    }
}

#[tokio::test]
async fn t36_track_enables_diffs_without_presence_state() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let topic = format!("realtime:{}", unique("autoenable"));
        let mut a = server.client(vsn).await;
        let jr = a.join_ok(&topic, config(false, false, "auto", false)).await;
        a.expect_silence(QUIET).await;
        track_ok(&mut a, &jr, &topic, json!({"t": 1})).await;
        // The first thing after the reply is the diff: no presence_state for a disabled join.
        let d = diff(&mut a, &topic).await;
        single_meta_ref(&d["joins"], "auto", &json!({"t": 1}));
        // And later diffs from others reach it.
        let mut b = server.client(other(vsn)).await;
        let b_jr = b.join_ok(&topic, config(false, false, "other", false)).await;
        track_ok(&mut b, &b_jr, &topic, json!({"t": 2})).await;
        let d = diff(&mut a, &topic).await;
        single_meta_ref(&d["joins"], "other", &json!({"t": 2}));
        a.expect_silence(QUIET).await;
    }
}

#[tokio::test]
async fn t37_server_closed_channel_leaves_presence() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let topic = format!("realtime:{}", unique("kicked"));
        let mut watcher = server.client(other(vsn)).await;
        watcher.join_ok(&topic, config(false, false, "watcher", true)).await;
        watcher.expect_event("presence_state", T).await;
        let mut a = server.client(vsn).await;
        let jr = a.join_ok(&topic, config(false, false, "kicked", true)).await;
        track_ok(&mut a, &jr, &topic, json!({"x": 1})).await;
        let d = diff(&mut watcher, &topic).await;
        let r = single_meta_ref(&d["joins"], "kicked", &json!({"x": 1}));
        // An expired access_token shuts the channel down (system error + phx_close).
        let expired = hostile::expired(&server.secret);
        a.push(Some(&jr), &topic, "access_token", &json!({"access_token": expired})).await;
        a.wait_event("phx_close", T).await;
        let d = diff(&mut watcher, &topic).await;
        assert_eq!(
            d,
            json!({"joins": {}, "leaves": {"kicked": {"metas": [{"x": 1, "phx_ref": r}]}}}),
            "{vsn}"
        );
    }
}
