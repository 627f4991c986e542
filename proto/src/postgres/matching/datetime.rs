//! Date and time input (`date`, `timestamp`, `timestamptz`, `time`, `timetz`) as instants.
//!
//! Accepted: the ISO 8601 forms PostgreSQL prints (`2024-01-31`, `2024-01-31 12:00:00.5+02`, `T`
//! separator, `Z`/`UTC`/`GMT`/numeric offsets, ` BC`/` AD`) and the special values `infinity`,
//! `-infinity`, `epoch`, `now`, `today`, `tomorrow`, `yesterday` (`allballs` and `now` for times). A
//! value without offset is UTC (the session time zone); zone names and other DateStyles are refused.
//! Fractions beyond microseconds are rounded half up.

use std::time::{SystemTime, UNIX_EPOCH};

use super::cast::PgError;
use super::number::pg_space;

pub(super) const MICROS_PER_SEC: i128 = 1_000_000;
const MICROS_PER_DAY: i128 = 86_400 * MICROS_PER_SEC;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Date,
    Timestamp,
    Timestamptz,
}

pub(super) enum DtError {
    Syntax,
    Range,
}

impl DtError {
    pub(super) fn into_pg(self, type_name: &str, text: &str) -> PgError {
        match self {
            DtError::Syntax => PgError::datetime_syntax(type_name, text),
            DtError::Range => PgError::datetime_range(text),
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (year 0 = 1 BC).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn now_micros() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i128)
}

/// A cursor over ASCII input.
struct Cursor<'a> {
    s: &'a [u8],
}

impl Cursor<'_> {
    fn number(&mut self, min_len: usize, max_len: usize) -> Option<i64> {
        let len = self.s.iter().take(max_len).take_while(|b| b.is_ascii_digit()).count();
        if len < min_len {
            return None;
        }
        let v = std::str::from_utf8(&self.s[..len]).ok()?.parse().ok()?;
        self.s = &self.s[len..];
        Some(v)
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.s.first() == Some(&b) {
            self.s = &self.s[1..];
            true
        } else {
            false
        }
    }

    fn skip_space(&mut self) {
        while self.s.first().is_some_and(|b| pg_space(char::from(*b))) {
            self.s = &self.s[1..];
        }
    }

    fn rest_eq_ignore_case(&self, word: &str) -> bool {
        self.s.eq_ignore_ascii_case(word.as_bytes())
    }
}

/// `HH:MM[:SS[.frac]]` → microseconds since midnight (24:00:00 allowed).
fn time_of_day(c: &mut Cursor<'_>) -> Result<i128, DtError> {
    let hour = c.number(1, 2).ok_or(DtError::Syntax)?;
    if !c.eat(b':') {
        return Err(DtError::Syntax);
    }
    let minute = c.number(2, 2).ok_or(DtError::Syntax)?;
    let (mut second, mut micros) = (0, 0i128);
    if c.eat(b':') {
        second = c.number(2, 2).ok_or(DtError::Syntax)?;
        if c.eat(b'.') {
            let len = c.s.iter().take_while(|b| b.is_ascii_digit()).count();
            if len == 0 {
                return Err(DtError::Syntax);
            }
            let digits = &c.s[..len];
            for (i, d) in digits.iter().take(7).enumerate() {
                let d = i128::from(d - b'0');
                match i {
                    0..=5 => micros = micros * 10 + d,
                    _ if d >= 5 => micros += 1,
                    _ => {}
                }
            }
            micros *= 10i128.pow(6u32.saturating_sub(len as u32));
            c.s = &c.s[len..];
        }
    }
    let total = ((hour * 60 + minute) * 60 + second) as i128 * MICROS_PER_SEC + micros;
    if minute > 59 || second > 60 || hour > 24 || total > 24 * 3600 * MICROS_PER_SEC {
        return Err(DtError::Range);
    }
    Ok(total)
}

