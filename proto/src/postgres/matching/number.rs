//! Numeric input (`int2/4/8`, `oid`, `numeric`, `float4/8`) and the order of the values.

use std::cmp::Ordering;

/// PostgreSQL's `isspace` set, which the input functions skip around a value.
pub(super) fn pg_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{b}' | '\u{c}')
}

/// Digits with single `_` separators between digits (PostgreSQL 16+). `None` if malformed.
fn digits_of(s: &str, radix: u32) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut prev_digit = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '_' {
            let next_digit = chars.peek().is_some_and(|n| n.is_digit(radix));
            if !prev_digit || !next_digit {
                return None;
            }
            prev_digit = false;
        } else if c.is_digit(radix) {
            out.push(c);
            prev_digit = true;
        } else {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// An integer literal (`-42`, ` 7 `, `1_000`, `0x1F`, `0o17`, `0b101`). `Some(Err)` = out of `i128`.
pub(super) fn parse_int(text: &str) -> Option<Result<i128, ()>> {
    let t = text.trim_matches(pg_space);
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let lower = t.get(..2).map(str::to_ascii_lowercase);
    let (radix, body) = match lower.as_deref() {
        Some("0x") => (16, &t[2..]),
        Some("0o") => (8, &t[2..]),
        Some("0b") => (2, &t[2..]),
        _ => (10, t),
    };
    let digits = digits_of(body, radix)?;
    let mut v: i128 = 0;
    for d in digits.chars() {
        let d = i128::from(d.to_digit(radix)?);
        match v.checked_mul(i128::from(radix)).and_then(|v| v.checked_add(d)) {
            Some(n) if n <= i128::from(u64::MAX) => v = n,
            _ => return Some(Err(())),
        }
    }
    Some(Ok(if neg { -v } else { v }))
}

/// An exact decimal: `NegInf < finite < PosInf < NaN`, NaN equal to itself (PostgreSQL's order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decimal {
    NegInf,
    /// `±0.d₁d₂… × 10^exp`; no leading or trailing zero digits; zero has no digits and is not negative.
    Finite {
        neg: bool,
        digits: Vec<u8>,
        exp: i64,
    },
    PosInf,
    NaN,
}

