//! Unit tests of LIKE/ILIKE, against the backtracking matcher kept here as the reference, and its timing.

use std::time::{Duration, Instant};

use super::*;

fn like_text(value: &str, pattern: &str, case_insensitive: bool) -> Option<bool> {
    TextLike::new(pattern, case_insensitive).map(|p| p.is_match(value))
}

fn like_bytes(value: &[u8], pattern: &[u8]) -> Option<bool> {
    BytesLike::new(pattern).map(|p| p.is_match(value))
}

/// The matcher this module replaced (backtracking to the last `%`: O(value × pattern)), kept as
/// the reference the new one is checked against.
fn reference<T: Copy + PartialEq>(
    value: &[T],
    pattern: &[T],
    [percent, underscore, escape]: [T; 3],
) -> Option<bool> {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Token<T> {
        Any,
        One,
        Lit(T),
    }
    let mut tokens = Vec::with_capacity(pattern.len());
    let mut items = pattern.iter();
    while let Some(&item) = items.next() {
        tokens.push(if item == escape {
            Token::Lit(*items.next()?)
        } else if item == percent {
            Token::Any
        } else if item == underscore {
            Token::One
        } else {
            Token::Lit(item)
        });
    }
    // Wildcard matching with backtracking to the last `%`.
    let (mut v, mut p) = (0, 0);
    let mut retry: Option<(usize, usize)> = None;
    while v < value.len() {
        match tokens.get(p) {
            Some(Token::Any) => {
                retry = Some((p + 1, v));
                p += 1;
                continue;
            }
            Some(Token::One) => {
                v += 1;
                p += 1;
                continue;
            }
            Some(Token::Lit(c)) if *c == value[v] => {
                v += 1;
                p += 1;
                continue;
            }
            _ => {}
        }
        let Some((after_any, start)) = retry else { return Some(false) };
        let start = start + 1;
        retry = Some((after_any, start));
        (p, v) = (after_any, start);
        if start > value.len() {
            return Some(false);
        }
    }
    Some(tokens[p..].iter().all(|t| *t == Token::Any))
}

fn reference_text(value: &str, pattern: &str, case_insensitive: bool) -> Option<bool> {
    let chars = |s: &str| -> Vec<char> {
        if case_insensitive {
            s.chars().flat_map(char::to_lowercase).collect()
        } else {
            s.chars().collect()
        }
    };
    reference(&chars(value), &chars(pattern), ['%', '_', '\\'])
}

#[test]
fn like_patterns() {
    for (value, pattern, expected) in [
        ("hello", "hel%", true),
        ("hello", "%llo", true),
        ("hello", "%l%", true),
        ("hello", "h_llo", true),
        ("hello", "h_lo", false),
        ("hello", "hello%", true),
        ("hello", "%", true),
        ("", "%", true),
        ("", "%%", true),
        ("", "_", false),
        ("", "", true),
        ("a", "", false),
        ("50%", "50\\%", true),
        ("500", "50\\%", false),
        ("a_b", "a\\_b", true),
        ("axb", "a\\_b", false),
        ("a\\b", "a\\\\b", true),
        ("abcabc", "%abc", true),
        ("aXbXc", "a%b%c", true),
        ("ab", "a%b%c", false),
        ("héllo", "h_llo", true),
        ("mississippi", "%iss%pi", true),
        ("mississippi", "%s_s%p_", true),
        ("mississippi", "m%_s_i_%i", true),
        ("abc", "a%%c", true),
        ("ab", "a%_b", false),
        ("aab", "a%_b", true),
        ("abc", "%abc%", true),
        ("abab", "ab%ab", true),
        ("aba", "ab%ba", false),
        ("Hello", "hel%", false),
    ] {
        assert_eq!(like_text(value, pattern, false), Some(expected), "{value:?} LIKE {pattern:?}");
        assert_eq!(
            reference_text(value, pattern, false),
            Some(expected),
            "reference: {value:?} LIKE {pattern:?}"
        );
    }
    assert_eq!(like_text("Hello", "hel%", true), Some(true));
    assert_eq!(like_text("ÉTÉ", "été", true), Some(true));
    assert_eq!(like_text("abc", "ab\\", false), None);
    assert_eq!(like_text("abc", "%\\", true), None);
    assert_eq!(like_bytes(b"\x01\x02\x03", b"\x01%"), Some(true));
    assert_eq!(like_bytes(b"\xff", b"_"), Some(true));
    assert_eq!(like_bytes(b"\xff\x00\xfe", b"%\xff_\xfe"), Some(true));
    assert_eq!(like_bytes(b"ab", b"ab\\"), None);
}

/// Every pattern up to 5 units over `a b % _ \` against every value up to 5 units over `a b %`,
/// as text, as ILIKE and as bytes: the same answers as the reference.
#[test]
fn exhaustive_small_patterns_agree_with_the_reference() {
    fn all(alphabet: &[char], max: usize) -> Vec<String> {
        let mut out = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..max {
            last = last.iter().flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}"))).collect();
            out.extend(last.iter().cloned());
        }
        out
    }
    let patterns = all(&['a', 'b', '%', '_', '\\'], 5);
    let values = all(&['a', 'b', '%'], 5);
    let mut checked = 0;
    for pattern in &patterns {
        let text = TextLike::new(pattern, false);
        let bytes = BytesLike::new(pattern.as_bytes());
        assert_eq!(text.is_some(), reference_text("", pattern, false).is_some(), "{pattern:?}");
        let (Some(text), Some(bytes)) = (text, bytes) else { continue };
        for value in &values {
            let expected = reference_text(value, pattern, false).unwrap();
            assert_eq!(text.is_match(value), expected, "{value:?} LIKE {pattern:?}");
            assert_eq!(bytes.is_match(value.as_bytes()), expected, "bytes {value:?} LIKE {pattern:?}");
            checked += 1;
        }
    }
    eprintln!("{checked} (pattern, value) pairs agree");
}

