//! Fuzz target: the postgres_changes parameters of a join (`postgres::parse_params`), the `filter`
//! grammar (`parse_filter`), the array-literal reader (`parse_array_literal`) and the texts built from
//! them (`describe`, `stored_text`, the `inspect` of a refused entry).
//!
//! Every string here comes from a client's join, and the refusals echo the client's entry back through
//! an Elixir `inspect` renderer, so both directions are fuzzed: arbitrary and grammar-shaped filter
//! text and entries of arbitrary JSON must not panic, and what is accepted is checked against the
//! rules. Round trips: conditions written out as filter text (a writer in this file, quoting the way
//! PostgREST does) parse back to the same conditions, and an `in` list's `stored_text` (the array
//! literal the reference stores) reads back to the same elements. Cases per property:
//! `REALTIME_FUZZ_CASES` (see `support`).

mod support;

use proptest::prelude::*;
use realtime_proto::postgres::{
    parse_array_literal, parse_filter, parse_params, Condition, EventFilter, FilterError, FilterOp,
    FilterValue, ParamsError,
};
use serde_json::{json, Map, Value};
use support::{any_text, edits, mutate, text};

/// Text made of the grammar's tokens, so most inputs reach the operator and value rules.
fn filter_soup() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "=",
        ".",
        ",",
        "(",
        ")",
        "\"",
        "\\",
        "not.",
        "eq.",
        "in.",
        "neq",
        "is",
        "isdistinct",
        "like",
        "{",
        "}",
        "NULL",
        "null",
        " ",
        "\t",
        "a",
        "id",
        "1",
        "é",
        "\u{0}",
        "=in.(",
        "=eq.\"",
        "=not.in.(",
        "[0:1]=",
    ]);
    prop::collection::vec(token, 0..30).prop_map(|tokens| tokens.concat())
}

fn any_filter() -> impl Strategy<Value = String> {
    prop_oneof![any_text(100), filter_soup()]
}

/// What every accepted filter must satisfy, whatever the input.
fn check_conditions(conditions: &[Condition]) {
    for c in conditions {
        assert!(!c.column.contains('='), "the column ends at the first `=`: {c:?}");
        assert_eq!(FilterOp::from_name(c.op.as_str()), Some(c.op));
        let described = c.describe();
        assert!(described.starts_with('{') && described.ends_with('}'), "{described}");
        if let FilterValue::List(items) = &c.value {
            assert_eq!(c.op, FilterOp::In);
            check_stored_list(items);
        } else {
            assert_ne!(c.op, FilterOp::In, "`in` always has a list");
        }
    }
}

/// An `in` list's stored text is an array literal that reads back to the same elements.
fn check_stored_list(items: &[String]) {
    let stored = FilterValue::List(items.to_vec()).stored_text();
    let read = parse_array_literal(&stored).unwrap_or_else(|| panic!("stored text {stored:?} reads back"));
    assert_eq!(read, items.iter().cloned().map(Some).collect::<Vec<_>>(), "{stored}");
}

/// A column a filter can carry unquoted: no `=`, `,`, `.`, `(`, `)`, `"`, and no leading whitespace
/// (a segment is trimmed).
fn column() -> impl Strategy<Value = String> {
    let plain = prop_oneof![
        4 => prop::sample::select(vec!["id", "name", "a b", "", "x_1", "é", "O'Brien", "tags[1]", "\\"]).prop_map(str::to_owned),
        1 => any_text(12),
    ];
    plain.prop_map(|c: String| {
        let c: String = c.chars().filter(|ch| !matches!(ch, '=' | ',' | '.' | '(' | ')' | '"')).collect();
        c.trim_start().to_owned()
    })
}

/// PostgREST quoting: `"…"` with `\` before `"` and `\`.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Whether a value can be written unquoted: it must not hold a quote (one after a `.` opens a quoted
/// run) or a separator, nor lose whitespace to the segment's trim.
fn plain_value(s: &str) -> bool {
    !s.contains(['"', ',', '(', ')']) && s.trim() == s
}

/// Whether an `in` element can be written unquoted in the array literal.
fn plain_element(s: &str) -> bool {
    !s.is_empty()
        && !s.eq_ignore_ascii_case("null")
        && !s.contains([',', '(', ')', '"', '\\', '{', '}'])
        && !s.contains(|c: char| c.is_whitespace() || c.is_control())
}

