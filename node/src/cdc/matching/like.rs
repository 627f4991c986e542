//! `LIKE` / `ILIKE` patterns, matched in time linear in the value.
//!
//! Why linear: filters run on the hub task that serves every CDC subscriber of the node, so what one
//! subscriber's pattern costs per change is a delay for all the others. A backtracking matcher costs
//! O(value × pattern) (a 30,000-character `%a…ab` against a 200,000-character row took 7–14 s).
//!
//! Semantics (as PostgreSQL): `%` matches any run, `_` one unit — a character for text, a byte for
//! `bytea` — and `\` makes the next unit literal; a pattern ending in `\` is an error (`new` gives
//! `None`). ILIKE lower-cases both sides character by character (Unicode rules).
//!
//! How: the pattern is split at `%` into segments, each of which matches a fixed number of units.
//! - The first segment must match at the start of the value, the last at its end; nothing to search.
//! - The segments between are searched in order, each at its leftmost occurrence after the previous
//!   one. Leftmost is never wrong: it leaves the most room for the segments after it.
//! - A `_` at either end of a middle segment commutes with the `%` next to it, so it is a plain skip.
//! - What remains of a middle segment, if it is all literals, is found with `memchr::memmem`
//!   (Two-Way: O(value + segment), constant space).
//! - If it still has a `_` between literals, it is found with the bit-parallel Shift-And algorithm:
//!   O(value × ⌈segment / 64⌉) time, O(segment) memory. (Matching with don't-cares has no known
//!   linear-time algorithm — the best bounds are O(value × log segment), by FFT; up to 64 units, the
//!   filters people write, this is linear, and only words holding live partial matches are updated.)
//!
//! Cost: O(value + pattern), or O(value × ⌈longest segment with an inner `_` / 64⌉ + pattern). A
//! pattern is compiled once ([`TextLike::new`], [`BytesLike::new`]) and matched against every change.

use std::collections::HashMap;

use memchr::memmem;

/// A LIKE (or ILIKE) pattern over text: `_` is one character.
pub struct TextLike {
    like: Like,
    case_insensitive: bool,
}

impl TextLike {
    /// `pattern` as `LIKE` reads it, or as `ILIKE` if `case_insensitive`. `None` if it ends with `\`.
    pub fn new(pattern: &str, case_insensitive: bool) -> Option<TextLike> {
        let units: Vec<u32> = if case_insensitive {
            pattern.chars().flat_map(char::to_lowercase).map(u32::from).collect()
        } else {
            pattern.chars().map(u32::from).collect()
        };
        Some(TextLike { like: Like::new(&units, Encoding::Utf8)?, case_insensitive })
    }

    pub fn is_match(&self, value: &str) -> bool {
        if self.case_insensitive {
            let lower: String = value.chars().flat_map(char::to_lowercase).collect();
            self.like.is_match(lower.as_str())
        } else {
            self.like.is_match(value)
        }
    }
}

/// A LIKE pattern over `bytea`: `_` is one byte.
pub struct BytesLike(Like);

impl BytesLike {
    /// `None` if the pattern ends with `\`.
    pub fn new(pattern: &[u8]) -> Option<BytesLike> {
        let units: Vec<u32> = pattern.iter().map(|&b| u32::from(b)).collect();
        Like::new(&units, Encoding::Bytes).map(BytesLike)
    }

    pub fn is_match(&self, value: &[u8]) -> bool {
        self.0.is_match(value)
    }
}

/// One unit of a parsed pattern.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Token {
    /// `%`
    Any,
    /// `_`
    One,
    /// A character (as `u32`) or a byte.
    Lit(u32),
}

/// How literal units are laid out in the value's bytes.
#[derive(Clone, Copy)]
enum Encoding {
    Utf8,
    Bytes,
}

impl Encoding {
    fn push(self, unit: u32, out: &mut Vec<u8>) {
        match self {
            Encoding::Utf8 => {
                let c = char::from_u32(unit).expect("text units come from chars");
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            }
            Encoding::Bytes => out.push(unit as u8),
        }
    }
}

/// A value seen as units (characters of a `str`, or bytes) at byte offsets. Every offset the matcher
/// passes is a unit boundary: it only ever moves by whole units or by whole encoded literals.
trait Units {
    fn bytes(&self) -> &[u8];
    /// The unit starting at byte `at`, and its length in bytes.
    fn unit_at(&self, at: usize) -> Option<(u32, usize)>;
    /// The length in bytes of the unit ending at byte `at`.
    fn len_before(&self, at: usize) -> Option<usize>;
}

impl Units for str {
    fn bytes(&self) -> &[u8] {
        self.as_bytes()
    }

    fn unit_at(&self, at: usize) -> Option<(u32, usize)> {
        self.get(at..)?.chars().next().map(|c| (u32::from(c), c.len_utf8()))
    }

    fn len_before(&self, at: usize) -> Option<usize> {
        self.get(..at)?.chars().next_back().map(char::len_utf8)
    }
}

