//! The `filter` grammar of a postgres_changes subscription (PROTOCOL.md §5.2).
//!
//! A filter is a comma-separated AND of conditions `column=op.value` or `column=not.op.value`. Commas
//! split only at the top level: not inside parentheses, and not inside a double-quoted value (a `"`
//! opens a quote only right after `.`, `(` or `,`). A value that starts with `"` is PostgREST-quoted:
//! `\x` stands for `x`, and a quote that is unterminated or followed by more text leaves the value as
//! written. `in` takes a parenthesised list, read as the PostgreSQL array literal `{...}` the reference
//! stores (elements may be double-quoted to hold commas).
//!
//! Parsing follows the reference server's parser exactly, including its error texts. What it leaves to
//! the database (the column exists, the value casts to the column type, `is` keywords, regex syntax, at
//! most 100 `in` values) is checked at subscribe time by the node, which knows the column types.

use std::fmt;

use super::inspect::{inspect, Term};

/// A filter operator (`realtime.equality_op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterOp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    In,
    Like,
    Ilike,
    Is,
    Match,
    Imatch,
    IsDistinct,
}

impl FilterOp {
    pub const ALL: [FilterOp; 13] = [
        FilterOp::Eq,
        FilterOp::Neq,
        FilterOp::Lt,
        FilterOp::Lte,
        FilterOp::Gt,
        FilterOp::Gte,
        FilterOp::In,
        FilterOp::Like,
        FilterOp::Ilike,
        FilterOp::Is,
        FilterOp::Match,
        FilterOp::Imatch,
        FilterOp::IsDistinct,
    ];

    /// The name used in filters (`eq`, …, `isdistinct`).
    pub fn as_str(self) -> &'static str {
        match self {
            FilterOp::Eq => "eq",
            FilterOp::Neq => "neq",
            FilterOp::Lt => "lt",
            FilterOp::Lte => "lte",
            FilterOp::Gt => "gt",
            FilterOp::Gte => "gte",
            FilterOp::In => "in",
            FilterOp::Like => "like",
            FilterOp::Ilike => "ilike",
            FilterOp::Is => "is",
            FilterOp::Match => "match",
            FilterOp::Imatch => "imatch",
            FilterOp::IsDistinct => "isdistinct",
        }
    }

    /// The operator with this name; names are case-sensitive, as in the reference.
    pub fn from_name(name: &str) -> Option<FilterOp> {
        FilterOp::ALL.into_iter().find(|op| op.as_str() == name)
    }
}

impl fmt::Display for FilterOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The right-hand side of a condition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FilterValue {
    /// Every operator but `in`: the value with PostgREST quoting removed.
    Single(String),
    /// `in`: the list elements, unquoted. Unquoted `NULL` elements are left out (see [`parse_filter`]).
    List(Vec<String>),
}

impl FilterValue {
    /// The single value, `None` for a list.
    pub fn as_single(&self) -> Option<&str> {
        match self {
            FilterValue::Single(s) => Some(s),
            FilterValue::List(_) => None,
        }
    }

    /// The text the reference stores in `realtime.subscription.filters[].value` and shows in its
    /// messages: the value itself, or for `in` the array literal `{a,b,"c,d"}` (elements quoted only
    /// where PostgreSQL would need it).
    pub fn stored_text(&self) -> String {
        match self {
            FilterValue::Single(s) => s.clone(),
            FilterValue::List(items) => {
                let items: Vec<String> = items.iter().map(|s| array_element_text(s)).collect();
                format!("{{{}}}", items.join(","))
            }
        }
    }
}

/// One condition of a filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Condition {
    pub column: String,
    pub op: FilterOp,
    /// The `not.` prefix: the comparison is negated (`IS NOT …` / `IS NOT DISTINCT FROM` for
    /// `is` / `isdistinct`).
    pub negate: bool,
    pub value: FilterValue,
}

