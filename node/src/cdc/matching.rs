//! Evaluation of postgres_changes filters against a row change (PROTOCOL.md §5.2), with PostgreSQL's
//! typing and three-valued logic, and the subscribe-time checks of the reference's trigger
//! `realtime.subscription_check_filters`.
//!
//! The reference evaluates `'<column text>'::type <op> ('<filter value>'::type)` in SQL for every
//! condition. Here both sides go through the same cast in Rust (submodule `cast`), then the operator:
//!
//! | op | meaning | NULL column |
//! |---|---|---|
//! | `eq neq lt lte gt gte` | `= != < <= > >=` on typed values | NULL |
//! | `in` | `= ANY(list)`; an empty list is false | NULL (false if the list is empty) |
//! | `like ilike` | LIKE / ILIKE (text types; `like` on `bytea` too) | NULL |
//! | `match imatch` | `~` / `~*` (text types) | NULL |
//! | `is` | `IS NULL` (any type), `IS TRUE/FALSE/UNKNOWN` (`bool` only) | never NULL |
//! | `isdistinct` | `IS DISTINCT FROM` | never NULL |
//!
//! `not.` negates: `NOT (…)` (NULL stays NULL), `IS NOT …`, `IS NOT DISTINCT FROM`. A value that does not
//! cast, or an operator the type lacks, is an error in PostgreSQL; here it is `None` (no match).
//!
//! Type limits are listed in the submodules (`cast`, `number`, `datetime`, `pattern`); the main ones:
//! text compares by bytes (collation `C`), dates and times must be ISO 8601 (UTC when no offset is
//! given), regular expressions have no back-references or lookaround, unknown types (enums, domains,
//! `interval`, …) compare as text.
//!
//! Cost per change: a [`Filter`] is built once per subscription group, and each of its patterns is
//! compiled the first time a column type needs it and then kept, so a change costs a cast and one scan
//! of the value per condition — `LIKE`/`ILIKE` in linear time (submodule `like`), regular expressions
//! within the `regex` crate's bounds (submodule `pattern`). Values are cast per call.

mod cast;
mod datetime;
mod like;
mod number;
mod pattern;

use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::{Arc, OnceLock};

use realtime_proto::postgres::{parse_array_literal, Condition, FilterOp, FilterValue};

use self::cast::{compare, parse_bool, Datum, Family, TextKind};
pub use self::cast::{regtype_name, PgError};
use self::like::{BytesLike, TextLike};

/// The most values an `in` condition may list (the reference's trigger limit).
pub const MAX_IN_VALUES: usize = 100;

/// A subscription's conditions (an AND), ready to be evaluated against many changes.
pub struct Filter {
    conditions: Vec<Prepared>,
}

impl Filter {
    pub fn new(conditions: &[Condition]) -> Filter {
        Filter { conditions: conditions.iter().cloned().map(Prepared::new).collect() }
    }

    /// Whether a row passes every condition (§5.2): each condition's column must be present
    /// (`lookup` → `Some((typname, text value or None for SQL NULL))`) and the comparison must be true;
    /// a NULL comparison does not match. No conditions → true.
    pub fn matches<'a>(&self, lookup: impl Fn(&str) -> Option<(&'a str, Option<&'a str>)>) -> bool {
        self.conditions.iter().all(|prepared| match lookup(&prepared.cond.column) {
            Some((typname, value)) => evaluate(prepared, typname, value) == Some(true),
            None => false,
        })
    }
}

/// What a pattern is compiled for: the column type decides (a wildcard subscription meets several).
#[derive(Clone, Copy)]
enum Variant {
    /// LIKE on text; `char(n)` drops the pattern's trailing spaces; `citext` is case-insensitive.
    Text {
        bpchar: bool,
        case_insensitive: bool,
    },
    /// LIKE on `bytea`: the pattern cast to bytes.
    Bytes,
    Regex {
        case_insensitive: bool,
    },
}

impl Variant {
    const COUNT: usize = 7;

    fn slot(self) -> usize {
        match self {
            Variant::Text { bpchar, case_insensitive } => {
                2 * usize::from(bpchar) + usize::from(case_insensitive)
            }
            Variant::Bytes => 4,
            Variant::Regex { case_insensitive } => 5 + usize::from(case_insensitive),
        }
    }
}

enum Compiled {
    Text(TextLike),
    Bytes(BytesLike),
    Regex(Arc<pattern::Expression>),
}

