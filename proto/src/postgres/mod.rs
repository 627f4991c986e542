//! Postgres Changes as pure data and codecs: the `postgres_changes` subscription parameters a client
//! sends (PROTOCOL.md §5.1, §5.2, §5.7), and everything done to a row change between the WAL and a
//! socket that needs no connection. The node keeps the I/O (the replication session, the catalog
//! queries, RLS, delivery) and calls in here, so the decoder, the value conversion and the filters are
//! tested byte for byte and value for value without a database.
//!
//! ```text
//! WAL bytes ──pgoutput──▶ Message ──node (relations, transactions)──▶ change::Change
//!   ──matching::Filter──▶ matched ──Change::data_json (values)──▶ `data` JSON of a postgres_changes push
//! ```
//!
//! Each entry of `config.postgres_changes` in a `phx_join` becomes a [`SubscriptionParams`] through
//! [`parse_params`], which accepts exactly the key combinations the reference server accepts and
//! refuses the rest with its exact message ([`ParamsError`]). [`SubscriptionParams::describe`] renders
//! the parameters the way the reference embeds them in its "Unable to subscribe…" messages.
//!
//! ## Layout
//! - this file: the parameter map → [`SubscriptionParams`], [`EventFilter`].
//! - [`filter`]: the `filter` grammar → [`Condition`]s.
//! - `inspect`: Elixir's `inspect/2` layout, which those messages embed.
//! - [`pgoutput`]: the decoder of the pgoutput logical replication messages.
//! - [`table`]: a published table (columns, types, primary key, RLS) as changes carry it.
//! - [`change`]: row changes and the `data` payload built from them.
//! - [`values`]: column values (pgoutput text format) → typed JSON, as the reference emits them.
//! - [`matching`]: evaluation of subscription filters against a change, and their subscribe-time type
//!   checks.
//!
//! Pure: no I/O. The one clock read is a filter value of `now`, `today`, `tomorrow` or `yesterday` on a
//! date or time column ([`matching`]), read when it is evaluated, as PostgreSQL reads it. What needs the
//! database's catalog (the table is published, the columns exist and are readable, their types) is read
//! by the node and handed here as a [`table::TableMeta`].

pub mod change;
mod filter;
mod inspect;
pub mod matching;
pub mod pgoutput;
pub mod table;
pub mod values;

use serde_json::{Map, Value};

pub use filter::{parse_array_literal, parse_filter, Condition, FilterError, FilterOp, FilterValue};
use inspect::{inspect, inspect_pretty, Term};

/// Which change kinds a subscription wants (`event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EventFilter {
    /// `"*"`, absent, or anything unrecognised.
    #[default]
    All,
    Insert,
    Update,
    Delete,
}

impl EventFilter {
    /// From the `event` value: `INSERT`/`UPDATE`/`DELETE` in any case (Unicode upper-casing, as
    /// Elixir's `String.upcase/1`); anything else, including non-strings, is [`EventFilter::All`].
    pub fn from_json(value: Option<&Value>) -> EventFilter {
        match value.and_then(Value::as_str).map(str::to_uppercase).as_deref() {
            Some("INSERT") => EventFilter::Insert,
            Some("UPDATE") => EventFilter::Update,
            Some("DELETE") => EventFilter::Delete,
            _ => EventFilter::All,
        }
    }

    /// `*`, `INSERT`, `UPDATE` or `DELETE` (the reference's `action_filter`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventFilter::All => "*",
            EventFilter::Insert => "INSERT",
            EventFilter::Update => "UPDATE",
            EventFilter::Delete => "DELETE",
        }
    }

    /// Whether a change of this kind (`INSERT`, `UPDATE`, `DELETE`, any case) is wanted.
    pub fn matches(self, kind: &str) -> bool {
        self == EventFilter::All || self.as_str().eq_ignore_ascii_case(kind)
    }
}

/// One parsed `postgres_changes` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubscriptionParams {
    pub event: EventFilter,
    /// A schema name, or `*` for every schema of the publication.
    pub schema: String,
    /// A table name, or `*` for every table of the publication (in `schema`).
    pub table: String,
    /// AND of conditions; empty = every row.
    pub filters: Vec<Condition>,
    /// Columns to send (primary-key columns are always added); `None` = all columns.
    pub select: Option<Vec<String>>,
}

