//! What each subscriber saw, judged: rows and broadcasts lost, duplicated and reordered, and what the
//! subscriber was told. Pure (records in, report out), so the checker itself is unit-tested below.
//!
//! The rule for rows (issue 17): a subscriber gets every row committed while it is subscribed,
//! exactly once and in commit order, unless the server ends that subscription and says so
//! (`PostgresChangesGap`, `phx_close`, `phx_error`, a closed socket). A subscription is the time from
//! its `Subscribed to PostgreSQL` to the event that ended it; a row missing from a subscription that
//! was never ended is lost *silently*. Notices that leave the subscription in place
//! (`PostgresChangesDelayed`, `…Resumed`) are recorded but excuse nothing.
//!
//! Broadcasts are at most once (a cut drops what is sent across it), so their loss is reported, not
//! judged; their order per publisher is judged.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

/// Something a subscriber received or did, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `Subscribed to PostgreSQL` arrived: a subscription starts.
    Subscribed,
    /// A `postgres_changes` INSERT of row `id`.
    Row(u64),
    /// A broadcast with sequence `seq` from the publisher on node `from`.
    Broadcast { from: usize, seq: u64 },
    /// A notice that leaves the subscription in place.
    Notice(String),
    /// The server ended the subscription, saying this.
    Ended(String),
}

/// One subscriber's history.
#[derive(Debug, Clone, Default)]
pub struct SubRecord {
    pub node: usize,
    pub events: Vec<(Instant, Event)>,
}

/// A committed row: its id and when its insert was sent.
pub type Sent = (u64, Instant);

/// Rows or broadcasts of one stream, judged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Expected (committed while subscribed).
    pub expected: usize,
    pub received: usize,
    /// Missing, and the subscription they belonged to was ended with a reason.
    pub lost_told: usize,
    /// Missing with nothing said.
    pub lost_silent: usize,
    pub duplicated: usize,
    /// Received after a newer one of the same stream.
    pub reordered: usize,
    /// The first few reorders, `(newest before, this one)`, for the failure message.
    pub reorders: Vec<(u64, u64)>,
    /// The first few runs of silently lost ids, `(first, last)`, for the failure message.
    pub silent_runs: Vec<(u64, u64)>,
}

/// The judgement of one subscriber.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub node: usize,
    pub rows: Counts,
    /// The longest time from a row's insert to its arrival.
    pub max_row_delay: Duration,
    /// Per publisher node.
    pub broadcasts: BTreeMap<usize, Counts>,
    /// Every notice and end, with its time since `origin`.
    pub told: Vec<(Duration, String)>,
}

/// The subscriptions of a record: `(start, end, ended with a reason)`.
fn subscriptions(record: &SubRecord) -> Vec<(Instant, Option<Instant>)> {
    let mut spans = Vec::new();
    let mut open: Option<Instant> = None;
    for (at, event) in &record.events {
        match event {
            Event::Subscribed => {
                if let Some(start) = open.replace(*at) {
                    spans.push((start, Some(*at)));
                }
            }
            Event::Ended(_) => {
                if let Some(start) = open.take() {
                    spans.push((start, Some(*at)));
                }
            }
            _ => {}
        }
    }
    if let Some(start) = open {
        spans.push((start, None));
    }
    spans
}

/// Judges one subscriber against the rows committed (`rows`), the broadcasts each publisher sent
/// (`sent`, by node) and the end of the run (`until`: nothing sent after it is expected).
pub fn judge(
    record: &SubRecord,
    rows: &[Sent],
    sent: &BTreeMap<usize, Vec<Sent>>,
    origin: Instant,
    until: Instant,
) -> Report {
    let spans = subscriptions(record);
    let mut report = Report { node: record.node, ..Report::default() };
    let sent_at: BTreeMap<u64, Instant> = rows.iter().copied().collect();

    let mut got_rows = Vec::new();
    let mut got_broadcasts: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for (at, event) in &record.events {
        match event {
            Event::Row(id) => {
                got_rows.push(*id);
                if let Some(sent) = sent_at.get(id) {
                    report.max_row_delay = report.max_row_delay.max(at.saturating_duration_since(*sent));
                }
            }
            Event::Broadcast { from, seq } => got_broadcasts.entry(*from).or_default().push(*seq),
            Event::Notice(text) | Event::Ended(text) => {
                report.told.push((at.saturating_duration_since(origin), text.clone()))
            }
            Event::Subscribed => {}
        }
    }
    report.rows = count(&got_rows, rows, &spans, until);
    for (from, sent) in sent {
        let got = got_broadcasts.remove(from).unwrap_or_default();
        report.broadcasts.insert(*from, count(&got, sent, &spans, until));
    }
    report
}