/// One condition and its compiled patterns.
struct Prepared {
    cond: Condition,
    /// Per [`Variant::slot`]: the compiled pattern, once needed; `None` if it does not compile (the
    /// condition is then NULL, as PostgreSQL would raise).
    compiled: [OnceLock<Option<Compiled>>; Variant::COUNT],
}

impl Prepared {
    fn new(cond: Condition) -> Prepared {
        Prepared { cond, compiled: std::array::from_fn(|_| OnceLock::new()) }
    }

    fn compiled(&self, variant: Variant) -> Option<&Compiled> {
        self.compiled[variant.slot()].get_or_init(|| self.compile(variant)).as_ref()
    }

    fn compile(&self, variant: Variant) -> Option<Compiled> {
        let pattern = filter_text(&self.cond.value);
        match variant {
            Variant::Text { bpchar, case_insensitive } => {
                // The pattern cast to text loses the trailing spaces of a char(n) comparison.
                let pattern = if bpchar { pattern.trim_end_matches(' ') } else { &pattern };
                TextLike::new(pattern, case_insensitive).map(Compiled::Text)
            }
            Variant::Bytes => match cast::cast(&Family::Bytea, &pattern).ok()? {
                Datum::Bytes(pattern) => BytesLike::new(&pattern).map(Compiled::Bytes),
                _ => None,
            },
            Variant::Regex { case_insensitive } => {
                pattern::regex(&pattern, case_insensitive).ok().map(Compiled::Regex)
            }
        }
    }

    fn text_like(&self, variant: Variant) -> Option<&TextLike> {
        match self.compiled(variant)? {
            Compiled::Text(like) => Some(like),
            _ => None,
        }
    }

    fn bytes_like(&self) -> Option<&BytesLike> {
        match self.compiled(Variant::Bytes)? {
            Compiled::Bytes(like) => Some(like),
            _ => None,
        }
    }

    fn regex(&self, case_insensitive: bool) -> Option<&pattern::Expression> {
        match self.compiled(Variant::Regex { case_insensitive })? {
            Compiled::Regex(re) => Some(re),
            _ => None,
        }
    }
}

/// One condition against one column: `typname` is the column's `pg_type.typname`, `value` its text
/// output (`None` = SQL NULL). `None` = the SQL result is NULL (or PostgreSQL would raise).
fn evaluate(prepared: &Prepared, typname: &str, value: Option<&str>) -> Option<bool> {
    let cond = &prepared.cond;
    let family = Family::of(typname);
    let result = match cond.op {
        FilterOp::Is => return evaluate_is(&family, &filter_text(&cond.value), value, cond.negate),
        FilterOp::IsDistinct => {
            let filter = cast::cast(&family, &filter_text(&cond.value)).ok()?;
            let distinct = match value {
                None => true,
                Some(value) => {
                    compare(&family, &cast::cast(&family, value).ok()?, &filter)? != Ordering::Equal
                }
            };
            return Some(distinct != cond.negate);
        }
        FilterOp::In => {
            let items = in_items(&cond.value)?;
            if items.is_empty() {
                Some(false)
            } else {
                let filters = items
                    .iter()
                    .map(|item| item.as_deref().map(|s| cast::cast(&family, s)).transpose())
                    .collect::<Result<Vec<_>, _>>()
                    .ok()?;
                let value = cast::cast(&family, value?).ok()?;
                let mut saw_null = false;
                let mut found = false;
                for filter in &filters {
                    match filter {
                        Some(filter) if compare(&family, &value, filter)? == Ordering::Equal => found = true,
                        Some(_) => {}
                        None => saw_null = true,
                    }
                }
                if found {
                    Some(true)
                } else if saw_null {
                    None
                } else {
                    Some(false)
                }
            }
        }
        FilterOp::Like | FilterOp::Ilike => {
            evaluate_like(prepared, &family, value?, cond.op == FilterOp::Ilike)
        }
        FilterOp::Match | FilterOp::Imatch => {
            let case_insensitive = cond.op == FilterOp::Imatch || family == Family::Text(TextKind::Citext);
            match family {
                Family::Text(_) | Family::Other => prepared.regex(case_insensitive)?.is_match(value?),
                _ => None,
            }
        }
        FilterOp::Eq | FilterOp::Neq | FilterOp::Lt | FilterOp::Lte | FilterOp::Gt | FilterOp::Gte => {
            let filter = cast::cast(&family, &filter_text(&cond.value)).ok()?;
            let value = cast::cast(&family, value?).ok()?;
            let ord = compare(&family, &value, &filter)?;
            Some(match cond.op {
                FilterOp::Eq => ord == Ordering::Equal,
                FilterOp::Neq => ord != Ordering::Equal,
                FilterOp::Lt => ord == Ordering::Less,
                FilterOp::Lte => ord != Ordering::Greater,
                FilterOp::Gt => ord == Ordering::Greater,
                _ => ord != Ordering::Less,
            })
        }
    };
    result.map(|r| r != cond.negate)
}

