//! Column values (pgoutput text format) → the typed JSON the reference puts in `record`/`old_record`.
//!
//! The reference computes every value as `to_jsonb('<text>'::<type>)` (RT `realtime.cast`, called by
//! `apply_rls`), so this module reproduces PostgreSQL's `to_jsonb` on the type's text output, by type
//! name (`pg_type.typname`), without a round trip through the database:
//!
//! - `int2` `int4` `int8` `float4` `float8` `numeric` → number, digits and scale kept exactly
//!   (`123.4500`, int8 max); an exponent is expanded as `numeric_in` does (`1e+100` → 1 and 100 zeros,
//!   `1.5e-07` → `0.00000015`); `NaN`, `Infinity`, `-Infinity` → strings.
//! - `bool` → `true` / `false`.
//! - `json` `jsonb` → the JSON itself, insignificant whitespace removed.
//! - `bytea` → the hex string without `\x` (`"0102030405"`: wal2json strips it; RT test "handle insert
//!   with bytea data without double-encoding").
//! - `timestamp` → `"2026-08-21T12:00:00.123"`; `timestamptz` → `"2026-08-21T12:00:00.123+00:00"` (the
//!   ISO text with `T` for the space and the zone as `±HH:MM`).
//! - `_<type>` (arrays) → JSON array, nested for several dimensions, elements by the element type's
//!   rule, `NULL` → `null`.
//! - anything else (`text`, `uuid`, `date`, `time`, `interval`, `oid`, enums, …) → JSON string of the
//!   text.
//!
//! Notes on fidelity: `oid` is a string, as `to_jsonb` treats it (only the six numeric types are
//! numbers). Inside arrays `bytea` elements keep their `\x` (wal2json only strips it from a `bytea`
//! column). For a domain pass the base type's name. Composite values stay a string (their field names
//! are not in the text). `json` is not re-keyed or de-duplicated as `jsonb` would be. Dates and
//! timestamps assume the replication session uses `DateStyle = ISO` (the default).
//!
//! Every function is total: input that does not parse as its type falls back to a JSON string of the
//! raw text, so a surprising value never breaks a change event.

use std::fmt::Write as _;

use serde_json::value::RawValue;

use super::pgoutput::TupleValue;

/// `MAXDIM` in PostgreSQL: arrays have at most 6 dimensions (also bounds the parser's recursion).
const MAX_ARRAY_DIMS: usize = 6;
/// `numeric_in` rejects larger exponents; bounds the expansion of `1e…` to plain digits.
const MAX_EXPONENT: i64 = 1_000;

/// `to_jsonb(text::typname)` as JSON text. `typname` is `pg_type.typname` (`int4`, `_text`, …).
pub fn to_json(typname: &str, text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    match typname.strip_prefix('_') {
        Some(element) => {
            if !write_array(&mut out, element, text) {
                out.clear();
                write_string(&mut out, text);
            }
        }
        None => write_scalar(&mut out, typname, text, false),
    }
    out
}