impl Condition {
    /// The reference's rendering of its filter tuple, e.g. `{"notacolumn", "eq", "123", false}`.
    pub fn describe(&self) -> String {
        inspect(&self.to_term())
    }

    pub(crate) fn to_term(&self) -> Term {
        Term::Tuple(vec![
            Term::Str(self.column.clone()),
            Term::Str(self.op.as_str().to_owned()),
            Term::Str(self.value.stored_text()),
            Term::Bool(self.negate),
        ])
    }
}

/// Why a filter was refused; `Display` is the exact text of the `system` error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// `id=gt.0,` / `,id=gt.0` / `a=eq.1,,b=eq.2`.
    #[error(
        "Error parsing `filter` params: filter must not contain empty segments (check for extra commas)"
    )]
    EmptySegment,
    /// A condition that is not `column=op.value` with a known `op`. `parts` is what the reference
    /// reports: the segment (no `=`), the operator part (no `.`), or `[op, value]` (unknown op).
    #[error("Error parsing `filter` params: {}", inspect(&Term::strings(.parts)))]
    Unreadable { parts: Vec<String> },
    /// `in` whose value is not `(...)`.
    #[error("Error parsing `filter` params: `in` filter value must be wrapped by parentheses")]
    InNotParenthesized,
    /// An `in` list that is not a valid one-dimensional PostgreSQL array literal. The reference only
    /// notices this when the database casts the value; the text is PostgreSQL's.
    #[error("Error parsing `filter` params: malformed array literal: \"{literal}\"")]
    MalformedList { literal: String },
}

/// Parses a `filter` string. Empty or whitespace-only → no conditions.
///
/// Choice: an unquoted `NULL` element of an `in` list is dropped ([`FilterValue::List`] holds strings
/// only). For `in` this is exact (`x = ANY('{1,NULL}')` never matches more than `{1}`); for `not.in`
/// the reference never matches (the result is NULL) while the list without the NULL can.
pub fn parse_filter(filter: &str) -> Result<Vec<Condition>, FilterError> {
    let trimmed = filter.trim();
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    split_top_level(trimmed).into_iter().map(parse_segment).collect()
}

/// Splits at commas outside parentheses and outside a double-quoted value.
fn split_top_level(s: &str) -> Vec<&str> {
    let bytes = s.as_bytes();
    let mut parts = Vec::new();
    let (mut start, mut depth, mut quoted, mut prev) = (0usize, 0usize, false, 0u8);
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if quoted {
            if c == b'\\' && i + 1 < bytes.len() {
                prev = bytes[i + 1];
                i += 2;
                continue;
            }
            quoted = c != b'"';
        } else {
            match c {
                b'"' if matches!(prev, b'.' | b'(' | b',') => quoted = true,
                b'(' => depth += 1,
                b')' => depth = depth.saturating_sub(1),
                b',' if depth == 0 => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                    prev = 0;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        }
        prev = c;
        i += 1;
    }
    parts.push(&s[start..]);
    parts
}

fn parse_segment(segment: &str) -> Result<Condition, FilterError> {
    let segment = segment.trim();
    if segment.is_empty() {
        return Err(FilterError::EmptySegment);
    }
    let unreadable =
        |parts: &[&str]| FilterError::Unreadable { parts: parts.iter().map(|s| s.to_string()).collect() };
    let Some((column, rest)) = segment.split_once('=') else {
        return Err(unreadable(&[segment]));
    };
    let (negate, op_value) = match rest.strip_prefix("not.") {
        Some(op_value) => (true, op_value),
        None => (false, rest),
    };
    let Some((op_name, value)) = op_value.split_once('.') else {
        return Err(unreadable(&[op_value]));
    };
    let Some(op) = FilterOp::from_name(op_name) else {
        return Err(unreadable(&[op_name, value]));
    };
    let value = if op == FilterOp::In {
        let inner = value
            .strip_prefix('(')
            .and_then(|v| v.strip_suffix(')'))
            .ok_or(FilterError::InNotParenthesized)?;
        let literal = format!("{{{inner}}}");
        let items =
            parse_array_literal(&literal).ok_or(FilterError::MalformedList { literal: literal.clone() })?;
        FilterValue::List(items.into_iter().flatten().collect())
    } else {
        FilterValue::Single(unquote(value))
    };
    Ok(Condition { column: column.to_owned(), op, negate, value })
}

