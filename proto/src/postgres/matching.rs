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

use super::{parse_array_literal, Condition, FilterOp, FilterValue};

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
mod tests;