/// `Z`, `UTC`, `GMT`, `+HH`, `+HHMM`, `+HH:MM[:SS]` → seconds east of UTC; `None` if absent.
fn zone(c: &mut Cursor<'_>) -> Result<Option<i32>, DtError> {
    c.skip_space();
    for name in ["utc", "gmt", "z"] {
        if c.s.len() >= name.len() && c.s[..name.len()].eq_ignore_ascii_case(name.as_bytes()) {
            c.s = &c.s[name.len()..];
            return Ok(Some(0));
        }
    }
    let sign = match c.s.first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Ok(None),
    };
    c.s = &c.s[1..];
    let hours = c.number(1, 2).ok_or(DtError::Syntax)?;
    let mut minutes = 0;
    let mut seconds = 0;
    if c.eat(b':') {
        minutes = c.number(2, 2).ok_or(DtError::Syntax)?;
        if c.eat(b':') {
            seconds = c.number(2, 2).ok_or(DtError::Syntax)?;
        }
    } else if let Some(m) = c.number(2, 2) {
        minutes = m;
    }
    if hours > 15 || minutes > 59 || seconds > 59 {
        return Err(DtError::Range);
    }
    Ok(Some(sign * (hours * 3600 + minutes * 60 + seconds) as i32))
}

/// A date, timestamp or timestamptz → days (date) or microseconds since the Unix epoch.
pub(super) fn parse_datetime(text: &str, kind: Kind) -> Result<i128, DtError> {
    let t = text.trim_matches(pg_space);
    let scale = |days: i128| if kind == Kind::Date { days } else { days * MICROS_PER_DAY };
    let today = now_micros().div_euclid(MICROS_PER_DAY);
    match t.to_ascii_lowercase().as_str() {
        "infinity" | "+infinity" => return Ok(i128::MAX),
        "-infinity" => return Ok(i128::MIN),
        "epoch" => return Ok(0),
        "today" => return Ok(scale(today)),
        "tomorrow" => return Ok(scale(today + 1)),
        "yesterday" => return Ok(scale(today - 1)),
        "now" => return Ok(if kind == Kind::Date { today } else { now_micros() }),
        _ => {}
    }
    let mut c = Cursor { s: t.as_bytes() };
    let year = c.number(4, 9).ok_or(DtError::Syntax)?;
    if !c.eat(b'-') {
        return Err(DtError::Syntax);
    }
    let month = c.number(1, 2).ok_or(DtError::Syntax)?;
    if !c.eat(b'-') {
        return Err(DtError::Syntax);
    }
    let day = c.number(1, 2).ok_or(DtError::Syntax)?;
    let mut micros = 0;
    let mut offset = None;
    if c.eat(b'T')
        || c.eat(b't')
        || (c.s.first() == Some(&b' ') && c.s.get(1).is_some_and(u8::is_ascii_digit))
    {
        c.skip_space();
        micros = time_of_day(&mut c)?;
        offset = zone(&mut c)?;
    }
    c.skip_space();
    let year = if c.rest_eq_ignore_case("bc") {
        c.s = &[];
        1 - year
    } else {
        if c.rest_eq_ignore_case("ad") {
            c.s = &[];
        }
        year
    };
    if !c.s.is_empty() {
        return Err(DtError::Syntax);
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(DtError::Range);
    }
    let days = i128::from(days_from_civil(year, month, day));
    Ok(match kind {
        Kind::Date => days,
        Kind::Timestamp => days * MICROS_PER_DAY + micros,
        Kind::Timestamptz => {
            days * MICROS_PER_DAY + micros - i128::from(offset.unwrap_or(0)) * MICROS_PER_SEC
        }
    })
}

