//! INSERT/UPDATE/DELETE payloads, event filters, `Subscribed to PostgreSQL` ordering, transactions,
//! wildcards, `select` and replica identity (PROTOCOL.md §2.6, §5.1, §5.3, §5.6).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use realtime_proto::Vsn;
use serde_json::{json, Value};

use crate::common::*;

const TODOS: &str = "
create table todos (id int8 primary key, title text, done bool not null default false);
alter publication supabase_realtime add table todos;
";

const TODO_COLS: [(&str, &str); 3] = [("id", "int8"), ("title", "text"), ("done", "bool")];

fn todos_entry(event: &str) -> Value {
    json!({"event": event, "schema": "public", "table": "todos"})
}

#[tokio::test]
async fn t10_insert_update_delete_exact_payloads() {
    let db = Db::new(TODOS).await;
    let server = db.server(&[]);
    let token = db.token("authenticated", &new_uuid());
    let entries = json!([todos_entry("*")]);
    let mut clients = Vec::new();
    for vsn in VSNS {
        let mut c = server.client(&token, vsn).await;
        let (topic, sub) = topic("todos");
        let (_r, ids) = c.subscribe(&topic, &sub, &entries, None).await;
        assert_eq!(ids.len(), 1);
        clients.push((c, topic, ids));
    }
    db.exec("insert into todos (id, title) values (1, 'first')").await;
    db.exec("update todos set title = 'second', done = true where id = 1").await;
    db.exec("delete from todos where id = 1").await;
    for (c, topic, ids) in &mut clients {
        let got = c.exactly_changes(topic, 3, T).await;
        for ch in &got {
            assert_eq!(&ch.ids, ids, "{}: ids of {}", c.vsn, ch.raw);
        }
        assert_eq!(
            got[0].data,
            data(
                "todos",
                "INSERT",
                &TODO_COLS,
                Some(json!({"id": 1, "title": "first", "done": false})),
                None
            ),
            "{}: INSERT {}",
            c.vsn,
            got[0].raw
        );
        assert_eq!(
            got[1].data,
            data(
                "todos",
                "UPDATE",
                &TODO_COLS,
                Some(json!({"id": 1, "title": "second", "done": true})),
                Some(json!({"id": 1}))
            ),
            "{}: UPDATE {}",
            c.vsn,
            got[1].raw
        );
        assert_eq!(
            got[2].data,
            data("todos", "DELETE", &TODO_COLS, None, Some(json!({"id": 1}))),
            "{}: DELETE {}",
            c.vsn,
            got[2].raw
        );
    }
}

#[tokio::test]
async fn t11_event_filters_and_ids() {
    let db = Db::new(TODOS).await;
    let server = db.server(&[]);
    let token = db.token("authenticated", &new_uuid());
    for vsn in VSNS {
        // One channel with every event filter (and one entry without `event`, which means `*`).
        let all = json!([
            todos_entry("*"),
            todos_entry("INSERT"),
            todos_entry("UPDATE"),
            todos_entry("DELETE"),
            {"schema": "public", "table": "todos"},
        ]);
        let mut c = server.client(&token, vsn).await;
        let (topic_all, sub_all) = topic("events");
        let (_r, ids) = c.subscribe(&topic_all, &sub_all, &all, None).await;
        let (star, ins, upd, del, none) = (ids[0], ids[1], ids[2], ids[3], ids[4]);
        let distinct: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), 5, "{vsn}: distinct entries get distinct ids: {ids:?}");
        // One channel (on its own socket) per single event; lower case is accepted too.
        let mut singles = Vec::new();
        for event in ["INSERT", "update", "DELETE"] {
            let mut s = server.client(&token, vsn).await;
            let (t, sb) = topic("single");
            let (_r, ids) = s.subscribe(&t, &sb, &json!([todos_entry(event)]), None).await;
            singles.push((s, t, ids[0], event.to_uppercase()));
        }
        let id = if vsn == Vsn::V1 { 10 } else { 20 };
        db.exec(&format!("insert into todos (id, title) values ({id}, 'x')")).await;
        db.exec(&format!("update todos set done = true where id = {id}")).await;
        db.exec(&format!("delete from todos where id = {id}")).await;
        let got = c.exactly_changes(&topic_all, 3, T).await;
        let kinds: Vec<&str> = got.iter().map(Change::kind).collect();
        assert_eq!(kinds, ["INSERT", "UPDATE", "DELETE"], "{vsn}");
        assert_eq!(got[0].ids, sorted(vec![star, ins, none]), "{vsn}: INSERT ids");
        assert_eq!(got[1].ids, sorted(vec![star, upd, none]), "{vsn}: UPDATE ids");
        assert_eq!(got[2].ids, sorted(vec![star, del, none]), "{vsn}: DELETE ids");
        for (s, t, sid, event) in &mut singles {
            let got = s.exactly_changes(t, 1, T).await;
            assert_eq!(got[0].kind(), event, "{vsn}: channel for {event} got {}", got[0].raw);
            assert_eq!(got[0].ids, vec![*sid], "{vsn}");
            assert_eq!(got[0].key("id"), json!(id));
        }
    }
}