/// The filter value as the reference stores it (`in` lists as their array literal).
fn filter_text(value: &FilterValue) -> Cow<'_, str> {
    match value {
        FilterValue::Single(s) => Cow::Borrowed(s),
        FilterValue::List(_) => Cow::Owned(value.stored_text()),
    }
}

/// The elements of an `in` value (`None` elements are NULLs); a single value is read as an array literal.
fn in_items(value: &FilterValue) -> Option<Vec<Option<String>>> {
    match value {
        FilterValue::List(items) => Some(items.iter().cloned().map(Some).collect()),
        FilterValue::Single(s) => parse_array_literal(s),
    }
}

fn evaluate_is(family: &Family, keyword: &str, value: Option<&str>, negate: bool) -> Option<bool> {
    let result = match keyword {
        "null" => value.is_none(),
        "true" | "false" | "unknown" => {
            if *family != Family::Bool {
                return None;
            }
            let b = match value {
                Some(v) => Some(parse_bool(v)?),
                None => None,
            };
            match keyword {
                "true" => b == Some(true),
                "false" => b == Some(false),
                _ => b.is_none(),
            }
        }
        _ => return None,
    };
    Some(result != negate)
}

fn evaluate_like(prepared: &Prepared, family: &Family, value: &str, case_insensitive: bool) -> Option<bool> {
    match family {
        Family::Text(kind) => {
            let variant = Variant::Text {
                bpchar: *kind == TextKind::Bpchar,
                case_insensitive: case_insensitive || *kind == TextKind::Citext,
            };
            // char(n) keeps its padding on the left (the pattern loses its own: see `Prepared::compile`).
            let value = match cast::cast(family, value).ok()? {
                Datum::Text(t) => t,
                _ => return None,
            };
            Some(prepared.text_like(variant)?.is_match(&value))
        }
        Family::Other => {
            Some(prepared.text_like(Variant::Text { bpchar: false, case_insensitive })?.is_match(value))
        }
        Family::Bytea if !case_insensitive => match cast::cast(family, value).ok()? {
            Datum::Bytes(value) => Some(prepared.bytes_like()?.is_match(&value)),
            _ => None,
        },
        _ => None,
    }
}

/// `raise exception '<message>'` as the reference's client shows it:
/// `ERROR P0001 (raise_exception) <message>`. For the node's own checks (`invalid column for filter
/// <col>`, `invalid column for select <col>`).
pub fn raise_exception(message: &str) -> String {
    PgError::raise(message).to_string()
}

/// The reference trigger's checks of one condition against its column's type, at subscribe time. `Err`
/// is the exception text the reference appends after `Exception: ` in "Unable to subscribe to changes
/// with given parameters. An exception happened so please check your connect parameters: [...].
/// Exception: ..." — e.g. `ERROR 22P02 (invalid_text_representation) invalid input syntax for type
/// integer: "hey"`.
///
/// Checks: `in` values cast to the type and number at most [`MAX_IN_VALUES`]; `is` takes `null`,
/// `true`, `false` or `unknown`, the last three on `bool` only; `like`/`ilike` need a type with a `~~`
/// operator (`text`, `bpchar`, `name`, `bytea`, `citext` — not `varchar`, exactly as the reference's
/// catalog lookup); `match`/`imatch` need `~`/`~*` (`text`, `citext`) and a valid expression; every other
/// operator needs the value to cast (except on `bytea`, which the reference does not cast). Values of
/// types this module does not know are not checked. The column's existence and privileges are the
/// caller's to check.
pub fn check_condition_types(cond: &Condition, typname: &str) -> Result<(), String> {
    check(cond, typname).map_err(|e| e.to_string())
}

