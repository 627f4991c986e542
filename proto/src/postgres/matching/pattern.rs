//! POSIX regular expressions (`~`, `~*`) as PostgreSQL reads them. (`LIKE` is in the sibling `like`.)
//!
//! Regular expressions are PostgreSQL's ARE flavour run on the `regex` crate: the common syntax is the
//! same, and the ARE-only spellings are rewritten (`\m \M \y \Y \Z`, `\B` for a backslash, `\b` for
//! backspace, `\xhhh`, `\cX`, `[[:<:]]`, embedded options like `(?i)`, the `***=` and `***:` directors).
//! `.` matches newlines, as in PostgreSQL. Not available: back-references and lookaround (refused as
//! invalid), collating elements longer than one character.
//!
//! Cost: an expression whose compiled form would pass `SIZE_LIMIT` is refused ("too complex"), so memory
//! per expression is bounded. Time is bounded per change: an [`Expression`] matches with a lazy DFA
//! (`regex-automata`'s hybrid DFA, linear in the value) that *gives up* when an expression makes it
//! rebuild its cache over and over, instead of falling back, as the `regex` crate does, to simulating
//! the NFA at O(value × compiled size) (`a.{2000}c` against 200,000 random `a`/`b`: ~10 s). After giving
//! up (or on non-ASCII text around a Unicode `\b`, which the lazy DFA cannot decide), the full `regex`
//! engine runs only on values of at most `FALLBACK_MAX_BYTES`; on longer ones the condition is NULL
//! (the change is not delivered to that subscription) and a warning is logged. One subscriber's
//! expression therefore costs the hub at most a few cache rebuilds plus one pass over the value.
//!
//! A compiled expression is kept by its subscription (`matching::Filter`) so that its match caches stay
//! warm; a small per-thread cache, bounded in entries and key bytes, shares compilations between
//! subscriptions with the same pattern and with the subscribe-time check.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use std::sync::Mutex;

use regex::{Regex, RegexBuilder};
use regex_automata::hybrid::dfa::{Cache as DfaCache, DFA};
use regex_automata::nfa::thompson;
use regex_automata::util::syntax;
use regex_automata::Input;

/// Most compiled expressions kept by the per-thread cache.
const CACHE_CAPACITY: usize = 64;
/// Most pattern text kept as cache keys, in bytes.
const CACHE_KEY_BYTES: usize = 1 << 20;
/// Compiled-size limits: a filter must not make a worker build a huge automaton.
const SIZE_LIMIT: usize = 1 << 21;

/// Lazy DFA cache per expression, and how often it may be rebuilt (with too few bytes searched per
/// state built) before the search gives up.
const DFA_CACHE_BYTES: usize = 2 << 20;
const DFA_CLEARS: usize = 3;
const DFA_BYTES_PER_STATE: usize = 10;
/// Longest value the full `regex` engine runs on once the lazy DFA gave up.
const FALLBACK_MAX_BYTES: usize = 4 * 1024;

/// A shared compiled expression, or PostgreSQL's reason it is invalid (`invalid regular expression: …`).
type Compiled = Result<Arc<Expression>, String>;

/// A compiled expression whose matching time is bounded (module docs).
#[derive(Debug)]
pub struct Expression {
    dfa: DFA,
    cache: Mutex<DfaCache>,
    /// The same expression on the `regex` crate, for short values the lazy DFA could not decide.
    full: Regex,
}

impl Expression {
    /// Whether `value` contains a match; `None` when that could not be decided within the bound.
    pub fn is_match(&self, value: &str) -> Option<bool> {
        let searched = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            self.dfa.try_search_fwd(&mut cache, &Input::new(value).earliest(true))
        };
        match searched {
            Ok(found) => Some(found.is_some()),
            Err(_) if value.len() <= FALLBACK_MAX_BYTES => Some(self.full.is_match(value)),
            Err(error) => {
                tracing::warn!(%error, pattern = self.full.as_str(), len = value.len(), "regex filter too costly");
                None
            }
        }
    }
}