/// `Subscribed to PostgreSQL` is the first push after the join reply (even right after start-up),
/// and a change committed after it arrives is always delivered.
#[tokio::test]
async fn t12_subscribed_first_then_every_change() {
    let db = Db::new(TODOS).await;
    let server = db.server(&[]);
    let token = db.token("authenticated", &new_uuid());
    let entries = json!([todos_entry("INSERT")]);
    // Joined immediately after start-up: the confirmation waits for the stream.
    for round in 0..8u32 {
        let vsn = VSNS[round as usize % 2];
        let mut c = server.client(&token, vsn).await;
        let (topic, sub) = topic("first");
        let (r, ids) = c.join_pg(&topic, &entries, None).await;
        c.expect_subscribed(&topic, &sub, &r).await;
        let id = 100 + round;
        db.exec(&format!("insert into todos (id, title) values ({id}, 'r{round}')")).await;
        let got = c.exactly_changes(&topic, 1, T).await;
        assert_eq!(got[0].ids, ids);
        assert_eq!(got[0].key("id"), json!(id), "{vsn}: round {round}: {}", got[0].raw);
        c.close().await;
    }
}

/// Under a continuous insert load, clients that join at arbitrary moments receive every row that was
/// committed after their `Subscribed to PostgreSQL`, in commit order, once.
#[tokio::test]
async fn t13_no_change_missed_after_subscribed_under_load() {
    let db = Db::new(TODOS).await;
    let server = db.server(&[]);
    let token = db.token("authenticated", &new_uuid());
    let entries = json!([todos_entry("*")]);
    // Warm up: the stream is live.
    {
        let mut c = server.client(&token, Vsn::V2).await;
        let (t, s) = topic("warm");
        c.subscribe(&t, &s, &entries, None).await;
    }
    let inserter = Inserter::start(&db.url, "todos");
    let mut clients = Vec::new();
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let vsn = VSNS[i % 2];
        let mut c = server.client(&token, vsn).await;
        let (t, s) = topic("load");
        let (r, _ids) = c.join_pg(&t, &entries, None).await;
        c.expect_subscribed(&t, &s, &r).await;
        clients.push((c, t, Instant::now()));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let committed = inserter.stop().await;
    let last = committed.last().expect("rows were inserted").0;
    for (c, t, subscribed_at) in &mut clients {
        let must: Vec<u64> = committed.iter().filter(|(_, at)| at > subscribed_at).map(|(n, _)| *n).collect();
        assert!(!must.is_empty(), "the load kept running after every subscription");
        c.rows_until(t, last, &must, "`Subscribed to PostgreSQL`").await;
        c.expect_silence(QUIET).await;
    }
}

/// One transaction with changes on two tables: delivered in order, with one commit timestamp.
#[tokio::test]
async fn t14_transaction_order_and_commit_timestamp() {
    let db = Db::new(&format!(
        "{TODOS}
        create table tags (id int4 primary key, name text);
        alter publication supabase_realtime add table tags;"
    ))
    .await;
    let server = db.server(&[]);
    let token = db.token("authenticated", &new_uuid());
    let entries = json!([todos_entry("*"), {"event": "*", "schema": "public", "table": "tags"}]);
    let mut clients = Vec::new();
    for vsn in VSNS {
        let mut c = server.client(&token, vsn).await;
        let (t, s) = topic("txn");
        let (_r, ids) = c.subscribe(&t, &s, &entries, None).await;
        clients.push((c, t, ids));
    }
    db.exec(
        "begin;
         insert into todos (id, title) values (1, 'a');
         insert into tags (id, name) values (7, 'red');
         update todos set title = 'b' where id = 1;
         delete from tags where id = 7;
         insert into todos (id, title) values (2, 'c');
         commit;",
    )
    .await;
    db.exec("insert into tags (id, name) values (8, 'later')").await;
    for (c, t, ids) in &mut clients {
        let got = c.exactly_changes(t, 6, T).await;
        let seen: Vec<(String, String, Value)> = got
            .iter()
            .map(|ch| (ch.data["table"].as_str().unwrap().to_owned(), ch.kind().to_owned(), ch.key("id")))
            .collect();
        let want: Vec<(String, String, Value)> = [
            ("todos", "INSERT", 1),
            ("tags", "INSERT", 7),
            ("todos", "UPDATE", 1),
            ("tags", "DELETE", 7),
            ("todos", "INSERT", 2),
            ("tags", "INSERT", 8),
        ]
        .iter()
        .map(|(t, k, i)| (t.to_string(), k.to_string(), json!(i)))
        .collect();
        assert_eq!(seen, want, "{}", c.vsn);
        for ch in &got[..5] {
            assert_eq!(
                ch.commit_timestamp, got[0].commit_timestamp,
                "{}: one transaction, one timestamp",
                c.vsn
            );
        }
        for ch in &got {
            let want_id = if ch.data["table"] == "todos" { ids[0] } else { ids[1] };
            assert_eq!(ch.ids, vec![want_id], "{}", c.vsn);
        }
        assert_eq!(
            got[1].data,
            data(
                "tags",
                "INSERT",
                &[("id", "int4"), ("name", "text")],
                Some(json!({"id": 7, "name": "red"})),
                None
            )
        );
    }
}