/// Counts one stream: `got` in arrival order against `sent` (ids with their send time).
fn count(got: &[u64], sent: &[Sent], spans: &[(Instant, Option<Instant>)], until: Instant) -> Counts {
    let mut counts = Counts { received: got.len(), ..Counts::default() };
    let mut seen = HashSet::new();
    let mut newest = None;
    for id in got {
        if !seen.insert(*id) {
            counts.duplicated += 1;
        }
        if let Some(n) = newest.filter(|n| id < n) {
            counts.reordered += 1;
            if counts.reorders.len() < 5 {
                counts.reorders.push((n, *id));
            }
        }
        newest = newest.max(Some(*id));
    }
    for (id, at) in sent {
        if *at > until {
            continue;
        }
        let Some((_, end)) = spans.iter().find(|(start, end)| at >= start && end.is_none_or(|e| *at < e))
        else {
            continue;
        };
        counts.expected += 1;
        if !seen.contains(id) {
            if end.is_some() {
                counts.lost_told += 1;
            } else {
                counts.lost_silent += 1;
                let runs = counts.silent_runs.len();
                match counts.silent_runs.last_mut() {
                    Some((_, last)) if *last + 1 == *id => *last = *id,
                    _ if runs < 5 => counts.silent_runs.push((*id, *id)),
                    _ => {}
                }
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(origin: Instant, ms: u64) -> Instant {
        origin + Duration::from_millis(ms)
    }

    fn rows(origin: Instant, ids: &[(u64, u64)]) -> Vec<Sent> {
        ids.iter().map(|(id, ms)| (*id, at(origin, *ms))).collect()
    }

    fn record(origin: Instant, events: Vec<(u64, Event)>) -> SubRecord {
        SubRecord { node: 0, events: events.into_iter().map(|(ms, e)| (at(origin, ms), e)).collect() }
    }

    #[test]
    fn a_clean_stream_is_clean() {
        let o = Instant::now();
        let r = record(o, vec![(0, Event::Subscribed), (20, Event::Row(1)), (30, Event::Row(2))]);
        let report = judge(&r, &rows(o, &[(1, 10), (2, 20)]), &BTreeMap::new(), o, at(o, 100));
        assert_eq!(report.rows, Counts { expected: 2, received: 2, ..Counts::default() });
        assert_eq!(report.max_row_delay, Duration::from_millis(10));
    }

    #[test]
    fn a_row_missing_from_an_open_subscription_is_silent_loss() {
        let o = Instant::now();
        let r = record(
            o,
            vec![(0, Event::Subscribed), (20, Event::Notice("delayed".into())), (40, Event::Row(2))],
        );
        let report = judge(&r, &rows(o, &[(1, 10), (2, 30)]), &BTreeMap::new(), o, at(o, 100));
        assert_eq!(report.rows.lost_silent, 1);
        assert_eq!(report.rows.silent_runs, vec![(1, 1)]);
        assert_eq!(report.rows.lost_told, 0);
    }

    #[test]
    fn a_row_missing_from_an_ended_subscription_was_told() {
        let o = Instant::now();
        let r = record(
            o,
            vec![
                (0, Event::Subscribed),
                (20, Event::Ended("gap".into())),
                (30, Event::Subscribed),
                (40, Event::Row(3)),
            ],
        );
        // Row 2 was committed while not subscribed: not expected.
        let report = judge(&r, &rows(o, &[(1, 10), (2, 25), (3, 35)]), &BTreeMap::new(), o, at(o, 100));
        assert_eq!(report.rows, Counts { expected: 2, received: 1, lost_told: 1, ..Counts::default() });
        assert_eq!(report.told, vec![(Duration::from_millis(20), "gap".to_owned())]);
    }

    #[test]
    fn duplicates_and_reorders_are_counted() {
        let o = Instant::now();
        let r = record(
            o,
            vec![
                (0, Event::Subscribed),
                (20, Event::Row(2)),
                (21, Event::Row(1)),
                (22, Event::Row(2)),
                (23, Event::Row(3)),
            ],
        );
        let report = judge(&r, &rows(o, &[(1, 10), (2, 11), (3, 12)]), &BTreeMap::new(), o, at(o, 100));
        assert_eq!(report.rows.duplicated, 1);
        assert_eq!(report.rows.reordered, 1);
        assert_eq!(report.rows.reorders, vec![(2, 1)]);
        assert_eq!(report.rows.lost_silent, 0);
    }

    #[test]
    fn broadcasts_are_judged_per_publisher_and_late_sends_are_not_expected() {
        let o = Instant::now();
        let r = record(
            o,
            vec![
                (0, Event::Subscribed),
                (20, Event::Broadcast { from: 1, seq: 2 }),
                (21, Event::Broadcast { from: 1, seq: 1 }),
                (22, Event::Broadcast { from: 2, seq: 1 }),
            ],
        );
        let sent =
            BTreeMap::from([(1, rows(o, &[(1, 10), (2, 11), (3, 12)])), (2, rows(o, &[(1, 10), (2, 500)]))]);
        let report = judge(&r, &[], &sent, o, at(o, 100));
        assert_eq!(
            report.broadcasts[&1],
            Counts {
                expected: 3,
                received: 2,
                lost_silent: 1,
                reordered: 1,
                reorders: vec![(2, 1)],
                silent_runs: vec![(3, 3)],
                ..Counts::default()
            }
        );
        assert_eq!(report.broadcasts[&2], Counts { expected: 1, received: 1, ..Counts::default() });
    }
}
