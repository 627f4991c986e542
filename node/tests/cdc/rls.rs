//! Row Level Security per subscriber (PROTOCOL.md §5.5), column privileges, a failing policy that must
//! only affect its own subscriber, and `access_token` refresh (§2.10).

use serde_json::{json, Value};

use crate::common::*;

const ITEMS: &str = "
create table items (id int8 primary key, user_id uuid, body text);
alter table items replica identity full;
alter table items enable row level security;
create policy own_rows on items for select to authenticated using (user_id = auth.uid());
alter publication supabase_realtime add table items;
";

const ITEM_COLS: [(&str, &str); 3] = [("id", "int8"), ("user_id", "uuid"), ("body", "text")];

fn items_entry() -> Value {
    json!([{"event": "*", "schema": "public", "table": "items"}])
}

/// 3 users × both serializers: each receives exactly its own rows (INSERT, UPDATE of rows it owns
/// after the update); DELETEs are not RLS-checked and reveal only the primary key.
#[tokio::test]
async fn t50_rls_matrix_each_user_gets_exactly_their_rows() {
    let db = Db::new(ITEMS).await;
    let server = db.server(&[]);
    let users: Vec<String> = (0..3).map(|_| new_uuid()).collect();
    let stranger = new_uuid();
    let mut clients = Vec::new();
    for (u, user) in users.iter().enumerate() {
        for vsn in VSNS {
            let token = db.token("authenticated", user);
            let mut c = server.client(&token, vsn).await;
            let (t, s) = topic("rls");
            c.subscribe(&t, &s, &items_entry(), Some(&token)).await;
            clients.push((u, c, t));
        }
    }
    // Rows 1..=40 owned by user (id % 5): 0,1,2 = subscribers, 3 = stranger, 4 = NULL owner.
    let owner = |id: i64| -> Option<usize> { (id % 5 < 3).then_some((id % 5) as usize) };
    let owner_sql = |id: i64| match id % 5 {
        k @ 0..=2 => format!("'{}'", users[k as usize]),
        3 => format!("'{stranger}'"),
        _ => "null".to_owned(),
    };
    for id in 1..=20 {
        db.exec(&format!("insert into items values ({id}, {}, 'row {id}')", owner_sql(id))).await;
    }
    let mut batch = String::from("begin;");
    for id in 21..=40 {
        batch.push_str(&format!("insert into items values ({id}, {}, 'row {id}');", owner_sql(id)));
    }
    batch.push_str("commit;");
    db.exec(&batch).await;
    for (u, c, t) in &mut clients {
        let mine: Vec<i64> = (1..=40).filter(|id| owner(*id) == Some(*u)).collect();
        let got = c.exactly_changes(t, mine.len(), T).await;
        let inserts: Vec<i64> =
            got.iter().filter(|c| c.kind() == "INSERT").map(|c| c.key("id").as_i64().unwrap()).collect();
        assert_eq!(inserts, mine, "{} user {u}: exactly its own rows, in commit order", c.vsn);
        for ch in &got {
            let id = ch.key("id").as_i64().unwrap();
            assert_eq!(
                ch.data,
                data(
                    "items",
                    "INSERT",
                    &ITEM_COLS,
                    Some(json!({"id": id, "user_id": users[*u], "body": format!("row {id}")})),
                    None
                ),
                "{}",
                c.vsn
            );
        }
    }
    // RLS is checked against the row as it is when the change is processed: change owners only now.
    // Row 1 (user 1) moves to user 2; row 2 (user 2) moves to the stranger.
    db.exec(&format!("update items set user_id = '{}', body = 'moved' where id = 1", users[2])).await;
    db.exec(&format!("update items set user_id = '{stranger}' where id = 2")).await;
    db.exec("delete from items where id in (3, 4)").await;
    for (u, c, t) in &mut clients {
        let updates: Vec<i64> = if *u == 2 { vec![1] } else { vec![] };
        let got = c.exactly_changes(t, updates.len() + 2, T).await;
        let got_updates: Vec<i64> =
            got.iter().filter(|c| c.kind() == "UPDATE").map(|c| c.key("id").as_i64().unwrap()).collect();
        assert_eq!(got_updates, updates, "{} user {u}: updates of rows it can see afterwards", c.vsn);
        if *u == 2 {
            let upd = got.iter().find(|c| c.kind() == "UPDATE").unwrap();
            assert_eq!(
                upd.data,
                data(
                    "items",
                    "UPDATE",
                    &ITEM_COLS,
                    Some(json!({"id": 1, "user_id": users[2], "body": "moved"})),
                    Some(json!({"id": 1, "user_id": users[1], "body": "row 1"}))
                ),
                "{}",
                c.vsn
            );
        }
        // DELETEs are not RLS-checked: everyone gets them, with the primary key only.
        let deletes: Vec<&Change> = got.iter().filter(|c| c.kind() == "DELETE").collect();
        assert_eq!(deletes.len(), 2, "{}", c.vsn);
        for (ch, id) in deletes.iter().zip([3, 4]) {
            assert_eq!(
                ch.data,
                data("items", "DELETE", &ITEM_COLS, None, Some(json!({"id": id}))),
                "{}",
                c.vsn
            );
        }
    }
}