#[derive(Default)]
struct Cache {
    entries: HashMap<(String, bool), Compiled>,
    key_bytes: usize,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// The compiled expression, or PostgreSQL's reason it is invalid.
pub fn regex(pattern: &str, case_insensitive: bool) -> Compiled {
    let key = (pattern.to_owned(), case_insensitive);
    if let Some(hit) = CACHE.with(|c| c.borrow().entries.get(&key).cloned()) {
        return hit;
    }
    let compiled = compile(pattern, case_insensitive).map(Arc::new);
    CACHE.with(|c| {
        let mut cache = c.borrow_mut();
        if cache.entries.len() >= CACHE_CAPACITY || cache.key_bytes + pattern.len() > CACHE_KEY_BYTES {
            *cache = Cache::default();
        }
        if pattern.len() <= CACHE_KEY_BYTES {
            cache.key_bytes += pattern.len();
            cache.entries.insert(key, compiled.clone());
        }
    });
    compiled
}

/// Options an ARE may set in a leading `(?…)`.
struct Flags {
    case_insensitive: bool,
    dot_newline: bool,
    multi_line: bool,
    extended: bool,
    literal: bool,
}

fn compile(pattern: &str, case_insensitive: bool) -> Result<Expression, String> {
    let invalid = |reason: &str| format!("invalid regular expression: {reason}");
    let mut flags =
        Flags { case_insensitive, dot_newline: true, multi_line: false, extended: false, literal: false };
    let mut body = pattern;
    if let Some(rest) = body.strip_prefix("***=") {
        flags.literal = true;
        body = rest;
    } else if let Some(rest) = body.strip_prefix("***:") {
        body = rest;
    }
    if !flags.literal {
        if let Some(options) = body.strip_prefix("(?").and_then(|r| r.split_once(')')) {
            if !options.0.is_empty() && options.0.chars().all(|c| c.is_ascii_lowercase()) {
                for c in options.0.chars() {
                    match c {
                        'c' => flags.case_insensitive = false,
                        'i' => flags.case_insensitive = true,
                        'm' | 'n' => (flags.dot_newline, flags.multi_line) = (false, true),
                        'p' => (flags.dot_newline, flags.multi_line) = (false, false),
                        'w' => (flags.dot_newline, flags.multi_line) = (true, true),
                        's' => (flags.dot_newline, flags.multi_line) = (true, false),
                        'x' => flags.extended = true,
                        't' | 'e' => {}
                        'q' => flags.literal = true,
                        _ => return Err(invalid("invalid embedded option")),
                    }
                }
                body = options.1;
            }
        }
    }
    let translated = if flags.literal { regex::escape(body) } else { translate(body).map_err(invalid)? };
    let full = RegexBuilder::new(&translated)
        .case_insensitive(flags.case_insensitive)
        .dot_matches_new_line(flags.dot_newline)
        .multi_line(flags.multi_line)
        .ignore_whitespace(flags.extended)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(SIZE_LIMIT)
        .build()
        .map_err(|e| invalid(reason(&e)))?;
    let dfa = DFA::builder()
        .configure(
            DFA::config()
                .cache_capacity(DFA_CACHE_BYTES)
                .minimum_cache_clear_count(Some(DFA_CLEARS))
                .minimum_bytes_per_state(Some(DFA_BYTES_PER_STATE))
                .unicode_word_boundary(true),
        )
        .syntax(
            syntax::Config::new()
                .case_insensitive(flags.case_insensitive)
                .dot_matches_new_line(flags.dot_newline)
                .multi_line(flags.multi_line)
                .ignore_whitespace(flags.extended),
        )
        .thompson(thompson::Config::new().nfa_size_limit(Some(SIZE_LIMIT)))
        .build(&translated)
        .map_err(|_| invalid("regular expression is too complex"))?;
    let cache = Mutex::new(dfa.create_cache());
    Ok(Expression { dfa, cache, full })
}

/// PostgreSQL's wording for a compile error of the `regex` crate.
fn reason(err: &regex::Error) -> &'static str {
    let text = err.to_string();
    let has = |s: &str| text.contains(s);
    if has("unclosed group") || has("unopened group") {
        "parentheses () not balanced"
    } else if has("unclosed character class") {
        "brackets [] not balanced"
    } else if has("repetition operator missing expression") {
        "quantifier operand invalid"
    } else if has("unclosed counted repetition") || has("repetition quantifier expects") {
        "braces {} not balanced"
    } else if has("invalid repetition count") || has("exceeds the maximum") {
        "invalid repetition count(s)"
    } else if has("character class range") {
        "invalid character range"
    } else if has("escape") {
        "invalid escape \\ sequence"
    } else if has("size limit") {
        "regular expression is too complex"
    } else {
        "invalid regular expression"
    }
}

