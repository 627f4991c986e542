//! `'<text>'::<type>` for the column types filters meet, and the order of the resulting values, as
//! PostgreSQL's input functions and btree operators define them.
//!
//! Both sides of a comparison go through [`cast`]: the column's text output and the filter's value. A
//! value the input function would refuse is a [`PgError`] carrying PostgreSQL's own message, which the
//! subscribe-time check shows to the client. Numbers are read in [`super::number`], dates and times in
//! [`super::datetime`].
//!
//! Limits (documented choices):
//! - text compares by bytes, i.e. collation `C`; `citext` by lower-cased text;
//! - dates and times: ISO 8601 only, UTC when no offset is given (see [`super::datetime`]);
//! - `jsonb` numbers are compared through their JSON text (exact for integers and for the shortest
//!   `f64` form of decimals);
//! - arrays are one-dimensional;
//! - unknown types (enums, domains, ranges, `interval`, `inet`, …) compare by text and accept any value.

use std::cmp::Ordering;
use std::fmt;

use crate::postgres::parse_array_literal;
use serde_json::Value;

use super::datetime::{parse_datetime, parse_time, Kind, MICROS_PER_SEC};
use super::number::{float_cmp, parse_decimal, parse_float, parse_int, pg_space, Decimal};

/// A PostgreSQL error as the reference's client library renders it: `ERROR <code> (<name>) <message>`,
/// plus `\n\n<detail>` when PostgreSQL gives a detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub code: &'static str,
    pub name: &'static str,
    pub message: String,
    pub detail: Option<String>,
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ERROR {} ({}) {}", self.code, self.name, self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, "\n\n{detail}")?;
        }
        Ok(())
    }
}

impl PgError {
    /// `raise exception '<message>'` in PL/pgSQL.
    pub fn raise(message: impl Into<String>) -> PgError {
        PgError { code: "P0001", name: "raise_exception", message: message.into(), detail: None }
    }

    pub(super) fn invalid_text(message: impl Into<String>) -> PgError {
        PgError { code: "22P02", name: "invalid_text_representation", message: message.into(), detail: None }
    }

    fn syntax(type_name: &str, input: &str) -> PgError {
        PgError::invalid_text(format!("invalid input syntax for type {type_name}: \"{input}\""))
    }

    pub(super) fn datetime_syntax(type_name: &str, input: &str) -> PgError {
        PgError { code: "22007", name: "invalid_datetime_format", ..PgError::syntax(type_name, input) }
    }

    pub(super) fn datetime_range(input: &str) -> PgError {
        PgError {
            code: "22008",
            name: "datetime_field_overflow",
            message: format!("date/time field value out of range: \"{input}\""),
            detail: None,
        }
    }

    fn range(message: String) -> PgError {
        PgError { code: "22003", name: "numeric_value_out_of_range", message, detail: None }
    }
}

/// How a column type casts and compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Family {
    Int {
        min: i64,
        max: i64,
        name: &'static str,
    },
    Numeric,
    Float4,
    Float8,
    Bool,
    Text(TextKind),
    Uuid,
    Date,
    Timestamp,
    Timestamptz,
    Time,
    Timetz,
    Jsonb,
    /// `json` has no comparison operators at all.
    Json,
    Bytea,
    Array(Box<Family>),
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// `text`, `varchar`.
    Plain,
    /// `char(n)`: trailing spaces do not count in comparisons.
    Bpchar,
    /// `name`: truncated to 63 bytes.
    Name,
    /// `"char"`: one character.
    Char,
    /// `citext`: compares case-insensitively.
    Citext,
}

impl Family {
    pub fn of(typname: &str) -> Family {
        match typname {
            "int2" => Family::Int { min: i16::MIN.into(), max: i16::MAX.into(), name: "smallint" },
            "int4" => Family::Int { min: i32::MIN.into(), max: i32::MAX.into(), name: "integer" },
            "int8" => Family::Int { min: i64::MIN, max: i64::MAX, name: "bigint" },
            "oid" => Family::Int { min: 0, max: u32::MAX.into(), name: "oid" },
            "numeric" => Family::Numeric,
            "float4" => Family::Float4,
            "float8" => Family::Float8,
            "bool" => Family::Bool,
            "text" | "varchar" => Family::Text(TextKind::Plain),
            "bpchar" => Family::Text(TextKind::Bpchar),
            "name" => Family::Text(TextKind::Name),
            "char" => Family::Text(TextKind::Char),
            "citext" => Family::Text(TextKind::Citext),
            "uuid" => Family::Uuid,
            "date" => Family::Date,
            "timestamp" => Family::Timestamp,
            "timestamptz" => Family::Timestamptz,
            "time" => Family::Time,
            "timetz" => Family::Timetz,
            "jsonb" => Family::Jsonb,
            "json" => Family::Json,
            "bytea" => Family::Bytea,
            _ => match typname.strip_prefix('_') {
                Some(element) => Family::Array(Box::new(Family::of(element))),
                None => Family::Other,
            },
        }
    }
}

