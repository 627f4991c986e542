//! The `realtime` schema the node installs (`realtime_node::schema`): what a fresh database gets,
//! idempotence and concurrent migrators, reuse of an existing Supabase schema, `realtime.send`,
//! `broadcast_changes`, `realtime.topic()`, a Supabase-style policy, the partition janitor, and the
//! binary applying it at start-up (or refusing to start when it cannot).

use std::time::{Duration, Instant};

use realtime_node::schema::{janitor, migrations, partitions::Day};
use serde_json::{json, Value};
use tokio_postgres::Client as PgClient;

use crate::common::{connect, Db, T};
use crate::support::process;

const RETENTION: Duration = Duration::from_secs(72 * 3600);
const ROLES: [&str; 3] = ["anon", "authenticated", "service_role"];

async fn client(db: &Db) -> PgClient {
    let (client, _conn) = connect(&db.url).await;
    client
}

async fn migrated() -> Db {
    Db::migrated("").await
}

async fn one_bool(db: &Db, sql: &str) -> bool {
    db.pg.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

/// Every object of schema `realtime` with its definition and privileges, as one text: equal
/// snapshots mean nothing changed.
async fn snapshot(db: &Db) -> String {
    let sql = "select string_agg(line, E'\\n' order by line) from (
        select 'rel ' || c.relname || ' ' || c.relkind::text || ' ' || c.relrowsecurity || ' ' ||
               coalesce(c.relacl::text, '') || ' ' || coalesce(pg_get_indexdef(c.oid), '') as line
          from pg_class c where c.relnamespace = 'realtime'::regnamespace
        union all
        select 'col ' || a.attrelid::regclass || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) ||
               ' ' || a.attnotnull || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
          from pg_attribute a left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
         where a.attrelid = 'realtime.messages'::regclass and a.attnum > 0 and not a.attisdropped
        union all
        select 'fn ' || p.oid::regprocedure || ' ' || md5(p.prosrc) || ' ' || coalesce(p.proacl::text, '')
          from pg_proc p where p.pronamespace = 'realtime'::regnamespace
        union all
        select 'con ' || conname || ' ' || pg_get_constraintdef(oid)
          from pg_constraint where connamespace = 'realtime'::regnamespace
        union all
        select 'nsp ' || coalesce(nspacl::text, '') from pg_namespace where nspname = 'realtime'
        union all
        select 'mig ' || version || ' ' || applied_at from realtime.node_schema_migrations
    ) s";
    db.pg.query_one(sql, &[]).await.expect("snapshot").get(0)
}

/// Partitions of realtime.messages, sorted.
async fn partition_names(db: &Db) -> Vec<String> {
    let rows = db
        .pg
        .query(
            "select c.relname::text from pg_inherits i join pg_class c on c.oid = i.inhrelid \
             where i.inhparent = 'realtime.messages'::regclass order by 1",
            &[],
        )
        .await
        .expect("partitions");
    rows.iter().map(|r| r.get(0)).collect()
}

fn today() -> Day {
    Day::from_unix_seconds(crate::common::now())
}

