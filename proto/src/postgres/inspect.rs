//! Elixir's `inspect/2` for the few term shapes the reference server puts in its postgres_changes
//! messages: strings, lists, tuples, maps, numbers, booleans and `nil` (decoded JSON, filter tuples).
//!
//! The texts clients see embed `inspect(term)` (one line) or `inspect(term, pretty: true)` (width 80),
//! so the layout rules of `Inspect.Algebra` matter: containers of plain items fill lines ("flex"),
//! containers holding other containers put one item per line ("strict"); every container shows at
//! most 50 items (`limit`), and strings at most 4096 characters (`printable_limit`). This module
//! renders a small document tree with those rules; it was written from the documented behaviour of
//! Elixir 1.19 and Erlang's shortest float formatting, not translated from their source.

use serde_json::Value;

/// `Inspect.Opts` defaults.
const LIMIT: usize = 50;
const PRINTABLE_LIMIT: usize = 4096;
/// Width of `pretty: true`.
const PRETTY_WIDTH: usize = 80;

/// An Elixir term, as far as these messages need one.
#[derive(Debug, Clone)]
pub(crate) enum Term {
    Str(String),
    Int(i128),
    Float(f64),
    Bool(bool),
    Nil,
    List(Vec<Term>),
    Tuple(Vec<Term>),
    /// Entries in key order (Erlang term order for the small maps JSON decodes to).
    Map(Vec<(Term, Term)>),
}

impl Term {
    /// A decoded JSON value as Jason gives it to the reference: objects become maps with sorted
    /// string keys, integers stay integers and other numbers become floats.
    pub(crate) fn from_json(value: &Value) -> Term {
        match value {
            Value::Null => Term::Nil,
            Value::Bool(b) => Term::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Term::Int(i.into()),
                (_, Some(u)) => Term::Int(u.into()),
                _ => Term::Float(n.as_f64().unwrap_or(0.0)),
            },
            Value::String(s) => Term::Str(s.clone()),
            Value::Array(items) => Term::List(items.iter().map(Term::from_json).collect()),
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                Term::Map(
                    entries.into_iter().map(|(k, v)| (Term::Str(k.clone()), Term::from_json(v))).collect(),
                )
            }
        }
    }

    pub(crate) fn strings<S: AsRef<str>>(items: &[S]) -> Term {
        Term::List(items.iter().map(|s| Term::Str(s.as_ref().to_owned())).collect())
    }
}

/// `inspect(term)`: one line.
pub(crate) fn inspect(term: &Term) -> String {
    render(&to_doc(term, LIMIT), None)
}

/// `inspect(term, pretty: true)`: width 80.
pub(crate) fn inspect_pretty(term: &Term) -> String {
    render(&to_doc(term, LIMIT), Some(PRETTY_WIDTH))
}

// ---------------------------------------------------------------------------------------------------
// Document tree and layout.

#[derive(Debug, Clone)]
enum Doc {
    Text(String),
    Concat(Vec<Doc>),
    /// A line break opportunity shown as `text` when not broken. `flex` breaks are decided one by one;
    /// strict ones break together with their group.
    Break {
        text: &'static str,
        flex: bool,
    },
    Nest(usize, Box<Doc>),
    Group(Box<Doc>),
}

impl Doc {
    fn text(s: impl Into<String>) -> Doc {
        Doc::Text(s.into())
    }