/// A small deterministic generator (xorshift64), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn string(&mut self, alphabet: &[char], max: usize) -> String {
        let len = self.below(max + 1);
        (0..len).map(|_| alphabet[self.below(alphabet.len())]).collect()
    }
}

/// Longer random patterns and values, with multi-byte characters, case folding that changes
/// lengths (`İ` lower-cases to two characters), and `_`-runs longer than 64 units (several words
/// of Shift-And state).
#[test]
fn random_patterns_agree_with_the_reference() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let value_chars = ['a', 'b', 'é', 'A', 'İ', '%', '_', '\\'];
    let pattern_chars = ['a', 'b', 'é', 'A', 'İ', 'i', '%', '%', '_', '_', '\\'];
    for round in 0..20_000 {
        let (value, pattern) = if round % 4 == 0 {
            // One long middle segment with `_` inside, on a two-letter value.
            let body: String = (0..60 + rng.below(100)).map(|_| ['a', 'b', '_'][rng.below(3)]).collect();
            (rng.string(&['a', 'b'], 400), format!("%{body}%"))
        } else {
            (rng.string(&value_chars, 30), rng.string(&pattern_chars, 12))
        };
        for ci in [false, true] {
            assert_eq!(
                like_text(&value, &pattern, ci),
                reference_text(&value, &pattern, ci),
                "{value:?} {} {pattern:?}",
                if ci { "ILIKE" } else { "LIKE" }
            );
        }
        let bytes: Vec<u8> = value.bytes().collect();
        let pattern_bytes: Vec<u8> = pattern.bytes().collect();
        assert_eq!(
            like_bytes(&bytes, &pattern_bytes),
            reference(&bytes, &pattern_bytes, [b'%', b'_', b'\\']),
            "bytes {value:?} LIKE {pattern:?}"
        );
    }
}

/// The pathological input of the issue — `%a…ab` (30,000 characters) against 200,000 `a`s — and
/// its variants: a match at the very end, the run searched as a middle segment (`%a…ab%`), and with
/// `_` between the literals (`under_len` units: Shift-And over ⌈under_len / 64⌉ words of state).
/// The cases at a scale: a `%a…ab` literal of `literal_len` characters, an `a_a_…b` run of
/// `under_len`, against `value_len` characters.
fn pathological(
    literal_len: usize,
    under_len: usize,
    value_len: usize,
) -> Vec<(&'static str, String, String)> {
    let a_b = "a".repeat(literal_len - 1) + "b";
    let a_under_b = "a_".repeat(under_len / 2) + "b";
    let miss = "a".repeat(value_len);
    let hit = "a".repeat(value_len - 1) + "b";
    vec![
        ("%a…ab, no match", format!("%{a_b}"), miss.clone()),
        ("%a…ab, match at the end", format!("%{a_b}"), hit.clone()),
        ("%a…ab%, no match", format!("%{a_b}%"), miss.clone()),
        ("%a…ab%, match at the end", format!("%{a_b}%"), hit.clone()),
        ("%a_a_…b%, no match", format!("%{a_under_b}%"), miss),
        ("%a_a_…b%, match at the end", format!("%{a_under_b}%"), hit),
    ]
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

#[test]
fn pathological_patterns_are_linear() {
    // Shift-And costs a word per 64 units of the run, so its variant is shorter in a debug build.
    for (name, pattern, value) in pathological(29_999, 640, 200_000) {
        let expected = value.ends_with('b');
        let (text, t_text) = timed(|| like_text(&value, &pattern, false));
        let (ci, t_ci) = timed(|| like_text(&value, &pattern, true));
        let (bytes, t_bytes) = timed(|| like_bytes(value.as_bytes(), pattern.as_bytes()));
        assert_eq!((text, ci, bytes), (Some(expected), Some(expected), Some(expected)), "{name}");
        eprintln!("{name}: LIKE {t_text:?}, ILIKE {t_ci:?}, bytea LIKE {t_bytes:?} (compile + match)");
    }
}

/// The old backtracking matcher against the new one: they agree, and the times printed are the
/// before/after figures of docs/benchmarks.md at full scale (`REALTIME_FILTER_BENCH=full`, release;
/// the old matcher then takes seconds), at a small scale otherwise.
#[test]
fn before_after() {
    let (literal, under, value) =
        if super::super::full_benchmark() { (30_000, 30_000, 200_000) } else { (300, 300, 2_000) };
    for (name, pattern, value) in pathological(literal, under, value) {
        let (new, t_new) = timed(|| like_text(&value, &pattern, false));
        let (old, t_old) = timed(|| reference_text(&value, &pattern, false));
        assert_eq!(new, old, "{name}");
        eprintln!("{name}: backtracking {t_old:?}, linear {t_new:?}");
    }
}
