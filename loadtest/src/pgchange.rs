//! The pure parts of the `cdc` scenario's measurements: a `postgres_changes` payload (PROTOCOL.md §5.3)
//! reduced to the fields of a load row, the commit timestamp as Unix nanoseconds, and a counter read
//! from the server's Prometheus text.
//!
//! A load row is `public.lt_cdc (id bigserial, owner uuid, sent_ns bigint, body text)`: `sent_ns` is the
//! inserter's clock when it sent the insert and `body` tags the run, so a subscriber on the same machine
//! computes insert → client latency as `now - sent_ns` and commit → client latency as
//! `now - commit_timestamp` (the timestamp has millisecond precision, so that one reads up to 1 ms high).

use std::borrow::Cow;

use serde::Deserialize;

#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(borrow)]
    data: Data<'a>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    commit_timestamp: Option<Cow<'a, str>>,
    #[serde(borrow)]
    record: Option<Record<'a>>,
    #[serde(borrow)]
    errors: Option<Vec<Cow<'a, str>>>,
}

#[derive(Deserialize)]
struct Record<'a> {
    id: Option<i64>,
    #[serde(borrow)]
    owner: Option<Cow<'a, str>>,
    sent_ns: Option<u64>,
    #[serde(borrow)]
    body: Option<Cow<'a, str>>,
}

/// One inserted load row as a subscriber received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowChange<'a> {
    pub id: i64,
    pub owner: Cow<'a, str>,
    /// The inserter's clock at insert time, Unix nanoseconds.
    pub sent_ns: u64,
    /// The run tag.
    pub body: Option<Cow<'a, str>>,
    /// Commit time in Unix nanoseconds (millisecond precision); `None` when absent or unreadable.
    pub commit_ns: Option<u64>,
}

