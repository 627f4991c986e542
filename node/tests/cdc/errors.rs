//! Subscription errors (`system` messages of PROTOCOL.md §5.7) and error rows: no primary key (400),
//! oversized records (413) (§5.3, §5.6).

use realtime_proto::Vsn;
use serde_json::{json, Value};

use crate::common::*;

const SCHEMA: &str = "
create table test (id int4 primary key, details text);
create table notpub (id int4 primary key);
alter publication supabase_realtime add table test;
";

/// Joins with `entries`; the next push must be this postgres_changes `system` error; then nothing
/// arrives for this channel, even when the published table changes.
async fn expect_subscribe_error(server: &Server, db: &Db, vsn: Vsn, entries: Value, message: &str) {
    let token = db.token("authenticated", &new_uuid());
    let mut c = server.client(&token, vsn).await;
    let (t, s) = topic("err");
    let (r, _ids) = c.join_pg(&t, &entries, None).await;
    let f = c.next_frame(T).await;
    assert_eq!(f.value(), Some(&pg_system(vsn, &t, &s, &r, false, message)), "{vsn}: entries {entries}");
    let id: i64 = db.json_rows("select coalesce(max(id), 0) + 1 from test").await[0].as_i64().unwrap();
    db.exec(&format!("insert into test values ({id}, 'x')")).await;
    c.expect_silence(QUIET).await;
    // The socket and channel keep working.
    c.heartbeat().await;
}

#[tokio::test]
async fn t20_table_not_in_publication() {
    let db = Db::new(SCHEMA).await;
    let server = db.server(&[]);
    for vsn in VSNS {
        expect_subscribe_error(
            &server,
            &db,
            vsn,
            json!([{"event": "*", "schema": "public", "table": "notpub"}]),
            "Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the given \
             connect parameters: [event: *, schema: public, table: notpub, filters: [], select: nil]",
        )
        .await;
        // A schema with no published table.
        expect_subscribe_error(
            &server,
            &db,
            vsn,
            json!([{"event": "INSERT", "schema": "nosuchschema"}]),
            "Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the given \
             connect parameters: [event: INSERT, schema: nosuchschema, table: *, filters: [], select: nil]",
        )
        .await;
    }
}

#[tokio::test]
async fn t21_bad_filters() {
    let db = Db::new(SCHEMA).await;
    let server = db.server(&[]);
    let entry = |filter: &str| json!([{"event": "*", "schema": "public", "table": "test", "filter": filter}]);
    for vsn in VSNS {
        expect_subscribe_error(
            &server,
            &db,
            vsn,
            entry("id=foo.hey"),
            "Error parsing `filter` params: [\"foo\", \"hey\"]",
        )
        .await;
        expect_subscribe_error(
            &server,
            &db,
            vsn,
            entry("id=gt.0,"),
            "Error parsing `filter` params: filter must not contain empty segments (check for extra commas)",
        )
        .await;
        expect_subscribe_error(
            &server,
            &db,
            vsn,
            entry("id=in.1"),
            "Error parsing `filter` params: `in` filter value must be wrapped by parentheses",
        )
        .await;
    }
}

#[tokio::test]
async fn t22_unknown_filter_column() {
    let db = Db::new(SCHEMA).await;
    let server = db.server(&[]);
    for vsn in VSNS {
        expect_subscribe_error(
            &server,
            &db,
            vsn,
            json!([{"event": "*", "schema": "public", "table": "test", "filter": "notacolumn=eq.123"}]),
            "Unable to subscribe to changes with given parameters. An exception happened so please check your \
             connect parameters: [event: *, schema: public, table: test, filters: [{\"notacolumn\", \"eq\", \"123\", \
             false}], select: nil]. Exception: ERROR P0001 (raise_exception) invalid column for filter notacolumn",
        )
        .await;
    }
}