/// A condition and the filter text that writes it, optionally quoting what could go unquoted.
fn condition() -> impl Strategy<Value = (Condition, String)> {
    let op = prop::sample::select(FilterOp::ALL.to_vec());
    let value = prop_oneof![3 => text(), 1 => any_text(20)];
    let items = prop::collection::vec(prop_oneof![3 => text(), 1 => any_text(10)], 0..6);
    let padding = prop::sample::select(vec!["", " ", "\t", "  "]);
    (column(), op, any::<bool>(), value, items, any::<bool>(), padding).prop_map(
        |(column, op, negate, value, items, quote_all, padding)| {
            let not = if negate { "not." } else { "" };
            let (value, written) = if op == FilterOp::In {
                let written: Vec<String> = items
                    .iter()
                    .map(|i| if !quote_all && plain_element(i) { i.clone() } else { quoted(i) })
                    .collect();
                (FilterValue::List(items), format!("({})", written.join(",")))
            } else {
                let written = if !quote_all && plain_value(&value) { value.clone() } else { quoted(&value) };
                (FilterValue::Single(value), written)
            };
            let text = format!("{padding}{column}={not}{op}.{written}{padding}");
            (Condition { column, op, negate, value }, text)
        },
    )
}

fn string_or_wrong() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        6 => prop::sample::select(vec!["public", "*", "messages", "", "Public", "s.t"]).prop_map(|s| Some(json!(s))),
        2 => text().prop_map(|s| Some(Value::String(s))),
        2 => Just(None),
        1 => support::wrong().prop_map(Some),
    ]
}

/// A `postgres_changes` entry: the keys realtime-js sends, each possibly absent or wrong.
fn entry() -> impl Strategy<Value = Map<String, Value>> {
    let event = prop_oneof![
        prop::sample::select(vec!["*", "INSERT", "update", "Delete", "ınsert", "TRUNCATE", ""])
            .prop_map(|s| Some(json!(s))),
        Just(None),
        support::wrong().prop_map(Some),
    ];
    let filter = prop_oneof![
        3 => prop::collection::vec(condition(), 0..4).prop_map(|cs| {
            Some(Value::String(cs.into_iter().map(|(_, text)| text).collect::<Vec<_>>().join(",")))
        }),
        2 => any_filter().prop_map(|f| Some(Value::String(f))),
        3 => Just(None),
        1 => support::wrong().prop_map(Some),
    ];
    let select = prop_oneof![
        3 => Just(None),
        2 => prop::collection::vec(prop_oneof![3 => text().prop_map(Value::String), 1 => support::scalar()], 0..4)
            .prop_map(|items| Some(Value::Array(items))),
        1 => text().prop_map(|s| Some(Value::String(s))),
        1 => support::wrong().prop_map(Some),
    ];
    let token = prop::option::weighted(0.05, prop::sample::select(vec!["user_token", "auth_token"]));
    let extra = prop::collection::vec((text(), support::json()), 0..2);
    (event, string_or_wrong(), string_or_wrong(), filter, select, token, extra).prop_map(
        |(event, schema, table, filter, select, token, extra)| {
            let mut map: Map<String, Value> = extra.into_iter().collect();
            for (key, value) in [
                ("event", event),
                ("schema", schema),
                ("table", table),
                ("filter", filter),
                ("select", select),
            ] {
                match value {
                    Some(value) => map.insert(key.to_owned(), value),
                    None => map.remove(key),
                };
            }
            if let Some(token) = token {
                map.insert(token.to_owned(), json!("secret"));
            }
            map
        },
    )
}

/// `parse_params`, restated from its documentation.
fn check_params(entry: &Map<String, Value>) {
    let result = parse_params(entry);
    let _ = result.as_ref().map_err(ToString::to_string);
    if let Some(Value::String(_)) = entry.get("select") {
        assert_eq!(result, Err(ParamsError::SelectNotList));
        return;
    }
    let text = |key: &str| entry.get(key).and_then(Value::as_str);
    let has = |key: &str| entry.contains_key(key);
    let combination = match (text("schema"), text("table"), text("filter")) {
        (Some(s), Some(t), Some(f)) => Some((s, t, Some(f))),
        (Some(s), Some(t), None) if !has("filter") => Some((s, t, None)),
        (Some(s), None, None) if !has("table") && !has("filter") => Some((s, "*", None)),
        (None, Some(t), None) if !has("schema") && !has("filter") => Some(("public", t, None)),
        _ => None,
    };
    let Some((schema, table, filter)) = combination else {
        let Err(ParamsError::NoParams { shown }) = result else { panic!("{entry:?} gave {result:?}") };
        if has("user_token") || has("auth_token") {
            assert_eq!(shown, "<redacted>");
        } else {
            assert!(shown.starts_with("%{") && shown.ends_with('}'), "{shown}");
        }
        return;
    };
    let filters = match filter.map(parse_filter) {
        Some(Err(e)) => {
            assert_eq!(result, Err(ParamsError::Filter(e)));
            return;
        }
        Some(Ok(filters)) => filters,
        None => Vec::new(),
    };
    let select: Option<Vec<String>> = match entry.get("select") {
        Some(Value::Array(items)) => {
            let columns: Vec<String> = items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
            (!columns.is_empty()).then_some(columns)
        }
        _ => None,
    };
    if select.is_some() && (schema == "*" || table == "*") {
        assert_eq!(result, Err(ParamsError::SelectOnWildcard));
        return;
    }
    let params = result.unwrap_or_else(|e| panic!("{entry:?} refused: {e}"));
    assert_eq!(params.event, EventFilter::from_json(entry.get("event")));
    assert_eq!((params.schema.as_str(), params.table.as_str()), (schema, table));
    assert_eq!(params.filters, filters);
    assert_eq!(params.select, select);
    let described = params.describe();
    assert!(described.starts_with(&format!("[event: {}, schema: ", params.event.as_str())), "{described}");
}