impl Units for [u8] {
    fn bytes(&self) -> &[u8] {
        self
    }

    fn unit_at(&self, at: usize) -> Option<(u32, usize)> {
        self.get(at).map(|&b| (u32::from(b), 1))
    }

    fn len_before(&self, at: usize) -> Option<usize> {
        (at > 0 && at <= self.len()).then_some(1)
    }
}

/// `at` moved forward by `n` units, not past byte `end`.
fn skip<V: Units + ?Sized>(value: &V, mut at: usize, n: usize, end: usize) -> Option<usize> {
    for _ in 0..n {
        at += value.unit_at(at)?.1;
    }
    (at <= end).then_some(at)
}

/// A compiled pattern: `first` % `middle[0]` % … % `last`.
struct Like {
    /// Anchored at the start of the value.
    first: Anchored,
    /// `None` when the pattern has no `%`: then `first` must match the whole value.
    rest: Option<Floating>,
}

struct Floating {
    /// Found in order, leftmost first, between the first and the last segment.
    middle: Vec<Middle>,
    /// Anchored at the end of the value.
    last: Anchored,
}

impl Like {
    fn new(pattern: &[u32], encoding: Encoding) -> Option<Like> {
        let [percent, underscore, escape] = ['%', '_', '\\'].map(u32::from);
        let mut tokens = Vec::with_capacity(pattern.len());
        let mut units = pattern.iter();
        while let Some(&unit) = units.next() {
            tokens.push(if unit == escape {
                Token::Lit(*units.next()?)
            } else if unit == percent {
                Token::Any
            } else if unit == underscore {
                Token::One
            } else {
                Token::Lit(unit)
            });
        }
        let mut segments = tokens.split(|t| *t == Token::Any);
        let first = Anchored::new(segments.next().unwrap_or_default(), encoding);
        let rest: Vec<&[Token]> = segments.collect();
        let rest = rest.split_last().map(|(last, middle)| Floating {
            middle: middle.iter().filter(|s| !s.is_empty()).map(|s| Middle::new(s, encoding)).collect(),
            last: Anchored::new(last, encoding),
        });
        Some(Like { first, rest })
    }

    fn is_match<V: Units + ?Sized>(&self, value: &V) -> bool {
        let len = value.bytes().len();
        let Some(start) = self.first.match_at(value, 0) else { return false };
        let Some(rest) = &self.rest else { return start == len };
        let Some(end) = rest.last.match_before(value, len) else { return false };
        if end < start {
            return false;
        }
        let mut at = start;
        for middle in &rest.middle {
            match middle.find(value, at, end) {
                Some(next) => at = next,
                None => return false,
            }
        }
        true
    }
}

/// Part of a segment: literal units (encoded as in the value), or `n` × `_`.
enum Piece {
    Lit(Vec<u8>),
    Skip(usize),
}

/// A segment compared in place (the first and the last).
struct Anchored {
    pieces: Vec<Piece>,
}

impl Anchored {
    fn new(tokens: &[Token], encoding: Encoding) -> Anchored {
        let mut pieces: Vec<Piece> = Vec::new();
        for token in tokens {
            match (token, pieces.last_mut()) {
                (Token::One, Some(Piece::Skip(n))) => *n += 1,
                (Token::One, _) => pieces.push(Piece::Skip(1)),
                (Token::Lit(unit), Some(Piece::Lit(bytes))) => encoding.push(*unit, bytes),
                (Token::Lit(unit), _) => {
                    let mut bytes = Vec::new();
                    encoding.push(*unit, &mut bytes);
                    pieces.push(Piece::Lit(bytes));
                }
                (Token::Any, _) => unreachable!("segments are split at `%`"),
            }
        }
        Anchored { pieces }
    }

    /// Where the segment ends if it matches starting at byte `at`.
    fn match_at<V: Units + ?Sized>(&self, value: &V, mut at: usize) -> Option<usize> {
        let len = value.bytes().len();
        for piece in &self.pieces {
            at = match piece {
                Piece::Lit(lit) => value.bytes()[at..].starts_with(lit).then_some(at + lit.len())?,
                Piece::Skip(n) => skip(value, at, *n, len)?,
            };
        }
        Some(at)
    }

    /// Where the segment starts if it matches ending at byte `at`.
    fn match_before<V: Units + ?Sized>(&self, value: &V, mut at: usize) -> Option<usize> {
        for piece in self.pieces.iter().rev() {
            match piece {
                Piece::Lit(lit) => at = value.bytes()[..at].ends_with(lit).then(|| at - lit.len())?,
                Piece::Skip(n) => {
                    for _ in 0..*n {
                        at -= value.len_before(at)?;
                    }
                }
            }
        }
        Some(at)
    }
}

/// A segment between two `%`: `lead` × `_`, a core that starts and ends with a literal, `trail` × `_`.
struct Middle {
    lead: usize,
    core: Core,
    trail: usize,
}