/// Same as [`to_json`], as a [`RawValue`] to embed in serde-serialized structures.
pub fn to_raw_json(typname: &str, text: &str) -> Box<RawValue> {
    let value = RawValue::from_string(to_json(typname, text));
    // The text is always valid JSON; the fallback only guards against a bug here.
    debug_assert!(value.is_ok(), "values produced invalid JSON: {value:?}");
    value.unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// SQL NULL → JSON `null`.
pub fn null() -> String {
    "null".to_owned()
}

/// A decoded column value as JSON: `None` when the value is not in the message (unchanged TOAST, to
/// be taken from the old row) or is in binary format (never requested). Text that is not UTF-8 (a
/// server encoding other than UTF8) becomes a lossy JSON string.
pub fn tuple_value_to_json(typname: &str, value: &TupleValue) -> Option<String> {
    match value {
        TupleValue::Null => Some(null()),
        TupleValue::Text(bytes) => Some(match std::str::from_utf8(bytes) {
            Ok(text) => to_json(typname, text),
            Err(_) => to_json("text", &String::from_utf8_lossy(bytes)),
        }),
        TupleValue::UnchangedToast | TupleValue::Binary(_) => None,
    }
}

/// How `to_jsonb` renders a (non-array) type.
enum Kind {
    Bool,
    Number,
    Json,
    Bytea,
    Timestamp,
    TimestampTz,
    String,
}

fn kind(typname: &str) -> Kind {
    match typname {
        "bool" => Kind::Bool,
        "int2" | "int4" | "int8" | "float4" | "float8" | "numeric" => Kind::Number,
        "json" | "jsonb" => Kind::Json,
        "bytea" => Kind::Bytea,
        "timestamp" => Kind::Timestamp,
        "timestamptz" => Kind::TimestampTz,
        _ => Kind::String,
    }
}

fn write_scalar(out: &mut String, typname: &str, text: &str, in_array: bool) {
    match kind(typname) {
        Kind::Bool => match text {
            "t" | "true" => out.push_str("true"),
            "f" | "false" => out.push_str("false"),
            _ => write_string(out, text),
        },
        Kind::Number => {
            if !write_number(out, text) {
                write_string(out, text);
            }
        }
        Kind::Json => write_json(out, text),
        Kind::Bytea if !in_array => write_string(out, text.strip_prefix("\\x").unwrap_or(text)),
        Kind::Timestamp => write_timestamp(out, text, false),
        Kind::TimestampTz => write_timestamp(out, text, true),
        Kind::Bytea | Kind::String => write_string(out, text),
    }
}

/// A JSON string literal.
fn write_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if c < ' ' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number as `jsonb` stores it: `numeric_in` of the output text, printed by `numeric_out`. Keeps
/// the digits and scale of plain decimals, expands an exponent (`1.5e-07` → `0.00000015`), drops the
/// sign of a zero. Returns false (writing nothing) for anything that is not a finite number: `NaN`
/// and the infinities become strings, as in `to_jsonb`.
fn write_number(out: &mut String, text: &str) -> bool {
    let Some(number) = split_number(text.as_bytes()) else { return false };
    let Number { negative, int, frac, exponent } = number;
    let digits = || int.iter().chain(frac).copied();
    // Position of the decimal point within int ++ frac; scale (fraction digits) as numeric_in sets it.
    let Some(point) = i64::try_from(int.len()).ok().map(|len| len + exponent) else { return false };
    let total = int.len() + frac.len();
    let (int_digits, frac_digits): (Vec<u8>, Vec<u8>) = if point <= 0 {
        let mut frac = vec![b'0'; point.unsigned_abs() as usize];
        frac.extend(digits());
        (vec![b'0'], frac)
    } else if point as usize >= total {
        let mut int: Vec<u8> = digits().collect();
        int.resize(point as usize, b'0');
        (int, Vec::new())
    } else {
        let all: Vec<u8> = digits().collect();
        let (i, f) = all.split_at(point as usize);
        (i.to_vec(), f.to_vec())
    };
    let significant =
        int_digits.iter().position(|&d| d != b'0').unwrap_or(int_digits.len().saturating_sub(1));
    if negative && digits().any(|d| d != b'0') {
        out.push('-');
    }
    // Only ASCII digits were collected, so the pushes below are exact.
    out.extend(int_digits[significant..].iter().map(|&d| char::from(d)));
    if !frac_digits.is_empty() {
        out.push('.');
        out.extend(frac_digits.iter().map(|&d| char::from(d)));
    }
    true
}

/// The parts of `-?digits(.digits)?([eE][+-]?digits)?`.
struct Number<'a> {
    negative: bool,
    int: &'a [u8],
    frac: &'a [u8],
    exponent: i64,
}

fn split_number(text: &[u8]) -> Option<Number<'_>> {
    fn digits(s: &[u8]) -> (&[u8], &[u8]) {
        s.split_at(s.iter().take_while(|c| c.is_ascii_digit()).count())
    }
    let (negative, rest) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let (int, mut rest) = digits(rest);
    if int.is_empty() {
        return None;
    }
    let mut frac: &[u8] = &[];
    if let Some((b'.', after)) = rest.split_first() {
        (frac, rest) = digits(after);
        if frac.is_empty() {
            return None;
        }
    }
    let mut exponent = 0;
    if let Some((b'e' | b'E', after)) = rest.split_first() {
        let (sign, after) = match after.split_first() {
            Some((b'-', after)) => (-1, after),
            Some((b'+', after)) => (1, after),
            _ => (1, after),
        };
        let (exp_digits, after) = digits(after);
        if exp_digits.is_empty() || exp_digits.len() > 6 {
            return None;
        }
        let magnitude = exp_digits.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
        exponent = sign * magnitude;
        rest = after;
        if magnitude > MAX_EXPONENT {
            return None;
        }
    }
    rest.is_empty().then_some(Number { negative, int, frac, exponent })
}

/// `json`/`jsonb` text is already JSON; drop the whitespace outside strings (`jsonb_out` prints
/// `{"a": 1}`; the reference's clients see compact JSON). Invalid JSON becomes a string.
fn write_json(out: &mut String, text: &str) {
    let start = out.len();
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            in_string = c == '"';
            out.push(c);
        }
    }
    if serde_json::from_str::<&RawValue>(&out[start..]).is_err() {
        out.truncate(start);
        write_string(out, text);
    }
}