/// Columns the role may not SELECT are left out; without SELECT on the primary key the row is an
/// error 401 row.
#[tokio::test]
async fn t51_column_privileges() {
    let db = Db::new(
        "create table notes (id int8 primary key, title text, secret text);
         revoke all on notes from authenticated, anon;
         grant select (id, title) on notes to authenticated;
         grant select (title) on notes to anon;
         alter publication supabase_realtime add table notes;",
    )
    .await;
    let server = db.server(&[]);
    let mut clients = Vec::new();
    for vsn in VSNS {
        for role in ["authenticated", "service_role", "anon"] {
            let token = db.token(role, &new_uuid());
            let mut c = server.client(&token, vsn).await;
            let (t, s) = topic(role);
            c.subscribe(&t, &s, &json!([{"event": "*", "schema": "public", "table": "notes"}]), None).await;
            clients.push((role, c, t));
        }
    }
    db.exec("insert into notes values (1, 'hello', 'hunter2')").await;
    for (role, c, t) in &mut clients {
        let got = c.exactly_changes(t, 1, T).await;
        let want = match *role {
            "authenticated" => data(
                "notes",
                "INSERT",
                &[("id", "int8"), ("title", "text")],
                Some(json!({"id": 1, "title": "hello"})),
                None,
            ),
            "service_role" => data(
                "notes",
                "INSERT",
                &[("id", "int8"), ("title", "text"), ("secret", "text")],
                Some(json!({"id": 1, "title": "hello", "secret": "hunter2"})),
                None,
            ),
            _ => json!({"schema": "public", "table": "notes", "type": "INSERT", "commit_timestamp": null,
                        "columns": [], "errors": ["Error 401: Unauthorized"], "record": {}}),
        };
        assert_eq!(got[0].data, want, "{} {role}: {}", c.vsn, got[0].raw);
    }
}