/// `table: "*"` and schema-only entries match every published table of the schema (and only those).
#[tokio::test]
async fn t15_wildcard_schema_and_table() {
    let db = Db::new(&format!(
        "{TODOS}
        create schema other;
        grant usage on schema other to anon, authenticated, service_role;
        create table other.things (id int4 primary key, v text);
        grant all on other.things to anon, authenticated, service_role;
        create table public.unpublished (id int4 primary key);
        alter publication supabase_realtime add table other.things;"
    ))
    .await;
    let server = db.server(&[]);
    let token = db.token("authenticated", &new_uuid());
    let entries = json!([
        {"event": "*", "schema": "public", "table": "*"},
        {"event": "INSERT", "schema": "*"},
        {"event": "*", "schema": "other"},
        {"table": "todos"},
    ]);
    let mut clients = Vec::new();
    for vsn in VSNS {
        let mut c = server.client(&token, vsn).await;
        let (t, s) = topic("wild");
        let (_r, ids) = c.subscribe(&t, &s, &entries, None).await;
        clients.push((c, t, ids));
    }
    db.exec("insert into todos (id, title) values (1, 'a')").await;
    db.exec("insert into unpublished (id) values (1)").await;
    db.exec("insert into other.things (id, v) values (5, 'x')").await;
    db.exec("update todos set title = 'b' where id = 1").await;
    db.exec("update other.things set v = 'y' where id = 5").await;
    for (c, t, ids) in &mut clients {
        let (public_all, any_insert, other_all, todos) = (ids[0], ids[1], ids[2], ids[3]);
        let got = c.exactly_changes(t, 4, T).await;
        let summary: Vec<(Value, Value, String, Vec<u64>)> = got
            .iter()
            .map(|ch| {
                (ch.data["schema"].clone(), ch.data["table"].clone(), ch.kind().to_owned(), ch.ids.clone())
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    json!("public"),
                    json!("todos"),
                    "INSERT".to_owned(),
                    sorted(vec![public_all, any_insert, todos])
                ),
                (json!("other"), json!("things"), "INSERT".to_owned(), sorted(vec![any_insert, other_all])),
                (json!("public"), json!("todos"), "UPDATE".to_owned(), sorted(vec![public_all, todos])),
                (json!("other"), json!("things"), "UPDATE".to_owned(), sorted(vec![other_all])),
            ],
            "{}",
            c.vsn
        );
        let mut want = data(
            "things",
            "INSERT",
            &[("id", "int4"), ("v", "text")],
            Some(json!({"id": 5, "v": "x"})),
            None,
        );
        want["schema"] = json!("other");
        assert_eq!(got[1].data, want, "{}", c.vsn);
    }
}

