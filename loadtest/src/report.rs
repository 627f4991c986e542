//! Latency histograms, error counts and the printed result table (plus an optional CSV row).
//!
//! Latencies are recorded in microseconds in hdrhistogram (3 significant digits, up to 10 minutes).
//! Workers ship histograms to the parent as `(value, count)` pairs ([`HistogramData`]), which the parent
//! merges exactly.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency a histogram tracks (10 minutes, in µs); larger values are clamped.
const MAX_LATENCY_MICROS: u64 = 600_000_000;

/// Counts of failures by kind label.
pub type ErrorCounts = BTreeMap<String, u64>;

/// Adds `other` into `into`.
pub fn merge_errors(into: &mut ErrorCounts, other: &ErrorCounts) {
    for (kind, n) in other {
        *into.entry(kind.clone()).or_default() += n;
    }
}

/// An empty latency histogram (µs).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3).expect("static histogram bounds are valid")
}

/// A histogram as `(value, count)` pairs, one per non-empty bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistogramData(pub Vec<(u64, u64)>);

impl HistogramData {
    pub fn from_histogram(h: &Histogram<u64>) -> HistogramData {
        HistogramData(h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect())
    }

    /// Adds these counts to `into`.
    pub fn add_to(&self, into: &mut Histogram<u64>) {
        for &(value, count) in &self.0 {
            into.saturating_record_n(value, count);
        }
    }
}

/// p50, p99 and max of a histogram in µs; `None` fields when it is empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: Option<u64>,
    pub p99: Option<u64>,
    pub max: Option<u64>,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            p50: Some(h.value_at_quantile(0.50)),
            p99: Some(h.value_at_quantile(0.99)),
            max: Some(h.max()),
        }
    }

    fn cells(&self) -> String {
        format!("{} / {} / {}", ms(self.p50), ms(self.p99), ms(self.max))
    }
}

fn ms(micros: Option<u64>) -> String {
    micros.map_or_else(|| "-".to_owned(), |us| format!("{:.2} ms", us as f64 / 1_000.0))
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "-".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1_024.0))
}

/// Server RSS samples in KiB (`None` without `--server-pid`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RssSamples {
    pub before: Option<u64>,
    pub idle: Option<u64>,
    pub end: Option<u64>,
}

impl RssSamples {
    /// `(idle - before) / connections` in KiB.
    pub fn per_connection_kib(&self, connections: u64) -> Option<f64> {
        let (before, idle) = (self.before?, self.idle?);
        (connections > 0).then(|| (idle as f64 - before as f64) / connections as f64)
    }
}

/// Everything a fanout run prints.
#[derive(Debug, Clone, Default)]
pub struct FanoutReport {
    pub title: String,
    pub connections_ok: u64,
    pub connections_failed: u64,
    pub connect_join: LatencySummary,
    pub publishers_ok: u64,
    pub broadcasts_sent: u64,
    pub publish_secs: f64,
    pub deliveries_expected: u64,
    pub deliveries_received: u64,
    pub delivery: LatencySummary,
    pub rss: RssSamples,
    pub errors: ErrorCounts,
}

impl FanoutReport {
    fn rows(&self) -> Vec<(String, String)> {
        let rate = |n: u64| if self.publish_secs > 0.0 { n as f64 / self.publish_secs } else { 0.0 };
        let pct = if self.deliveries_expected > 0 {
            format!(" ({:.2}%)", 100.0 * self.deliveries_received as f64 / self.deliveries_expected as f64)
        } else {
            String::new()
        };
        let per_conn = self
            .rss
            .per_connection_kib(self.connections_ok)
            .map_or_else(|| "-".to_owned(), |k| format!("{k:.1} KiB"));
        vec![
            (
                "connections ok / failed".into(),
                format!("{} / {}", self.connections_ok, self.connections_failed),
            ),
            ("connect+join p50 / p99 / max".into(), self.connect_join.cells()),
            ("publishers ok".into(), self.publishers_ok.to_string()),
            (
                "broadcasts sent".into(),
                format!(
                    "{} ({:.1}/s over {:.1} s)",
                    self.broadcasts_sent,
                    rate(self.broadcasts_sent),
                    self.publish_secs
                ),
            ),
            (
                "deliveries expected / received".into(),
                format!("{} / {}{pct}", self.deliveries_expected, self.deliveries_received),
            ),
            ("deliveries/s".into(), format!("{:.1}", rate(self.deliveries_received))),
            ("delivery latency p50 / p99 / max".into(), self.delivery.cells()),
            (
                "server RSS before / idle / end".into(),
                format!("{} / {} / {}", mib(self.rss.before), mib(self.rss.idle), mib(self.rss.end)),
            ),
            ("server RSS per connection".into(), per_conn),
        ]
    }

