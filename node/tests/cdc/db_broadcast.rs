//! Broadcast from the database (PROTOCOL.md §3.7): `realtime.send` and `realtime.broadcast_changes`
//! insert into `realtime.messages`; the node streams those inserts from the WAL and delivers them to
//! the private or public subscribers of the topic, with `meta.id`, in commit order.

use std::time::Duration;

use realtime_proto::Vsn;
use serde_json::{json, Value};

use crate::common::*;

const SETUP: &str = "
create policy read_all on realtime.messages for select to authenticated using (true);
create table notes (id int8 primary key, body text);
create function notes_broadcast() returns trigger language plpgsql security definer as $$
begin
  perform realtime.broadcast_changes('notes-' || coalesce(new.id, old.id)::text, tg_op, tg_op,
                                     tg_table_name, tg_table_schema, new, old);
  return null;
end $$;
create trigger notes_broadcast after insert or update or delete on notes
  for each row execute function notes_broadcast();
";

async fn join(c: &mut Client, topic: &str, private: bool) {
    let payload = json!({"config": {"private": private, "broadcast": {"self": false}}});
    let (_, reply) = c.join_with(topic, &payload).await;
    assert_eq!(reply["status"], "ok", "{reply}");
}

#[tokio::test]
async fn t100_realtime_send_reaches_the_private_or_public_subscribers_with_the_row_id() {
    let db = Db::migrated(SETUP).await;
    let server = db.server(&[]);
    let (t, sub) = topic("db");
    let token = db.token("authenticated", &new_uuid());
    let mut private = Vec::new();
    let mut public = Vec::new();
    for vsn in VSNS {
        let mut c = server.client(&token, vsn).await;
        join(&mut c, &t, true).await;
        private.push(c);
        let mut c = server.client(&token, vsn).await;
        join(&mut c, &t, false).await;
        public.push(c);
    }
    // The stream must be live before the first send: wait for a public probe to arrive.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        db.exec(&format!("select realtime.send('{{\"probe\": true}}', 'probe', '{sub}', false)")).await;
        let c = &mut public[0];
        if let Some(f) = c.recv(Duration::from_millis(300)).await {
            if f.value().is_some_and(|v| v["payload"]["event"] == "probe") {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "database broadcast never went live");
    }
    for c in private.iter_mut().chain(public.iter_mut()) {
        c.drain(Duration::from_millis(300)).await; // the probes
    }

    db.exec(&format!("select realtime.send('{{\"n\": 1}}', 'secret', '{sub}')")).await;
    db.exec(&format!("select realtime.send('{{\"n\": 2}}', 'open', '{sub}', false)")).await;
    let rows = db
        .json_rows(&format!("select id::text from realtime.messages where topic = '{sub}' and event in ('secret', 'open') order by event desc"))
        .await;
    let (secret_id, open_id) = (rows[0].clone(), rows[1].clone());
    for c in &mut private {
        let got = c.broadcasts(&t, 1).await;
        assert_eq!(
            got[0],
            json!({"type": "broadcast", "event": "secret", "payload": {"n": 1, "id": secret_id}, "meta": {"id": secret_id}}),
            "{}",
            c.vsn
        );
    }
    for c in &mut public {
        let got = c.broadcasts(&t, 1).await;
        assert_eq!(got[0]["event"], "open", "{}: public subscribers get only the public row: {got:?}", c.vsn);
        assert_eq!(got[0]["meta"], json!({"id": open_id}));
    }
    for c in private.iter_mut().chain(public.iter_mut()) {
        c.expect_silence(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn t101_broadcast_changes_from_a_trigger_and_one_transactions_sends_in_order() {
    let db = Db::migrated(SETUP).await;
    let server = db.server(&[]);
    let token = db.token("authenticated", &new_uuid());
    let mut c = server.client(&token, Vsn::V2).await;
    join(&mut c, "realtime:notes-1", true).await;
    let (t, sub) = topic("order");
    join(&mut c, &t, true).await;
    // Live: a note inserted until its broadcast arrives (then updated and deleted).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut inserted = false;
    while !inserted {
        db.exec("delete from notes; insert into notes values (1, 'hello')").await;
        let f = c.recv(Duration::from_millis(500)).await;
        inserted = f.is_some_and(|f| f.value().is_some_and(|v| v["payload"]["event"] == "INSERT"));
        assert!(tokio::time::Instant::now() < deadline, "database broadcast never went live");
    }
    db.exec("update notes set body = 'changed' where id = 1").await;
    // Skip what the probing loop left behind (its DELETEs and INSERTs).
    let mut got = c.broadcasts("realtime:notes-1", 1).await;
    while got[0]["event"] != "UPDATE" {
        got = c.broadcasts("realtime:notes-1", 1).await;
    }
    let id = got[0]["meta"]["id"].clone();
    assert_eq!(
        got[0]["payload"],
        json!({"operation": "UPDATE", "table": "notes", "schema": "public", "id": id,
               "record": {"id": 1, "body": "changed"}, "old_record": {"id": 1, "body": "hello"}})
    );

    let mut batch = String::from("begin;");
    for n in 0..50 {
        batch.push_str(&format!("select realtime.send('{{\"n\": {n}}}', 'seq', '{sub}');"));
    }
    batch.push_str("commit;");
    db.exec(&batch).await;
    let got = c.broadcasts(&t, 50).await;
    let ns: Vec<i64> = got.iter().map(|p| p["payload"]["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, (0..50).collect::<Vec<_>>(), "one transaction's sends arrive in the order they were sent");
}

/// A node that streamed before database broadcast existed has a slot older than the publication the
/// node now creates for `realtime.messages`; pgoutput cannot decode the slot's older changes with it.
/// Postgres Changes must go on (without database broadcast until the slot has moved past).
#[tokio::test]
async fn t102_a_slot_older_than_the_messages_publication_still_streams_postgres_changes() {
    let db = Db::migrated(
        "create table items (id int8 primary key, body text);
         alter publication supabase_realtime add table items;",
    )
    .await;
    db.exec(&format!("select pg_create_logical_replication_slot('{}', 'pgoutput')", db.slot)).await;
    db.exec("insert into items values (1, 'before the node')").await;
    let server = db.server(&[]);
    let token = db.token("authenticated", &new_uuid());
    let mut c = server.client(&token, Vsn::V1).await;
    let (t, _) = topic("upgrade");
    c.join_pg(&t, &json!([{"event": "INSERT", "schema": "public", "table": "items"}]), None).await;
    db.exec("insert into items values (2, 'after')").await;
    // The backlog (row 1) streams as soon as the node starts, which may be before this subscription
    // exists (a fresh node does not wait for clients): it is not required; row 2 is.
    let mut ids = Vec::new();
    let deadline = tokio::time::Instant::now() + T;
    while ids.last() != Some(&json!(2)) {
        let f = c.recv(deadline.saturating_duration_since(tokio::time::Instant::now())).await;
        let v = f.expect("row 2 streams").value().cloned().expect("json");
        if v["event"] == "postgres_changes" {
            ids.push(v["payload"]["data"]["record"]["id"].clone());
        }
    }
    assert!(ids == [json!(2)] || ids == [json!(1), json!(2)], "in commit order, once: {ids:?}");
}

/// Replay (`broadcast.replay = {since, limit}`): the newest `limit` stored private broadcasts since
/// `since`, oldest first, right after the join reply, with `meta.replayed`; one transaction's messages
/// in the order they were sent; public rows and older rows left out; a row replayed is not delivered
/// live again.
#[tokio::test]
async fn t103_replay_in_send_order_within_limits_and_never_twice() {
    let db = Db::migrated(SETUP).await;
    let server = db.server(&[]);
    let token = db.token("authenticated", &new_uuid());
    let (t, sub) = topic("replay");
    let since = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
        - 60_000) as i64;
    let mut batch = String::from("begin;");
    for n in 0..30 {
        batch.push_str(&format!("select realtime.send('{{\"n\": {n}}}', 'm', '{sub}');"));
    }
    batch.push_str(&format!("select realtime.send('{{\"n\": -1}}', 'm', '{sub}', false);"));
    batch.push_str("commit;");
    db.exec(&batch).await;

    for (vsn, limit, first) in [(Vsn::V1, Some(10), 20), (Vsn::V2, None, 5), (Vsn::V1, Some(500), 5)] {
        let mut c = server.client(&token, vsn).await;
        let mut replay = json!({"since": since});
        if let Some(limit) = limit {
            replay["limit"] = json!(limit);
        }
        let payload = json!({"config": {"private": true, "broadcast": {"replay": replay}}});
        let r = c.send_join(&t, &payload).await;
        let reply = c.expect_reply(&r, T).await;
        assert_eq!(reply["payload"]["status"], "ok", "{reply}");
        let got = c.broadcasts(&t, 30 - first).await;
        let ns: Vec<i64> = got.iter().map(|p| p["payload"]["n"].as_i64().unwrap()).collect();
        assert_eq!(
            ns,
            (first as i64..30).collect::<Vec<_>>(),
            "{vsn} limit {limit:?}: the newest, oldest first"
        );
        assert!(got.iter().all(|p| p["meta"]["replayed"] == true && p["meta"]["id"].is_string()), "{got:?}");
        // The same rows also stream live (maybe after this join): never twice.
        c.expect_silence(Duration::from_millis(500)).await;
    }

    // Nothing since a time after the rows; a bad `since` is refused.
    let mut c = server.client(&token, Vsn::V1).await;
    let later = since + 3_600_000;
    let r = c
        .send_join(&t, &json!({"config": {"private": true, "broadcast": {"replay": {"since": later}}}}))
        .await;
    assert_eq!(c.expect_reply(&r, T).await["payload"]["status"], "ok");
    c.expect_silence(Duration::from_millis(300)).await;
    let (t2, _) = topic("replay");
    let r = c
        .send_join(
            &t2,
            &json!({"config": {"private": true, "broadcast": {"replay": {"since": "yesterday"}}}}),
        )
        .await;
    let reply = c.expect_reply(&r, T).await;
    assert_eq!(
        reply["payload"],
        json!({"status": "error", "response": {"reason": "UnableToReplayMessages: replay.since must be a Unix time in milliseconds"}})
    );
}

/// Replay comes before anything live: rows keep being committed while members join with a replay,
/// and each member gets its replayed rows first, then live ones, every row once, in commit order.
#[tokio::test]
async fn t104_replayed_rows_come_before_live_ones_while_rows_keep_arriving() {
    let db = Db::migrated(SETUP).await;
    let server = db.server(&[]);
    let token = db.token("authenticated", &new_uuid());
    let (t, sub) = topic("replay-live");
    let since = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
        - 60_000) as i64;
    // A public probe member tells when the stream is live.
    let mut probe = server.client(&token, Vsn::V1).await;
    join(&mut probe, &t, false).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        db.exec(&format!("select realtime.send('{{}}', 'probe', '{sub}', false)")).await;
        if probe.recv(Duration::from_millis(300)).await.is_some() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "database broadcast never went live");
    }
    let (pg, _conn) = connect(&db.url).await;
    let writer = tokio::spawn(async move {
        for n in 0..300 {
            let sql = format!("select realtime.send('{{\"n\": {n}}}', 'm', '{sub}')");
            pg.batch_execute(&sql).await.expect("send");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut members = Vec::new();
    for i in 0..6 {
        let mut c = server.client(&token, if i % 2 == 0 { Vsn::V1 } else { Vsn::V2 }).await;
        let r = c
            .send_join(&t, &json!({"config": {"private": true, "broadcast": {"replay": {"since": since}}}}))
            .await;
        assert_eq!(c.expect_reply(&r, T).await["payload"]["status"], "ok");
        members.push(c);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    writer.await.expect("writer");
    for c in &mut members {
        let mut got = Vec::new();
        while got.last().is_none_or(|m: &Value| m["payload"]["n"] != 299) {
            got.extend(c.broadcasts(&t, 1).await);
        }
        let replayed = got.iter().take_while(|m| m["meta"]["replayed"] == true).count();
        assert!(replayed > 0, "{}: something was replayed", c.vsn);
        assert!(
            got[replayed..].iter().all(|m| m["meta"]["replayed"].is_null()),
            "{}: replay first: {got:?}",
            c.vsn
        );
        let ns: Vec<i64> = got.iter().map(|m| m["payload"]["n"].as_i64().unwrap()).collect();
        assert!(ns.windows(2).all(|w| w[0] + 1 == w[1]), "{}: every row once, in order: {ns:?}", c.vsn);
    }
}