impl Ord for Decimal {
    fn cmp(&self, other: &Decimal) -> Ordering {
        let rank = |d: &Decimal| match d {
            Decimal::NegInf => 0,
            Decimal::Finite { .. } => 1,
            Decimal::PosInf => 2,
            Decimal::NaN => 3,
        };
        match (self, other) {
            (
                Decimal::Finite { neg: an, digits: ad, exp: ae },
                Decimal::Finite { neg: bn, digits: bd, exp: be },
            ) => {
                let sign = |neg: bool, digits: &[u8]| {
                    if digits.is_empty() {
                        0
                    } else if neg {
                        -1
                    } else {
                        1
                    }
                };
                let (sa, sb) = (sign(*an, ad), sign(*bn, bd));
                if sa != sb || sa == 0 {
                    return sa.cmp(&sb);
                }
                let magnitude = ae.cmp(be).then_with(|| ad.cmp(bd));
                if sa < 0 {
                    magnitude.reverse()
                } else {
                    magnitude
                }
            }
            _ => rank(self).cmp(&rank(other)),
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Decimal) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A `numeric` literal: `-1.50`, `.5`, `1e3`, `1_000.5`, `NaN`, `Infinity`, `-inf`.
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    let t = text.trim_matches(pg_space);
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let lower = body.to_ascii_lowercase();
    match lower.as_str() {
        "nan" if t.len() == body.len() => return Some(Decimal::NaN),
        "infinity" | "inf" => return Some(if neg { Decimal::NegInf } else { Decimal::PosInf }),
        _ => {}
    }
    let (mantissa, exponent) = match lower.find('e') {
        Some(i) => (&lower[..i], Some(&lower[i + 1..])),
        None => (lower.as_str(), None),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let int_digits = if int_part.is_empty() { String::new() } else { digits_of(int_part, 10)? };
    let frac_digits = if frac_part.is_empty() { String::new() } else { digits_of(frac_part, 10)? };
    if int_digits.is_empty() && frac_digits.is_empty() {
        return None;
    }
    let exponent: i64 = match exponent {
        Some(e) => {
            let (eneg, e) = match e.as_bytes().first() {
                Some(b'-') => (true, &e[1..]),
                Some(b'+') => (false, &e[1..]),
                _ => (false, e),
            };
            let v: i64 = digits_of(e, 10)?.parse().ok().filter(|v: &i64| *v <= 1_000_000)?;
            if eneg {
                -v
            } else {
                v
            }
        }
        None => 0,
    };
    let mut digits: Vec<u8> = int_digits.bytes().chain(frac_digits.bytes()).map(|b| b - b'0').collect();
    let mut exp = int_digits.len() as i64 + exponent;
    let leading = digits.iter().take_while(|d| **d == 0).count();
    digits.drain(..leading);
    exp -= leading as i64;
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        return Some(Decimal::Finite { neg: false, digits, exp: 0 });
    }
    Some(Decimal::Finite { neg, digits, exp })
}

/// A float literal. `Some(Err)` = out of range (overflow, or a non-zero value that underflows).
pub(super) fn parse_float(text: &str, single: bool) -> Option<Result<f64, ()>> {
    let t = text.trim_matches(pg_space);
    let lower = t.to_ascii_lowercase();
    let unsigned = lower.trim_start_matches(['+', '-']);
    let neg = lower.starts_with('-');
    if lower.len() - unsigned.len() <= 1 {
        match unsigned {
            "nan" => return Some(Ok(f64::NAN)),
            "inf" | "infinity" => return Some(Ok(if neg { f64::NEG_INFINITY } else { f64::INFINITY })),
            _ => {}
        }
    }
    // strtod's decimal syntax: [sign] (digits [. digits] | . digits) [e [sign] digits]
    let (mantissa, exponent) = match unsigned.find('e') {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let valid_mantissa =
        all_digits(int_part) && all_digits(frac_part) && !(int_part.is_empty() && frac_part.is_empty());
    let valid_exponent = match exponent {
        Some(e) => {
            let e = e.strip_prefix(['+', '-']).unwrap_or(e);
            !e.is_empty() && all_digits(e)
        }
        None => true,
    };
    if lower.len() - unsigned.len() > 1 || !valid_mantissa || !valid_exponent {
        return None;
    }
    let value = if single { t.parse::<f32>().ok().map(f64::from)? } else { t.parse::<f64>().ok()? };
    let nonzero_digits = mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b));
    if value.is_infinite() || (value == 0.0 && nonzero_digits) {
        return Some(Err(()));
    }
    Some(Ok(value))
}