fn check(cond: &Condition, typname: &str) -> Result<(), PgError> {
    let family = Family::of(typname);
    let value = filter_text(&cond.value);
    let op = cond.op.as_str();
    let type_name = || regtype_name(typname);
    match cond.op {
        FilterOp::In => {
            if matches!(family, Family::Array(_)) {
                return Ok(());
            }
            let items = in_items(&cond.value)
                .ok_or_else(|| PgError::invalid_text(format!("malformed array literal: \"{value}\"")))?;
            for item in items.iter().flatten() {
                cast::cast(&family, item)?;
            }
            if items.len() > MAX_IN_VALUES {
                return Err(PgError::raise("too many values for `in` filter. Maximum 100"));
            }
        }
        FilterOp::Is => {
            if !matches!(value.as_ref(), "null" | "true" | "false" | "unknown") {
                return Err(PgError::raise(
                    "invalid value for is filter: must be null, true, false, or unknown",
                ));
            }
            if value != "null" && family != Family::Bool {
                return Err(PgError::raise(format!(
                    "is {value} filter requires a boolean column, got {}",
                    type_name()
                )));
            }
        }
        FilterOp::Like | FilterOp::Ilike => {
            if !matches!(typname, "text" | "bpchar" | "name" | "bytea" | "citext") {
                return Err(PgError::raise(format!(
                    "operator {op} requires a text-compatible column type, got {}",
                    type_name()
                )));
            }
        }
        FilterOp::Match | FilterOp::Imatch => {
            if !matches!(typname, "text" | "citext") {
                return Err(PgError::raise(format!(
                    "operator {op} requires a text-compatible column type, got {}",
                    type_name()
                )));
            }
            if let Err(reason) = pattern::regex(&value, false) {
                return Err(PgError::raise(format!("invalid regular expression for {op} filter: {reason}")));
            }
        }
        FilterOp::Eq
        | FilterOp::Neq
        | FilterOp::Lt
        | FilterOp::Lte
        | FilterOp::Gt
        | FilterOp::Gte
        | FilterOp::IsDistinct => {
            // The reference's `realtime.cast` returns bytea text as is, without casting it.
            if family != Family::Bytea {
                cast::cast(&family, &value)?;
            }
        }
    }
    Ok(())
}

/// Whether the filter benchmarks run at the scale of docs/benchmarks.md (`REALTIME_FILTER_BENCH=full`)
/// rather than at the quick scale of the normal test run.
#[cfg(test)]
fn full_benchmark() -> bool {
    std::env::var("REALTIME_FILTER_BENCH").is_ok_and(|v| v == "full")
}

#[cfg(test)]
mod tests {
    use realtime_proto::postgres::parse_filter;

    use super::*;

    fn cond(filter: &str) -> Condition {
        parse_filter(filter).unwrap().remove(0)
    }

    /// `evaluate` of `filter` (column `c`) on a value of type `typname`.
    fn ev(filter: &str, typname: &str, value: Option<&str>) -> Option<bool> {
        evaluate(&Prepared::new(cond(&format!("c={filter}"))), typname, value)
    }

    fn check_err(filter: &str, typname: &str) -> String {
        check_condition_types(&cond(&format!("c={filter}")), typname).unwrap_err()
    }

    fn check_ok(filter: &str, typname: &str) {
        check_condition_types(&cond(&format!("c={filter}")), typname).unwrap();
    }

    const T: Option<bool> = Some(true);
    const F: Option<bool> = Some(false);
    const NULL: Option<bool> = None;

    #[test]
    fn comparisons_on_integers() {
        for (filter, value, expected) in [
            ("eq.5", "5", T),
            ("eq.5", "6", F),
            ("eq. 5 ", "5", T),
            ("neq.5", "6", T),
            ("neq.5", "5", F),
            ("lt.10", "9", T),
            ("lt.10", "10", F),
            ("lte.10", "10", T),
            ("gt.10", "9", F),
            ("gt.-1", "0", T),
            ("gte.10", "10", T),
            ("gte.10", "11", T),
            ("eq.hey", "5", NULL),
            ("eq.5.0", "5", NULL),
            ("not.eq.5", "5", F),
            ("not.eq.5", "6", T),
        ] {
            assert_eq!(ev(filter, "int4", Some(value)), expected, "{filter} on {value}");
        }
        // Numerically, not by text.
        assert_eq!(ev("gt.9", "int8", Some("10")), T);
        assert_eq!(ev("lt.9", "int2", Some("10")), F);
        assert_eq!(ev("eq.99999999999", "int4", Some("1")), NULL, "out of range for the type");
        assert_eq!(ev("eq.99999999999", "int8", Some("99999999999")), T);
    }