#[tokio::test]
async fn fresh_database_gets_every_object() {
    let db = Db::new("").await;
    let mut pg = client(&db).await;
    let applied = migrations::apply(&mut pg).await.expect("migrations");
    assert_eq!(applied.ran, [1, 2, 3, 4]);
    assert_eq!(applied.found, migrations::Found::default());
    let versions = migrations::applied_versions(&pg).await.unwrap();
    assert_eq!(versions, [1, 2, 3, 4]);

    // The table: partitioned by range on inserted_at, RLS on, no policy, Supabase's columns and keys.
    assert!(
        one_bool(
            &db,
            "select relkind = 'p' and relrowsecurity from pg_class where oid = 'realtime.messages'::regclass"
        )
        .await
    );
    assert!(
        one_bool(&db, "select pg_get_partkeydef('realtime.messages'::regclass) = 'RANGE (inserted_at)'")
            .await
    );
    assert!(one_bool(&db, "select count(*) = 0 from pg_policies where schemaname = 'realtime'").await);
    let columns = db
        .json_rows(
            "select a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || case when a.attnotnull then ' not null' else '' end \
               || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '') \
             from pg_attribute a left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum \
             where a.attrelid = 'realtime.messages'::regclass and a.attnum > 0 and not a.attisdropped order by a.attnum",
        )
        .await;
    assert_eq!(
        columns,
        json!([
            "topic text not null",
            "extension text not null",
            "payload jsonb",
            "event text",
            "private boolean default false",
            "updated_at timestamp without time zone not null default now()",
            "inserted_at timestamp without time zone not null default now()",
            "id uuid not null default gen_random_uuid()",
            "binary_payload bytea"
        ])
        .as_array()
        .unwrap()
        .clone()
    );
    assert!(
        one_bool(
            &db,
            "select pg_get_constraintdef(oid) = 'PRIMARY KEY (id, inserted_at)' from pg_constraint \
             where conrelid = 'realtime.messages'::regclass and contype = 'p'"
        )
        .await
    );
    assert!(
        one_bool(
            &db,
            "select indexdef like '%(inserted_at DESC, topic) WHERE ((extension = ''broadcast''::text) AND (private IS TRUE))' \
             from pg_indexes where schemaname = 'realtime' and indexname = 'messages_inserted_at_topic_index'"
        )
        .await
    );

    // Functions, and what the JWT roles may do.
    for f in [
        "realtime.topic()",
        "realtime.send(jsonb, text, text, boolean)",
        "realtime.send_binary(bytea, text, text, boolean)",
        "realtime.broadcast_changes(text, text, text, text, text, record, record, text)",
    ] {
        assert!(one_bool(&db, &format!("select to_regprocedure('{f}') is not null")).await, "{f}");
        for role in ROLES {
            assert!(
                one_bool(&db, &format!("select has_function_privilege('{role}', '{f}', 'EXECUTE')")).await,
                "{role} may execute {f}"
            );
        }
    }
    for role in ROLES {
        assert!(one_bool(&db, &format!("select has_schema_privilege('{role}', 'realtime', 'USAGE')")).await);
        for privilege in ["SELECT", "INSERT", "UPDATE"] {
            assert!(
                one_bool(
                    &db,
                    &format!("select has_table_privilege('{role}', 'realtime.messages', '{privilege}')")
                )
                .await,
                "{role} {privilege}"
            );
        }
        assert!(
            !one_bool(&db, &format!("select has_table_privilege('{role}', 'realtime.messages', 'DELETE')"))
                .await,
            "{role} may not delete"
        );
    }

    // Partitions from yesterday to three days ahead.
    let sweep = janitor::sweep(&mut pg, RETENTION).await.expect("janitor");
    let expected: Vec<String> = (-1..=3).map(|n| today().add_days(n).partition_name()).collect();
    assert_eq!(sweep.created, expected);
    assert_eq!(partition_names(&db).await, expected);
}

#[tokio::test]
async fn applying_twice_changes_nothing() {
    let db = migrated().await;
    let before = snapshot(&db).await;
    let mut pg = client(&db).await;
    let again = migrations::apply(&mut pg).await.expect("second apply");
    assert!(again.ran.is_empty(), "{again:?}");
    let sweep = janitor::sweep(&mut pg, RETENTION).await.expect("second pass");
    assert_eq!(sweep, janitor::Sweep::default());
    assert_eq!(snapshot(&db).await, before);
}

#[tokio::test]
async fn concurrent_migrators_do_not_fail() {
    let db = Db::new("").await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(client(&db).await);
    }
    let results = futures_util::future::join_all(clients.iter_mut().map(|pg| async move {
        let applied = migrations::apply(pg).await?;
        janitor::sweep(pg, RETENTION).await.map(|sweep| (applied, sweep))
    }))
    .await;
    let mut ran = Vec::new();
    let mut created = 0;
    for result in results {
        let (applied, sweep) = result.expect("every migrator succeeds");
        ran.extend(applied.ran);
        created += sweep.created.len();
        assert!(sweep.failed.is_empty(), "{sweep:?}");
    }
    ran.sort_unstable();
    assert_eq!(ran, [1, 2, 3, 4], "each migration ran exactly once");
    assert_eq!(created, 5, "each partition was created once");
    assert_eq!(migrations::applied_versions(&db.pg).await.unwrap(), [1, 2, 3, 4]);
}