/// ISO `timestamp[tz]` text → the XSD form `to_jsonb` uses: `T` between date and time, and the zone
/// written `±HH:MM` (ISO output drops `:00` minutes). `infinity` and unexpected text pass through.
fn write_timestamp(out: &mut String, text: &str, with_zone: bool) {
    let Some((date, time)) = text.split_once(' ') else { return write_string(out, text) };
    let date_like = !date.is_empty() && date.bytes().all(|b| b.is_ascii_digit() || b == b'-');
    if !date_like || !time.starts_with(|c: char| c.is_ascii_digit()) {
        return write_string(out, text);
    }
    let mut iso = String::with_capacity(text.len() + 3);
    iso.push_str(date);
    iso.push('T');
    match time.find(['+', '-']).filter(|_| with_zone) {
        Some(zone_at) => {
            let (clock, zone) = time.split_at(zone_at);
            let zone_len = zone.find(' ').unwrap_or(zone.len()); // a " BC" suffix follows the zone
            let (zone, suffix) = zone.split_at(zone_len);
            iso.push_str(clock);
            iso.push_str(zone);
            if zone.len() == 3 {
                iso.push_str(":00");
            }
            iso.push_str(suffix);
        }
        None => iso.push_str(time),
    }
    write_string(out, &iso);
}

/// A PostgreSQL array literal (`array_out`) → a JSON array. Returns false if the text is not one.
fn write_array(out: &mut String, element: &str, text: &str) -> bool {
    // Only `box` uses another delimiter among the built-in types.
    let delimiter = if element == "box" { b';' } else { b',' };
    let mut parser = ArrayParser { s: text.as_bytes(), pos: 0, delimiter };
    parser.skip_whitespace();
    if parser.peek() == Some(b'[') {
        // Dimension decoration (`[0:2]={…}`), printed when a lower bound is not 1; to_jsonb ignores it.
        let Some(eq) = parser.s.iter().position(|&c| c == b'=') else { return false };
        parser.pos = eq + 1;
        parser.skip_whitespace();
    }
    if !parser.level(out, element, 1) {
        return false;
    }
    parser.skip_whitespace();
    parser.pos == parser.s.len()
}

/// Cursor over an array literal; `pos <= s.len()` always holds.
struct ArrayParser<'a> {
    s: &'a [u8],
    pos: usize,
    delimiter: u8,
}

impl ArrayParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(is_array_space) {
            self.pos += 1;
        }
    }

    /// `{ item (delimiter item)* }` or `{}`, where an item is a nested level or an element.
    fn level(&mut self, out: &mut String, element: &str, depth: usize) -> bool {
        if depth > MAX_ARRAY_DIMS || self.next() != Some(b'{') {
            return false;
        }
        out.push('[');
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            out.push(']');
            return true;
        }
        loop {
            self.skip_whitespace();
            if self.peek() == Some(b'{') {
                if !self.level(out, element, depth + 1) {
                    return false;
                }
            } else {
                match self.element() {
                    Some(Some(text)) => write_scalar(out, element, &text, true),
                    Some(None) => out.push_str("null"),
                    None => return false,
                }
            }
            self.skip_whitespace();
            match self.next() {
                Some(c) if c == self.delimiter => out.push(','),
                Some(b'}') => break,
                _ => return false,
            }
        }
        out.push(']');
        true
    }

    /// One element: `Some(None)` for an unquoted NULL, `Some(Some(text))` for a value, `None` if the
    /// literal is malformed. Backslash escapes the next byte, quoted or not.
    fn element(&mut self) -> Option<Option<String>> {
        let mut buf = Vec::new();
        if self.peek() == Some(b'"') {
            self.pos += 1;
            loop {
                match self.next()? {
                    b'\\' => buf.push(self.next()?),
                    b'"' => break,
                    c => buf.push(c),
                }
            }
            return String::from_utf8(buf).ok().map(Some);
        }
        let (mut escaped, mut keep) = (false, 0);
        loop {
            match self.peek()? {
                c if c == self.delimiter || c == b'}' => break,
                b'{' | b'"' => return None,
                b'\\' => {
                    self.pos += 1;
                    buf.push(self.next()?);
                    escaped = true;
                    keep = buf.len();
                }
                c => {
                    self.pos += 1;
                    buf.push(c);
                    if !is_array_space(c) {
                        keep = buf.len();
                    }
                }
            }
        }
        buf.truncate(keep); // unescaped trailing whitespace is not part of the value
        if buf.is_empty() {
            return None;
        }
        if !escaped && buf.eq_ignore_ascii_case(b"NULL") {
            return Some(None);
        }
        String::from_utf8(buf).ok().map(Some)
    }
}

/// PostgreSQL's `scanner_isspace`.
fn is_array_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

#[cfg(test)]
#[path = "values_test.rs"]
mod tests;