impl SubscriptionParams {
    /// The reference's rendering of subscription parameters, as embedded in its subscribe errors:
    /// `[event: INSERT, schema: public, table: *, filters: [], select: nil]`. Filters and `select` are
    /// laid out as `inspect(…, pretty: true)` does (lines of at most 80 columns).
    pub fn describe(&self) -> String {
        let filters = Term::List(self.filters.iter().map(Condition::to_term).collect());
        let select = match &self.select {
            Some(columns) => inspect_pretty(&Term::strings(columns)),
            None => "nil".to_owned(),
        };
        format!(
            "[event: {}, schema: {}, table: {}, filters: {}, select: {}]",
            self.event.as_str(),
            self.schema,
            self.table,
            inspect_pretty(&filters),
            select
        )
    }

    /// Whether the schema or the table is the `*` wildcard.
    pub fn is_wildcard(&self) -> bool {
        self.schema == "*" || self.table == "*"
    }
}

/// Why a `postgres_changes` entry was refused; `Display` is the exact text of the `system` error
/// message (`postgres_changes` extension, status `error`, no retry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// No accepted combination of `schema`/`table`/`filter`. `shown` is `inspect` of the entry, or
    /// `<redacted>` when it carries `user_token` or `auth_token`.
    #[error("No subscription params provided. Please provide at least a `schema` or `table` to subscribe to: {shown}")]
    NoParams { shown: String },
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// `select` given as a string.
    #[error(
        "Error parsing `select` params: expected a list of column name strings, e.g. select: [\"col1\", \"col2\"]"
    )]
    SelectNotList,
    /// `select` with a `*` schema or table.
    #[error(
        "Column selection is not supported for wildcard subscriptions. Provide an explicit schema and table name."
    )]
    SelectOnWildcard,
}

/// Parses one `postgres_changes` entry (PROTOCOL.md §5.1).
///
/// Accepted, with `schema`, `table` and `filter` strings: `schema`+`table`+`filter`; `schema`+`table`
/// (no `filter` key); `schema` alone (table `*`); `table` alone (schema `public`). Any other
/// combination, or a present but non-string value among them (`"filter": null` included), is
/// [`ParamsError::NoParams`]. Checks run in the reference's order: `select` shape, key combination,
/// filter grammar, then `select` against wildcards. Other keys are ignored.
pub fn parse_params(entry: &Map<String, Value>) -> Result<SubscriptionParams, ParamsError> {
    let event = EventFilter::from_json(entry.get("event"));
    let select = parse_select(entry.get("select"))?;
    let text = |key: &str| entry.get(key).and_then(Value::as_str);
    let has = |key: &str| entry.contains_key(key);
    let (schema, table, filters) = match (text("schema"), text("table"), text("filter")) {
        (Some(schema), Some(table), Some(filter)) => (schema, table, parse_filter(filter)?),
        (Some(schema), Some(table), None) if !has("filter") => (schema, table, Vec::new()),
        (Some(schema), None, None) if !has("table") && !has("filter") => (schema, "*", Vec::new()),
        (None, Some(table), None) if !has("schema") && !has("filter") => ("public", table, Vec::new()),
        _ => {
            let shown = if has("user_token") || has("auth_token") {
                "<redacted>".to_owned()
            } else {
                inspect(&Term::from_json(&Value::Object(entry.clone())))
            };
            return Err(ParamsError::NoParams { shown });
        }
    };
    let params =
        SubscriptionParams { event, schema: schema.to_owned(), table: table.to_owned(), filters, select };
    if params.select.is_some() && params.is_wildcard() {
        return Err(ParamsError::SelectOnWildcard);
    }
    Ok(params)
}