/// Reads the `postgres_changes` payload `{"ids":[…],"data":{…}}` of an INSERT into the load table;
/// the error is the label the report counts the message under.
pub fn parse_change(payload: &str) -> Result<RowChange<'_>, String> {
    let payload: Payload<'_> =
        serde_json::from_str(payload).map_err(|_| "undecodable postgres_changes payload".to_owned())?;
    let data = payload.data;
    if let Some(errors) = data.errors.filter(|e| !e.is_empty()) {
        return Err(format!("change errors: {}", errors.join("; ")));
    }
    match data.kind.as_deref() {
        Some("INSERT") => {}
        other => return Err(format!("unexpected change type {}", other.unwrap_or("(none)"))),
    }
    let record = data.record.ok_or_else(|| "change without a record".to_owned())?;
    let (Some(id), Some(owner), Some(sent_ns)) = (record.id, record.owner, record.sent_ns) else {
        return Err("record without id, owner or sent_ns".to_owned());
    };
    let commit_ns = data.commit_timestamp.as_deref().and_then(parse_commit_timestamp);
    Ok(RowChange { id, owner, sent_ns, body: record.body, commit_ns })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = if month > 2 { month - 3 } else { month + 9 }; // March-based month [0, 11]
    let doy = (153 * mp + 2) / 5 + day - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (the server's `commit_timestamp`; `+00:00`/`+00` and a space for
/// `T` are accepted too) → Unix nanoseconds. `None` for any other shape, a date before 1970, or a
/// field out of range.
pub fn parse_commit_timestamp(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        digits.bytes().all(|c| c.is_ascii_digit()).then(|| digits.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return None;
        }
        for (i, c) in fraction.bytes().take(len.min(9)).enumerate() {
            nanos += i64::from(c - b'0') * 10i64.pow(8 - i as u32);
        }
        rest = &fraction[len..];
    }
    if !matches!(rest, "Z" | "+00:00" | "+00") {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second;
    u64::try_from(secs.checked_mul(1_000_000_000)?.checked_add(nanos)?).ok()
}

/// The sum of every sample of counter `name` in Prometheus text (`name 12`, `name{label="x"} 3`);
/// `None` when the text has no sample of it.
pub fn counter_total(metrics: &str, name: &str) -> Option<f64> {
    let mut total = None;
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let value = if rest.starts_with('{') {
            rest.rfind('}').map(|end| &rest[end + 1..])
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None
        };
        let Some(value) = value.and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        *total.get_or_insert(0.0) += value;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn commit_timestamps() {
        assert_eq!(parse_commit_timestamp("1970-01-01T00:00:00.000Z"), Some(0));
        // `date -u -d 2000-03-01 +%s` = 951868800 (day after a 400-year leap day).
        assert_eq!(parse_commit_timestamp("2000-03-01T00:00:00.000Z"), Some(951_868_800 * SECOND));
        // `date -u -d '2024-02-29 23:59:59' +%s` = 1709251199.
        assert_eq!(
            parse_commit_timestamp("2024-02-29T23:59:59.999Z"),
            Some(1_709_251_199 * SECOND + 999_000_000)
        );
        // `date -u -d '2026-08-21 12:00:00' +%s` = 1787313600.
        assert_eq!(
            parse_commit_timestamp("2026-08-21T12:00:00.123Z"),
            Some(1_787_313_600 * SECOND + 123_000_000)
        );
        assert_eq!(
            parse_commit_timestamp("2026-08-21 12:00:00.5+00:00"),
            Some(1_787_313_600 * SECOND + 500_000_000)
        );
        assert_eq!(parse_commit_timestamp("2026-08-21T12:00:00Z"), Some(1_787_313_600 * SECOND));
        assert_eq!(
            parse_commit_timestamp("2026-08-21T12:00:00.1234567891Z"),
            Some(1_787_313_600 * SECOND + 123_456_789)
        );
    }

    #[test]
    fn bad_commit_timestamps() {
        for bad in [
            "",
            "2026-08-21",
            "2026-08-21T12:00:00.123",
            "2026-08-21T12:00:00.123+02:00",
            "2026-13-21T12:00:00.123Z",
            "2026-08-21T24:00:00.123Z",
            "2026-08-21T12:00:00.Z",
            "1969-12-31T23:59:59.999Z",
            "+026-08-21T12:00:00.123Z",
            "2026-08-21T12:00:00.123ZZ",
        ] {
            assert_eq!(parse_commit_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn parses_an_insert() {
        let payload = r#"{"ids":[38],"data":{"schema":"public","table":"lt_cdc",
            "commit_timestamp":"2026-08-21T12:00:00.123Z","type":"INSERT",
            "columns":[{"name":"id","type":"int8"},{"name":"owner","type":"uuid"},{"name":"sent_ns","type":"int8"},{"name":"body","type":"text"}],
            "errors":null,
            "record":{"id":42,"owner":"00000000-0000-4000-8000-000000000001","sent_ns":1787313600122000000,"body":"run\"1"}}}"#;
        let row = parse_change(payload).unwrap();
        assert_eq!(row.id, 42);
        assert_eq!(row.owner, "00000000-0000-4000-8000-000000000001");
        assert_eq!(row.sent_ns, 1_787_313_600_122_000_000);
        assert_eq!(row.body.as_deref(), Some("run\"1"));
        assert_eq!(row.commit_ns, Some(1_787_313_600 * SECOND + 123_000_000));
    }

    #[test]
    fn refuses_other_changes() {
        assert_eq!(parse_change("nope").unwrap_err(), "undecodable postgres_changes payload");
        let errors = r#"{"ids":[1],"data":{"type":"INSERT","commit_timestamp":null,"record":{},"errors":["Error 401: Unauthorized"]}}"#;
        assert_eq!(parse_change(errors).unwrap_err(), "change errors: Error 401: Unauthorized");
        let update = r#"{"ids":[1],"data":{"type":"UPDATE","record":{"id":1,"owner":"x","sent_ns":1}}}"#;
        assert_eq!(parse_change(update).unwrap_err(), "unexpected change type UPDATE");
        let partial = r#"{"ids":[1],"data":{"type":"INSERT","errors":null,"record":{"id":1}}}"#;
        assert_eq!(parse_change(partial).unwrap_err(), "record without id, owner or sent_ns");
        let no_ts = r#"{"ids":[1],"data":{"type":"INSERT","commit_timestamp":null,"record":{"id":1,"owner":"o","sent_ns":5}}}"#;
        assert_eq!(parse_change(no_ts).unwrap().commit_ns, None);
    }

    #[test]
    fn counters_from_prometheus_text() {
        let text =
            "# HELP realtime_cdc_changes_total Row changes\n# TYPE realtime_cdc_changes_total counter\n\
            realtime_cdc_changes_total 1234\nrealtime_cdc_changes_total_other 7\n\
            realtime_refusals_total{reason=\"a\"} 2\nrealtime_refusals_total{reason=\"b\"} 3.5\n";
        assert_eq!(counter_total(text, "realtime_cdc_changes_total"), Some(1_234.0));
        assert_eq!(counter_total(text, "realtime_refusals_total"), Some(5.5));
        assert_eq!(counter_total(text, "realtime_cdc_transactions_total"), None);
    }
}