/// PostgREST quoting: `"..."` with `\x` escapes; anything malformed stays literal.
fn unquote(value: &str) -> String {
    let Some(body) = value.strip_prefix('"') else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' if chars.as_str().is_empty() => return out,
            '"' => return value.to_owned(),
            '\\' => match chars.next() {
                Some(escaped) => out.push(escaped),
                None => return value.to_owned(),
            },
            c => out.push(c),
        }
    }
    value.to_owned()
}

/// PostgreSQL's array-literal whitespace.
fn array_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{b}' | '\u{c}')
}

/// Elements of a one-dimensional PostgreSQL array literal `{...}` as `array_in` reads them: unquoted
/// elements are trimmed and may use `\` escapes, quoted ones keep everything, an unquoted `NULL` (any
/// case) is `None`. `None` overall for a malformed literal, and for what this reader does not support:
/// several dimensions and explicit bounds (`[0:1]={a,b}`).
pub fn parse_array_literal(literal: &str) -> Option<Vec<Option<String>>> {
    let mut chars = literal.trim_start_matches(array_space).chars().peekable();
    if chars.next() != Some('{') {
        return None;
    }
    let mut items = Vec::new();
    let skip_space = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.peek().is_some_and(|c| array_space(*c)) {
            chars.next();
        }
    };
    skip_space(&mut chars);
    if chars.peek() == Some(&'}') {
        chars.next();
    } else {
        loop {
            skip_space(&mut chars);
            match chars.peek()? {
                '"' => {
                    chars.next();
                    let mut item = String::new();
                    loop {
                        match chars.next()? {
                            '\\' => item.push(chars.next()?),
                            '"' => break,
                            c => item.push(c),
                        }
                    }
                    skip_space(&mut chars);
                    items.push(Some(item));
                }
                '{' | ',' | '}' => return None,
                _ => {
                    let mut item = String::new();
                    let (mut kept, mut escaped) = (0usize, false);
                    while let Some(&c) = chars.peek() {
                        match c {
                            ',' | '}' => break,
                            '"' | '{' => return None,
                            '\\' => {
                                chars.next();
                                item.push(chars.next()?);
                                kept = item.len();
                                escaped = true;
                                continue;
                            }
                            c => {
                                item.push(c);
                                if !array_space(c) {
                                    kept = item.len();
                                }
                            }
                        }
                        chars.next();
                    }
                    item.truncate(kept);
                    let null = !escaped && item.eq_ignore_ascii_case("NULL");
                    items.push(if null { None } else { Some(item) });
                }
            }
            match chars.next()? {
                ',' => continue,
                '}' => break,
                _ => return None,
            }
        }
    }
    chars.all(array_space).then_some(items)
}

