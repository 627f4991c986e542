//! Unit tests of the value conversion, type by type, with the reference's outputs.

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
    assert_eq!(json("jsonb", r#"{"a": 1, "b": [1, 2.50], "c": null}"#), r#"{"a":1,"b":[1,2.50],"c":null}"#);
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
        "{", "}", "[", "]", ":", "=", ",", ";", "\"", "\\", " ", "\t", "\n", "NULL", "null", "t", "-", "+",
        ".", "e", "E", "0", "1", "9", "x", "T", "é", "😀", "\u{1}", "NaN", "Infinity", "BC",
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
        let text: String = (0..len).map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize]).collect();
        let out = to_json(typname, &text);
        assert!(serde_json::from_str::<&RawValue>(&out).is_ok(), "{typname} {text:?} -> {out}");
    }
}