/// The type's name as `regtype::text` prints it (`integer`, `character varying`, `text[]`).
pub fn regtype_name(typname: &str) -> String {
    let name = match typname {
        "int2" => "smallint",
        "int4" => "integer",
        "int8" => "bigint",
        "float4" => "real",
        "float8" => "double precision",
        "bool" => "boolean",
        "varchar" => "character varying",
        "bpchar" => "character",
        "char" => "\"char\"",
        "timestamp" => "timestamp without time zone",
        "timestamptz" => "timestamp with time zone",
        "time" => "time without time zone",
        "timetz" => "time with time zone",
        "varbit" => "bit varying",
        "interval" => "interval",
        _ => match typname.strip_prefix('_') {
            Some(element) => return format!("{}[]", regtype_name(element)),
            None => typname,
        },
    };
    name.to_owned()
}

/// A value of one of the families.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    Int(i64),
    Num(Decimal),
    Float(f64),
    Bool(bool),
    Text(String),
    Uuid(u128),
    /// Dates (days), timestamps and times (microseconds); infinities are `i128::MIN`/`MAX`.
    Instant(i128),
    /// `timetz`: UTC time of day (µs), then the offset (seconds east).
    Timetz(i128, i32),
    Json(Value),
    Bytes(Vec<u8>),
    Array(Vec<Option<Datum>>),
}

/// `'<text>'::<family>`.
pub fn cast(family: &Family, text: &str) -> Result<Datum, PgError> {
    match family {
        Family::Int { min, max, name } => match parse_int(text) {
            Some(Ok(v)) if (*min as i128..=*max as i128).contains(&v) => Ok(Datum::Int(v as i64)),
            Some(_) => Err(PgError::range(format!("value \"{text}\" is out of range for type {name}"))),
            None => Err(PgError::syntax(name, text)),
        },
        Family::Numeric => {
            parse_decimal(text).map(Datum::Num).ok_or_else(|| PgError::syntax("numeric", text))
        }
        Family::Float4 | Family::Float8 => {
            let name = if *family == Family::Float4 { "real" } else { "double precision" };
            match parse_float(text, *family == Family::Float4) {
                Some(Ok(v)) => Ok(Datum::Float(v)),
                Some(Err(())) => Err(PgError::range(format!("\"{text}\" is out of range for type {name}"))),
                None => Err(PgError::syntax(name, text)),
            }
        }
        Family::Bool => parse_bool(text).map(Datum::Bool).ok_or_else(|| PgError::syntax("boolean", text)),
        Family::Text(kind) => Ok(Datum::Text(match kind {
            TextKind::Name => truncate_bytes(text, 63).to_owned(),
            TextKind::Char => text.chars().next().map(String::from).unwrap_or_default(),
            _ => text.to_owned(),
        })),
        Family::Uuid => parse_uuid(text).map(Datum::Uuid).ok_or_else(|| PgError::syntax("uuid", text)),
        Family::Date => {
            parse_datetime(text, Kind::Date).map(Datum::Instant).map_err(|e| e.into_pg("date", text))
        }
        Family::Timestamp => parse_datetime(text, Kind::Timestamp)
            .map(Datum::Instant)
            .map_err(|e| e.into_pg("timestamp", text)),
        Family::Timestamptz => parse_datetime(text, Kind::Timestamptz)
            .map(Datum::Instant)
            .map_err(|e| e.into_pg("timestamp with time zone", text)),
        Family::Time => parse_time(text).map(|(t, _)| Datum::Instant(t)).map_err(|e| e.into_pg("time", text)),
        Family::Timetz => parse_time(text)
            .map(|(t, offset)| Datum::Timetz(t - i128::from(offset) * MICROS_PER_SEC, offset))
            .map_err(|e| e.into_pg("time with time zone", text)),
        Family::Jsonb | Family::Json => {
            serde_json::from_str(text).map(Datum::Json).map_err(|e| json_error(text, &e))
        }
        Family::Bytea => parse_bytea(text).map(Datum::Bytes),
        Family::Array(element) => {
            let items = parse_array_literal(text)
                .ok_or_else(|| PgError::invalid_text(format!("malformed array literal: \"{text}\"")))?;
            let items = items.iter().map(|item| item.as_deref().map(|s| cast(element, s)).transpose());
            items.collect::<Result<Vec<_>, _>>().map(Datum::Array)
        }
        Family::Other => Ok(Datum::Text(text.to_owned())),
    }
}