proptest! {
    #![proptest_config(support::config())]

    #[test]
    fn fuzz_filter_arbitrary(filter in any_filter()) {
        if let Ok(conditions) = parse_filter(&filter) {
            check_conditions(&conditions);
        }
    }

    /// Round trip: conditions written as filter text parse back to themselves.
    #[test]
    fn fuzz_filter_round_trip(conditions in prop::collection::vec(condition(), 1..5)) {
        let text = conditions.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join(",");
        let expected: Vec<Condition> = conditions.into_iter().map(|(c, _)| c).collect();
        let parsed = parse_filter(&text);
        prop_assert_eq!(parsed.as_ref(), Ok(&expected), "{}", text);
        check_conditions(&expected);
    }

    /// Valid filters with a few characters edited: parsed or refused with a typed error.
    #[test]
    fn fuzz_filter_mutated(conditions in prop::collection::vec(condition(), 1..4), edits in edits()) {
        let text = conditions.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join(",");
        match parse_filter(&mutate(&text, &edits)) {
            Ok(conditions) => check_conditions(&conditions),
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.starts_with("Error parsing `filter` params: "), "{}", message);
                if let FilterError::Unreadable { parts } = e {
                    prop_assert!(!parts.is_empty() && parts.len() <= 2);
                }
            }
        }
    }

    #[test]
    fn fuzz_array_literal_arbitrary(literal in prop_oneof![any_text(60), filter_soup().prop_map(|s| format!("{{{s}}}"))]) {
        if let Some(items) = parse_array_literal(&literal) {
            // What was read writes out and reads back the same (NULLs aside, which `in` drops).
            let kept: Vec<String> = items.into_iter().flatten().collect();
            check_stored_list(&kept);
        }
    }

    /// Round trip: any elements, written as the array literal PostgreSQL would store, read back.
    #[test]
    fn fuzz_array_literal_round_trip(items in prop::collection::vec(prop_oneof![text(), any_text(12)], 0..8)) {
        check_stored_list(&items);
    }

    #[test]
    fn fuzz_params_structured(entry in entry()) {
        check_params(&entry);
    }

    /// Entries of arbitrary JSON, so refusals run the `inspect` renderer over every kind of term.
    #[test]
    fn fuzz_params_any_entry(value in support::json(), schema in string_or_wrong()) {
        let mut entry = match value {
            Value::Object(map) => map,
            other => Map::from_iter([("v".to_owned(), other)]),
        };
        if let Some(schema) = schema {
            entry.insert("schema".into(), schema);
        }
        check_params(&entry);
    }
}

/// Large entries: the `inspect` of a refusal shows at most 50 items per container and 4096 characters
/// per string, and long filters and lists are parsed in full.
#[test]
fn large_entries() {
    let long = "é".repeat(5_000);
    let items: Vec<Value> = (0..300).map(|i| json!([i, long, {"k": i as f64 / 3.0}])).collect();
    let entry =
        json!({"event": long, "items": items, "nested": [[[[[[[[[[1]]]]]]]]]], "bytes": "\u{1}\u{ff}"});
    let err = parse_params(entry.as_object().unwrap()).unwrap_err();
    assert!(matches!(err, ParamsError::NoParams { .. }));
    // 50 items of at most 4096 characters each (2 bytes here): a fraction of the 3 MB entry.
    let (shown, sent) = (err.to_string().len(), entry.to_string().len());
    assert!(shown < 500_000 && shown * 5 < sent, "the rendering is bounded by the limits: {shown} of {sent}");

    let filter = vec!["a=in.(1,2,3)"; 10_000].join(",");
    assert_eq!(parse_filter(&filter).unwrap().len(), 10_000);
    let list = format!("n=in.({})", vec!["\"x,y\""; 10_000].join(","));
    assert!(
        matches!(&parse_filter(&list).unwrap()[0].value, FilterValue::List(items) if items.len() == 10_000)
    );
    let deep = format!("a=eq.{}{}", "(".repeat(100_000), ")".repeat(100_000));
    assert_eq!(parse_filter(&deep).unwrap().len(), 1);
    let params =
        parse_params(json!({"schema": "s", "table": "t", "filter": filter}).as_object().unwrap()).unwrap();
    assert!(params.describe().len() < 100_000, "describe shows at most 50 conditions");
}
