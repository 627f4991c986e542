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
#[path = "like_test.rs"]
mod tests;