/// A time of day, optionally after a date (ignored) and before a zone → (microseconds, seconds east).
pub(super) fn parse_time(text: &str) -> Result<(i128, i32), DtError> {
    let t = text.trim_matches(pg_space);
    match t.to_ascii_lowercase().as_str() {
        "allballs" => return Ok((0, 0)),
        "now" => return Ok((now_micros().rem_euclid(MICROS_PER_DAY), 0)),
        _ => {}
    }
    let mut c = Cursor { s: t.as_bytes() };
    // A leading date (`2024-01-31 12:00`) is accepted and ignored.
    if let Some(i) = t.find([' ', 'T']) {
        if t[..i].matches('-').count() == 2 {
            c.s = &c.s[i + 1..];
        }
    }
    let micros = time_of_day(&mut c)?;
    let offset = zone(&mut c)?.unwrap_or(0);
    c.skip_space();
    if !c.s.is_empty() {
        return Err(DtError::Syntax);
    }
    Ok((micros, offset))
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use super::super::cast::test_support::{cmp, fail, ok};
    use super::super::cast::{cast, Datum, Family};

    #[test]
    fn dates_and_times() {
        assert_eq!(ok("date", "1970-01-02"), Datum::Instant(1));
        assert_eq!(ok("date", "2000-03-01"), Datum::Instant(11017));
        assert_eq!(ok("date", "2024-02-29 23:00"), Datum::Instant(19782));
        assert_eq!(cmp("date", "0044-03-15 BC", "0001-01-01"), Some(Ordering::Less));
        assert_eq!(cmp("date", "infinity", "9999-12-31"), Some(Ordering::Greater));
        assert_eq!(
            fail("date", "2023-02-29"),
            "ERROR 22008 (datetime_field_overflow) date/time field value out of range: \"2023-02-29\""
        );
        assert_eq!(
            fail("date", "hey"),
            "ERROR 22007 (invalid_datetime_format) invalid input syntax for type date: \"hey\""
        );
        assert_eq!(ok("timestamp", "1970-01-01 00:00:01.5"), Datum::Instant(1_500_000));
        assert_eq!(ok("timestamp", "1970-01-01T00:00:00.0000005"), Datum::Instant(1));
        assert_eq!(
            ok("timestamp", "1970-01-01 00:00:00+05"),
            Datum::Instant(0),
            "zone ignored for timestamp"
        );
        assert_eq!(
            cmp("timestamptz", "2024-01-01 12:00:00+02", "2024-01-01T10:00:00Z"),
            Some(Ordering::Equal)
        );
        assert_eq!(
            cmp("timestamptz", "2024-01-01 12:00:00+05:30", "2024-01-01 06:30:00"),
            Some(Ordering::Equal)
        );
        assert_eq!(
            cmp("timestamptz", "2024-01-01 12:00:00-0130", "2024-01-01 13:30 UTC"),
            Some(Ordering::Equal)
        );
        assert_eq!(
            cmp("timestamptz", "2024-01-01 00:00:00.123456+00", "2024-01-01"),
            Some(Ordering::Greater)
        );
        assert_eq!(cmp("timestamptz", "now", "2000-01-01"), Some(Ordering::Greater));
        assert_eq!(cmp("timestamptz", "-infinity", "epoch"), Some(Ordering::Less));
        assert!(cast(&Family::Timestamptz, "2024-01-01 25:00").is_err());
        assert!(cast(&Family::Timestamptz, "2024-01-01 12:00 Europe/Paris").is_err());
        assert!(fail("timestamptz", "nope")
            .ends_with("invalid input syntax for type timestamp with time zone: \"nope\""));
        assert_eq!(ok("time", "12:30"), Datum::Instant(45_000_000_000));
        assert_eq!(cmp("time", "24:00:00", "23:59:59.999999"), Some(Ordering::Greater));
        assert_eq!(
            cmp("timetz", "12:00:00+02", "10:00:00+00"),
            Some(Ordering::Less),
            "same instant, east zone first"
        );
        assert_eq!(cmp("timetz", "12:00:00+02", "12:00:00+02"), Some(Ordering::Equal));
        assert!(fail("time", "noon").ends_with("invalid input syntax for type time: \"noon\""));
    }
}
