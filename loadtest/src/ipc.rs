//! The parent ↔ worker protocol: workers write one JSON object per line on stdout
//! ([`WorkerMessage`]); the parent writes [`STOP`] on a worker's stdin (closing stdin means the same),
//! or [`SNAPSHOT`] for the counts so far.

use serde::{Deserialize, Serialize};

use crate::report::{ErrorCounts, HistogramData};

/// Line the parent sends to end the receive phase.
pub const STOP: &str = "stop";
/// Line the parent sends for the counts so far (`compare` workers answer with a [`WorkerMessage::Finished`]
/// holding the counts since the previous snapshot, and keep receiving).
pub const SNAPSHOT: &str = "snapshot";

/// A worker's report to the parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// Sent once every connection has joined or failed (or the connect phase timed out).
    Joined(JoinedReport),
    /// Sent after [`STOP`], when the worker's connections are closed.
    Finished(FinishedReport),
}

/// The connect phase of one worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JoinedReport {
    pub ok: u64,
    pub failed: u64,
    /// Connect+join latency (µs) of the connections that joined.
    pub connect_join_us: HistogramData,
    pub errors: ErrorCounts,
    /// Joined receivers per channel index (length = channel count).
    pub joined_per_channel: Vec<u64>,
}

/// The receive phase of one worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FinishedReport {
    /// Deliveries counted, duplicates included.
    pub delivered: u64,
    /// Deliveries of a (publisher, sequence number) the same receiver had already received.
    #[serde(default)]
    pub duplicates: u64,
    /// Deliveries that arrived after a later one of the same publisher (not lost, not duplicated).
    #[serde(default)]
    pub reordered: u64,
    /// Σ over receivers and publishers of the next expected sequence number when the receiver stopped
    /// (see [`crate::payload::SeqTracker::next_total`]).
    #[serde(default)]
    pub seq_next_total: u64,
    /// Delivery latency (µs) of every delivered broadcast.
    pub delivery_us: HistogramData,
    /// Failures after the join (closed sockets, channel closes, undecodable frames).
    pub errors: ErrorCounts,
    /// What only the `cdc` scenario measures (absent for broadcast receivers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdc: Option<CdcFinished>,
}

/// The receive phase of one `cdc` worker, beyond [`FinishedReport::delivered`] (rows a subscriber may
/// see) and [`FinishedReport::delivery_us`] (insert → client latency).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CdcFinished {
    /// Commit → client latency (µs; the commit timestamp has millisecond precision).
    pub commit_us: HistogramData,
    /// Rows delivered to a subscriber whose user does not own them while RLS is on.
    pub leaked: u64,
    /// Rows a subscriber received again or before a row it had already seen (ids go up per subscriber).
    pub out_of_order: u64,
    /// Rows of another run (a different `body` tag), ignored.
    pub foreign: u64,
    /// How many of this worker's subscribers received each row id, as runs of consecutive ids with the
    /// same count: `(first id, ids in the run, count)` (see [`receipt_runs`]).
    #[serde(default)]
    pub receipts: Vec<(i64, u64, u64)>,
}

/// Compresses `(id, count)` pairs into runs of consecutive ids with equal counts; one run when every
/// subscriber got every row.
pub fn receipt_runs(counts: impl IntoIterator<Item = (i64, u64)>) -> Vec<(i64, u64, u64)> {
    let mut sorted: Vec<(i64, u64)> = counts.into_iter().collect();
    sorted.sort_unstable();
    let mut runs: Vec<(i64, u64, u64)> = Vec::new();
    for (id, count) in sorted {
        match runs.last_mut() {
            Some((first, len, c)) if *c == count && first.checked_add_unsigned(*len) == Some(id) => *len += 1,
            _ => runs.push((id, 1, count)),
        }
    }
    runs
}

/// Expands runs back into `(id, count)` pairs.
pub fn expand_runs(runs: &[(i64, u64, u64)]) -> impl Iterator<Item = (i64, u64)> + '_ {
    runs.iter()
        .flat_map(|&(first, len, count)| (0..len).map(move |k| (first.saturating_add_unsigned(k), count)))
}

impl WorkerMessage {
    /// One line of JSON, without the newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("worker messages always serialise")
    }

    pub fn from_line(line: &str) -> Result<WorkerMessage, serde_json::Error> {
        serde_json::from_str(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_compress_into_runs() {
        let counts = [(5, 2), (3, 2), (4, 2), (7, 2), (8, 1), (9, 1)];
        let runs = receipt_runs(counts);
        assert_eq!(runs, vec![(3, 3, 2), (7, 1, 2), (8, 2, 1)]);
        let mut back: Vec<(i64, u64)> = expand_runs(&runs).collect();
        back.sort_unstable();
        let mut want = counts.to_vec();
        want.sort_unstable();
        assert_eq!(back, want);
        assert_eq!(receipt_runs((1..=1_000).map(|id| (id, 50))), vec![(1, 1_000, 50)]);
        assert!(receipt_runs([]).is_empty());
    }

    #[test]
    fn lines_round_trip() {
        let joined = WorkerMessage::Joined(JoinedReport {
            ok: 3,
            failed: 1,
            connect_join_us: HistogramData(vec![(100, 2), (250, 1)]),
            errors: ErrorCounts::from([("connect refused".to_owned(), 1)]),
            joined_per_channel: vec![2, 1],
        });
        let line = joined.to_line();
        assert!(line.starts_with(r#"{"type":"joined""#), "{line}");
        assert!(!line.contains('\n'));
        assert_eq!(WorkerMessage::from_line(&line).unwrap(), joined);
        let finished = WorkerMessage::Finished(FinishedReport { delivered: 9, ..FinishedReport::default() });
        let line = finished.to_line();
        assert!(!line.contains("cdc"), "{line}");
        assert_eq!(WorkerMessage::from_line(&line).unwrap(), finished);
        let cdc = WorkerMessage::Finished(FinishedReport {
            delivered: 2,
            cdc: Some(CdcFinished {
                commit_us: HistogramData(vec![(1_000, 2)]),
                leaked: 1,
                ..CdcFinished::default()
            }),
            ..FinishedReport::default()
        });
        assert_eq!(WorkerMessage::from_line(&cdc.to_line()).unwrap(), cdc);
        assert!(WorkerMessage::from_line("hello").is_err());
    }
}
