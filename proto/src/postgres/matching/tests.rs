//! Unit tests of filter evaluation and the subscribe-time checks, operator by operator and type by type.

use crate::postgres::parse_filter;

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
    assert_eq!(evaluate(&spaces, "bpchar", Some("ab")), T, "the pattern's trailing spaces go for char(n)");
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