/// `select`: a list keeps its strings (others dropped; none left = all columns); a string is an error;
/// anything else means all columns.
fn parse_select(value: Option<&Value>) -> Result<Option<Vec<String>>, ParamsError> {
    match value {
        Some(Value::Array(items)) => {
            let columns: Vec<String> = items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
            Ok((!columns.is_empty()).then_some(columns))
        }
        Some(Value::String(_)) => Err(ParamsError::SelectNotList),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: Value) -> Result<SubscriptionParams, ParamsError> {
        parse_params(v.as_object().unwrap())
    }

    fn ok(v: Value) -> SubscriptionParams {
        parse(v).unwrap()
    }

    fn err(v: Value) -> String {
        parse(v).unwrap_err().to_string()
    }

    fn triple(p: &SubscriptionParams) -> (&str, &str, &str) {
        (p.event.as_str(), p.schema.as_str(), p.table.as_str())
    }

    #[test]
    fn key_combinations() {
        let p = ok(json!({"schema": "public", "table": "messages", "filter": "subject=eq.hey"}));
        assert_eq!(triple(&p), ("*", "public", "messages"));
        assert_eq!(p.filters, parse_filter("subject=eq.hey").unwrap());
        assert_eq!(p.select, None);

        let p = ok(json!({"schema": "public", "table": "messages"}));
        assert_eq!(triple(&p), ("*", "public", "messages"));
        assert!(p.filters.is_empty());

        assert_eq!(triple(&ok(json!({"schema": "public"}))), ("*", "public", "*"));
        assert_eq!(triple(&ok(json!({"table": "messages"}))), ("*", "public", "messages"));
        assert_eq!(triple(&ok(json!({"schema": "*", "table": "*"}))), ("*", "*", "*"));
        assert!(ok(json!({"schema": "public", "table": "t", "filter": "  "})).filters.is_empty());
        // Unknown keys are ignored.
        assert_eq!(triple(&ok(json!({"schema": "s", "extra": 1, "id": "x"}))), ("*", "s", "*"));
    }

    #[test]
    fn refused_combinations() {
        let prefix = "No subscription params provided. Please provide at least a `schema` or `table` to subscribe to: ";
        assert_eq!(err(json!({})), format!("{prefix}%{{}}"));
        assert_eq!(err(json!({"event": "*"})), format!("{prefix}%{{\"event\" => \"*\"}}"));
        assert_eq!(
            err(json!({"schema": "public", "table": "t", "filter": null})),
            format!("{prefix}%{{\"filter\" => nil, \"schema\" => \"public\", \"table\" => \"t\"}}")
        );
        assert_eq!(
            err(json!({"schema": "public", "table": "images", "filter": [123]})),
            // Elixir shows a list of printable code points as a charlist.
            format!("{prefix}%{{\"filter\" => ~c\"{{\", \"schema\" => \"public\", \"table\" => \"images\"}}")
        );
        for v in [
            json!({"schema": "public", "filter": "id=eq.1"}),
            json!({"table": "t", "filter": "id=eq.1"}),
            json!({"filter": "id=eq.1"}),
            json!({"schema": "public", "table": {"actually a": "map"}}),
            json!({"table": "images", "schema": {"actually a": "map"}}),
            json!({"schema": null}),
            json!({"schema": 1, "table": "t"}),
        ] {
            assert!(err(v.clone()).starts_with(prefix), "{v}");
        }
        assert_eq!(err(json!({"user_token": "secret", "event": "*"})), format!("{prefix}<redacted>"));
        assert_eq!(err(json!({"auth_token": "secret"})), format!("{prefix}<redacted>"));
        // Tokens are only redacted in the error; a valid entry with one is fine.
        assert_eq!(triple(&ok(json!({"schema": "s", "table": "t", "user_token": "x"}))), ("*", "s", "t"));
    }

    #[test]
    fn events() {
        for (event, expected) in [
            (json!("*"), "*"),
            (json!("INSERT"), "INSERT"),
            (json!("insert"), "INSERT"),
            (json!("Update"), "UPDATE"),
            (json!("delete"), "DELETE"),
            (json!("ınsert"), "INSERT"),
            (json!("TRUNCATE"), "*"),
            (json!(""), "*"),
            (json!(null), "*"),
            (json!(1), "*"),
        ] {
            let p = ok(json!({"schema": "public", "event": event}));
            assert_eq!(p.event.as_str(), expected, "{event}");
        }
        assert_eq!(ok(json!({"schema": "public"})).event, EventFilter::All);
        assert!(EventFilter::All.matches("DELETE"));
        assert!(EventFilter::Insert.matches("INSERT"));
        assert!(EventFilter::Insert.matches("insert"));
        assert!(!EventFilter::Insert.matches("UPDATE"));
        assert!(!EventFilter::Delete.matches("*"));
    }

    #[test]
    fn select() {
        let p = ok(json!({"schema": "public", "table": "messages", "select": ["id", "details"]}));
        assert_eq!(p.select, Some(vec!["id".into(), "details".into()]));
        let p = ok(json!({"schema": "public", "table": "messages", "select": ["id", 123, "details", null]}));
        assert_eq!(p.select, Some(vec!["id".into(), "details".into()]));
        assert_eq!(ok(json!({"schema": "public", "table": "messages", "select": []})).select, None);
        assert_eq!(ok(json!({"schema": "public", "table": "messages", "select": [1, null]})).select, None);
        assert_eq!(ok(json!({"schema": "public", "table": "messages", "select": null})).select, None);
        assert_eq!(ok(json!({"schema": "public", "table": "messages", "select": {"a": 1}})).select, None);
        let p = ok(json!({"schema": "public", "table": "messages", "filter": "id=eq.5", "select": ["id"]}));
        assert_eq!((p.filters.len(), p.select), (1, Some(vec!["id".into()])));

        let not_list = "Error parsing `select` params: expected a list of column name strings, e.g. select: [\"col1\", \"col2\"]";
        assert_eq!(err(json!({"schema": "public", "table": "messages", "select": "id,details"})), not_list);
        assert_eq!(err(json!({"schema": "public", "table": "messages", "select": ""})), not_list);
        // The select shape is checked before the key combination.
        assert_eq!(err(json!({"select": "id"})), not_list);

        let wildcard = "Column selection is not supported for wildcard subscriptions. Provide an explicit schema and table name.";
        assert_eq!(err(json!({"schema": "public", "select": ["id"]})), wildcard);
        assert_eq!(err(json!({"schema": "public", "table": "*", "select": ["id"]})), wildcard);
        assert_eq!(err(json!({"schema": "*", "table": "t", "select": ["id"]})), wildcard);
        // The filter is parsed before the wildcard check.
        assert!(err(json!({"schema": "*", "table": "t", "filter": "x", "select": ["id"]}))
            .starts_with("Error parsing `filter`"));
        // An empty select is no selection, so wildcards are fine.
        assert_eq!(ok(json!({"schema": "public", "select": []})).select, None);
    }

    #[test]
    fn filter_errors_pass_through() {
        assert_eq!(
            err(json!({"schema": "public", "table": "messages", "filter": "subject=foo.hey"})),
            r#"Error parsing `filter` params: ["foo", "hey"]"#
        );
        assert_eq!(
            err(json!({"schema": "public", "table": "messages", "filter": "undefined"})),
            r#"Error parsing `filter` params: ["undefined"]"#
        );
        assert!(matches!(
            parse(json!({"schema": "s", "table": "t", "filter": "id=gt.0,"})),
            Err(ParamsError::Filter(FilterError::EmptySegment))
        ));
    }

    #[test]
    fn describe() {
        assert_eq!(
            ok(json!({"event": "INSERT", "schema": "public"})).describe(),
            "[event: INSERT, schema: public, table: *, filters: [], select: nil]"
        );
        assert_eq!(
            ok(json!({"schema": "public", "table": "test", "filter": "notacolumn=eq.123"})).describe(),
            r#"[event: *, schema: public, table: test, filters: [{"notacolumn", "eq", "123", false}], select: nil]"#
        );
        assert_eq!(
            ok(json!({"schema": "public", "table": "test", "filter": "id=not.in.(1,2)", "select": ["id", "b"]}))
                .describe(),
            r#"[event: *, schema: public, table: test, filters: [{"id", "in", "{1,2}", true}], select: ["id", "b"]]"#
        );
        // Long filter lists are laid out one tuple per line, as `inspect(…, pretty: true)` does.
        let p = ok(
            json!({"schema": "public", "table": "t", "filter": "alpha=eq.first_value,beta=neq.second_value,gamma=gt.3"}),
        );
        assert_eq!(
            p.describe(),
            "[event: *, schema: public, table: t, filters: [\n  {\"alpha\", \"eq\", \"first_value\", false},\n  \
             {\"beta\", \"neq\", \"second_value\", false},\n  {\"gamma\", \"gt\", \"3\", false}\n], select: nil]"
        );
    }
}