/// Rewrites ARE syntax into the `regex` crate's. `Err` carries PostgreSQL's reason for what has no
/// equivalent.
fn translate(pattern: &str) -> Result<String, &'static str> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '\\' => {
                let e = *chars.get(i).ok_or("invalid escape \\ sequence")?;
                i += 1;
                match e {
                    'm' => out.push_str(r"\b{start}"),
                    'M' => out.push_str(r"\b{end}"),
                    'y' => out.push_str(r"\b"),
                    'Y' => out.push_str(r"\B"),
                    'Z' => out.push_str(r"\z"),
                    _ => i = escape(&chars, i, e, &mut out)?,
                }
            }
            '[' => i = bracket(&chars, i, &mut out)?,
            '{' if chars.get(i).is_some_and(char::is_ascii_digit) => {
                out.push('{');
                while let Some(&b) = chars.get(i) {
                    i += 1;
                    out.push(b);
                    if b == '}' {
                        break;
                    }
                }
            }
            '{' | '}' => out.push_str(if c == '{' { r"\{" } else { r"\}" }),
            '(' if chars.get(i) == Some(&'?') => match chars.get(i + 1) {
                Some(':') => out.push('('),
                Some('=' | '!' | '<') => return Err("invalid regular expression"),
                _ => return Err("invalid embedded option"),
            },
            c => out.push(c),
        }
    }
    Ok(out)
}

/// An escape `\e` (already consumed, `i` after it) valid both outside and inside brackets.
fn escape(chars: &[char], mut i: usize, e: char, out: &mut String) -> Result<usize, &'static str> {
    match e {
        'd' | 'D' | 's' | 'S' | 'w' | 'W' | 't' | 'n' | 'r' | 'f' | 'v' | 'a' | 'A' => {
            out.push('\\');
            out.push(e);
        }
        'b' => out.push_str(r"\x08"),
        'B' => out.push_str(r"\\"),
        'e' => out.push_str(r"\x1B"),
        '0' => out.push_str(r"\x00"),
        'c' => {
            let x = chars.get(i).ok_or("invalid escape \\ sequence")?;
            i += 1;
            out.push_str(&format!(r"\x{{{:X}}}", u32::from(*x) & 0x1F));
        }
        'x' | 'u' | 'U' => {
            let max = match e {
                'u' => 4,
                'U' => 8,
                _ => usize::MAX,
            };
            let hex: String = chars[i..].iter().take(max).take_while(|c| c.is_ascii_hexdigit()).collect();
            if hex.is_empty() || (e != 'x' && hex.len() != max) {
                return Err("invalid escape \\ sequence");
            }
            i += hex.len();
            let code = u32::from_str_radix(&hex, 16).map_err(|_| "invalid escape \\ sequence")?;
            char::from_u32(code).ok_or("invalid escape \\ sequence")?;
            out.push_str(&format!(r"\x{{{code:X}}}"));
        }
        '1'..='9' => return Err("invalid backreference number"),
        e if e.is_alphanumeric() => return Err("invalid escape \\ sequence"),
        e => out.push_str(&regex::escape(&e.to_string())),
    }
    Ok(i)
}

