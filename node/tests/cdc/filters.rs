//! Every filter operator (PROTOCOL.md §5.2) on int4, text, bool and timestamptz columns, negated and
//! combined, for INSERT, UPDATE and DELETE. The expected matches are computed by PostgreSQL itself
//! from the equivalent SQL predicate (`coalesce(pred, false)`: a NULL comparison does not match).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::common::*;

/// `(filter, equivalent SQL predicate)`.
const FILTERS: &[(&str, &str)] = &[
    // int4
    ("n=eq.5", "n = 5"),
    ("n=neq.5", "n <> 5"),
    ("n=lt.5", "n < 5"),
    ("n=lte.5", "n <= 5"),
    ("n=gt.5", "n > 5"),
    ("n=gte.5", "n >= 5"),
    ("n=in.(1,5,9)", "n = any('{1,5,9}'::int4[])"),
    ("n=is.null", "n is null"),
    ("n=not.is.null", "n is not null"),
    ("n=isdistinct.5", "n is distinct from 5"),
    ("n=not.isdistinct.5", "n is not distinct from 5"),
    ("n=not.eq.5", "not (n = 5)"),
    ("n=not.gt.5", "not (n > 5)"),
    ("n=not.in.(1,5)", "not (n = any('{1,5}'::int4[]))"),
    ("id=eq.3", "id = 3"),
    // text
    ("t=eq.apple", "t = 'apple'"),
    ("t=neq.apple", "t <> 'apple'"),
    ("t=lt.banana", "t < 'banana'"),
    ("t=lte.banana", "t <= 'banana'"),
    ("t=gt.banana", "t > 'banana'"),
    ("t=gte.banana", "t >= 'banana'"),
    ("t=in.(apple,\"x,y\")", "t = any('{apple,\"x,y\"}'::text[])"),
    ("t=eq.\"x,y\"", "t = 'x,y'"),
    ("t=like.a%", "t like 'a%'"),
    ("t=like.%an%", "t like '%an%'"),
    ("t=ilike.A%", "t ilike 'A%'"),
    ("t=match.^b.a", "t ~ '^b.a'"),
    ("t=imatch.^APP", "t ~* '^APP'"),
    ("t=not.like.a%", "not (t like 'a%')"),
    ("t=not.ilike.%E%", "not (t ilike '%E%')"),
    ("t=not.match.n", "not (t ~ 'n')"),
    ("t=is.null", "t is null"),
    ("t=isdistinct.apple", "t is distinct from 'apple'"),
    ("t=not.isdistinct.apple", "t is not distinct from 'apple'"),
    // bool
    ("b=eq.true", "b = true"),
    ("b=neq.true", "b <> true"),
    ("b=eq.false", "b = false"),
    ("b=is.true", "b is true"),
    ("b=is.false", "b is false"),
    ("b=is.unknown", "b is unknown"),
    ("b=not.is.true", "b is not true"),
    ("b=not.is.null", "b is not null"),
    ("b=isdistinct.false", "b is distinct from false"),
    ("b=not.isdistinct.true", "b is not distinct from true"),
    ("b=in.(true)", "b = any('{true}'::bool[])"),
    // timestamptz
    ("ts=eq.2024-01-02T03:04:05Z", "ts = '2024-01-02T03:04:05Z'"),
    ("ts=neq.2024-01-02T03:04:05+00:00", "ts <> '2024-01-02T03:04:05+00:00'"),
    ("ts=lt.2024-06-01T00:00:00+00:00", "ts < '2024-06-01T00:00:00+00:00'"),
    ("ts=lte.2024-06-01 00:00:00+00", "ts <= '2024-06-01 00:00:00+00'"),
    ("ts=gt.2024-01-02T05:04:05+02:00", "ts > '2024-01-02T05:04:05+02:00'"),
    ("ts=gte.2024-06-01T00:00:00Z", "ts >= '2024-06-01T00:00:00Z'"),
    (
        "ts=in.(2024-01-02T03:04:05Z,2025-01-01T00:00:00Z)",
        "ts = any('{2024-01-02T03:04:05Z,2025-01-01T00:00:00Z}'::timestamptz[])",
    ),
    ("ts=is.null", "ts is null"),
    ("ts=isdistinct.2024-01-02T03:04:05Z", "ts is distinct from '2024-01-02T03:04:05Z'"),
    ("ts=not.lte.2024-06-01T00:00:00Z", "not (ts <= '2024-06-01T00:00:00Z')"),
    // AND
    ("n=gt.1,t=like.%a%", "n > 1 and t like '%a%'"),
    ("b=is.true,ts=lt.2025-01-01T00:00:00Z,n=neq.7", "b is true and ts < '2025-01-01T00:00:00Z' and n <> 7"),
    ("t=not.is.null,n=not.in.(1,2,3)", "t is not null and not (n = any('{1,2,3}'::int4[]))"),
];