    #[test]
    fn comparisons_on_decimals_and_floats() {
        assert_eq!(ev("eq.1.5", "numeric", Some("1.50")), T);
        assert_eq!(ev("gt.1.49999999999999999999", "numeric", Some("1.5")), T);
        assert_eq!(ev("lt.1e3", "numeric", Some("999.999")), T);
        assert_eq!(ev("eq.NaN", "numeric", Some("NaN")), T);
        assert_eq!(ev("gt.1e300", "numeric", Some("NaN")), T);
        assert_eq!(ev("eq.0.1", "float8", Some("0.1")), T);
        assert_eq!(ev("eq.0.1", "float4", Some("0.1")), T);
        assert_eq!(ev("gt.0.3", "float8", Some("0.30000000000000004")), T);
        assert_eq!(ev("lt.Infinity", "float8", Some("1e308")), T);
        assert_eq!(ev("eq.abc", "float8", Some("1")), NULL);
    }

    #[test]
    fn comparisons_on_booleans() {
        assert_eq!(ev("eq.true", "bool", Some("t")), T);
        assert_eq!(ev("eq.yes", "bool", Some("t")), T);
        assert_eq!(ev("eq.0", "bool", Some("f")), T);
        assert_eq!(ev("eq.off", "bool", Some("t")), F);
        assert_eq!(ev("neq.t", "bool", Some("f")), T);
        assert_eq!(ev("lt.true", "bool", Some("f")), T);
        assert_eq!(ev("eq.maybe", "bool", Some("t")), NULL);
    }

    #[test]
    fn comparisons_on_text() {
        assert_eq!(ev("eq.hello", "text", Some("hello")), T);
        assert_eq!(ev("eq.Hello", "text", Some("hello")), F);
        assert_eq!(ev("eq.\"a,b\"", "varchar", Some("a,b")), T);
        assert_eq!(ev("gt.B", "text", Some("a")), T, "collation C: 'a' > 'B'");
        assert_eq!(ev("lt.b", "text", Some("a")), T);
        assert_eq!(ev("eq.ab", "bpchar", Some("ab  ")), T);
        assert_eq!(ev("eq.HeLLo", "citext", Some("hello")), T);
        assert_eq!(ev("eq.happy", "mood", Some("happy")), T, "unknown types compare as text");
        assert_eq!(ev("eq.O'Brien \"x\"", "text", Some("O'Brien \"x\"")), T);
    }