/// The order of two values of the family; `None` when the type has no such operator (`json`) or the
/// values are not of the family.
pub fn compare(family: &Family, a: &Datum, b: &Datum) -> Option<Ordering> {
    Some(match (a, b) {
        (Datum::Int(x), Datum::Int(y)) => x.cmp(y),
        (Datum::Num(x), Datum::Num(y)) => x.cmp(y),
        (Datum::Float(x), Datum::Float(y)) => float_cmp(*x, *y),
        (Datum::Bool(x), Datum::Bool(y)) => x.cmp(y),
        (Datum::Text(x), Datum::Text(y)) => match family {
            Family::Text(TextKind::Bpchar) => x.trim_end_matches(' ').cmp(y.trim_end_matches(' ')),
            Family::Text(TextKind::Citext) => x.to_lowercase().cmp(&y.to_lowercase()),
            _ => x.cmp(y),
        },
        (Datum::Uuid(x), Datum::Uuid(y)) => x.cmp(y),
        (Datum::Instant(x), Datum::Instant(y)) => x.cmp(y),
        (Datum::Timetz(x, xo), Datum::Timetz(y, yo)) => x.cmp(y).then(yo.cmp(xo)),
        (Datum::Json(x), Datum::Json(y)) if *family == Family::Jsonb => jsonb_cmp(x, y, true),
        (Datum::Bytes(x), Datum::Bytes(y)) => x.cmp(y),
        (Datum::Array(x), Datum::Array(y)) => {
            let Family::Array(element) = family else { return None };
            for (p, q) in x.iter().zip(y) {
                let ord = match (p, q) {
                    (Some(p), Some(q)) => compare(element, p, q)?,
                    (None, None) => Ordering::Equal,
                    // NULL elements sort after every value.
                    (None, Some(_)) => Ordering::Greater,
                    (Some(_), None) => Ordering::Less,
                };
                if ord != Ordering::Equal {
                    return Some(ord);
                }
            }
            x.len().cmp(&y.len())
        }
        _ => return None,
    })
}

fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `boolin`: `t`/`true`/`y`/`yes`/`on`/`1` and `f`/`false`/`n`/`no`/`off`/`0`, any case, any
/// unambiguous prefix of the words (`o` alone is ambiguous).
pub fn parse_bool(text: &str) -> Option<bool> {
    let t = text.trim_matches(pg_space).to_ascii_lowercase();
    let prefix_of = |word: &str, min: usize| t.len() >= min && word.starts_with(t.as_str());
    if t == "1" || prefix_of("true", 1) || prefix_of("yes", 1) || prefix_of("on", 2) {
        Some(true)
    } else if t == "0" || prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) {
        Some(false)
    } else {
        None
    }
}

/// `uuid_in`: 32 hex digits, optionally braced, with a `-` allowed after any group of four.
fn parse_uuid(text: &str) -> Option<u128> {
    let braced = text.starts_with('{');
    let mut s = if braced { &text[1..] } else { text }.as_bytes();
    let mut v: u128 = 0;
    for i in 0..16 {
        let [h, l, rest @ ..] = s else { return None };
        let byte = (char::from(*h).to_digit(16)? << 4) | char::from(*l).to_digit(16)?;
        v = (v << 8) | u128::from(byte);
        s = rest;
        if i % 2 == 1 && i < 15 {
            if let [b'-', rest @ ..] = s {
                s = rest;
            }
        }
    }
    match (braced, s) {
        (true, [b'}']) | (false, []) => Some(v),
        _ => None,
    }
}

/// `byteain`: `\x` hex (whitespace between bytes allowed) or the escape format (`\\`, `\ooo`).
fn parse_bytea(text: &str) -> Result<Vec<u8>, PgError> {
    let bad_hex =
        |message: String| PgError { code: "22023", name: "invalid_parameter_value", message, detail: None };
    if let Some(hex) = text.strip_prefix("\\x") {
        let mut out = Vec::with_capacity(hex.len() / 2);
        let mut chars = hex.chars().filter(|c| !pg_space(*c));
        while let Some(h) = chars.next() {
            let hi = h.to_digit(16).ok_or_else(|| bad_hex(format!("invalid hexadecimal digit: \"{h}\"")))?;
            let l = chars
                .next()
                .ok_or_else(|| bad_hex("invalid hexadecimal data: odd number of digits".into()))?;
            let lo = l.to_digit(16).ok_or_else(|| bad_hex(format!("invalid hexadecimal digit: \"{l}\"")))?;
            out.push((hi * 16 + lo) as u8);
        }
        return Ok(out);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else if let [a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7', ..] = bytes[i + 1..] {
            out.push((a - b'0') * 64 + (b - b'0') * 8 + (c - b'0'));
            i += 4;
        } else {
            return Err(PgError::invalid_text("invalid input syntax for type bytea"));
        }
    }
    Ok(out)
}