/// Subscribers whose RLS check fails (a policy that raises for them, a role that does not exist, a
/// `sub` that is not a uuid) get a `system` error and no rows; everyone else keeps getting every row.
#[tokio::test]
async fn t52_failing_policy_only_affects_its_subscriber() {
    let db = Db::new(
        "create table fp (id int8 primary key, body text);
         alter table fp enable row level security;
         create function public.fp_visible() returns bool language plpgsql stable as $$
         begin
           if auth.jwt() ->> 'sub' = 'policy-bomb' then
             raise exception 'policy bomb for %', auth.jwt() ->> 'sub';
           end if;
           perform auth.uid();
           return true;
         end $$;
         create policy everyone on fp for select to authenticated using (public.fp_visible());
         alter publication supabase_realtime add table fp;",
    )
    .await;
    let server = db.server(&[]);
    let entries = json!([{"event": "*", "schema": "public", "table": "fp"}]);
    // Eight healthy subscribers beside three failing ones: the checks of a batch share a transaction
    // per connection, so failing and healthy questions sit in one transaction in every order.
    let mut good = Vec::new();
    for i in 0..8 {
        let vsn = VSNS[i % 2];
        let token = db.token("authenticated", &new_uuid());
        let mut c = server.client(&token, vsn).await;
        let (t, s) = topic("good");
        c.subscribe(&t, &s, &entries, Some(&token)).await;
        good.push((c, t));
    }
    let mut bad = Vec::new();
    for (i, (role, sub)) in [
        ("authenticated", "policy-bomb".to_owned()),
        ("no_such_role", new_uuid()),
        ("authenticated", "not-a-uuid".to_owned()),
    ]
    .into_iter()
    .enumerate()
    {
        let vsn = VSNS[i % 2];
        let token = db.token(role, &sub);
        let mut c = server.client(&token, vsn).await;
        let (t, s) = topic("bad");
        let (_r, _ids) = c.join_pg(&t, &entries, Some(&token)).await;
        // Either `Subscribed to PostgreSQL` or already an error: the subscription is registered.
        let first = c.next_frame(T).await;
        let v = first.value().cloned().unwrap_or_default();
        assert_eq!(v["event"], "system", "{vsn} {role}/{sub}: {first:?}");
        bad.push((format!("{role}/{sub}"), c, t, s, v));
    }
    for id in 1..=10 {
        db.exec(&format!("insert into fp values ({id}, 'b{id}')")).await;
    }
    for (c, t) in &mut good {
        let got = c.exactly_changes(t, 10, T).await;
        let ids: Vec<i64> = got.iter().map(|c| c.key("id").as_i64().unwrap()).collect();
        assert_eq!(ids, (1..=10).collect::<Vec<_>>(), "{}: a healthy subscriber gets every row", c.vsn);
    }
    for (who, c, t, s, first) in &mut bad {
        let mut frames = vec![Frame::Text(first.clone(), String::new())];
        frames.extend(c.drain(QUIET * 2).await);
        let changes: Vec<&Frame> = frames.iter().filter(|f| f.is_event("postgres_changes")).collect();
        assert!(changes.is_empty(), "{} {who}: a failing check must not deliver rows: {changes:?}", c.vsn);
        let errors: Vec<&Value> = frames
            .iter()
            .filter_map(Frame::value)
            .filter(|v| v["event"] == "system" && v["payload"]["status"] == "error")
            .collect();
        assert!(!errors.is_empty(), "{} {who}: expected a system error, got {frames:?}", c.vsn);
        for e in errors {
            assert_eq!(e["topic"], json!(t), "{e}");
            assert_eq!(e["payload"]["extension"], "postgres_changes", "{} {who}: {e}", c.vsn);
            assert_eq!(e["payload"]["channel"], json!(s), "{e}");
            assert!(e["payload"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
        }
    }
    // Still healthy afterwards.
    for id in 11..=15 {
        db.exec(&format!("insert into fp values ({id}, 'b{id}')")).await;
    }
    for (c, t) in &mut good {
        let got = c.exactly_changes(t, 5, T).await;
        let ids: Vec<i64> = got.iter().map(|c| c.key("id").as_i64().unwrap()).collect();
        assert_eq!(ids, (11..=15).collect::<Vec<_>>(), "{}", c.vsn);
    }
    for (who, c, _t, _s, _) in &mut bad {
        let frames = c.drain(QUIET).await;
        assert!(
            !frames.iter().any(|f| f.is_event("postgres_changes")),
            "{} {who}: no rows for a failing subscriber: {frames:?}",
            c.vsn
        );
    }
}

/// `access_token` with another user's token: `Subscribed to PostgreSQL` again, then that user's rows.
#[tokio::test]
async fn t53_access_token_refresh_switches_user() {
    let db = Db::new(ITEMS).await;
    let server = db.server(&[]);
    let (alice, bob) = (new_uuid(), new_uuid());
    let (ta, tb) = (db.token("authenticated", &alice), db.token("authenticated", &bob));
    let mut clients = Vec::new();
    for vsn in VSNS {
        let mut c = server.client(&ta, vsn).await;
        let (t, s) = topic("refresh");
        let (r, _ids) = c.subscribe(&t, &s, &items_entry(), Some(&ta)).await;
        clients.push((c, t, s, r));
    }
    let insert_both = |first: i64| {
        format!("insert into items values ({first}, '{alice}', 'a'), ({}, '{bob}', 'b')", first + 1)
    };
    db.exec(&insert_both(1)).await;
    let a1 = 1;
    for (c, t, _, _) in &mut clients {
        let got = c.exactly_changes(t, 1, T).await;
        assert_eq!(got[0].key("id"), json!(a1), "{}: alice's row only", c.vsn);
    }
    for (c, t, s, r) in &mut clients {
        c.push(Some(r), t, "access_token", &json!({"access_token": tb})).await;
        c.expect_subscribed(t, s, r).await;
    }
    db.exec(&insert_both(3)).await;
    let b2 = 4;
    for (c, t, _, _) in &mut clients {
        let got = c.exactly_changes(t, 1, T).await;
        assert_eq!(got[0].key("id"), json!(b2), "{}: after the refresh, bob's row only", c.vsn);
        assert_eq!(got[0].data["record"]["user_id"], json!(bob));
    }
}
