//! `config.postgres_changes_options.wait` (PROTOCOL.md §11): the join reply is held until the
//! subscription is live; refused with a reason naming the cause otherwise.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

const TODOS: &str = "
create table todos (id int8 primary key, title text);
create table notpub (id int8 primary key);
alter publication supabase_realtime add table todos;
";

fn wait_payload(entries: &Value, options: Value) -> Value {
    let mut config = pg_config(entries);
    config["postgres_changes_options"] = options;
    json!({"config": config})
}

/// After a restart with a recorded position the stream resumes only after `--cdc-resume-grace-ms`:
/// a waiting join is answered once it is live (and then nothing is missed), a normal join at once,
/// and a waiting join with a shorter `timeout` is refused.
#[tokio::test]
async fn t60_wait_holds_the_join_until_the_stream_is_live() {
    let db = Db::new(TODOS).await;
    let token = db.token("authenticated", &new_uuid());
    let entries = json!([{"event": "*", "schema": "public", "table": "todos"}]);
    {
        let server = db.server(&[]);
        let mut c = server.client(&token, VSNS[0]).await;
        let (t, s) = topic("prime");
        c.subscribe(&t, &s, &entries, None).await;
        db.exec("insert into todos values (1, 'prime')").await;
        c.changes(&t, 1, T).await;
        let deadline = Instant::now() + T;
        while db.recorded_position().unwrap_or(0) == 0 {
            assert!(Instant::now() < deadline, "no delivered position recorded in {}", db.data_dir.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let grace_ms = 2500u64;
    let server = db.server(&["--cdc-resume-grace-ms", &grace_ms.to_string()]);
    let mut waiting = Vec::new();
    let mut normal = Vec::new();
    let mut short = Vec::new();
    for vsn in VSNS {
        let mut w = server.client(&token, vsn).await;
        let (t, s) = topic("wait");
        let r = w.send_join(&t, &wait_payload(&entries, json!({"wait": true}))).await;
        waiting.push((w, t, s, r));
        let mut n = server.client(&token, vsn).await;
        let (t, s) = topic("nowait");
        let r = n.send_join(&t, &json!({"config": pg_config(&entries)})).await;
        normal.push((n, t, s, r));
        let mut x = server.client(&token, vsn).await;
        let (t, _s) = topic("short");
        let r = x.send_join(&t, &wait_payload(&entries, json!({"wait": true, "timeout": 300}))).await;
        short.push((x, t, r));
    }
    let early = Duration::from_millis(grace_ms - 1000);
    for (n, t, _s, r) in &mut normal {
        let reply = n.expect_reply(r, T).await;
        check_join_reply(n.vsn, &reply, t, r, &entries);
        assert!(server.started.elapsed() < early, "{}: a join without wait is answered at once", n.vsn);
    }
    for (x, t, r) in &mut short {
        let reply = x.expect_reply(r, T).await;
        assert_eq!(reply["payload"]["status"], "error", "{}: {reply}", x.vsn);
        let reason = reply["payload"]["response"]["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("PostgresChangesSubscribeTimeout:"),
            "{}: reason {reason:?} on {t}",
            x.vsn
        );
        assert!(
            server.started.elapsed() < early,
            "{}: refused after its own timeout, before the grace ended",
            x.vsn
        );
    }
    for (w, t, s, r) in &mut waiting {
        let reply = w.expect_reply(r, T).await;
        let at = server.started.elapsed();
        check_join_reply(w.vsn, &reply, t, r, &entries);
        assert!(
            at >= early,
            "{}: the waiting join was answered after {at:?}, before the stream resumed",
            w.vsn
        );
        w.expect_subscribed(t, s, r).await;
    }
    // Right after the waiting reply, nothing can be missed.
    db.exec("insert into todos values (2, 'after')").await;
    for (w, t, _s, _r) in &mut waiting {
        let got = w.exactly_changes(t, 1, T).await;
        assert_eq!(got[0].key("id"), json!(2), "{}", w.vsn);
    }
    for (n, t, s, r) in &mut normal {
        n.expect_subscribed(t, s, r).await;
        let got = n.exactly_changes(t, 1, T).await;
        assert_eq!(got[0].key("id"), json!(2), "{}", n.vsn);
    }
}

/// Waiting for a table that is not published: the join is refused with `RealtimeDisabledForConfiguration`.
#[tokio::test]
async fn t61_wait_refuses_a_table_not_in_the_publication() {
    let db = Db::new(TODOS).await;
    let server = db.server(&[]);
    let token = db.token("authenticated", &new_uuid());
    for vsn in VSNS {
        let mut c = server.client(&token, vsn).await;
        let (t, _s) = topic("refused");
        let entries = json!([{"event": "*", "schema": "public", "table": "notpub"}]);
        let r = c.send_join(&t, &wait_payload(&entries, json!({"wait": true}))).await;
        let reply = c.expect_reply(&r, T).await;
        assert_eq!(reply["payload"]["status"], "error", "{vsn}: {reply}");
        let reason = reply["payload"]["response"]["reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with("RealtimeDisabledForConfiguration: "), "{vsn}: reason {reason:?}");
        c.expect_silence(QUIET).await;
        // The same socket can still wait-join a published table.
        let (t, s) = topic("ok");
        let entries = json!([{"event": "*", "schema": "public", "table": "todos"}]);
        let r = c.send_join(&t, &wait_payload(&entries, json!({"wait": true}))).await;
        let reply = c.expect_reply(&r, T).await;
        check_join_reply(vsn, &reply, &t, &r, &entries);
        c.expect_subscribed(&t, &s, &r).await;
    }
}

/// `config.broadcast.replication_ready` (PROTOCOL.md §11, §2.9): once the replication stream is live the
/// channel gets one `system` ok, after the join reply.
#[tokio::test]
async fn t62_replication_ready_is_announced_once_the_stream_is_live() {
    let db = Db::new(TODOS).await;
    let token = db.token("authenticated", &new_uuid());
    let server = db.server(&[]);
    for vsn in VSNS {
        let mut c = server.client(&token, vsn).await;
        let (t, s) = topic("ready");
        let mut config = pg_config(&json!([]));
        config["broadcast"]["replication_ready"] = json!(true);
        let r = c.send_join(&t, &json!({ "config": config })).await;
        let reply = c.expect_reply(&r, T).await;
        assert_eq!(reply["payload"]["status"], "ok", "{vsn}: {reply}");
        let frame = c.next_frame(T).await;
        let system = frame.value().cloned().unwrap_or(Value::Null);
        assert_eq!(system["event"], "system", "{vsn}: {system}");
        assert_eq!(
            system["payload"],
            json!({"extension": "system", "status": "ok", "message": "Replication connection established",
                   "channel": s}),
            "{vsn}"
        );
        c.expect_silence(QUIET).await;
    }
}

/// Wait mode under a steady stream of inserts: the join reply comes first, then `Subscribed to
/// PostgreSQL`, then changes — never a change before the reply (realtime-js drops those: its bindings
/// get their ids from the reply) — and every row committed after the reply arrives, in order.
#[tokio::test]
async fn t64_wait_mode_under_load_replies_before_any_change() {
    let db = Db::new(TODOS).await;
    let server = db.server(&[]);
    let token = db.token("authenticated", &new_uuid());
    let entries = json!([{"event": "*", "schema": "public", "table": "todos"}]);
    {
        let mut c = server.client(&token, VSNS[0]).await;
        let (t, s) = topic("warm");
        c.subscribe(&t, &s, &entries, None).await;
    }
    let inserter = Inserter::start(&db.url, "todos");
    let mut clients = Vec::new();
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let vsn = VSNS[i % 2];
        let mut c = server.client(&token, vsn).await;
        let (t, s) = topic("waitload");
        let r = c.send_join(&t, &wait_payload(&entries, json!({"wait": true}))).await;
        // The very next frame is the reply: no change may come before it.
        let reply = c.next_frame(T).await;
        let reply = reply.value().cloned().unwrap_or_default();
        assert_eq!(reply["event"], "phx_reply", "{vsn}: first frame after a waiting join: {reply}");
        assert_eq!(reply["payload"]["status"], "ok", "{vsn}: {reply}");
        c.expect_subscribed(&t, &s, &r).await;
        clients.push((c, t, Instant::now()));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let committed = inserter.stop().await;
    let last = committed.last().expect("rows were inserted").0;
    for (c, t, replied_at) in &mut clients {
        let must: Vec<u64> = committed.iter().filter(|(_, at)| at > replied_at).map(|(n, _)| *n).collect();
        c.rows_until(t, last, &must, "the join reply").await;
    }
}