/// A bracket expression; `i` is just after `[`. Returns the index after its `]`.
fn bracket(chars: &[char], mut i: usize, out: &mut String) -> Result<usize, &'static str> {
    let unbalanced = "brackets [] not balanced";
    out.push('[');
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    // `[[:<:]]` / `[[:>:]]`: word start / end.
    let rest: String = chars[i..].iter().take(5).collect();
    if out.ends_with('[') && (rest == "[:<:]" || rest == "[:>:]") && chars.get(i + 5) == Some(&']') {
        out.pop();
        out.push_str(if rest == "[:<:]" { r"\b{start}" } else { r"\b{end}" });
        return Ok(i + 6);
    }
    if chars.get(i) == Some(&']') {
        out.push_str(r"\]");
        i += 1;
    }
    loop {
        let c = *chars.get(i).ok_or(unbalanced)?;
        i += 1;
        match c {
            ']' => {
                out.push(']');
                return Ok(i);
            }
            '[' if matches!(chars.get(i), Some(':' | '.' | '=')) => {
                let kind = chars[i];
                let start = i + 1;
                let end = (start..chars.len().saturating_sub(1))
                    .find(|&j| chars[j] == kind && chars[j + 1] == ']')
                    .ok_or(unbalanced)?;
                let name: String = chars[start..end].iter().collect();
                match kind {
                    ':' => out.push_str(&format!("[:{name}:]")),
                    _ if name.chars().count() == 1 => out.push_str(&regex::escape(&name)),
                    _ => return Err("invalid collating element"),
                }
                i = end + 2;
            }
            '\\' => {
                let e = *chars.get(i).ok_or(unbalanced)?;
                i = escape(chars, i + 1, e, out)?;
            }
            '[' | '&' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, value: &str) -> bool {
        regex(pattern, false).unwrap().is_match(value).expect("decided")
    }

    /// `a`/`b` from a fixed xorshift, `len` characters.
    fn random_ab(len: usize) -> String {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x & 1 == 0 {
                    'a'
                } else {
                    'b'
                }
            })
            .collect()
    }

    #[test]
    fn costly_expressions_are_bounded_not_slow() {
        // `a.{200}c` makes the lazy DFA thrash on random a/b: it gives up instead of simulating the NFA.
        let re = regex("a.{200}c", false).unwrap();
        let start = std::time::Instant::now();
        assert_eq!(re.is_match(&random_ab(100_000)), None, "undecided on a long value");
        eprintln!("a.{{200}}c on 100,000 a/b (debug build): {:?}", start.elapsed());
        assert_eq!(
            re.is_match(&random_ab(2_000)),
            Some(false),
            "a short value falls back to the full engine"
        );
        assert_eq!(re.is_match(&format!("a{}c", "b".repeat(200))), Some(true));
        // Ordinary expressions stay on the lazy DFA, Unicode classes and word boundaries included.
        let words = regex(r"^\w+@\w+\.\w+$", false).unwrap();
        assert_eq!(words.is_match("ünïcode@example.com"), Some(true));
        let boundary = regex(r"\mfoo\M", false).unwrap();
        assert_eq!(boundary.is_match("a foo b"), Some(true));
        assert_eq!(boundary.is_match(&format!("é{}", "x foo".repeat(10))), Some(true), "non-ASCII: fallback");
    }

    #[test]
    fn regex_basics() {
        assert!(m("^post-", "post-1"));
        assert!(!m("^post-", "a post-1"));
        assert!(m("a.c", "a\nc"), "`.` matches newline");
        assert!(!m("^b", "a\nb"), "`^` is the start of the string");
        assert_eq!(regex("HELLO", true).unwrap().is_match("hello"), Some(true));
        assert!(m("(?i)HELLO", "hello"));
        assert_eq!(regex("(?c)HELLO", true).unwrap().is_match("hello"), Some(false));
        assert!(m("(?n)^b", "a\nb"));
        assert!(m("***=a.c", "xa.cx"));
        assert!(!m("***=a.c", "abc"));
        assert!(m("***:^a", "abc"));
        assert!(m(r"\mfoo\M", "a foo b"));
        assert!(!m(r"\mfoo\M", "afoob"));
        assert!(m(r"\yfoo\y", "foo"));
        assert!(m(r"[[:<:]]foo[[:>:]]", "x foo y"));
        assert!(m(r"a\Bb", r"a\b"));
        assert!(m(r"\x41\u0042", "AB"));
        assert!(m(r"[[:digit:]]+", "x42"));
        assert!(m(r"[]a]", "]"));
        assert!(m(r"[a&&b]", "&"));
        assert!(m(r"a{2}", "aa"));
        assert!(m(r"a{", "a{"));
        assert!(m(r"\d+\.\d+", "3.14"));
        assert!(m(r"end\Z", "the end"));
    }

    #[test]
    fn regex_errors() {
        let e = |p: &str| regex(p, false).unwrap_err();
        assert_eq!(e("("), "invalid regular expression: parentheses () not balanced");
        assert_eq!(e("a)"), "invalid regular expression: parentheses () not balanced");
        assert_eq!(e("[a"), "invalid regular expression: brackets [] not balanced");
        assert_eq!(e("*a"), "invalid regular expression: quantifier operand invalid");
        assert_eq!(e("a{2"), "invalid regular expression: braces {} not balanced");
        assert_eq!(e("a{3,2}"), "invalid regular expression: invalid repetition count(s)");
        assert_eq!(e(r"\q"), "invalid regular expression: invalid escape \\ sequence");
        assert_eq!(e(r"a\"), "invalid regular expression: invalid escape \\ sequence");
        assert_eq!(e(r"(a)\1"), "invalid regular expression: invalid backreference number");
        assert_eq!(e("[z-a]"), "invalid regular expression: invalid character range");
        assert!(e("a(?=b)").starts_with("invalid regular expression"));
        assert!(e("(?b)a").starts_with("invalid regular expression"));
        assert!(e("a{1000000}").starts_with("invalid regular expression"));
    }

    /// How long a short expression can take on a large value (see the module doc): `a.{k}c` against
    /// pseudo-random `a`/`b`, 200,000 of them for docs/benchmarks.md (`REALTIME_FILTER_BENCH=full`,
    /// release), 5,000 otherwise.
    #[test]
    fn regex_worst_case() {
        let value = random_ab(if super::super::full_benchmark() { 200_000 } else { 5_000 });
        let len = value.len();
        for k in [10, 100, 500, 2000] {
            let re = regex(&format!("a.{{{k}}}c"), false).unwrap();
            let start = std::time::Instant::now();
            let got = re.is_match(&value);
            assert_ne!(got, Some(true));
            eprintln!("a.{{{k}}}c on {len} random a/b: {got:?} in {:?}", start.elapsed());
        }
    }
}
