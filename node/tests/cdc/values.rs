//! Value typing in `record`/`old_record` (PROTOCOL.md §5.3): `to_jsonb(value::type)` — numbers keep
//! their digits, booleans, JSON, arrays, ISO timestamps, `bytea` as hex without `\x`, NULL.

use serde_json::{json, Value};

use crate::common::*;

const SCHEMA: &str = r#"
create table vals (
  id int8 primary key,
  i2 int2, i4 int4, i8 int8, num numeric, num_big numeric, f4 float4, f8 float8, f8_small float8,
  b bool, j json, jb jsonb, ai int4[], at text[], ts timestamp, tstz timestamptz, d date, u uuid,
  by bytea, tx text, vc varchar(10), nul text
);
alter table vals replica identity full;
alter publication supabase_realtime add table vals;
"#;

const INSERT: &str = r#"
insert into vals values (
  1, -32768, 2147483647, 9223372036854775807, 123.4500, 1e30, 1.25, 3.14, -2.5e-7,
  true, '{"a": 1, "b": [1, 2, {"c": null}]}', '{"a": 1, "b": [1, 2, {"c": null}]}',
  '{1,2,NULL}', '{a,"b c",NULL,"d\"e"}', '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.5+02',
  '2024-02-29', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\x0102030405', E'h\u00e9llo "q" \\ \n\t', 'short', null
);
insert into vals (id, num, f4, f8, b) values (2, 'NaN', '-Infinity', 'Infinity', false);
"#;

const COLS: [(&str, &str); 22] = [
    ("id", "int8"),
    ("i2", "int2"),
    ("i4", "int4"),
    ("i8", "int8"),
    ("num", "numeric"),
    ("num_big", "numeric"),
    ("f4", "float4"),
    ("f8", "float8"),
    ("f8_small", "float8"),
    ("b", "bool"),
    ("j", "json"),
    ("jb", "jsonb"),
    ("ai", "_int4"),
    ("at", "_text"),
    ("ts", "timestamp"),
    ("tstz", "timestamptz"),
    ("d", "date"),
    ("u", "uuid"),
    ("by", "bytea"),
    ("tx", "text"),
    ("vc", "varchar"),
    ("nul", "text"),
];

/// Row 1 as `to_jsonb` renders it (numbers written with the exact digits expected on the wire).
const RECORD_1: &str = r#"{"id":1,"i2":-32768,"i4":2147483647,"i8":9223372036854775807,"num":123.4500,
"num_big":1000000000000000000000000000000,"f4":1.25,"f8":3.14,"f8_small":-0.00000025,"b":true,
"j":{"a":1,"b":[1,2,{"c":null}]},"jb":{"a":1,"b":[1,2,{"c":null}]},"ai":[1,2,null],"at":["a","b c",null,"d\"e"],
"ts":"2024-01-02T03:04:05.123456","tstz":"2024-01-02T01:04:05.5+00:00","d":"2024-02-29",
"u":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11","by":"0102030405","tx":"h\u00e9llo \"q\" \\ \n\t","vc":"short","nul":null}"#;

#[tokio::test]
async fn t40_value_typing() {
    let db = Db::new(SCHEMA).await;
    let server = db.server(&[]);
    let token = db.token("authenticated", &new_uuid());
    let mut clients = Vec::new();
    for vsn in VSNS {
        let mut c = server.client(&token, vsn).await;
        let (t, s) = topic("vals");
        c.subscribe(&t, &s, &json!([{"event": "*", "schema": "public", "table": "vals"}]), None).await;
        clients.push((c, t));
    }
    db.exec(INSERT).await;
    db.exec("delete from vals where id = 1").await;
    let record_1: Value = serde_json::from_str(RECORD_1).expect("expected record JSON");
    let mut record_2 = serde_json::Map::new();
    for (name, _) in COLS {
        record_2.insert(name.to_owned(), Value::Null);
    }
    record_2.insert("id".into(), json!(2));
    record_2.insert("num".into(), json!("NaN"));
    record_2.insert("f4".into(), json!("-Infinity"));
    record_2.insert("f8".into(), json!("Infinity"));
    record_2.insert("b".into(), json!(false));
    for (c, t) in &mut clients {
        let got = c.exactly_changes(t, 3, T).await;
        assert_eq!(
            got[0].data,
            data("vals", "INSERT", &COLS, Some(record_1.clone()), None),
            "{}: {}",
            c.vsn,
            got[0].raw
        );
        // Exact digits on the wire (a JSON number parsed to f64 would hide them).
        for needle in [
            r#""num":123.4500"#,
            r#""i8":9223372036854775807"#,
            r#""num_big":1000000000000000000000000000000"#,
            r#""f8_small":-0.00000025"#,
            r#""f4":1.25"#,
            r#""f8":3.14"#,
        ] {
            assert!(got[0].raw.contains(needle), "{}: {needle} not in {}", c.vsn, got[0].raw);
        }
        assert_eq!(
            got[1].data,
            data("vals", "INSERT", &COLS, Some(Value::Object(record_2.clone())), None),
            "{}: {}",
            c.vsn,
            got[1].raw
        );
        // DELETE with REPLICA IDENTITY FULL: the old row typed the same way.
        assert_eq!(
            got[2].data,
            data("vals", "DELETE", &COLS, None, Some(record_1.clone())),
            "{}: {}",
            c.vsn,
            got[2].raw
        );
        assert!(got[2].raw.contains(r#""num":123.4500"#), "{}: {}", c.vsn, got[2].raw);
    }
}