/// float8 order: `-0 = 0`, and NaN equals itself and sorts after everything.
pub(super) fn float_cmp(x: f64, y: f64) -> Ordering {
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use super::super::cast::test_support::{cmp, fail, ok};
    use super::super::cast::{cast, Datum, Family};
    use super::parse_decimal;

    #[test]
    fn integers() {
        assert_eq!(ok("int4", " -42 "), Datum::Int(-42));
        assert_eq!(ok("int8", "+9223372036854775807"), Datum::Int(i64::MAX));
        assert_eq!(ok("int4", "1_000"), Datum::Int(1000));
        assert_eq!(ok("int2", "0x7FFF"), Datum::Int(32767));
        assert_eq!(ok("oid", "4294967295"), Datum::Int(4294967295));
        assert_eq!(
            fail("int4", "hey"),
            "ERROR 22P02 (invalid_text_representation) invalid input syntax for type integer: \"hey\""
        );
        assert_eq!(
            fail("int4", "1.5"),
            "ERROR 22P02 (invalid_text_representation) invalid input syntax for type integer: \"1.5\""
        );
        assert_eq!(
            fail("int2", ""),
            "ERROR 22P02 (invalid_text_representation) invalid input syntax for type smallint: \"\""
        );
        assert_eq!(
            fail("int4", "1__0"),
            "ERROR 22P02 (invalid_text_representation) invalid input syntax for type integer: \"1__0\""
        );
        assert_eq!(
            fail("int4", "99999999999"),
            "ERROR 22003 (numeric_value_out_of_range) value \"99999999999\" is out of range for type integer"
        );
        assert!(fail("int8", "99999999999999999999999999999999999999999")
            .contains("out of range for type bigint"));
        assert_eq!(cmp("int8", "10", "9"), Some(Ordering::Greater));
    }

    #[test]
    fn decimals() {
        assert_eq!(cmp("numeric", "1.50", "1.5"), Some(Ordering::Equal));
        assert_eq!(cmp("numeric", "0.1", "1e-1"), Some(Ordering::Equal));
        assert_eq!(cmp("numeric", "-0", "0.000"), Some(Ordering::Equal));
        assert_eq!(cmp("numeric", "10", "9.999999999999999999999"), Some(Ordering::Greater));
        assert_eq!(cmp("numeric", "-10", "-9.5"), Some(Ordering::Less));
        assert_eq!(cmp("numeric", "-0.5", "0.1"), Some(Ordering::Less));
        assert_eq!(cmp("numeric", ".5", "0.5"), Some(Ordering::Equal));
        assert_eq!(cmp("numeric", "5.", "5"), Some(Ordering::Equal));
        assert_eq!(
            cmp("numeric", "12345678901234567890.1", "12345678901234567890.01"),
            Some(Ordering::Greater)
        );
        assert_eq!(cmp("numeric", "NaN", "Infinity"), Some(Ordering::Greater));
        assert_eq!(cmp("numeric", "nan", "NaN"), Some(Ordering::Equal));
        assert_eq!(cmp("numeric", "-inf", "-1e100"), Some(Ordering::Less));
        for bad in ["", ".", "1e", "abc", "1.2.3", "--1", "-nan", "1 2"] {
            assert!(parse_decimal(bad).is_none(), "{bad}");
        }
        assert_eq!(
            fail("numeric", "x"),
            "ERROR 22P02 (invalid_text_representation) invalid input syntax for type numeric: \"x\""
        );
    }

    #[test]
    fn floats() {
        assert_eq!(cmp("float8", "0.1", "1e-1"), Some(Ordering::Equal));
        assert_eq!(cmp("float8", "-0", "0"), Some(Ordering::Equal));
        assert_eq!(cmp("float8", "NaN", "Infinity"), Some(Ordering::Greater));
        assert_eq!(cmp("float8", "nan", "NaN"), Some(Ordering::Equal));
        assert_eq!(cmp("float8", "-inf", "-1e300"), Some(Ordering::Less));
        // float4 values compare at float4 precision.
        assert_eq!(cmp("float4", "0.1", "0.10000000149"), Some(Ordering::Equal));
        assert_ne!(cmp("float8", "0.1", "0.10000000149"), Some(Ordering::Equal));
        assert_eq!(
            fail("float8", "1e400"),
            "ERROR 22003 (numeric_value_out_of_range) \"1e400\" is out of range for type double precision"
        );
        assert_eq!(
            fail("float4", "1e39"),
            "ERROR 22003 (numeric_value_out_of_range) \"1e39\" is out of range for type real"
        );
        assert!(fail("float8", "1e-400").contains("out of range"));
        assert_eq!(ok("float8", "0e-400"), Datum::Float(0.0));
        assert_eq!(fail("float8", "abc"), "ERROR 22P02 (invalid_text_representation) invalid input syntax for type double precision: \"abc\"");
        for bad in ["", "1e", "e1", "--1", "0x10", "1_0", "infinityx"] {
            assert!(cast(&Family::Float8, bad).is_err(), "{bad}");
        }
    }
}
