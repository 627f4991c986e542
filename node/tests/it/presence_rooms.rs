//! Presence in busy rooms: changes batched into one `presence_diff` per `REALTIME_PRESENCE_BATCH_MS`,
//! a member joining mid-batch whose `presence_state` fits the diffs after it, and `counts_only`
//! members that get the counts instead of the metas.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use realtime_proto::Vsn;
use serde_json::{json, Value};

use crate::common::*;

/// A member's view as realtime-js keeps it: `phx_ref` → (key, meta), joins applied before leaves.
type View = BTreeMap<String, (String, Value)>;

fn apply_joins(view: &mut View, side: &Value) {
    for (key, metas) in side.as_object().expect("presence map") {
        for meta in metas["metas"].as_array().expect("metas") {
            let r = meta["phx_ref"].as_str().expect("phx_ref").to_owned();
            view.insert(r, (key.clone(), meta.clone()));
        }
    }
}

fn apply_leaves(view: &mut View, side: &Value) {
    for metas in side.as_object().expect("presence map").values() {
        for meta in metas["metas"].as_array().expect("metas") {
            view.remove(meta["phx_ref"].as_str().expect("phx_ref"));
        }
    }
}

/// Applies a `presence_state` or `presence_diff` frame; counts the diffs.
fn apply(view: &mut View, diffs: &mut usize, frame: &Value) {
    match frame["event"].as_str() {
        Some("presence_state") => apply_joins(view, &frame["payload"]),
        Some("presence_diff") => {
            *diffs += 1;
            apply_joins(view, &frame["payload"]["joins"]);
            apply_leaves(view, &frame["payload"]["leaves"]);
        }
        _ => {}
    }
}

fn keys(view: &View) -> Vec<String> {
    let mut keys: Vec<String> = view.values().map(|(k, _)| k.clone()).collect();
    keys.sort();
    keys
}

/// Reads presence frames into `view` until it holds exactly `want` keys (bounded by `T`).
async fn until_keys(c: &mut Client, view: &mut View, diffs: &mut usize, want: &[String]) {
    let deadline = Instant::now() + T;
    while keys(view) != want {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.recv(left).await {
            Some(Frame::Text(v)) => apply(view, diffs, &v),
            Some(other) => panic!("unexpected frame {other:?}"),
            None => panic!("view {:?} never reached {want:?}", keys(view)),
        }
    }
}

/// A join that asks for the presence counts only (key `fan`, not tracking).
fn counts_only_config() -> Value {
    let mut join = config(false, false, "fan", false);
    join["presence"]["counts_only"] = json!(true);
    join
}

async fn track_ok(c: &mut Client, jr: &str, topic: &str, meta: Value) {
    let r = c
        .push(Some(jr), topic, "presence", &json!({"type": "presence", "event": "track", "payload": meta}))
        .await;
    let reply = c.expect_reply(&r, T).await;
    assert_eq!(reply["payload"]["status"], "ok", "track: {reply}");
}

/// Twenty members track within a few hundred milliseconds; an idle member gets them in at most one
/// diff per interval (the bound is causal: n flushes at least an interval apart all fell between the
/// first track and the moment the view was complete), and a member that joined halfway ends with the
/// same view, `phx_ref`s included.
#[tokio::test]
async fn t38_presence_changes_are_batched_per_interval() {
    const INTERVAL_MS: u64 = 250;
    let server = Server::start(&[&format!("--presence-batch-ms={INTERVAL_MS}")]);
    let topic = format!("realtime:{}", unique("room"));
    let mut observer = server.client(Vsn::V1).await;
    observer.join_ok(&topic, config(false, false, "observer", true)).await;
    let state = observer.expect_event("presence_state", T).await;
    assert_eq!(state["payload"], json!({}), "an empty room");

    let started = Instant::now();
    let mut members = Vec::new();
    let mut late = None;
    for i in 0..20 {
        let vsn = if i % 2 == 0 { Vsn::V2 } else { Vsn::V1 };
        let mut c = server.client(vsn).await;
        let key = format!("m{i:02}");
        let jr = c.join_ok(&topic, config(false, false, &key, false)).await;
        track_ok(&mut c, &jr, &topic, json!({"i": i})).await;
        members.push(c);
        if i == 9 {
            let mut l = server.client(Vsn::V2).await;
            l.join_ok(&topic, config(false, false, "late", true)).await;
            late = Some(l);
        }
    }
    let want: Vec<String> = (0..20).map(|i| format!("m{i:02}")).collect();
    let (mut view, mut diffs) = (View::new(), 0);
    until_keys(&mut observer, &mut view, &mut diffs, &want).await;
    let elapsed = started.elapsed();
    let most = elapsed.as_millis() as usize / INTERVAL_MS as usize + 1;
    assert!(diffs <= most, "{diffs} diffs in {elapsed:?}: more than one per {INTERVAL_MS} ms interval");

    let mut late = late.expect("the late member");
    let (mut late_view, mut late_diffs) = (View::new(), 0);
    until_keys(&mut late, &mut late_view, &mut late_diffs, &want).await;
    assert_eq!(late_view, view, "the late member's state and diffs end where the observer's diffs end");

    // Nothing more comes: every change was told once.
    observer.expect_silence(Duration::from_millis(2 * INTERVAL_MS)).await;
    // A lone change after a quiet interval still arrives.
    let gone = members.pop().expect("a member");
    gone.close().await;
    let want: Vec<String> = (0..19).map(|i| format!("m{i:02}")).collect();
    until_keys(&mut observer, &mut view, &mut diffs, &want).await;
}