/// What a Supabase project has (an older one: no `binary_payload`, no replay index), plus a row.
const SUPABASE_SQL: &str = r#"
create schema realtime;
create table realtime.schema_migrations (version bigint primary key, inserted_at timestamp(0));
insert into realtime.schema_migrations values (20241019105805, now());
create table realtime.messages (
  topic text not null,
  extension text not null,
  payload jsonb,
  event text,
  private boolean default false,
  updated_at timestamp without time zone not null default now(),
  inserted_at timestamp without time zone not null default now(),
  id uuid not null default gen_random_uuid(),
  primary key (id, inserted_at)
) partition by range (inserted_at);
alter table realtime.messages enable row level security;
grant usage on schema realtime to anon, authenticated, service_role;
grant select, insert, update on realtime.messages to anon, authenticated, service_role;
create function realtime.topic() returns text language sql stable as $$
  select nullif(current_setting('realtime.topic', true), '')::text;
$$;
create policy "supabase users" on realtime.messages for select to authenticated using (true);
"#;

#[tokio::test]
async fn an_existing_supabase_schema_is_reused_and_completed() {
    let db = Db::new(SUPABASE_SQL).await;
    let day = today();
    db.exec(&format!(
        "create table realtime.{} partition of realtime.messages for values from ('{day}') to ('{}');
         insert into realtime.messages (topic, extension, payload, event, private, inserted_at)
         values ('room1', 'broadcast', '{{\"kept\": true}}', 'ev', true, '{day} 12:00');",
        day.partition_name(),
        day.add_days(1)
    ))
    .await;
    let topic_before: String = db
        .pg
        .query_one("select md5(prosrc) from pg_proc where oid = 'realtime.topic()'::regprocedure", &[])
        .await
        .unwrap()
        .get(0);

    let mut pg = client(&db).await;
    let applied = migrations::apply(&mut pg).await.expect("migrations on a Supabase schema");
    assert_eq!(applied.found, migrations::Found { supabase: true, messages: true });
    assert_eq!(applied.ran, [1, 2, 3, 4]);
    janitor::sweep(&mut pg, RETENTION).await.expect("janitor");

    // Their row, partition, policy, function and migrations are all still there, untouched.
    let rows = db.json_rows("select payload from realtime.messages where topic = 'room1'").await;
    assert_eq!(rows, [json!({"kept": true})]);
    assert!(partition_names(&db).await.contains(&day.partition_name()));
    assert!(one_bool(&db, "select count(*) = 1 from pg_policies where policyname = 'supabase users'").await);
    let topic_after: String = db
        .pg
        .query_one("select md5(prosrc) from pg_proc where oid = 'realtime.topic()'::regprocedure", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(topic_after, topic_before, "an existing realtime.topic() is not replaced");
    assert!(one_bool(&db, "select obj_description('realtime.topic()'::regprocedure) is null").await);
    assert!(one_bool(&db, "select count(*) = 1 from realtime.schema_migrations").await);

    // What was missing was added.
    assert!(
        one_bool(&db, "select to_regprocedure('realtime.send(jsonb, text, text, boolean)') is not null")
            .await
    );
    assert!(one_bool(&db, "select obj_description('realtime.send(jsonb, text, text, boolean)'::regprocedure) like 'realtime-node:%'").await);
    assert!(
        one_bool(&db, "select to_regclass('realtime.messages_inserted_at_topic_index') is not null").await
    );
    assert!(
        one_bool(&db, "select exists(select from pg_attribute where attrelid = 'realtime.messages'::regclass and attname = 'binary_payload')")
            .await
    );
    // And it works on their table.
    db.exec("select realtime.send_binary('\\x0102'::bytea, 'bin', 'room1', true)").await;
    let rows =
        db.json_rows("select encode(binary_payload, 'hex') from realtime.messages where event = 'bin'").await;
    assert_eq!(rows, [json!("0102")]);
}

#[tokio::test]
async fn send_inserts_broadcast_rows_with_the_payload_id() {
    let db = migrated().await;
    db.exec("select realtime.send('{\"body\": \"hi\"}', 'greeting', 'room1')").await;
    db.exec("select realtime.send('{\"id\": \"mine\", \"n\": 2}'::jsonb, 'counter', 'lobby', false)").await;
    db.exec("select realtime.send_binary('\\xdeadbeef'::bytea, 'blob', 'room1')").await;
    let rows = db
        .json_rows(
            "select jsonb_build_object('topic', topic, 'event', event, 'extension', extension, 'private', private, \
                    'payload', payload, 'id', id, 'binary', encode(binary_payload, 'hex')) \
             from realtime.messages order by event",
        )
        .await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    let (blob, counter, greeting) = (&rows[0], &rows[1], &rows[2]);
    assert_eq!(greeting["topic"], "room1");
    assert_eq!(greeting["extension"], "broadcast");
    assert_eq!(greeting["private"], true, "private by default");
    assert_eq!(
        greeting["payload"],
        json!({"body": "hi", "id": greeting["id"].clone()}),
        "the row id is added"
    );
    assert_eq!(counter["private"], false);
    assert_eq!(counter["payload"], json!({"id": "mine", "n": 2}), "an id of its own is kept");
    assert_eq!(blob["binary"], "deadbeef");
    assert_eq!(blob["payload"], Value::Null);
    assert_eq!(blob["private"], true);

    // The topic is set for the rest of the transaction (policies see it), and failures only warn.
    let mut pg = client(&db).await;
    let tx = pg.transaction().await.unwrap();
    tx.execute("select realtime.send('{}', 'e', 'room9', true)", &[]).await.unwrap();
    let topic: Option<String> = tx.query_one("select realtime.topic()", &[]).await.unwrap().get(0);
    assert_eq!(topic.as_deref(), Some("room9"));
    tx.commit().await.unwrap();
    // With no partition for the row, the insert fails inside send, which only warns.
    let partitions = partition_names(&db).await;
    for name in &partitions {
        db.exec(&format!("alter table realtime.messages detach partition realtime.{name}")).await;
    }
    db.exec("select realtime.send('{}', 'lost', 'room1')").await;
    let rows = db.json_rows("select count(*) from realtime.messages").await;
    assert_eq!(rows, [json!(0)]);
}

#[tokio::test]
async fn broadcast_changes_from_a_row_trigger_sends_the_documented_payload() {
    let db = migrated().await;
    db.exec(
        "create table public.notes (id int primary key, body text);
         create function public.notes_changed() returns trigger language plpgsql as $$
         begin
           perform realtime.broadcast_changes(
             'notes:' || coalesce(new.id, old.id), tg_op, tg_op, tg_table_name, tg_table_schema, new, old);
           return null;
         end $$;
         create trigger notes_changed after insert or update or delete on public.notes
           for each row execute function public.notes_changed();",
    )
    .await;
    db.exec("insert into public.notes values (1, 'first')").await;
    db.exec("update public.notes set body = 'second' where id = 1").await;
    db.exec("delete from public.notes where id = 1").await;
    let rows = db
        .json_rows(
            "select jsonb_build_object('topic', topic, 'event', event, 'private', private, 'payload', payload - 'id', \
                    'id_is_row_id', payload->>'id' = id::text) \
             from realtime.messages order by inserted_at",
        )
        .await;
    let row = |op: &str, record: Value, old: Value| {
        json!({
            "topic": "notes:1", "event": op, "private": true, "id_is_row_id": true,
            "payload": {"old_record": old, "record": record, "operation": op, "table": "notes", "schema": "public"}
        })
    };
    assert_eq!(
        rows,
        [
            row("INSERT", json!({"id": 1, "body": "first"}), Value::Null),
            row("UPDATE", json!({"id": 1, "body": "second"}), json!({"id": 1, "body": "first"})),
            row("DELETE", Value::Null, json!({"id": 1, "body": "second"})),
        ]
    );
    // A statement trigger is refused.
    db.exec(
        "create function public.notes_stmt() returns trigger language plpgsql as $$
         begin
           perform realtime.broadcast_changes('t', 'e', tg_op, tg_table_name, tg_table_schema, null, null, tg_level);
           return null;
         end $$;
         create trigger notes_stmt after insert on public.notes for each statement execute function public.notes_stmt();",
    )
    .await;
    let err =
        db.pg.batch_execute("insert into public.notes values (2, 'x')").await.expect_err("statement level");
    assert!(format!("{err:?}").contains("Failed to process the row"), "{err:?}");
}

#[tokio::test]
async fn topic_reads_the_transaction_setting() {
    let db = migrated().await;
    let mut pg = client(&db).await;
    let none: Option<String> = pg.query_one("select realtime.topic()", &[]).await.unwrap().get(0);
    assert_eq!(none, None);
    let tx = pg.transaction().await.unwrap();
    tx.execute("select set_config('realtime.topic', 'room1', true)", &[]).await.unwrap();
    let set: Option<String> = tx.query_one("select realtime.topic()", &[]).await.unwrap().get(0);
    assert_eq!(set.as_deref(), Some("room1"));
    tx.execute("select set_config('realtime.topic', '', true)", &[]).await.unwrap();
    let empty: Option<String> = tx.query_one("select realtime.topic()", &[]).await.unwrap().get(0);
    assert_eq!(empty, None, "an empty topic reads as null");
    tx.commit().await.unwrap();
    let after: Option<String> = pg.query_one("select realtime.topic()", &[]).await.unwrap().get(0);
    assert_eq!(after, None, "transaction-local");
}

/// As `role` with the claims and `topic` set the way the read and write checks set them: the
/// `topic/extension` of the rows visible, and the SQLSTATE of an attempted insert (if refused).
async fn as_role(pg: &mut PgClient, claims: &str, role: &str, topic: &str) -> (Vec<String>, Option<String>) {
    let tx = pg.transaction().await.unwrap();
    tx.execute(
        "select set_config('role', $1, true), set_config('request.jwt.claims', $2, true), \
                set_config('realtime.topic', $3, true)",
        &[&role, &claims, &topic],
    )
    .await
    .unwrap();
    let rows =
        tx.query("select topic || '/' || extension from realtime.messages order by 1", &[]).await.unwrap();
    let seen: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let write = tx
        .execute(
            "insert into realtime.messages (topic, extension, private) values ($1, 'broadcast', true)",
            &[&topic],
        )
        .await;
    let denied = write.as_ref().err().and_then(|e| e.code()).map(|c| c.code().to_owned());
    tx.rollback().await.unwrap();
    (seen, denied)
}

#[tokio::test]
async fn a_policy_written_the_supabase_way_works_as_authenticated() {
    let db = migrated().await;
    db.exec(
        "create policy \"room1 readers\" on realtime.messages for select to authenticated
           using (realtime.topic() = 'room1' and realtime.messages.extension in ('broadcast', 'presence'));
         insert into realtime.messages (topic, extension, private) values
           ('room1', 'broadcast', true), ('room1', 'presence', true), ('room1', 'postgres_changes', true),
           ('room2', 'broadcast', true);",
    )
    .await;
    let mut pg = client(&db).await;
    let claims = json!({"sub": "7d3f0c3e-2a40-4b7e-9f0a-0c6a4a1f7a11", "role": "authenticated"}).to_string();
    let (seen, denied) = as_role(&mut pg, &claims, "authenticated", "room1").await;
    // The policy looks at the channel's topic, not the row's: on `room1`, every broadcast and
    // presence row is readable (the read check selects its own probe rows by id).
    assert_eq!(seen, ["room1/broadcast", "room1/presence", "room2/broadcast"]);
    assert_eq!(denied.as_deref(), Some("42501"), "RLS refuses the insert");
    let (seen, _) = as_role(&mut pg, &claims, "authenticated", "room2").await;
    assert!(seen.is_empty(), "{seen:?}");
    let (seen, _) = as_role(&mut pg, &claims, "anon", "room1").await;
    assert!(seen.is_empty(), "the policy is for authenticated only: {seen:?}");
}

#[tokio::test]
async fn the_janitor_drops_expired_partitions_and_keeps_current_ones() {
    let db = migrated().await;
    db.exec(
        "create table realtime.messages_2020_01_01 partition of realtime.messages
           for values from ('2020-01-01') to ('2020-01-02');
         insert into realtime.messages (topic, extension, inserted_at) values ('old', 'broadcast', '2020-01-01 08:00');
         create table realtime.messages_archive partition of realtime.messages
           for values from ('2019-01-01') to ('2019-02-01');
         insert into realtime.messages (topic, extension, inserted_at) values ('archived', 'broadcast', '2019-01-05');",
    )
    .await;
    let mut pg = client(&db).await;
    let sweep = janitor::sweep(&mut pg, RETENTION).await.expect("janitor");
    assert_eq!(sweep.dropped, ["messages_2020_01_01"]);
    assert!(sweep.created.is_empty() && sweep.failed.is_empty(), "{sweep:?}");
    let names = partition_names(&db).await;
    assert!(!names.contains(&"messages_2020_01_01".to_string()));
    assert!(names.contains(&"messages_archive".to_string()), "a partition named otherwise is kept");
    assert!(names.contains(&today().partition_name()));
    assert_eq!(db.json_rows("select topic from realtime.messages").await, [json!("archived")]);

    // Five days on, 72 h back is two days after today: yesterday, today and tomorrow have expired;
    // the days around the new today are made.
    let later = today().add_days(5).start_unix_seconds() + 3600;
    let sweep = janitor::sweep_at(&mut pg, later, RETENTION).await.expect("janitor later");
    let expired: Vec<String> = (-1..=1).map(|n| today().add_days(n).partition_name()).collect();
    assert_eq!(sweep.dropped, expired);
    let expected: Vec<String> = (4..=8).map(|n| today().add_days(n).partition_name()).collect();
    assert_eq!(sweep.created, expected);
}

#[tokio::test]
async fn the_node_applies_the_schema_at_start_up() {
    let db = Db::new("").await;
    let _server = db.server(&["--messages-retention-hours", "48"]);
    let deadline = Instant::now() + T;
    loop {
        let ready = one_bool(
            &db,
            "select to_regclass('realtime.node_schema_migrations') is not null \
               and to_regclass('realtime.' || to_char(now() at time zone 'utc', '\"messages_\"YYYY_MM_DD')) is not null",
        )
        .await;
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "the node did not apply the schema");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(migrations::applied_versions(&db.pg).await.unwrap(), [1, 2, 3, 4]);
}

#[tokio::test]
async fn the_node_refuses_to_start_without_its_schema() {
    let db = Db::new("").await;
    // A role that may connect but not create anything in this database.
    let role = format!("weak_{}", &db.name[2..]);
    db.exec(&format!("create role {role} login; revoke create on database {} from public;", db.name)).await;
    db.exec("revoke create on schema public from public").await;
    let (base, _) = db.url.split_once("://postgres@").expect("postgres user in the URL");
    let url = format!("{base}://{role}@{}", db.url.split_once('@').unwrap().1);
    let log = std::env::temp_dir().join(format!("realtime-schema-{role}.log"));
    let (mut proc, _lines) =
        process::spawn(&db.secret, &["--database-url", &url], &[("RUST_BACKTRACE", "0")], log, 40);
    let status = proc.wait_exit(Duration::from_secs(20)).expect("the node exits");
    assert!(!status.success());
    let log = proc.log_tail(20);
    assert!(log.contains("cannot prepare the realtime schema") && log.contains("permission denied"), "{log}");
    db.exec(&format!("drop owned by {role}; drop role {role}")).await;
}