/// A table without a primary key: INSERT and UPDATE are error rows (400), nothing of the row leaks.
#[tokio::test]
async fn t23_no_primary_key_is_error_400() {
    let db = Db::new(
        "create table nopk (a int4, b text);
         alter table nopk replica identity full;
         alter publication supabase_realtime add table nopk;",
    )
    .await;
    let server = db.server(&[]);
    let token = db.token("authenticated", &new_uuid());
    let mut clients = Vec::new();
    for vsn in VSNS {
        let mut c = server.client(&token, vsn).await;
        let (t, s) = topic("nopk");
        let (_r, ids) =
            c.subscribe(&t, &s, &json!([{"event": "*", "schema": "public", "table": "nopk"}]), None).await;
        clients.push((c, t, ids));
    }
    db.exec("insert into nopk values (1, 'secret')").await;
    db.exec("update nopk set b = 'other' where a = 1").await;
    let err = json!(["Error 400: Bad Request, no primary key"]);
    for (c, t, ids) in &mut clients {
        let got = c.changes(t, 2, T).await;
        assert_eq!(got[0].ids, *ids);
        assert_eq!(
            got[0].data,
            json!({"schema": "public", "table": "nopk", "type": "INSERT", "commit_timestamp": null,
                   "columns": [], "errors": err, "record": {}}),
            "{}: {}",
            c.vsn,
            got[0].raw
        );
        assert_eq!(
            got[1].data,
            json!({"schema": "public", "table": "nopk", "type": "UPDATE", "commit_timestamp": null,
                   "columns": [], "errors": err, "record": {}, "old_record": {}}),
            "{}: {}",
            c.vsn,
            got[1].raw
        );
        c.expect_silence(QUIET).await;
    }
}

/// Over `--max-record-bytes`: `errors: ["Error 413: Payload Too Large"]` and only the fields whose
/// JSON is at most 64 bytes.
#[tokio::test]
async fn t24_oversized_record_is_413() {
    let db = Db::new(
        "create table big (id int8 primary key, small text, mid64 text, mid65 text, big text, n int4);
         alter publication supabase_realtime add table big;",
    )
    .await;
    let server = db.server(&["--max-record-bytes", "200"]);
    let token = db.token("authenticated", &new_uuid());
    let mut clients = Vec::new();
    for vsn in VSNS {
        let mut c = server.client(&token, vsn).await;
        let (t, s) = topic("big");
        c.subscribe(&t, &s, &json!([{"event": "*", "schema": "public", "table": "big"}]), None).await;
        clients.push((c, t));
    }
    // JSON of mid64 is 62 characters + 2 quotes = 64 bytes (kept); mid65 is 65 bytes (dropped).
    db.exec("insert into big values (1, 'tiny', repeat('y', 62), repeat('z', 63), repeat('x', 500), 7)")
        .await;
    db.exec("update big set big = repeat('w', 600), n = 8 where id = 1").await;
    let cols = [
        ("id", "int8"),
        ("small", "text"),
        ("mid64", "text"),
        ("mid65", "text"),
        ("big", "text"),
        ("n", "int4"),
    ];
    let mid64 = "y".repeat(62);
    for (c, t) in &mut clients {
        let got = c.exactly_changes(t, 2, T).await;
        let mut want = data(
            "big",
            "INSERT",
            &cols,
            Some(json!({"id": 1, "small": "tiny", "mid64": mid64, "n": 7})),
            None,
        );
        want["errors"] = json!(["Error 413: Payload Too Large"]);
        assert_eq!(got[0].data, want, "{}: {}", c.vsn, got[0].raw);
        let mut want = data(
            "big",
            "UPDATE",
            &cols,
            Some(json!({"id": 1, "small": "tiny", "mid64": mid64, "n": 8})),
            Some(json!({"id": 1})),
        );
        want["errors"] = json!(["Error 413: Payload Too Large"]);
        assert_eq!(got[1].data, want, "{}: {}", c.vsn, got[1].raw);
    }
}