    /// Plain text (no breaks, no groups): what makes a container "flex".
    fn is_simple(&self) -> bool {
        match self {
            Doc::Text(_) => true,
            Doc::Concat(parts) => parts.iter().all(Doc::is_simple),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Flat,
    Break,
}

/// Work item of the layout machine; `Restore` ends a group entered while measuring.
#[derive(Clone, Copy)]
enum Item<'a> {
    Doc(usize, Mode, &'a Doc),
    Restore(bool),
}

/// Whether the items (top of stack = last) fit in `width` from column `col`. `seen_break` says a break
/// was crossed (before one, an over-long text cannot be helped, so it "fits"); reaching a break of a
/// broken group ends the measure successfully.
fn fits(width: usize, mut col: usize, mut seen_break: bool, mut stack: Vec<Item<'_>>) -> bool {
    loop {
        if col > width && seen_break {
            return false;
        }
        let Some(item) = stack.pop() else { return true };
        match item {
            Item::Restore(b) => seen_break = b,
            Item::Doc(indent, mode, doc) => match doc {
                Doc::Text(s) => col += s.len(),
                Doc::Concat(parts) => {
                    stack.extend(parts.iter().rev().map(|d| Item::Doc(indent, mode, d)));
                }
                Doc::Break { text, .. } => {
                    if mode == Mode::Break {
                        return true;
                    }
                    col += text.len();
                    seen_break = true;
                }
                Doc::Nest(n, inner) => stack.push(Item::Doc(indent + n, mode, inner)),
                Doc::Group(inner) => {
                    stack.push(Item::Restore(seen_break));
                    stack.push(Item::Doc(indent, Mode::Flat, inner));
                }
            },
        }
    }
}

fn render(doc: &Doc, width: Option<usize>) -> String {
    let mut out = String::new();
    let mut col = 0usize;
    let mut stack: Vec<(usize, Mode, &Doc)> = vec![(0, Mode::Flat, doc)];
    while let Some((indent, mode, doc)) = stack.pop() {
        match doc {
            Doc::Text(s) => {
                out.push_str(s);
                col += s.len();
            }
            Doc::Concat(parts) => stack.extend(parts.iter().rev().map(|d| (indent, mode, d))),
            Doc::Nest(n, inner) => stack.push((indent + n, mode, inner)),
            Doc::Break { text, flex: true } => {
                let keep = match width {
                    None => true,
                    Some(_) if mode == Mode::Flat => true,
                    Some(w) => {
                        let rest = stack.iter().map(|&(i, m, d)| Item::Doc(i, m, d)).collect();
                        fits(w, col + text.len(), true, rest)
                    }
                };
                if keep {
                    out.push_str(text);
                    col += text.len();
                } else {
                    newline(&mut out, &mut col, indent);
                }
            }
            Doc::Break { text, flex: false } => {
                if mode == Mode::Break {
                    newline(&mut out, &mut col, indent);
                } else {
                    out.push_str(text);
                    col += text.len();
                }
            }
            Doc::Group(inner) => {
                let flat = match width {
                    None => true,
                    Some(w) => fits(w, col, false, vec![Item::Doc(indent, Mode::Flat, inner)]),
                };
                stack.push((indent, if flat { Mode::Flat } else { Mode::Break }, inner));
            }
        }
    }
    out
}

fn newline(out: &mut String, col: &mut usize, indent: usize) {
    out.push('\n');
    out.push_str(&" ".repeat(indent));
    *col = indent;
}

// ---------------------------------------------------------------------------------------------------
// Terms to documents.

#[derive(Clone, Copy, PartialEq, Eq)]
enum BreakStyle {
    /// Flex if every item is plain text, else strict (lists).
    Maybe,
    /// Always flex (tuples).
    Flex,
    /// Always strict (maps).
    Strict,
}

fn container(left: &str, items: Vec<Doc>, right: &str, style: BreakStyle) -> Doc {
    if items.is_empty() {
        return Doc::text(format!("{left}{right}"));
    }
    let flex = style == BreakStyle::Flex || (style == BreakStyle::Maybe && items.iter().all(Doc::is_simple));
    let sep = Doc::Break { text: " ", flex };
    let mut joined = Vec::with_capacity(items.len() * 3);
    let last = items.len() - 1;
    for (i, item) in items.into_iter().enumerate() {
        joined.push(item);
        if i != last {
            joined.push(Doc::text(","));
            joined.push(sep.clone());
        }
    }
    let joined = Doc::Concat(joined);
    if flex {
        Doc::Group(Box::new(Doc::Concat(vec![
            Doc::text(left),
            Doc::Nest(1, Box::new(joined)),
            Doc::text(right),
        ])))
    } else {
        let open = Doc::Concat(vec![Doc::text(left), Doc::Break { text: "", flex: false }, joined]);
        Doc::Group(Box::new(Doc::Concat(vec![
            Doc::Nest(2, Box::new(open)),
            Doc::Break { text: "", flex: false },
            Doc::text(right),
        ])))
    }
}

/// Items of a container under `limit`: each item sees the limit left after it, and once it reaches
/// zero with items remaining, `...` stands for the rest.
fn limited<T>(items: &[T], mut limit: usize, mut each: impl FnMut(&T, usize) -> Doc) -> Vec<Doc> {
    let mut docs = Vec::new();
    for item in items {
        if limit == 0 {
            docs.push(Doc::text("..."));
            break;
        }
        limit -= 1;
        docs.push(each(item, limit));
    }
    docs
}

fn to_doc(term: &Term, limit: usize) -> Doc {
    match term {
        Term::Str(s) => Doc::Text(inspect_binary(s)),
        Term::Int(i) => Doc::Text(i.to_string()),
        Term::Float(f) => Doc::Text(format_float(*f)),
        Term::Bool(b) => Doc::text(if *b { "true" } else { "false" }),
        Term::Nil => Doc::text("nil"),
        Term::List(items) => match charlist(items) {
            Some(text) => Doc::Text(format!("~c\"{}\"", escape(&text, PRINTABLE_LIMIT).0)),
            None => container("[", limited(items, limit, to_doc), "]", BreakStyle::Maybe),
        },
        Term::Tuple(items) => container("{", limited(items, limit, to_doc), "}", BreakStyle::Flex),
        Term::Map(entries) => {
            let docs = limited(entries, limit, |(k, v), l| {
                Doc::Concat(vec![to_doc(k, l), Doc::text(" => "), to_doc(v, l)])
            });
            container("%{", docs, "}", BreakStyle::Strict)
        }
    }
}

/// A list of integers that are all printable ASCII is shown as a charlist.
fn charlist(items: &[Term]) -> Option<String> {
    if items.is_empty() {
        return None;
    }
    items
        .iter()
        .map(|t| match t {
            Term::Int(i) if matches!(*i, 7..=13 | 27 | 32..=127) => Some(char::from(*i as u8)),
            _ => None,
        })
        .collect()
}

/// A string: quoted and escaped when printable, else its bytes as `<<1, 2>>`.
fn inspect_binary(s: &str) -> String {
    if printable(s) {
        let (escaped, truncated) = escape(s, PRINTABLE_LIMIT);
        if truncated {
            format!("\"{escaped}\" <> ...")
        } else {
            format!("\"{escaped}\"")
        }
    } else {
        let bytes: Vec<u8> = s.bytes().collect();
        render(
            &container("<<", limited(&bytes, LIMIT, |b, _| Doc::Text(b.to_string())), ">>", BreakStyle::Flex),
            None,
        )
    }
}

/// `String.printable?/2` over the first 4096 characters.
fn printable(s: &str) -> bool {
    s.chars().take(PRINTABLE_LIMIT).all(|c| {
        matches!(c as u32, 0x20..=0x7E | 0xA0..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
            || matches!(c, '\n' | '\r' | '\t' | '\u{b}' | '\u{8}' | '\u{c}' | '\u{1b}' | '\u{7f}' | '\u{7}')
    })
}

/// Escapes for a double-quoted Elixir string; returns whether it stopped at `limit` characters.
fn escape(s: &str, limit: usize) -> (String, bool) {
    let mut out = String::with_capacity(s.len() + 2);
    let mut chars = s.chars().peekable();
    let mut count = 0;
    while let Some(c) = chars.next() {
        if count == limit {
            return (out, true);
        }
        count += 1;
        match c {
            '"' => out.push_str("\\\""),
            '#' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push_str("\\#{");
            }
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{7f}' => out.push_str("\\d"),
            '\u{1b}' => out.push_str("\\e"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c if invisible(c) => out.push_str(&format!("\\u{:04X}", c as u32)),
            c if matches!(c as u32, 0x20..=0x7E | 0xA0..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF) => {
                out.push(c)
            }
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02X}", c as u32)),
            c => out.push_str(&format!("\\x{{{:04X}}}", c as u32)),
        }
    }
    (out, false)
}

/// Zero-width and alternative-space characters Elixir shows as `\uXXXX`.
fn invisible(c: char) -> bool {
    matches!(
        c as u32,
        0xFEFF
            | 0x2061..=0x2064
            | 0x061C
            | 0x200E
            | 0x200F
            | 0x202A..=0x202E
            | 0x2066..=0x2069
            | 0xFFF9..=0xFFFC
            | 0x200C
            | 0x200D
            | 0x034F
            | 0x00A0
            | 0x200B
            | 0x2060
            | 0x2028
            | 0x2029
            | 0x2000..=0x200A
            | 0x205F
    )
}

/// Erlang's shortest round-trip float text (`io_lib_format:fwrite_g/1`), e.g. `1.5`, `100.0`, `1.0e3`,
/// `0.001`, `1.0e-4`.
fn format_float(f: f64) -> String {
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    if !f.is_finite() {
        // JSON cannot carry these; keep something readable.
        return f.to_string();
    }
    // `{:e}` prints the shortest round-trip digits: "1.2345e6".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exp: i64 = exp.parse().unwrap_or(0);
    let len = digits.len() as i64;
    // value = digits × 10^place
    let place = exp - (len - 1);
    let exp_text = exp.to_string();
    let exp_cost = exp_text.len() as i64 + 2;
    let body = if place < 0 {
        if exp >= 0 {
            let split = (len + place) as usize;
            format!("{}.{}", &digits[..split], &digits[split..])
        } else if 2 - place - len <= exp_cost {
            format!("0.{}{}", "0".repeat((-place - len) as usize), digits)
        } else {
            sci_form(&digits, &exp_text)
        }
    } else {
        let dot = i64::from(len == 1);
        if exp_cost + dot >= place + 2 && f.abs() < 9_007_199_254_740_992.0 {
            format!("{}{}.0", digits, "0".repeat(place as usize))
        } else {
            sci_form(&digits, &exp_text)
        }
    };
    if f < 0.0 {
        format!("-{body}")
    } else {
        body
    }
}

fn sci_form(digits: &str, exp: &str) -> String {
    if digits.len() == 1 {
        format!("{digits}.0e{exp}")
    } else {
        format!("{}.{}e{}", &digits[..1], &digits[1..], exp)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tuple(col: &str, op: &str, value: &str, negate: bool) -> Term {
        Term::Tuple(vec![
            Term::Str(col.into()),
            Term::Str(op.into()),
            Term::Str(value.into()),
            Term::Bool(negate),
        ])
    }

    #[test]
    fn strings_and_lists() {
        assert_eq!(inspect(&Term::strings(&["foo", "hey"])), r#"["foo", "hey"]"#);
        assert_eq!(inspect(&Term::strings(&["undefined"])), r#"["undefined"]"#);
        assert_eq!(inspect(&Term::List(vec![])), "[]");
        assert_eq!(inspect(&Term::Str("a\"b\\c\n#{x}".into())), r#""a\"b\\c\n\#{x}""#);
        assert_eq!(inspect(&Term::Str("olá \u{200B}".into())), "\"olá \\u200B\"");
        assert_eq!(inspect(&Term::Str("a\u{1}".into())), "<<97, 1>>");
        assert_eq!(inspect(&Term::Str("\0".into())), "<<0>>");
    }

    #[test]
    fn json_maps() {
        assert_eq!(inspect(&Term::from_json(&json!({}))), "%{}");
        let v = json!({"table": null, "schema": "public", "event": "*", "n": 1, "f": 1.5, "l": [104, 105]});
        assert_eq!(
            inspect(&Term::from_json(&v)),
            r#"%{"event" => "*", "f" => 1.5, "l" => ~c"hi", "n" => 1, "schema" => "public", "table" => nil}"#
        );
        let v = json!({"filter": [123], "nested": {"b": [true, false, "x"]}});
        assert_eq!(
            inspect(&Term::from_json(&v)),
            r#"%{"filter" => ~c"{", "nested" => %{"b" => [true, false, "x"]}}"#
        );
        let v = json!({"a": [1000]});
        assert_eq!(inspect(&Term::from_json(&v)), r#"%{"a" => [1000]}"#);
    }

    #[test]
    fn floats() {
        for (f, s) in [
            (1.5, "1.5"),
            (100.0, "100.0"),
            (1000.0, "1.0e3"),
            (1234.5, "1234.5"),
            (0.001, "0.001"),
            (0.0001, "1.0e-4"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1.0e20, "1.0e20"),
            (123456789.0, "123456789.0"),
            (1.25e-7, "1.25e-7"),
            (0.0, "0.0"),
        ] {
            assert_eq!(format_float(f), s, "{f}");
        }
    }

    #[test]
    fn limit_truncates() {
        let items: Vec<Term> = (0..60).map(|i| Term::Str(i.to_string())).collect();
        let s = inspect(&Term::List(items));
        assert!(s.ends_with(r#""48", "49", ...]"#), "{s}");
        // The 47th tuple of a list sees a limit of 3.
        let tuples: Vec<Term> = (0..48).map(|i| tuple(&format!("c{i}"), "eq", "1", false)).collect();
        let s = inspect(&Term::List(tuples));
        assert!(s.ends_with(r#"{"c46", "eq", "1", ...}, {"c47", "eq", ...}]"#), "{s}");
    }

    #[test]
    fn flex_container_at_narrow_width() {
        // The example of `Inspect.Algebra.container_doc/6`'s documentation, at width 5.
        let items = (1..=5).map(|i| Doc::Text(i.to_string())).collect();
        assert_eq!(
            render(&container("[", items, "]", BreakStyle::Maybe), Some(5)),
            "[1,\n 2,\n 3,\n 4,\n 5]"
        );
    }

    #[test]
    fn pretty_fits_on_one_line() {
        let t = Term::List(vec![tuple("notacolumn", "eq", "123", false)]);
        assert_eq!(inspect_pretty(&t), r#"[{"notacolumn", "eq", "123", false}]"#);
    }

    #[test]
    fn pretty_breaks_strict_lists_one_item_per_line() {
        let t = Term::List(vec![
            tuple("column_one", "eq", "value_number_one", false),
            tuple("column_two", "neq", "value_number_two", true),
        ]);
        assert_eq!(
            inspect_pretty(&t),
            "[\n  {\"column_one\", \"eq\", \"value_number_one\", false},\n  {\"column_two\", \"neq\", \"value_number_two\", true}\n]"
        );
    }

    #[test]
    fn pretty_flex_fills_lines() {
        let cols: Vec<String> = (0..12).map(|i| format!("column_{i:02}")).collect();
        let s = inspect_pretty(&Term::strings(&cols));
        assert_eq!(
            s,
            "[\"column_00\", \"column_01\", \"column_02\", \"column_03\", \"column_04\", \"column_05\",\n \
             \"column_06\", \"column_07\", \"column_08\", \"column_09\", \"column_10\", \"column_11\"]"
        );
        assert!(s.lines().all(|l| l.len() <= 80));
    }

    #[test]
    fn pretty_long_tuple_wraps_inside_strict_list() {
        let long = "v".repeat(70);
        let t = Term::List(vec![tuple("col", "eq", &long, false), tuple("b", "eq", "1", false)]);
        assert_eq!(
            inspect_pretty(&t),
            format!(
                "[\n  {{\"col\", \"eq\",\n   \"{long}\",\n   false}},\n  {{\"b\", \"eq\", \"1\", false}}\n]"
            )
        );
    }
}