    /// The table printed at the end of a run.
    pub fn render(&self) -> String {
        let rows = self.rows();
        let width = rows
            .iter()
            .map(|(k, _)| k.len())
            .chain(self.errors.keys().map(|k| k.len() + 2))
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.title);
        let _ = writeln!(out, "{}", "-".repeat(width + 40));
        for (key, value) in rows {
            let _ = writeln!(out, "{key:<width$}  {value}");
        }
        let _ = writeln!(out, "{:<width$}  {}", "errors", if self.errors.is_empty() { "none" } else { "" });
        for (kind, n) in &self.errors {
            let _ = writeln!(out, "  {kind:<w$}  {n}", w = width - 2);
        }
        out
    }

    /// Appends one CSV row to `path`, writing the header first when the file is new or empty.
    pub fn append_csv(&self, path: &Path) -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        if file.metadata()?.len() == 0 {
            writeln!(file, "{}", CSV_HEADER)?;
        }
        writeln!(file, "{}", self.csv_row())
    }

    fn csv_row(&self) -> String {
        let opt = |v: Option<u64>| v.map_or_else(String::new, |v| v.to_string());
        let errors: Vec<String> =
            self.errors.iter().map(|(k, n)| format!("{}={n}", k.replace([',', '"', ';'], " "))).collect();
        format!(
            "\"{}\",{},{},{},{},{},{},{},{:.3},{},{},{},{},{},{},{},{},\"{}\"",
            self.title.replace('"', "'"),
            self.connections_ok,
            self.connections_failed,
            opt(self.connect_join.p50),
            opt(self.connect_join.p99),
            opt(self.connect_join.max),
            self.publishers_ok,
            self.broadcasts_sent,
            self.publish_secs,
            self.deliveries_expected,
            self.deliveries_received,
            opt(self.delivery.p50),
            opt(self.delivery.p99),
            opt(self.delivery.max),
            opt(self.rss.before),
            opt(self.rss.idle),
            opt(self.rss.end),
            errors.join(";"),
        )
    }
}

const CSV_HEADER: &str = "title,connections_ok,connections_failed,connect_join_p50_us,connect_join_p99_us,\
connect_join_max_us,publishers_ok,broadcasts_sent,publish_secs,deliveries_expected,deliveries_received,\
delivery_p50_us,delivery_p99_us,delivery_max_us,rss_before_kib,rss_idle_kib,rss_end_kib,errors";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_range() {
        let mut h = latency_histogram();
        for us in 1..=10_000 {
            h.record(us).unwrap();
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 10_000);
        // 3 significant digits: within 0.1% of the exact value.
        let near = |got: Option<u64>, want: u64| got.is_some_and(|g| g.abs_diff(want) <= want / 1_000 + 1);
        assert!(near(s.p50, 5_000), "{s:?}");
        assert!(near(s.p99, 9_900), "{s:?}");
        assert!(near(s.max, 10_000), "{s:?}");
    }

    #[test]
    fn empty_and_clamped() {
        assert_eq!(LatencySummary::of(&latency_histogram()), LatencySummary::default());
        let mut h = latency_histogram();
        h.saturating_record(u64::MAX);
        assert!(LatencySummary::of(&h).max.is_some_and(|m| m >= MAX_LATENCY_MICROS));
    }

    #[test]
    fn data_round_trip_merges_exactly() {
        let (mut a, mut b) = (latency_histogram(), latency_histogram());
        for us in [10, 10, 250, 1_000, 123_456] {
            a.record(us).unwrap();
        }
        for us in [10, 99_999, 5] {
            b.record(us).unwrap();
        }
        let mut direct = a.clone();
        direct.add(&b).unwrap();
        let json = serde_json::to_string(&HistogramData::from_histogram(&b)).unwrap();
        let mut merged = a.clone();
        serde_json::from_str::<HistogramData>(&json).unwrap().add_to(&mut merged);
        assert_eq!(LatencySummary::of(&merged), LatencySummary::of(&direct));
        assert_eq!(merged.len(), 8);
        assert_eq!(merged.count_at(10), 3);
    }

    #[test]
    fn errors_merge() {
        let mut a = ErrorCounts::from([("connect refused".to_owned(), 2)]);
        merge_errors(
            &mut a,
            &ErrorCounts::from([("connect refused".to_owned(), 1), ("http status 429".to_owned(), 4)]),
        );
        assert_eq!(a["connect refused"], 3);
        assert_eq!(a["http status 429"], 4);
    }

    #[test]
    fn rss_per_connection() {
        let rss = RssSamples { before: Some(10_000), idle: Some(60_000), end: None };
        assert_eq!(rss.per_connection_kib(10_000), Some(5.0));
        assert_eq!(rss.per_connection_kib(0), None);
        assert_eq!(RssSamples::default().per_connection_kib(5), None);
    }

    #[test]
    fn renders_a_table() {
        let mut h = latency_histogram();
        h.record(1_500).unwrap();
        let report = FanoutReport {
            title: "fanout".into(),
            connections_ok: 9,
            connections_failed: 1,
            connect_join: LatencySummary::of(&h),
            broadcasts_sent: 100,
            publish_secs: 10.0,
            deliveries_expected: 900,
            deliveries_received: 450,
            errors: ErrorCounts::from([("http status 429".to_owned(), 1)]),
            ..FanoutReport::default()
        };
        let text = report.render();
        assert!(text.contains("9 / 1"), "{text}");
        assert!(text.contains("1.50 ms / 1.50 ms / 1.50 ms"), "{text}");
        assert!(text.contains("900 / 450 (50.00%)"), "{text}");
        assert!(text.contains("http status 429"), "{text}");
        assert!(text.contains("45.0"), "{text}");
        assert_eq!(report.csv_row().split(',').count(), CSV_HEADER.split(',').count());
    }
}