/// An element as `array_out` writes it: quoted when empty, `NULL`-like, or holding a special character.
fn array_element_text(s: &str) -> String {
    let needs_quotes = s.is_empty()
        || s.eq_ignore_ascii_case("NULL")
        || s.chars().any(|c| matches!(c, '"' | '\\' | '{' | '}' | ',') || array_space(c));
    if !needs_quotes {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(column: &str, op: FilterOp, value: &str, negate: bool) -> Condition {
        Condition { column: column.into(), op, negate, value: FilterValue::Single(value.into()) }
    }

    fn list(column: &str, items: &[&str], negate: bool) -> Condition {
        Condition {
            column: column.into(),
            op: FilterOp::In,
            negate,
            value: FilterValue::List(items.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn one(filter: &str) -> Condition {
        let mut conditions = parse_filter(filter).unwrap();
        assert_eq!(conditions.len(), 1, "{filter}");
        conditions.remove(0)
    }

    fn err(filter: &str) -> String {
        parse_filter(filter).unwrap_err().to_string()
    }

    #[test]
    fn every_operator() {
        for op in FilterOp::ALL {
            if op == FilterOp::In {
                continue;
            }
            assert_eq!(one(&format!("c={op}.v")), cond("c", op, "v", false));
            assert_eq!(one(&format!("c=not.{op}.v")), cond("c", op, "v", true));
            assert_eq!(FilterOp::from_name(op.as_str()), Some(op));
        }
        assert_eq!(one("c=in.(1,2)"), list("c", &["1", "2"], false));
        assert_eq!(one("c=not.in.(1,2)"), list("c", &["1", "2"], true));
        assert_eq!(FilterOp::from_name("EQ"), None);
    }

    #[test]
    fn reference_examples() {
        assert_eq!(one("subject=eq.hey"), cond("subject", FilterOp::Eq, "hey", false));
        assert_eq!(one("subject=not.like.hey%"), cond("subject", FilterOp::Like, "hey%", true));
        assert_eq!(
            parse_filter("id=gt.0,id=lt.100").unwrap(),
            vec![cond("id", FilterOp::Gt, "0", false), cond("id", FilterOp::Lt, "100", false)]
        );
        assert_eq!(
            parse_filter("id=in.(1,2,3),details=eq.active").unwrap(),
            vec![list("id", &["1", "2", "3"], false), cond("details", FilterOp::Eq, "active", false)]
        );
        assert_eq!(
            parse_filter("quantity=gt.0,name=in.(red,blue)").unwrap(),
            vec![cond("quantity", FilterOp::Gt, "0", false), list("name", &["red", "blue"], false)]
        );
        assert_eq!(
            parse_filter("a=eq.x),b=eq.y),c=eq.z").unwrap(),
            vec![
                cond("a", FilterOp::Eq, "x)", false),
                cond("b", FilterOp::Eq, "y)", false),
                cond("c", FilterOp::Eq, "z", false)
            ]
        );
        assert_eq!(one("flag=is.true"), cond("flag", FilterOp::Is, "true", false));
        // `is` keywords are checked against the column type at subscribe time, not here.
        assert_eq!(one("flag=is.maybe"), cond("flag", FilterOp::Is, "maybe", false));
    }

    #[test]
    fn empty_filters() {
        assert_eq!(parse_filter("").unwrap(), vec![]);
        assert_eq!(parse_filter("   ").unwrap(), vec![]);
        assert_eq!(parse_filter("\t\n").unwrap(), vec![]);
    }

    #[test]
    fn empty_segments() {
        let msg =
            "Error parsing `filter` params: filter must not contain empty segments (check for extra commas)";
        for f in ["id=gt.0,", ",id=gt.0", "a=eq.1,,b=eq.2", "a=eq.1, ,b=eq.2", ","] {
            assert_eq!(err(f), msg, "{f}");
        }
    }

    #[test]
    fn unreadable_segments() {
        assert_eq!(err("subject=foo.hey"), r#"Error parsing `filter` params: ["foo", "hey"]"#);
        assert_eq!(err("undefined"), r#"Error parsing `filter` params: ["undefined"]"#);
        assert_eq!(err("id=eq"), r#"Error parsing `filter` params: ["eq"]"#);
        assert_eq!(err("id=not.eq"), r#"Error parsing `filter` params: ["eq"]"#);
        assert_eq!(err("id="), r#"Error parsing `filter` params: [""]"#);
        assert_eq!(err("id=EQ.1"), r#"Error parsing `filter` params: ["EQ", "1"]"#);
        assert_eq!(err("id = eq.1"), r#"Error parsing `filter` params: [" eq", "1"]"#);
        assert_eq!(err("id=gt.0,id=foo.100"), r#"Error parsing `filter` params: ["foo", "100"]"#);
        assert_eq!(err(r#"a=x."q\"""#), r#"Error parsing `filter` params: ["x", "\"q\\\"\""]"#);
        // The first bad segment wins.
        assert_eq!(err("a=eq.1,b,c=foo.1"), r#"Error parsing `filter` params: ["b"]"#);
    }

    #[test]
    fn columns_and_values_are_kept_verbatim() {
        // The column is not trimmed inside a segment, and may be empty (the database rejects it).
        assert_eq!(one("=eq.1").column, "");
        assert_eq!(one("a b=eq.1").column, "a b");
        // Only the first `=` and the first `.` after the operator split.
        assert_eq!(one("a=eq.b=c.d"), cond("a", FilterOp::Eq, "b=c.d", false));
        assert_eq!(one("a=eq."), cond("a", FilterOp::Eq, "", false));
        assert_eq!(one(r#"name=eq.O'Brien "x""#), cond("name", FilterOp::Eq, r#"O'Brien "x""#, false));
        assert_eq!(one("name=not.neq.a'b"), cond("name", FilterOp::Neq, "a'b", true));
        assert_eq!(one("  a=eq.1  "), cond("a", FilterOp::Eq, "1", false));
        // Only one `not.` is a prefix; a second one reads as the (unknown) operator `not`.
        assert_eq!(err("a=not.not.eq.1"), r#"Error parsing `filter` params: ["not", "eq.1"]"#);
    }

    #[test]
    fn quoting() {
        assert_eq!(one(r#"name=eq."a,b""#), cond("name", FilterOp::Eq, "a,b", false));
        assert_eq!(
            parse_filter(r#"name=eq."a,b",id=gt.0"#).unwrap(),
            vec![cond("name", FilterOp::Eq, "a,b", false), cond("id", FilterOp::Gt, "0", false)]
        );
        assert_eq!(one(r#"name=eq."a.b:c(d)""#), cond("name", FilterOp::Eq, "a.b:c(d)", false));
        assert_eq!(
            one(r#"name=eq."she said \"hi\"""#),
            cond("name", FilterOp::Eq, r#"she said "hi""#, false)
        );
        assert_eq!(one(r#"path=eq."C:\\tmp""#), cond("path", FilterOp::Eq, r"C:\tmp", false));
        assert_eq!(one(r#"path=eq."C:\new""#), cond("path", FilterOp::Eq, "C:new", false));
        assert_eq!(one(r#"name=not.neq."a,b""#), cond("name", FilterOp::Neq, "a,b", true));
        assert_eq!(one(r#"name=eq."""#), cond("name", FilterOp::Eq, "", false));
        assert_eq!(one(r#"name=eq." a ""#), cond("name", FilterOp::Eq, " a ", false));
        assert_eq!(one(r#"name=eq."é\ü""#), cond("name", FilterOp::Eq, "éü", false));
    }

    #[test]
    fn quoting_fallbacks() {
        assert_eq!(one(r#"name=eq."unterminated"#), cond("name", FilterOp::Eq, r#""unterminated"#, false));
        assert_eq!(one(r#"name=eq."ab"cd"#), cond("name", FilterOp::Eq, r#""ab"cd"#, false));
        assert_eq!(one(r#"name=eq."ab\"#), cond("name", FilterOp::Eq, r#""ab\"#, false));
        // A quote inside a value (not right after `.`, `(` or `,`) protects nothing.
        assert_eq!(
            parse_filter(r#"desc=eq.5" tall,id=gt.0"#).unwrap(),
            vec![cond("desc", FilterOp::Eq, r#"5" tall"#, false), cond("id", FilterOp::Gt, "0", false)]
        );
        // An unterminated quote swallows the rest of the filter into one segment.
        assert_eq!(one(r#"a=eq."x,b=eq.1"#), cond("a", FilterOp::Eq, r#""x,b=eq.1"#, false));
        // Parentheses outside quotes keep commas in the segment too.
        assert_eq!(one("a=eq.(x,y)"), cond("a", FilterOp::Eq, "(x,y)", false));
        assert_eq!(
            parse_filter("a=eq.(x,b=eq.1").unwrap(),
            vec![cond("a", FilterOp::Eq, "(x,b=eq.1", false)]
        );
    }

    #[test]
    fn in_lists() {
        assert_eq!(one("subject=in.(hidee,ho)"), list("subject", &["hidee", "ho"], false));
        assert_eq!(one(r#"tags=in.("a,b",c)"#), list("tags", &["a,b", "c"], false));
        assert_eq!(one(r#"tags=in.("a,b","c,d")"#), list("tags", &["a,b", "c,d"], false));
        assert_eq!(one("name=in.(O'Brien,Smith)"), list("name", &["O'Brien", "Smith"], false));
        assert_eq!(one("n=in.( 1 , 2 )"), list("n", &["1", "2"], false));
        assert_eq!(one(r#"n=in.(a\,b,"x\"y",\ z\ )"#), list("n", &["a,b", "x\"y", " z "], false));
        assert_eq!(one("n=in.()"), list("n", &[], false));
        assert_eq!(one(r#"n=in.(1,null,NULL,"null")"#), list("n", &["1", "null"], false));
        let many: Vec<String> = (0..150).map(|i| i.to_string()).collect();
        let c = one(&format!("n=in.({})", many.join(",")));
        assert_eq!(c.value, FilterValue::List(many), "the 100-value limit is a subscribe-time check");
    }

    #[test]
    fn in_list_errors() {
        let msg = "Error parsing `filter` params: `in` filter value must be wrapped by parentheses";
        for f in ["n=in.1,2", "n=in.(1,2", "n=in.1)", "n=in.", "n=in.(", "n=not.in.[1]"] {
            assert_eq!(err(f), msg, "{f}");
        }
        assert_eq!(err("n=in.(a,,b)"), r#"Error parsing `filter` params: malformed array literal: "{a,,b}""#);
        for f in [
            "n=in.(a,)",
            "n=in.(,)",
            r#"n=in.(a"b")"#,
            r#"n=in.("a"b)"#,
            "n=in.({1})",
            r#"n=in.("a)"#,
            "n=in.(a})",
        ] {
            assert!(matches!(parse_filter(f), Err(FilterError::MalformedList { .. })), "{f}");
        }
    }

    #[test]
    fn stored_text_and_describe() {
        assert_eq!(one("n=in.(1,2)").value.stored_text(), "{1,2}");
        assert_eq!(one(r#"n=in.("a,b",c)"#).value.stored_text(), r#"{"a,b",c}"#);
        assert_eq!(one(r#"n=in.("",a b,"x\"y","NULL")"#).value.stored_text(), r#"{"","a b","x\"y","NULL"}"#);
        assert_eq!(
            cond("notacolumn", FilterOp::Eq, "123", false).describe(),
            r#"{"notacolumn", "eq", "123", false}"#
        );
        assert_eq!(one("id=not.in.(1,2)").describe(), r#"{"id", "in", "{1,2}", true}"#);
        assert_eq!(one(r#"q=eq."a\"b""#).describe(), r#"{"q", "eq", "a\"b", false}"#);
    }

    #[test]
    fn array_literal_reader() {
        assert_eq!(parse_array_literal("{}"), Some(vec![]));
        assert_eq!(parse_array_literal(" { } "), Some(vec![]));
        assert_eq!(
            parse_array_literal(r#"{"",NULL,\NULL}"#),
            Some(vec![Some("".into()), None, Some("NULL".into())])
        );
        assert_eq!(parse_array_literal("{a} x"), None);
        assert_eq!(parse_array_literal("{a"), None);
        assert_eq!(parse_array_literal("a"), None);
    }
}