const ROWS: &str = "
insert into ft (id, n, t, b, ts) values
  (1, 5, 'apple', true, '2024-01-02T03:04:05Z'),
  (2, 1, 'banana', false, '2024-06-01T00:00:00Z'),
  (3, 9, 'x,y', null, '2025-01-01T00:00:00Z'),
  (4, null, null, null, null),
  (5, 7, 'Avocado', true, '2023-12-31T23:59:59.999Z'),
  (6, 3, 'bean', false, '2024-01-02T03:04:05.000001Z'),
  (7, 10, 'cherry', true, null),
  (8, 5, 'APPLE', null, '2024-06-01T00:00:00Z');
";

const UPDATE: &str = "
update ft set
  n = case id when 1 then 1 when 2 then 5 when 3 then null when 4 then 9 when 5 then 5 when 6 then 7 else n end,
  t = case id when 1 then 'banana' when 2 then 'apple' when 3 then 'APPLE pie' when 4 then 'a' when 8 then null else t end,
  b = not b,
  ts = case id when 4 then '2024-01-02T03:04:05Z' else ts + interval '200 days' end;
";

/// For each row id, the indices of the filters whose predicate holds for the current table contents.
async fn expected(db: &Db) -> BTreeMap<i64, BTreeSet<usize>> {
    let mut out: BTreeMap<i64, BTreeSet<usize>> = BTreeMap::new();
    for (i, (_, pred)) in FILTERS.iter().enumerate() {
        for id in
            db.json_rows(&format!("select id from ft where coalesce(({pred}), false) order by id")).await
        {
            out.entry(id.as_i64().unwrap()).or_default().insert(i);
        }
    }
    out
}

#[tokio::test]
async fn t30_every_operator_matches_postgres_semantics() {
    let db = Db::new(
        "create table ft (id int4 primary key, n int4, t text, b bool, ts timestamptz);
         alter table ft replica identity full;
         alter publication supabase_realtime add table ft;",
    )
    .await;
    let server = db.server(&[]);
    let token = db.token("authenticated", &new_uuid());
    let entries: Vec<Value> = FILTERS
        .iter()
        .map(|(f, _)| json!({"event": "*", "schema": "public", "table": "ft", "filter": f}))
        .collect();
    let entries = Value::Array(entries);
    let mut clients = Vec::new();
    for vsn in VSNS {
        let mut c = server.client(&token, vsn).await;
        let (t, s) = topic("filters");
        let (_r, ids) = c.subscribe(&t, &s, &entries, None).await;
        let distinct: BTreeSet<u64> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), FILTERS.len(), "{vsn}: one id per distinct entry");
        clients.push((c, t, ids));
    }
    let phases = [("INSERT", ROWS), ("UPDATE", UPDATE), ("DELETE", "delete from ft")];
    for (kind, sql) in phases {
        // DELETE is matched against the old row: compute before deleting.
        let before = if kind == "DELETE" { Some(expected(&db).await) } else { None };
        db.exec(sql).await;
        let want = match before {
            Some(w) => w,
            None => expected(&db).await,
        };
        let want: BTreeMap<i64, BTreeSet<usize>> = want.into_iter().filter(|(_, s)| !s.is_empty()).collect();
        for (c, t, ids) in &mut clients {
            let got = c.exactly_changes(t, want.len(), T).await;
            let mut seen: BTreeMap<i64, BTreeSet<usize>> = BTreeMap::new();
            for ch in &got {
                assert_eq!(ch.kind(), kind, "{}: {}", c.vsn, ch.raw);
                let id = ch.key("id").as_i64().unwrap_or_else(|| panic!("no id in {}", ch.raw));
                let matched: BTreeSet<usize> = ch
                    .ids
                    .iter()
                    .map(|i| {
                        ids.iter()
                            .position(|x| x == i)
                            .unwrap_or_else(|| panic!("unknown id {i} in {}", ch.raw))
                    })
                    .collect();
                assert!(seen.insert(id, matched).is_none(), "{}: row {id} delivered twice", c.vsn);
            }
            if seen != want {
                let mut report = String::new();
                for id in want.keys().chain(seen.keys()).collect::<BTreeSet<_>>() {
                    let w = want.get(id).cloned().unwrap_or_default();
                    let g = seen.get(id).cloned().unwrap_or_default();
                    for i in w.symmetric_difference(&g) {
                        report.push_str(&format!(
                            "\n  row {id}: filter {:?} ({}) expected match={} got match={}",
                            FILTERS[*i].0,
                            FILTERS[*i].1,
                            w.contains(i),
                            g.contains(i)
                        ));
                    }
                }
                let rows = db.json_rows("select to_jsonb(ft) from ft order by id").await;
                panic!(
                    "{}: {kind} filter matches differ from PostgreSQL:{report}\nrows now: {rows:?}",
                    c.vsn
                );
            }
        }
    }
}
