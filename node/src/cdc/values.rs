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
mod tests {
    use bytes::Bytes;

    use super::*;

    fn json(typname: &str, text: &str) -> String {
        let out = to_json(typname, text);
        assert!(serde_json::from_str::<&RawValue>(&out).is_ok(), "{typname} {text:?} -> invalid {out}");
        out
    }

    #[test]
    fn integers_keep_their_digits() {
        assert_eq!(json("int2", "-32768"), "-32768");
        assert_eq!(json("int4", "42"), "42");
        assert_eq!(json("int4", "0"), "0");
        assert_eq!(json("int8", "9223372036854775807"), "9223372036854775807");
        assert_eq!(json("int8", "-9223372036854775808"), "-9223372036854775808");
        assert_eq!(json("int4", "12abc"), r#""12abc""#);
        assert_eq!(json("int4", ""), r#""""#);
    }

    #[test]
    fn oid_is_a_string_like_to_jsonb() {
        assert_eq!(json("oid", "16385"), r#""16385""#);
    }

    #[test]
    fn floats() {
        assert_eq!(json("float8", "1.5"), "1.5");
        assert_eq!(json("float4", "-0.25"), "-0.25");
        assert_eq!(json("float8", "NaN"), r#""NaN""#);
        assert_eq!(json("float8", "Infinity"), r#""Infinity""#);
        assert_eq!(json("float4", "-Infinity"), r#""-Infinity""#);
        assert_eq!(json("float8", "1e+100"), format!("1{}", "0".repeat(100)));
        assert_eq!(json("float8", "1.5e-07"), "0.00000015");
        assert_eq!(json("float8", "-1.2345e+02"), "-123.45");
        assert_eq!(json("float8", "1.2345E2"), "123.45");
        assert_eq!(json("float8", "1.5e+3"), "1500");
        assert_eq!(json("float8", "-0"), "0");
        assert_eq!(json("float8", "1e5000"), r#""1e5000""#, "beyond numeric_in's exponent range");
        assert_eq!(json("float8", "1."), r#""1.""#);
        assert_eq!(json("float8", ".5"), r#"".5""#);
        assert_eq!(json("float8", "1e"), r#""1e""#);
    }

    #[test]
    fn numeric_keeps_scale_and_precision() {
        assert_eq!(json("numeric", "123.4500"), "123.4500");
        assert_eq!(json("numeric", "-0.000100"), "-0.000100");
        assert_eq!(json("numeric", "0.000"), "0.000");
        let big = "123456789012345678901234567890.123456789012345678901234567890";
        assert_eq!(json("numeric", big), big);
        assert_eq!(json("numeric", "NaN"), r#""NaN""#);
        assert_eq!(json("numeric", "Infinity"), r#""Infinity""#);
        assert_eq!(json("numeric", "-Infinity"), r#""-Infinity""#);
        assert_eq!(json("numeric", "007"), "7");
    }

    #[test]
    fn booleans() {
        assert_eq!(json("bool", "t"), "true");
        assert_eq!(json("bool", "f"), "false");
        assert_eq!(json("bool", "maybe"), r#""maybe""#);
    }

    #[test]
    fn json_and_jsonb_are_embedded_compactly() {
        assert_eq!(
            json("jsonb", r#"{"a": 1, "b": [1, 2.50], "c": null}"#),
            r#"{"a":1,"b":[1,2.50],"c":null}"#
        );
        assert_eq!(json("json", "{\n  \"s\": \"x  y \\\" z\\\\\"\n}"), r#"{"s":"x  y \" z\\"}"#);
        assert_eq!(json("jsonb", r#""just a string""#), r#""just a string""#);
        assert_eq!(json("jsonb", "12345678901234567890123"), "12345678901234567890123");
        assert_eq!(json("json", "[]"), "[]");
        assert_eq!(json("json", "{bad"), r#""{bad""#);
        assert_eq!(json("json", ""), r#""""#);
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(json("text", "plain"), r#""plain""#);
        assert_eq!(json("text", "he said \"hi\"\n\t\\"), r#""he said \"hi\"\n\t\\""#);
        assert_eq!(json("text", "\u{1}\u{8}\u{c}\r"), r#""\u0001\b\f\r""#);
        assert_eq!(json("text", "café ✓ 😀"), "\"café ✓ 😀\"");
        for typname in ["varchar", "bpchar", "name", "char", "citext", "uuid"] {
            assert_eq!(json(typname, "a b"), r#""a b""#, "{typname}");
        }
        assert_eq!(
            json("uuid", "9c1e3e4c-7a5d-4c6b-8e1f-2a3b4c5d6e7f"),
            r#""9c1e3e4c-7a5d-4c6b-8e1f-2a3b4c5d6e7f""#
        );
    }

    #[test]
    fn bytea_is_hex_without_prefix() {
        assert_eq!(json("bytea", "\\x0102030405"), r#""0102030405""#);
        assert_eq!(json("bytea", "\\x"), r#""""#);
        assert_eq!(json("bytea", "abc\\000"), r#""abc\\000""#, "escape format passes through");
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(json("date", "2026-08-21"), r#""2026-08-21""#);
        assert_eq!(json("date", "infinity"), r#""infinity""#);
        assert_eq!(json("date", "0044-03-15 BC"), r#""0044-03-15 BC""#);
        assert_eq!(json("timestamp", "2026-08-21 12:00:00.123"), r#""2026-08-21T12:00:00.123""#);
        assert_eq!(json("timestamp", "2026-08-21 12:00:00"), r#""2026-08-21T12:00:00""#);
        assert_eq!(json("timestamp", "0044-03-15 12:00:00 BC"), r#""0044-03-15T12:00:00 BC""#);
        assert_eq!(json("timestamp", "-infinity"), r#""-infinity""#);
        assert_eq!(json("time", "12:00:00.5"), r#""12:00:00.5""#);
        assert_eq!(json("timetz", "12:00:00+05"), r#""12:00:00+05""#);
    }

    #[test]
    fn timestamptz_zone_is_hh_mm() {
        assert_eq!(json("timestamptz", "2026-08-21 12:00:00.123+00"), r#""2026-08-21T12:00:00.123+00:00""#);
        assert_eq!(json("timestamptz", "2026-08-21 12:00:00+05"), r#""2026-08-21T12:00:00+05:00""#);
        assert_eq!(json("timestamptz", "2026-08-21 12:00:00-03:30"), r#""2026-08-21T12:00:00-03:30""#);
        assert_eq!(json("timestamptz", "1850-01-01 00:00:00+00:53:28"), r#""1850-01-01T00:00:00+00:53:28""#);
        assert_eq!(json("timestamptz", "0044-03-15 12:00:00+00 BC"), r#""0044-03-15T12:00:00+00:00 BC""#);
        assert_eq!(json("timestamptz", "infinity"), r#""infinity""#);
        assert_eq!(json("timestamptz", "garbage text"), r#""garbage text""#);
    }

    #[test]
    fn other_types_are_strings_as_is() {
        for (typname, text) in [
            ("interval", "1 day 02:00:00"),
            ("inet", "192.168.0.1/24"),
            ("cidr", "10.0.0.0/8"),
            ("macaddr", "08:00:2b:01:02:03"),
            ("money", "$1,000.00"),
            ("tsvector", "'a' 'fat':2"),
            ("point", "(1,2)"),
            ("int4range", "[1,5)"),
            ("mood", "happy"),
        ] {
            let mut expected = String::new();
            write_string(&mut expected, text);
            assert_eq!(json(typname, text), expected, "{typname}");
        }
    }

    #[test]
    fn arrays() {
        assert_eq!(json("_int4", "{1,2,NULL}"), "[1,2,null]");
        assert_eq!(json("_int4", "{}"), "[]");
        assert_eq!(json("_int4", "{{1,2},{3,4}}"), "[[1,2],[3,4]]");
        assert_eq!(json("_int4", "[0:1]={1,2}"), "[1,2]");
        assert_eq!(json("_int4", "[1:1][1:2]={{1,2}}"), "[[1,2]]");
        assert_eq!(json("_int4", " { 1 , 2 } "), "[1,2]");
        assert_eq!(json("_bool", "{t,f,NULL}"), "[true,false,null]");
        assert_eq!(
            json("_float8", "{NaN,1.5,-Infinity,1e+20}"),
            r#"["NaN",1.5,"-Infinity",100000000000000000000]"#
        );
        assert_eq!(json("_numeric", "{1.50,-2}"), "[1.50,-2]");
        assert_eq!(
            json("_text", r#"{"a,b","c\"d",NULL,"NULL",null,plain,"back\\slash","{x}"}"#),
            r#"["a,b","c\"d",null,"NULL",null,"plain","back\\slash","{x}"]"#
        );
        assert_eq!(json("_text", r#"{a\,b,"",c\ }"#), r#"["a,b","","c "]"#);
        assert_eq!(json("_text", "{é,\"✓ \"}"), r#"["é","✓ "]"#);
        assert_eq!(json("_jsonb", r#"{"{\"a\": 1}","[1, 2]",NULL}"#), r#"[{"a":1},[1,2],null]"#);
        assert_eq!(json("_json", r#"{"{\"s\": \"q\\\"\"}"}"#), r#"[{"s":"q\""}]"#);
        assert_eq!(
            json("_timestamptz", r#"{"2026-08-21 12:00:00+00","2026-08-21 13:00:00.5+01"}"#),
            r#"["2026-08-21T12:00:00+00:00","2026-08-21T13:00:00.5+01:00"]"#
        );
        assert_eq!(json("_bytea", r#"{"\\x0102"}"#), r#"["\\x0102"]"#, "elements keep \\x");
        assert_eq!(
            json("_uuid", "{9c1e3e4c-7a5d-4c6b-8e1f-2a3b4c5d6e7f}"),
            r#"["9c1e3e4c-7a5d-4c6b-8e1f-2a3b4c5d6e7f"]"#
        );
        assert_eq!(json("_box", "{(1,1),(0,0);(2,2),(1,1)}"), r#"["(1,1),(0,0)","(2,2),(1,1)"]"#);
        assert_eq!(json("_int4", "{{{{{{1}}}}}}"), "[[[[[[1]]]]]]");
    }

    #[test]
    fn malformed_arrays_become_the_raw_string() {
        for text in [
            "{1,2",
            "{1,,2}",
            "{,}",
            "1,2",
            "{\"abc}",
            "{1}x",
            "{{{{{{{1}}}}}}}",
            "[0:1]{1,2}",
            "{a\"b}",
            "{a{b}",
            "{1,2}}",
            "{\\",
            "",
        ] {
            let mut expected = String::new();
            write_string(&mut expected, text);
            assert_eq!(json("_int4", text), expected, "{text:?}");
        }
    }

    #[test]
    fn null_and_tuple_values() {
        assert_eq!(null(), "null");
        assert_eq!(to_raw_json("numeric", "1.50").get(), "1.50");
        let text = |s: &'static str| TupleValue::Text(Bytes::from_static(s.as_bytes()));
        assert_eq!(tuple_value_to_json("int4", &text("7")), Some("7".into()));
        assert_eq!(tuple_value_to_json("int4", &TupleValue::Null), Some("null".into()));
        assert!(tuple_value_to_json("int4", &TupleValue::UnchangedToast).is_none());
        assert!(tuple_value_to_json("int4", &TupleValue::Binary(Bytes::from_static(b"\0"))).is_none());
        let latin1 = TupleValue::Text(Bytes::from_static(b"caf\xe9"));
        assert_eq!(tuple_value_to_json("text", &latin1), Some("\"caf\u{fffd}\"".into()));
    }

    #[test]
    fn random_input_always_gives_valid_json() {
        const TYPES: &[&str] = &[
            "int4",
            "int8",
            "float8",
            "numeric",
            "bool",
            "json",
            "jsonb",
            "text",
            "bytea",
            "date",
            "timestamp",
            "timestamptz",
            "_int4",
            "_text",
            "_jsonb",
            "_float8",
            "_timestamptz",
            "_bytea",
            "_box",
            "_bool",
            "_",
        ];
        const ALPHABET: &[&str] = &[
            "{", "}", "[", "]", ":", "=", ",", ";", "\"", "\\", " ", "\t", "\n", "NULL", "null", "t", "-",
            "+", ".", "e", "E", "0", "1", "9", "x", "T", "é", "😀", "\u{1}", "NaN", "Infinity", "BC",
        ];
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..30_000 {
            let typname = TYPES[(next() % TYPES.len() as u64) as usize];
            let len = next() % 24;
            let text: String =
                (0..len).map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize]).collect();
            let out = to_json(typname, &text);
            assert!(serde_json::from_str::<&RawValue>(&out).is_ok(), "{typname} {text:?} -> {out}");
        }
    }
}