    #[test]
    fn comparisons_on_uuids_times_json_bytes_arrays() {
        let id = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        assert_eq!(ev("eq.A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "uuid", Some(id)), T);
        assert_eq!(ev("eq.not-a-uuid", "uuid", Some(id)), NULL);
        assert_eq!(ev("gt.2024-01-01", "timestamptz", Some("2024-01-01 00:00:00.5+00")), T);
        assert_eq!(ev("eq.2024-01-01T02:00:00+02:00", "timestamptz", Some("2024-01-01 00:00:00+00")), T);
        assert_eq!(ev("lt.2024-06-01", "timestamp", Some("2024-05-31 23:59:59")), T);
        assert_eq!(ev("eq.2024-02-29", "date", Some("2024-02-29")), T);
        assert_eq!(ev("gte.12:00", "time", Some("12:00:00")), T);
        assert_eq!(ev(r#"eq."{\"b\":1,\"a\":[1,2]}""#, "jsonb", Some(r#"{"a": [1, 2], "b": 1}"#)), T);
        assert_eq!(ev("eq.1", "json", Some("1")), NULL, "json has no =");
        assert_eq!(ev("eq.{}", "jsonb", Some("{}")), T);
        assert_eq!(ev(r"eq.\x0102", "bytea", Some(r"\x0102")), T);
        assert_eq!(ev(r#"eq."{1,2}""#, "_int4", Some("{1,2}")), T);
        assert_eq!(ev(r#"eq."{\"a b\",c}""#, "_text", Some(r#"{"a b",c}"#)), T);
    }

    #[test]
    fn nulls() {
        for filter in ["eq.1", "neq.1", "lt.1", "gte.1", "in.(1,2)", "like.1%", "match.1"] {
            assert_eq!(ev(filter, "text", None), NULL, "{filter}");
            assert_eq!(ev(&format!("not.{filter}"), "text", None), NULL, "not.{filter}");
        }
        assert_eq!(ev("in.()", "int4", None), F, "= ANY of an empty array is false, even for NULL");
        assert_eq!(ev("not.in.()", "int4", None), T);
        assert_eq!(ev("is.null", "int4", None), T);
        assert_eq!(ev("not.is.null", "int4", None), F);
        assert_eq!(ev("isdistinct.1", "int4", None), T);
        assert_eq!(ev("not.isdistinct.1", "int4", None), F);
    }

    #[test]
    fn in_lists() {
        assert_eq!(ev("in.(1,2,3)", "int4", Some("2")), T);
        assert_eq!(ev("in.(1,2,3)", "int4", Some("4")), F);
        assert_eq!(ev("not.in.(1,2,3)", "int4", Some("4")), T);
        assert_eq!(ev("not.in.(1,2,3)", "int4", Some("3")), F);
        assert_eq!(ev("in.(1,x)", "int4", Some("1")), NULL, "the whole list must cast");
        assert_eq!(ev(r#"in.("a,b",c)"#, "text", Some("a,b")), T);
        assert_eq!(ev("in.(red, blue)", "text", Some("blue")), T);
        assert_eq!(ev("in.(D'Angelo,Smith)", "text", Some("D'Angelo")), T);
        assert_eq!(ev("in.(1.0,2)", "numeric", Some("1")), T);
        assert_eq!(ev("in.(1,null)", "int4", Some("1")), T);
        let with_null = Condition {
            column: "c".into(),
            op: FilterOp::In,
            negate: false,
            value: FilterValue::Single("{1,NULL}".into()),
        };
        let with_null = Prepared::new(with_null);
        assert_eq!(evaluate(&with_null, "int4", Some("2")), NULL, "a NULL element makes a miss NULL");
        assert_eq!(evaluate(&with_null, "int4", Some("1")), T);
    }

    #[test]
    fn like_and_ilike() {
        assert_eq!(ev("like.hel%", "text", Some("hello")), T);
        assert_eq!(ev("like.bye%", "text", Some("hello")), F);
        assert_eq!(ev("like.h_llo", "varchar", Some("hello")), T);
        assert_eq!(ev("like.HEL%", "text", Some("hello")), F);
        assert_eq!(ev("ilike.HEL%", "text", Some("hello")), T);
        assert_eq!(ev("not.like.hel%", "text", Some("hello")), F);
        assert_eq!(ev("not.ilike.x%", "text", Some("hello")), T);
        assert_eq!(ev(r"like.100\%", "text", Some("100%")), T);
        assert_eq!(ev(r"like.bad\", "text", Some("bad")), NULL);
        assert_eq!(ev("like.HEL%", "citext", Some("hello")), T, "citext LIKE is case-insensitive");
        assert_eq!(ev("like.ab", "bpchar", Some("ab  ")), F, "char(n) padding is kept on the left");
        assert_eq!(ev("like.ab%", "bpchar", Some("ab  ")), T);
        assert_eq!(ev(r"like.\001%", "bytea", Some(r"\x0102")), T);
        assert_eq!(ev(r"like.\x01%", "bytea", Some(r"\x0102")), NULL, "the pattern must cast to bytea");
        assert_eq!(ev("ilike.x", "bytea", Some(r"\x78")), NULL);
        assert_eq!(ev("like.1%", "int4", Some("10")), NULL, "no LIKE on integers");
    }

    /// A wildcard subscription meets its column under several types; each gets its own compiled form of
    /// the one pattern, and keeps it.
    #[test]
    fn one_filter_serves_every_column_type() {
        let like = Prepared::new(cond("c=like.ab%"));
        for _ in 0..2 {
            assert_eq!(evaluate(&like, "text", Some("abc")), T);
            assert_eq!(evaluate(&like, "text", Some("ABc")), F);
            assert_eq!(evaluate(&like, "citext", Some("ABc")), T);
            assert_eq!(evaluate(&like, "bpchar", Some("ab  ")), T);
            assert_eq!(evaluate(&like, "bytea", Some(r"\x616263")), T);
            assert_eq!(evaluate(&like, "bytea", Some(r"\x6163")), F);
            assert_eq!(evaluate(&like, "int4", Some("1")), NULL);
        }
        let spaces = Prepared::new(cond(r#"c=like."ab  ""#));
        assert_eq!(
            evaluate(&spaces, "bpchar", Some("ab")),
            T,
            "the pattern's trailing spaces go for char(n)"
        );
        assert_eq!(evaluate(&spaces, "text", Some("ab")), F);
        let re = Prepared::new(cond("c=match.^ab"));
        assert_eq!(evaluate(&re, "text", Some("ABc")), F);
        assert_eq!(evaluate(&re, "citext", Some("ABc")), T);
        assert_eq!(evaluate(&re, "text", Some("abc")), T);
    }

    #[test]
    fn regex_match() {
        assert_eq!(ev("match.^post-[0-9]+$", "text", Some("post-42")), T);
        assert_eq!(ev("match.^post", "text", Some("a post")), F);
        assert_eq!(ev("match.^POST", "text", Some("post")), F);
        assert_eq!(ev("imatch.^POST", "text", Some("post")), T);
        assert_eq!(ev("not.match.^post", "text", Some("post")), F);
        assert_eq!(ev("match.^POST", "citext", Some("post")), T);
        assert_eq!(ev("match.(", "text", Some("(")), NULL, "invalid regex");
        assert_eq!(ev("match.1", "int4", Some("1")), NULL);
        assert_eq!(ev(r#"match."a,b""#, "text", Some("xa,by")), T);
    }

    #[test]
    fn is_keywords() {
        assert_eq!(ev("is.null", "text", Some("x")), F);
        assert_eq!(ev("not.is.null", "text", Some("x")), T);
        assert_eq!(ev("is.true", "bool", Some("t")), T);
        assert_eq!(ev("is.true", "bool", Some("f")), F);
        assert_eq!(ev("is.true", "bool", None), F);
        assert_eq!(ev("not.is.true", "bool", None), T);
        assert_eq!(ev("is.false", "bool", Some("f")), T);
        assert_eq!(ev("not.is.false", "bool", Some("t")), T);
        assert_eq!(ev("is.unknown", "bool", None), T);
        assert_eq!(ev("is.unknown", "bool", Some("t")), F);
        assert_eq!(ev("not.is.unknown", "bool", Some("t")), T);
        assert_eq!(ev("is.true", "int4", Some("1")), NULL, "IS TRUE needs a boolean");
        assert_eq!(ev("is.NULL", "int4", None), NULL, "keywords are case-sensitive");
        assert_eq!(ev("is.maybe", "bool", None), NULL);
    }

    #[test]
    fn is_distinct() {
        assert_eq!(ev("isdistinct.5", "int4", Some("5")), F);
        assert_eq!(ev("isdistinct.5", "int4", Some("6")), T);
        assert_eq!(ev("isdistinct.5", "int4", None), T);
        assert_eq!(ev("not.isdistinct.5", "int4", Some("5")), T);
        assert_eq!(ev("not.isdistinct.5", "int4", None), F);
        assert_eq!(ev("isdistinct.1.0", "numeric", Some("1")), F);
        assert_eq!(ev("isdistinct.x", "int4", Some("5")), NULL, "uncastable filter value");
        assert_eq!(ev("isdistinct.x", "text", Some("x")), F);
    }

    #[test]
    fn matches_requires_every_column_and_true() {
        let conditions = parse_filter("id=gt.0,details=eq.hello").unwrap();
        let row = |id: Option<&'static str>, details: Option<&'static str>| {
            move |column: &str| match column {
                "id" => Some(("int4", id)),
                "details" => Some(("text", details)),
                _ => None,
            }
        };
        let matches = |conditions: &[Condition], row| Filter::new(conditions).matches(row);
        assert!(matches(&conditions, row(Some("5"), Some("hello"))));
        assert!(!matches(&conditions, row(Some("5"), Some("bye"))));
        assert!(!matches(&conditions, row(Some("0"), Some("hello"))));
        assert!(!matches(&conditions, row(Some("5"), None)), "NULL comparison");
        assert!(matches(&[], row(None, None)));
        let missing = parse_filter("other=eq.1").unwrap();
        assert!(!matches(&missing, row(Some("5"), Some("hello"))), "absent column");
        let negated = parse_filter("id=not.eq.5").unwrap();
        assert!(!matches(&negated, row(Some("5"), None)));
        assert!(matches(&negated, row(Some("6"), None)));
    }

    #[test]
    fn subscribe_checks_cast_values() {
        check_ok("eq.123", "int4");
        check_ok("eq.hey", "text");
        check_ok("isdistinct.1", "int8");
        check_ok("eq.anything", "mood");
        assert_eq!(
            check_err("eq.hey", "int4"),
            "ERROR 22P02 (invalid_text_representation) invalid input syntax for type integer: \"hey\""
        );
        assert_eq!(
            check_err("gt.99999999999", "int4"),
            "ERROR 22003 (numeric_value_out_of_range) value \"99999999999\" is out of range for type integer"
        );
        assert_eq!(
            check_err("isdistinct.x", "uuid"),
            "ERROR 22P02 (invalid_text_representation) invalid input syntax for type uuid: \"x\""
        );
        assert!(check_err("eq.yesterday-ish", "timestamptz").contains("timestamp with time zone"));
        check_ok(r"eq.\xzz", "bytea");
        check_ok(r"in.(\xzz)", "bytea"); // `\x` in an array literal is an escaped `x`
        assert_eq!(
            check_err(r#"in.("\\xzz")"#, "bytea"),
            "ERROR 22023 (invalid_parameter_value) invalid hexadecimal digit: \"z\""
        );
    }

    #[test]
    fn subscribe_checks_in_lists() {
        check_ok("in.(1,2,3)", "int4");
        check_ok("in.()", "int4");
        assert_eq!(
            check_err("in.(1,x)", "int4"),
            "ERROR 22P02 (invalid_text_representation) invalid input syntax for type integer: \"x\""
        );
        let hundred: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        check_ok(&format!("in.({})", hundred.join(",")), "int4");
        let more: Vec<String> = (0..101).map(|i| i.to_string()).collect();
        assert_eq!(
            check_err(&format!("in.({})", more.join(",")), "int4"),
            "ERROR P0001 (raise_exception) too many values for `in` filter. Maximum 100"
        );
    }

    #[test]
    fn subscribe_checks_is() {
        check_ok("is.null", "int4");
        check_ok("is.true", "bool");
        check_ok("not.is.unknown", "bool");
        assert_eq!(
            check_err("is.maybe", "bool"),
            "ERROR P0001 (raise_exception) invalid value for is filter: must be null, true, false, or unknown"
        );
        assert_eq!(
            check_err("is.NULL", "bool"),
            "ERROR P0001 (raise_exception) invalid value for is filter: must be null, true, false, or unknown"
        );
        assert_eq!(
            check_err("is.true", "int4"),
            "ERROR P0001 (raise_exception) is true filter requires a boolean column, got integer"
        );
        assert_eq!(
            check_err("is.unknown", "timestamptz"),
            "ERROR P0001 (raise_exception) is unknown filter requires a boolean column, got timestamp with time zone"
        );
    }

    #[test]
    fn subscribe_checks_patterns() {
        for typname in ["text", "bpchar", "name", "bytea", "citext"] {
            check_ok("like.a%", typname);
            check_ok("ilike.a%", typname);
        }
        assert_eq!(
            check_err("like.a%", "varchar"),
            "ERROR P0001 (raise_exception) operator like requires a text-compatible column type, got character varying"
        );
        assert_eq!(
            check_err("ilike.1%", "int4"),
            "ERROR P0001 (raise_exception) operator ilike requires a text-compatible column type, got integer"
        );
        check_ok("match.^a", "text");
        check_ok("imatch.^a", "citext");
        assert_eq!(
            check_err("match.^a", "varchar"),
            "ERROR P0001 (raise_exception) operator match requires a text-compatible column type, got character varying"
        );
        assert_eq!(
            check_err("imatch.a", "_text"),
            "ERROR P0001 (raise_exception) operator imatch requires a text-compatible column type, got text[]"
        );
        assert_eq!(
            check_err("match.(", "text"),
            "ERROR P0001 (raise_exception) invalid regular expression for match filter: invalid regular expression: \
             parentheses () not balanced"
        );
    }

    #[test]
    fn raise_exception_text() {
        assert_eq!(
            raise_exception("invalid column for filter notacolumn"),
            "ERROR P0001 (raise_exception) invalid column for filter notacolumn"
        );
    }
}