/// PostgreSQL's json input error: the message, and a detail naming the offending token.
fn json_error(text: &str, err: &serde_json::Error) -> PgError {
    let detail = if err.is_eof() {
        "The input string ended unexpectedly.".to_owned()
    } else {
        let line = text.lines().nth(err.line().saturating_sub(1)).unwrap_or("");
        let start = line.char_indices().nth(err.column().saturating_sub(1)).map_or(line.len(), |(i, _)| i);
        let rest = &line[start..];
        let word: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let token =
            if word.is_empty() { rest.chars().next().map(String::from).unwrap_or_default() } else { word };
        format!("Token \"{token}\" is invalid.")
    };
    PgError { detail: Some(detail), ..PgError::invalid_text("invalid input syntax for type json") }
}

/// jsonb's btree order: Object > Array > Boolean > Number > String > Null; containers by size first;
/// objects key by key in storage order (shorter keys first); an empty top-level array sorts first.
fn jsonb_cmp(a: &Value, b: &Value, top: bool) -> Ordering {
    let empty_array = |v: &Value| matches!(v, Value::Array(items) if items.is_empty());
    if top && empty_array(a) != empty_array(b) {
        return if empty_array(a) { Ordering::Less } else { Ordering::Greater };
    }
    let rank = |v: &Value| match v {
        Value::Null => 0,
        Value::String(_) => 1,
        Value::Number(_) => 2,
        Value::Bool(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    };
    rank(a).cmp(&rank(b)).then_with(|| match (a, b) {
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => {
            match (parse_decimal(&x.to_string()), parse_decimal(&y.to_string())) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => Ordering::Equal,
            }
        }
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => x.len().cmp(&y.len()).then_with(|| {
            x.iter()
                .zip(y)
                .map(|(p, q)| jsonb_cmp(p, q, false))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        }),
        (Value::Object(x), Value::Object(y)) => x.len().cmp(&y.len()).then_with(|| {
            jsonb_entries(x)
                .into_iter()
                .zip(jsonb_entries(y))
                .map(|((kx, vx), (ky, vy))| {
                    kx.len().cmp(&ky.len()).then_with(|| kx.cmp(ky)).then_with(|| jsonb_cmp(vx, vy, false))
                })
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        }),
        _ => Ordering::Equal,
    })
}

/// An object's entries in jsonb storage order: shorter keys first, then by bytes.
fn jsonb_entries(map: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|p, q| p.0.len().cmp(&q.0.len()).then_with(|| p.0.cmp(q.0)));
    entries
}

/// Test helpers shared by the cast, number and datetime tests.
#[cfg(test)]
pub(super) mod test_support {
    use std::cmp::Ordering;

    use super::{cast, compare, Datum, Family};

    /// `text` cast to `typname`, which must succeed.
    pub fn ok(typname: &str, text: &str) -> Datum {
        cast(&Family::of(typname), text).unwrap()
    }

    /// The error of casting `text` to `typname`, which must fail.
    pub fn fail(typname: &str, text: &str) -> String {
        cast(&Family::of(typname), text).unwrap_err().to_string()
    }