/// `presence: {counts_only: true}`: the member gets the room's counts (metas and distinct keys) as a
/// `system` push when it joins and when they change, and never `presence_state` or `presence_diff`.
#[tokio::test]
async fn t39_counts_only_members_get_counts_not_metas() {
    let server = Server::start(&[]);
    for vsn in VSNS {
        let sub = unique("stadium");
        let topic = format!("realtime:{sub}");
        let mut fan = server.client(vsn).await;
        let fan_jr = fan.join_ok(&topic, counts_only_config()).await;
        let expect_counts = |frame: &Value, count: u64, keys: u64| {
            assert_eq!(frame["topic"], topic.as_str(), "{frame}");
            assert_eq!(
                frame["payload"],
                json!({"extension": "presence", "status": "ok", "message": "presence count",
                       "channel": sub, "count": count, "keys": keys}),
                "{vsn}"
            );
        };
        let counts = fan.expect_event("system", T).await;
        expect_counts(&counts, 0, 0);

        let mut a = server.client(vsn).await;
        let a_jr = a.join_ok(&topic, config(false, false, "alice", true)).await;
        track_ok(&mut a, &a_jr, &topic, json!({"tab": 1})).await;
        expect_counts(&fan.expect_event("system", T).await, 1, 1);
        let mut a2 = server.client(vsn).await;
        let a2_jr = a2.join_ok(&topic, config(false, false, "alice", false)).await;
        track_ok(&mut a2, &a2_jr, &topic, json!({"tab": 2})).await;
        expect_counts(&fan.expect_event("system", T).await, 2, 1);
        // The fan counts too when it tracks.
        track_ok(&mut fan, &fan_jr, &topic, json!({})).await;
        expect_counts(&fan.expect_event("system", T).await, 3, 2);
        a.close().await;
        expect_counts(&fan.expect_event("system", T).await, 2, 2);
        fan.expect_silence(QUIET).await;
    }
}

/// A counts-only member joining while a batch is pending is told the counts at once, the pending
/// changes included; it does not wait for the flush as a member that gets `presence_state` must.
/// Causal: the observer's diff of the second track only goes out with the flush, an interval after the
/// first, and has not arrived when the counts have.
#[tokio::test]
async fn t39b_counts_only_members_do_not_wait_for_the_batch() {
    let server = Server::start(&["--presence-batch-ms=3000"]);
    let sub = unique("arena");
    let topic = format!("realtime:{sub}");
    let mut observer = server.client(Vsn::V1).await;
    observer.join_ok(&topic, config(false, false, "observer", true)).await;
    let (mut view, mut diffs) = (View::new(), 0);
    apply(&mut view, &mut diffs, &observer.expect_event("presence_state", T).await);
    let mut a = server.client(Vsn::V2).await;
    let a_jr = a.join_ok(&topic, config(false, false, "alice", false)).await;
    track_ok(&mut a, &a_jr, &topic, json!({})).await;
    until_keys(&mut observer, &mut view, &mut diffs, &["alice".to_owned()]).await;
    let mut b = server.client(Vsn::V2).await;
    let b_jr = b.join_ok(&topic, config(false, false, "bob", false)).await;
    track_ok(&mut b, &b_jr, &topic, json!({})).await;

    let mut fan = server.client(Vsn::V2).await;
    fan.join_ok(&topic, counts_only_config()).await;
    let counts = fan.expect_event("system", T).await;
    assert_eq!(counts["payload"]["count"], 2, "bob's pending track is counted: {counts}");
    observer.expect_silence(QUIET).await;
    until_keys(&mut observer, &mut view, &mut diffs, &["alice".to_owned(), "bob".to_owned()]).await;
    assert_eq!(diffs, 2, "one diff per interval");
}