/// `select` limits columns and values to the list plus the primary key.
#[tokio::test]
async fn t16_select_columns() {
    let db = Db::new(
        "create table profiles (id int8 primary key, name text, email text, age int4);
         alter publication supabase_realtime add table profiles;",
    )
    .await;
    let server = db.server(&[]);
    let token = db.token("authenticated", &new_uuid());
    let mut clients = Vec::new();
    for vsn in VSNS {
        let mut c = server.client(&token, vsn).await;
        let (t, s) = topic("select");
        let entries =
            json!([{"event": "*", "schema": "public", "table": "profiles", "select": ["name", "age"]}]);
        let (_r, ids) = c.subscribe(&t, &s, &entries, None).await;
        let mut full = server.client(&token, vsn).await;
        let (ft, fs) = topic("noselect");
        full.subscribe(&ft, &fs, &json!([{"event": "*", "schema": "public", "table": "profiles"}]), None)
            .await;
        clients.push((c, t, ids, full, ft));
    }
    db.exec("insert into profiles values (1, 'ann', 'ann@example.com', 31)").await;
    db.exec("update profiles set email = 'a@example.com', age = 32 where id = 1").await;
    db.exec("delete from profiles where id = 1").await;
    let cols = [("id", "int8"), ("name", "text"), ("age", "int4")];
    for (c, t, ids, full, ft) in &mut clients {
        let got = c.exactly_changes(t, 3, T).await;
        assert_eq!(got[0].ids, *ids);
        assert_eq!(
            got[0].data,
            data("profiles", "INSERT", &cols, Some(json!({"id": 1, "name": "ann", "age": 31})), None)
        );
        assert_eq!(
            got[1].data,
            data(
                "profiles",
                "UPDATE",
                &cols,
                Some(json!({"id": 1, "name": "ann", "age": 32})),
                Some(json!({"id": 1}))
            )
        );
        assert_eq!(got[2].data, data("profiles", "DELETE", &cols, None, Some(json!({"id": 1}))));
        // Without select every column is there.
        let got = full.exactly_changes(ft, 3, T).await;
        assert_eq!(
            got[0].data["record"],
            json!({"id": 1, "name": "ann", "email": "ann@example.com", "age": 31}),
            "{}",
            c.vsn
        );
    }
}

/// `old_record`: the primary key by default, every column with REPLICA IDENTITY FULL; unchanged
/// TOASTed values are filled from the full old row.
#[tokio::test]
async fn t17_replica_identity_default_vs_full() {
    let db = Db::new(
        "create table ri_default (id int8 primary key, a text, b int4, big text);
         create table ri_full (id int8 primary key, a text, b int4, big text);
         alter table ri_full replica identity full;
         alter publication supabase_realtime add table ri_default, ri_full;",
    )
    .await;
    let server = db.server(&[]);
    let token = db.token("authenticated", &new_uuid());
    let entries = json!([
        {"event": "*", "schema": "public", "table": "ri_default"},
        {"event": "*", "schema": "public", "table": "ri_full"},
    ]);
    let mut clients = Vec::new();
    for vsn in VSNS {
        let mut c = server.client(&token, vsn).await;
        let (t, s) = topic("ri");
        c.subscribe(&t, &s, &entries, None).await;
        clients.push((c, t));
    }
    // 6400 characters of hex: incompressible enough to be stored out of line (TOAST).
    let big_sql = "(select string_agg(md5(i::text), '') from generate_series(1, 200) i)";
    let big: String = db.json_rows(&format!("select {big_sql} as v")).await[0].as_str().unwrap().to_owned();
    for table in ["ri_default", "ri_full"] {
        db.exec(&format!("insert into {table} values (1, 'old', 1, {big_sql})")).await;
        db.exec(&format!("update {table} set a = 'new', b = 2 where id = 1")).await;
        db.exec(&format!("delete from {table} where id = 1")).await;
    }
    let cols = [("id", "int8"), ("a", "text"), ("b", "int4"), ("big", "text")];
    for (c, t) in &mut clients {
        let got = c.exactly_changes(t, 6, T).await;
        let by_table: BTreeMap<(String, String), Value> = got
            .iter()
            .map(|ch| {
                ((ch.data["table"].as_str().unwrap().to_owned(), ch.kind().to_owned()), ch.data.clone())
            })
            .collect();
        let get =
            |t: &str, k: &str| by_table.get(&(t.to_owned(), k.to_owned())).cloned().unwrap_or(Value::Null);
        // Default identity: the key only.
        assert_eq!(get("ri_default", "UPDATE")["old_record"], json!({"id": 1}), "{}", c.vsn);
        assert_eq!(get("ri_default", "UPDATE")["record"]["a"], json!("new"));
        assert_eq!(
            get("ri_default", "DELETE"),
            data("ri_default", "DELETE", &cols, None, Some(json!({"id": 1})))
        );
        // Full identity: every column, old values; the unchanged TOASTed `big` is in `record` too.
        assert_eq!(
            get("ri_full", "UPDATE"),
            data(
                "ri_full",
                "UPDATE",
                &cols,
                Some(json!({"id": 1, "a": "new", "b": 2, "big": big})),
                Some(json!({"id": 1, "a": "old", "b": 1, "big": big}))
            ),
            "{}",
            c.vsn
        );
        assert_eq!(
            get("ri_full", "DELETE"),
            data("ri_full", "DELETE", &cols, None, Some(json!({"id": 1, "a": "new", "b": 2, "big": big}))),
            "{}",
            c.vsn
        );
    }
}