    /// `a` compared with `b`, both cast to `typname`.
    pub fn cmp(typname: &str, a: &str, b: &str) -> Option<Ordering> {
        let f = Family::of(typname);
        compare(&f, &cast(&f, a).ok()?, &cast(&f, b).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{cmp, fail, ok};
    use super::*;

    #[test]
    fn booleans() {
        for t in ["t", "TRUE", "tr", "y", "yes", "on", "1", " true "] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["f", "False", "n", "no", "of", "off", "0"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for bad in ["o", "", "2", "truth", "yess", "onn"] {
            assert_eq!(parse_bool(bad), None, "{bad}");
        }
        assert_eq!(
            fail("bool", "maybe"),
            "ERROR 22P02 (invalid_text_representation) invalid input syntax for type boolean: \"maybe\""
        );
        assert_eq!(cmp("bool", "f", "t"), Some(Ordering::Less));
    }

    #[test]
    fn text_kinds() {
        assert_eq!(cmp("text", "B", "a"), Some(Ordering::Less), "collation C: bytes");
        assert_eq!(cmp("text", "é", "z"), Some(Ordering::Greater));
        assert_eq!(cmp("varchar", "a", "a "), Some(Ordering::Less));
        assert_eq!(cmp("bpchar", "a  ", "a"), Some(Ordering::Equal));
        assert_eq!(cmp("citext", "Hello", "hELLO"), Some(Ordering::Equal));
        assert_eq!(cmp("char", "abc", "a"), Some(Ordering::Equal));
        let long = "x".repeat(70);
        assert_eq!(cmp("name", &long, &"x".repeat(63)), Some(Ordering::Equal));
        assert_eq!(cmp("my_enum", "b", "a"), Some(Ordering::Greater));
    }

    #[test]
    fn uuids() {
        let a = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        for same in [
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        ] {
            assert_eq!(cmp("uuid", a, same), Some(Ordering::Equal), "{same}");
        }
        for bad in [
            "a0eebc99",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
            "-a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "{a0eebc999c0b4ef8bb6d6bb9bd380a11",
        ] {
            assert!(cast(&Family::Uuid, bad).is_err(), "{bad}");
        }
        assert_eq!(
            fail("uuid", "x"),
            "ERROR 22P02 (invalid_text_representation) invalid input syntax for type uuid: \"x\""
        );
    }

    #[test]
    fn json_values() {
        assert_eq!(cmp("jsonb", r#"{"a": 1, "b": [1, 2]}"#, r#"{"b":[1,2],"a":1.0}"#), Some(Ordering::Equal));
        assert_eq!(cmp("jsonb", r#"{"a": 1}"#, r#"[1, 2, 3]"#), Some(Ordering::Greater));
        assert_eq!(cmp("jsonb", "true", "1"), Some(Ordering::Greater));
        assert_eq!(cmp("jsonb", "1", "\"1\""), Some(Ordering::Greater));
        assert_eq!(cmp("jsonb", "[]", "null"), Some(Ordering::Less));
        assert_eq!(cmp("jsonb", "[1, 2]", "[3]"), Some(Ordering::Greater));
        assert_eq!(cmp("jsonb", r#"{"b": 1}"#, r#"{"aa": 0}"#), Some(Ordering::Less), "shorter keys first");
        assert_eq!(cmp("json", "1", "1"), None, "json has no operators");
        assert_eq!(
            fail("jsonb", "hey"),
            "ERROR 22P02 (invalid_text_representation) invalid input syntax for type json\n\nToken \"hey\" is invalid."
        );
        assert!(fail("json", "{").ends_with("The input string ended unexpectedly."));
    }

    #[test]
    fn bytea_values() {
        assert_eq!(ok("bytea", "\\x0102ff"), Datum::Bytes(vec![1, 2, 255]));
        assert_eq!(ok("bytea", "\\x01 02"), Datum::Bytes(vec![1, 2]));
        assert_eq!(ok("bytea", "a\\\\b\\001"), Datum::Bytes(vec![b'a', b'\\', b'b', 1]));
        assert_eq!(
            fail("bytea", "\\x0"),
            "ERROR 22023 (invalid_parameter_value) invalid hexadecimal data: odd number of digits"
        );
        assert_eq!(
            fail("bytea", "\\xzz"),
            "ERROR 22023 (invalid_parameter_value) invalid hexadecimal digit: \"z\""
        );
        assert_eq!(
            fail("bytea", "a\\9"),
            "ERROR 22P02 (invalid_text_representation) invalid input syntax for type bytea"
        );
        assert_eq!(cmp("bytea", "\\x01", "\\x0100"), Some(Ordering::Less));
    }

    #[test]
    fn arrays() {
        assert_eq!(cmp("_int4", "{1,2,3}", "{1, 2, 3}"), Some(Ordering::Equal));
        assert_eq!(cmp("_int4", "{1,2}", "{1,2,3}"), Some(Ordering::Less));
        assert_eq!(cmp("_int4", "{1,NULL}", "{1,5}"), Some(Ordering::Greater));
        assert_eq!(cmp("_text", r#"{"a b",c}"#, r#"{"a b","c"}"#), Some(Ordering::Equal));
        assert_eq!(
            fail("_int4", "{1,x}"),
            "ERROR 22P02 (invalid_text_representation) invalid input syntax for type integer: \"x\""
        );
        assert_eq!(
            fail("_int4", "{1"),
            "ERROR 22P02 (invalid_text_representation) malformed array literal: \"{1\""
        );
        assert_eq!(regtype_name("_int4"), "integer[]");
        assert_eq!(regtype_name("_varchar"), "character varying[]");
        assert_eq!(regtype_name("mood"), "mood");
    }
}