enum Core {
    Empty,
    /// Only literals.
    Literal(Box<memmem::Finder<'static>>),
    /// Literals with `_` between them.
    Wild(ShiftAnd),
}

impl Middle {
    fn new(tokens: &[Token], encoding: Encoding) -> Middle {
        let lead = tokens.iter().take_while(|t| **t == Token::One).count();
        let trail = tokens[lead..].iter().rev().take_while(|t| **t == Token::One).count();
        let core = &tokens[lead..tokens.len() - trail];
        let core = if core.is_empty() {
            Core::Empty
        } else if core.contains(&Token::One) {
            Core::Wild(ShiftAnd::new(core))
        } else {
            let mut bytes = Vec::new();
            for token in core {
                if let Token::Lit(unit) = token {
                    encoding.push(*unit, &mut bytes);
                }
            }
            Core::Literal(Box::new(memmem::Finder::new(&bytes).into_owned()))
        };
        Middle { lead, core, trail }
    }

    /// The end of the leftmost match that starts at or after byte `from` and ends by byte `end`.
    fn find<V: Units + ?Sized>(&self, value: &V, from: usize, end: usize) -> Option<usize> {
        // `_%` is `%_`: the leading `_` are taken first, the trailing ones after the leftmost core.
        let at = skip(value, from, self.lead, end)?;
        let at = match &self.core {
            Core::Empty => at,
            Core::Literal(finder) => at + finder.find(&value.bytes()[at..end])? + finder.needle().len(),
            Core::Wild(shift_and) => shift_and.find_end(value, at, end)?,
        };
        skip(value, at, self.trail, end)
    }
}

/// Shift-And over a fixed-length run of literals and `_`: bit `j` of the state is set when the last
/// `j + 1` units read match the run's first `j + 1`.
struct ShiftAnd {
    len: usize,
    /// Bits of the positions holding `_` (they accept any unit).
    any: Vec<u64>,
    /// Per literal unit: the positions that accept it.
    positions: HashMap<u32, Positions>,
}

/// A unit that appears at least once per 64 positions of the run keeps a bit mask; a rarer one the list
/// of where it is. Either way a step costs O(⌈len / 64⌉) for it, and all of them fit in O(len) memory.
enum Positions {
    /// Where the unit is, and every `_`.
    Mask(Vec<u64>),
    /// Where the unit is (ascending).
    List(Vec<usize>),
}

impl ShiftAnd {
    fn new(run: &[Token]) -> ShiftAnd {
        let words = run.len().div_ceil(64);
        let mut any = vec![0; words];
        let mut lists: HashMap<u32, Vec<usize>> = HashMap::new();
        for (j, token) in run.iter().enumerate() {
            match token {
                Token::One => any[j / 64] |= 1 << (j % 64),
                Token::Lit(unit) => lists.entry(*unit).or_default().push(j),
                Token::Any => unreachable!("segments are split at `%`"),
            }
        }
        let positions = lists
            .into_iter()
            .map(|(unit, list)| {
                if list.len() >= words {
                    let mut mask = any.clone();
                    for j in list {
                        mask[j / 64] |= 1 << (j % 64);
                    }
                    (unit, Positions::Mask(mask))
                } else {
                    (unit, Positions::List(list))
                }
            })
            .collect();
        ShiftAnd { len: run.len(), any, positions }
    }

    /// The end of the leftmost match starting at or after byte `at` and ending by byte `end`.
    fn find_end<V: Units + ?Sized>(&self, value: &V, mut at: usize, end: usize) -> Option<usize> {
        let words = self.any.len();
        let (last_word, last_bit) = ((self.len - 1) / 64, (self.len - 1) % 64);
        let mut state = vec![0u64; words];
        // Words past `live` are zero: partial matches usually die young, so a step rarely costs more
        // than a word or two, however long the run.
        let mut live = 0;
        let mut hits = Vec::new();
        while at < end {
            let (unit, len) = value.unit_at(at)?;
            at += len;
            live = (live + 1).min(words);
            // state = (state << 1 | 1) & accepts(unit): every partial match extended by one unit, plus
            // one starting here, kept where the run accepts `unit`.
            let accepts = match self.positions.get(&unit) {
                Some(Positions::Mask(mask)) => mask,
                Some(Positions::List(list)) => {
                    // Bit `j` of the shifted state is bit `j - 1` of the current one.
                    let was_set = |j: usize| j == 0 || (state[(j - 1) / 64] >> ((j - 1) % 64)) & 1 == 1;
                    hits.extend(list.iter().copied().take_while(|&j| j / 64 < live).filter(|&j| was_set(j)));
                    &self.any
                }
                None => &self.any,
            };
            let mut carry = 1;
            for (word, accept) in state[..live].iter_mut().zip(accepts) {
                let old = *word;
                *word = ((old << 1) | carry) & accept;
                carry = old >> 63;
            }
            for j in hits.drain(..) {
                state[j / 64] |= 1 << (j % 64);
            }
            if live > last_word && (state[last_word] >> last_bit) & 1 == 1 {
                return Some(at);
            }
            while live > 0 && state[live - 1] == 0 {
                live -= 1;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
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
}
