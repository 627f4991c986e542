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

    /// `p50 / p99 / max` in milliseconds.
    pub fn cells(&self) -> String {
        format!("{} / {} / {}", ms(self.p50), ms(self.p99), ms(self.max))
    }
}

fn ms(micros: Option<u64>) -> String {
    micros.map_or_else(|| "-".to_owned(), |us| format!("{:.2} ms", us as f64 / 1_000.0))
}

fn opt_count(n: Option<u64>) -> String {
    n.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// KiB as MiB with one decimal, `-` when unknown.
pub fn mib(kib: Option<u64>) -> String {
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

/// The server's `slow_consumer` refusals over the publish phase, from its `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlowConsumers {
    /// The counter when first read (other runs on the same server count too).
    pub at_start: u64,
    /// Frames refused since then.
    pub refused: u64,
    /// Seconds after the publish phase began of the first sample that showed refusals.
    pub first_secs: Option<u64>,
}

/// One stalled reader as the report prints it (see [`crate::stalled`]).
#[derive(Debug, Clone, Default)]
pub struct StalledSummary {
    pub channel: usize,
    pub port: Option<u16>,
    /// Seconds from the start of the publish phase to the first sample where the server had closed
    /// its end of the connection (1 s resolution); `None` if it never did during the run.
    pub server_closed_after_secs: Option<f64>,
    /// The server's end of the socket in that sample.
    pub server_end_at_close: Option<String>,
    /// Largest send queue of the server's socket while it was open.
    pub peak_server_queue_bytes: u64,
    /// Whether the socket table ever showed the server's end (`false`: nothing above is known).
    pub seen: bool,
    /// How the stream ended when the reader finally read, after the run.
    pub ending: String,
    pub drained_bytes: u64,
    pub end_read_secs: f64,
}

impl StalledSummary {
    fn line(&self) -> String {
        let port = self.port.map_or_else(|| "?".to_owned(), |p| p.to_string());
        let closed = match (self.seen, self.server_closed_after_secs) {
            (false, _) => "server end not found in /proc/net/tcp".to_owned(),
            (true, None) => "server kept its end open all run".to_owned(),
            (true, Some(secs)) => format!(
                "server closed its end after {secs:.0} s ({})",
                self.server_end_at_close.as_deref().unwrap_or("?")
            ),
        };
        format!(
            "{} port {port}: {closed}; peak server send queue {}; end read: {} after {} in {:.1} s",
            crate::scenario::fanout::topic(self.channel),
            mib(Some(self.peak_server_queue_bytes / 1_024)),
            self.ending,
            mib(Some(self.drained_bytes / 1_024)),
            self.end_read_secs
        )
    }
}

/// Everything a fanout run prints.
#[derive(Debug, Clone, Default)]
pub struct FanoutReport {
    pub title: String,
    pub connections_ok: u64,
    pub connections_failed: u64,
    pub connect_join: LatencySummary,
    /// Connect-phase failures by kind (receivers, stalled readers).
    pub connect_errors: ErrorCounts,
    /// `TcpExt` listen-queue counters over the connect phase (`None` when /proc could not be read).
    pub listen_drops: Option<Vec<(String, u64)>>,
    pub publishers_ok: u64,
    pub broadcasts_sent: u64,
    /// Broadcasts the publishers' schedules made due in the window.
    pub broadcasts_due: u64,
    pub publish_secs: f64,
    /// How late sends started relative to their schedule.
    pub publisher_lag: LatencySummary,
    pub deliveries_expected: u64,
    pub deliveries_received: u64,
    /// Deliveries to publishers sharing a channel (not measured, not in the figures).
    pub publisher_deliveries: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Σ of the receivers' next expected sequence numbers (broadcasts each knew were sent to it).
    pub seq_next_total: u64,
    /// Delivery latency, from each broadcast's scheduled send time.
    pub delivery: LatencySummary,
    pub rss: RssSamples,
    /// `(seconds since the publish phase began, KiB)`, once a second.
    pub rss_series: Vec<(u64, u64)>,
    /// `(joined, requested)` stalled readers, when there were any.
    pub stalled_joined: Option<(u64, u64)>,
    pub stalled: Vec<StalledSummary>,
    pub slow_consumers: Option<SlowConsumers>,
    /// Failures after the connect phase.
    pub errors: ErrorCounts,
}

impl FanoutReport {
    /// Distinct deliveries (duplicates removed).
    fn unique(&self) -> u64 {
        self.deliveries_received.saturating_sub(self.duplicates)
    }

    /// Expected deliveries that never arrived: every receiver should get every broadcast of every
    /// publisher on its channel once, so whatever is missing from the distinct deliveries is lost.
    pub fn lost(&self) -> u64 {
        self.deliveries_expected.saturating_sub(self.unique())
    }

    /// Of [`FanoutReport::lost`], those after the last broadcast a receiver got from that publisher
    /// (the rest were gaps); all of them when no receiver reported.
    pub fn lost_at_end(&self) -> u64 {
        self.deliveries_expected.saturating_sub(self.seq_next_total).min(self.lost())
    }

    fn rows(&self) -> Vec<(String, String)> {
        let rate = |n: u64| if self.publish_secs > 0.0 { n as f64 / self.publish_secs } else { 0.0 };
        let lost = match self.lost() {
            0 => "0".to_owned(),
            n => format!("{n} ({} in gaps, {} at stream ends)", n - self.lost_at_end(), self.lost_at_end()),
        };
        let pct = if self.deliveries_expected > 0 {
            format!(" ({:.2}%)", 100.0 * self.deliveries_received as f64 / self.deliveries_expected as f64)
        } else {
            String::new()
        };
        let per_conn = self
            .rss
            .per_connection_kib(self.connections_ok)
            .map_or_else(|| "-".to_owned(), |k| format!("{k:.1} KiB"));
        let listen = self.listen_drops.as_ref().map_or_else(
            || "- (/proc/net/netstat not read)".to_owned(),
            |counters| counters.iter().map(|(name, n)| format!("{name} +{n}")).collect::<Vec<_>>().join(", "),
        );
        let extra = self.unique().saturating_sub(self.deliveries_expected);
        let extra =
            if extra > 0 { format!(", {extra} MORE THAN EXPECTED (another run?)") } else { String::new() };
        let peak = self.rss_series.iter().map(|&(_, kib)| kib).max();
        vec![
            (
                "connections ok / failed".into(),
                format!("{} / {}", self.connections_ok, self.connections_failed),
            ),
            ("connect+join p50 / p99 / max".into(), self.connect_join.cells()),
            ("listen queue drops (TcpExt, machine)".into(), listen),
            ("publishers ok".into(), self.publishers_ok.to_string()),
            (
                "broadcasts sent / due".into(),
                format!(
                    "{} / {} ({:.1}/s over {:.1} s)",
                    self.broadcasts_sent,
                    self.broadcasts_due,
                    rate(self.broadcasts_sent),
                    self.publish_secs
                ),
            ),
            ("publisher lag p50 / p99 / max".into(), self.publisher_lag.cells()),
            (
                "deliveries expected / received".into(),
                format!("{} / {}{pct}", self.deliveries_expected, self.deliveries_received),
            ),
            (
                "lost / duplicated / reordered".into(),
                format!("{lost} / {} / {}{extra}", self.duplicates, self.reordered),
            ),
            ("deliveries/s".into(), format!("{:.1}", rate(self.deliveries_received))),
            (
                "also delivered to publishers".into(),
                format!(
                    "{} ({:.1}/s, not measured)",
                    self.publisher_deliveries,
                    rate(self.publisher_deliveries)
                ),
            ),
            ("delivery latency p50 / p99 / max".into(), self.delivery.cells()),
            (
                "server RSS before / idle / end".into(),
                format!("{} / {} / {}", mib(self.rss.before), mib(self.rss.idle), mib(self.rss.end)),
            ),
            ("server RSS peak (1 s samples)".into(), mib(peak)),
            ("server RSS per connection".into(), per_conn),
        ]
    }

    /// The table printed at the end of a run, then the stalled readers and the RSS series.
    pub fn render(&self) -> String {
        let mut out = render_table(
            &self.title,
            &self.rows(),
            &[("connect failures", &self.connect_errors), ("errors", &self.errors)],
        );
        if let Some((joined, requested)) = self.stalled_joined {
            let _ = writeln!(
                out,
                "\nstalled readers: {joined} of {requested} joined (SO_RCVBUF {} KiB), never read during the run",
                crate::stalled::RECV_BUFFER / 1_024
            );
            for s in &self.stalled {
                let _ = writeln!(out, "  {}", s.line());
            }
            let refusals = match self.slow_consumers {
                None => "- (/metrics not read)".to_owned(),
                Some(SlowConsumers { refused: 0, .. }) => "none".to_owned(),
                Some(SlowConsumers { refused, first_secs, .. }) => format!(
                    "{refused} frames refused, first in the sample at {} s",
                    first_secs.map_or_else(|| "?".to_owned(), |s| s.to_string())
                ),
            };
            let _ = writeln!(out, "  server slow_consumer refusals (/metrics): {refusals}");
        }
        if !self.rss_series.is_empty() {
            let _ = writeln!(out, "\nserver RSS over time (seconds after the publish phase began: MiB)");
            for row in self.rss_series.chunks(8) {
                let cells: Vec<String> =
                    row.iter().map(|&(s, kib)| format!("{s:>4}: {:>7.1}", kib as f64 / 1_024.0)).collect();
                let _ = writeln!(out, "  {}", cells.join("  "));
            }
        }
        out
    }

    /// Appends one CSV row to `path`, writing the header first when the file is new or empty.
    pub fn append_csv(&self, path: &Path) -> std::io::Result<()> {
        append_csv_row(path, CSV_HEADER, &self.csv_row())
    }

    fn csv_row(&self) -> String {
        let opt = |v: Option<u64>| v.map_or_else(String::new, |v| v.to_string());
        let mut errors = self.connect_errors.clone();
        merge_errors(&mut errors, &self.errors);
        let listen = |name: &str| {
            opt(self.listen_drops.as_ref().and_then(|c| c.iter().find(|(n, _)| n == name).map(|&(_, v)| v)))
        };
        format!(
            "\"{}\",{},{},{},{},{},{},{},{:.3},{},{},{},{},{},{},{},{},\"{}\",{},{},{},{},{},{},{},{},{}",
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
            csv_errors(&errors),
            self.broadcasts_due,
            opt(self.publisher_lag.p99),
            opt(self.publisher_lag.max),
            self.lost(),
            self.duplicates,
            self.reordered,
            listen("ListenOverflows"),
            listen("ListenDrops"),
            opt(self.rss_series.iter().map(|&(_, kib)| kib).max()),
        )
    }
}

/// A title, a rule, `key  value` rows and groups of counts by kind (e.g. `errors`), aligned.
pub fn render_table(title: &str, rows: &[(String, String)], groups: &[(&str, &ErrorCounts)]) -> String {
    let width = rows
        .iter()
        .map(|(k, _)| k.len())
        .chain(
            groups.iter().flat_map(|(name, counts)| counts.keys().map(|k| k.len() + 2).chain([name.len()])),
        )
        .max()
        .unwrap_or(0)
        .max(8);
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
    let _ = writeln!(out, "{}", "-".repeat(width + 40));
    for (key, value) in rows {
        let _ = writeln!(out, "{key:<width$}  {value}");
    }
    for (name, counts) in groups {
        let _ = writeln!(out, "{name:<width$}  {}", if counts.is_empty() { "none" } else { "" });
        for (kind, n) in counts.iter() {
            let _ = writeln!(out, "  {kind:<w$}  {n}", w = width - 2);
        }
    }
    out
}

/// Error counts as one CSV cell's text: `kind=n;kind=n` with separators blanked out of the kinds.
fn csv_errors(errors: &ErrorCounts) -> String {
    let errors: Vec<String> =
        errors.iter().map(|(k, n)| format!("{}={n}", k.replace([',', '"', ';'], " "))).collect();
    errors.join(";")
}

/// Appends `row` to `path`, writing `header` first when the file is new or empty.
fn append_csv_row(path: &Path, header: &str, row: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    if file.metadata()?.len() == 0 {
        writeln!(file, "{header}")?;
    }
    writeln!(file, "{row}")
}

/// Server CPU time over a measured window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuSample {
    /// CPU seconds (user + system) the server used in the window.
    pub secs: f64,
    /// Length of the window in seconds.
    pub window_secs: f64,
}

/// Everything a cdc run prints.
#[derive(Debug, Clone, Default)]
pub struct CdcReport {
    pub title: String,
    pub subscribers_ok: u64,
    pub subscribers_failed: u64,
    /// TCP connect → `Subscribed to PostgreSQL`.
    pub subscribe: LatencySummary,
    pub rows_inserted: u64,
    pub transactions: u64,
    pub insert_secs: f64,
    pub insert_round_trip: LatencySummary,
    /// `realtime_cdc_changes_total` after − before (`None` when `/metrics` could not be read).
    pub changes_decoded: Option<u64>,
    pub deliveries_expected: u64,
    pub deliveries_received: u64,
    pub leaked: u64,
    pub out_of_order: u64,
    pub foreign: u64,
    /// Rows none of their subscribers received (`None` when a worker's report is missing).
    pub rows_missed: Option<u64>,
    /// Rows only some of their subscribers received.
    pub rows_short: Option<u64>,
    /// Rows received more often than they had subscribers, or not inserted by this run.
    pub rows_repeated: Option<u64>,
    /// The first few of those rows, as text.
    pub row_examples: Vec<String>,
    /// Insert (client clock before the statement) → client.
    pub insert_to_client: LatencySummary,
    /// `commit_timestamp` → client.
    pub commit_to_client: LatencySummary,
    pub rss: RssSamples,
    pub cpu: Option<CpuSample>,
    /// The whole machine over the same window: cores busy (every process: the server, PostgreSQL,
    /// this load generator) and cores there are. Near all of them, latency is the box's, not the server's.
    pub machine: Option<(f64, usize)>,
    pub errors: ErrorCounts,
}

impl CdcReport {
    fn rate(&self, n: u64) -> f64 {
        if self.insert_secs > 0.0 {
            n as f64 / self.insert_secs
        } else {
            0.0
        }
    }

    fn rows(&self) -> Vec<(String, String)> {
        let pct = if self.deliveries_expected > 0 {
            format!(" ({:.2}%)", 100.0 * self.deliveries_received as f64 / self.deliveries_expected as f64)
        } else {
            String::new()
        };
        let changes = self.changes_decoded.map_or_else(
            || "- (/metrics not read: see errors)".to_owned(),
            |n| format!("{n} ({:.1}/s)", self.rate(n)),
        );
        let cpu = self.cpu.map_or_else(
            || "-".to_owned(),
            |c| {
                let share = if c.window_secs > 0.0 { 100.0 * c.secs / c.window_secs } else { 0.0 };
                format!("{:.2} s ({share:.0}% of one core over {:.1} s)", c.secs, c.window_secs)
            },
        );
        let leaked = if self.leaked == 0 { "0".to_owned() } else { format!("{} LEAKED", self.leaked) };
        vec![
            (
                "subscribers ok / failed".into(),
                format!("{} / {}", self.subscribers_ok, self.subscribers_failed),
            ),
            ("connect→subscribed p50 / p99 / max".into(), self.subscribe.cells()),
            (
                "rows inserted".into(),
                format!(
                    "{} ({:.1}/s over {:.1} s, {} transactions)",
                    self.rows_inserted,
                    self.rate(self.rows_inserted),
                    self.insert_secs,
                    self.transactions
                ),
            ),
            ("insert round trip p50 / p99 / max".into(), self.insert_round_trip.cells()),
            ("changes decoded (server)".into(), changes),
            (
                "deliveries expected / received".into(),
                format!("{} / {}{pct}", self.deliveries_expected, self.deliveries_received),
            ),
            ("authorised deliveries/s".into(), format!("{:.1}", self.rate(self.deliveries_received))),
            ("leaked rows (other owner)".into(), leaked),
            ("repeated / out-of-order rows".into(), self.out_of_order.to_string()),
            (
                "rows missed / short / repeated".into(),
                format!(
                    "{} / {} / {}",
                    opt_count(self.rows_missed),
                    opt_count(self.rows_short),
                    opt_count(self.rows_repeated)
                ),
            ),
            ("rows of other runs".into(), self.foreign.to_string()),
            ("insert→client p50 / p99 / max".into(), self.insert_to_client.cells()),
            ("commit→client p50 / p99 / max".into(), self.commit_to_client.cells()),
            (
                "server RSS before / idle / end".into(),
                format!("{} / {} / {}", mib(self.rss.before), mib(self.rss.idle), mib(self.rss.end)),
            ),
            ("server CPU".into(), cpu),
            (
                "machine CPU (every process)".into(),
                self.machine.map_or_else(
                    || "-".to_owned(),
                    |(busy, cores)| format!("{busy:.2} of {cores} cores busy"),
                ),
            ),
        ]
    }

    /// The rows, plus the anomalous row examples under the row counts.
    fn rows_with_examples(&self) -> Vec<(String, String)> {
        let mut rows = self.rows();
        if !self.row_examples.is_empty() {
            let at =
                rows.iter().position(|(k, _)| k.starts_with("rows missed")).map_or(rows.len(), |i| i + 1);
            rows.insert(at, ("  e.g.".into(), self.row_examples.join(", ")));
        }
        rows
    }

    /// The table printed at the end of a run.
    pub fn render(&self) -> String {
        render_table(&self.title, &self.rows_with_examples(), &[("errors", &self.errors)])
    }

    /// Appends one CSV row to `path`, writing the header first when the file is new or empty.
    pub fn append_csv(&self, path: &Path) -> std::io::Result<()> {
        append_csv_row(path, CDC_CSV_HEADER, &self.csv_row())
    }

    fn csv_row(&self) -> String {
        let opt = |v: Option<u64>| v.map_or_else(String::new, |v| v.to_string());
        let lat = |s: &LatencySummary| format!("{},{},{}", opt(s.p50), opt(s.p99), opt(s.max));
        format!(
            "\"{}\",{},{},{},{},{},{:.3},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},\"{}\"",
            self.title.replace('"', "'"),
            self.subscribers_ok,
            self.subscribers_failed,
            lat(&self.subscribe),
            self.rows_inserted,
            self.transactions,
            self.insert_secs,
            lat(&self.insert_round_trip),
            opt(self.changes_decoded),
            self.deliveries_expected,
            self.deliveries_received,
            self.leaked,
            self.out_of_order,
            self.foreign,
            opt(self.rows_missed),
            opt(self.rows_short),
            opt(self.rows_repeated),
            lat(&self.insert_to_client),
            lat(&self.commit_to_client),
            opt(self.rss.before),
            opt(self.rss.idle),
            opt(self.rss.end),
            self.cpu.map_or_else(String::new, |c| format!("{:.3}", c.secs)),
            self.cpu.map_or_else(String::new, |c| format!("{:.3}", c.window_secs)),
            csv_errors(&self.errors),
        )
    }
}

const CDC_CSV_HEADER: &str = "title,subscribers_ok,subscribers_failed,subscribe_p50_us,subscribe_p99_us,\
subscribe_max_us,rows_inserted,transactions,insert_secs,insert_rtt_p50_us,insert_rtt_p99_us,insert_rtt_max_us,\
changes_decoded,deliveries_expected,deliveries_received,leaked,out_of_order,foreign,rows_missed,rows_short,\
rows_repeated,insert_to_client_p50_us,\
insert_to_client_p99_us,insert_to_client_max_us,commit_to_client_p50_us,commit_to_client_p99_us,\
commit_to_client_max_us,rss_before_kib,rss_idle_kib,rss_end_kib,cpu_secs,cpu_window_secs,errors";

const CSV_HEADER: &str = "title,connections_ok,connections_failed,connect_join_p50_us,connect_join_p99_us,\
connect_join_max_us,publishers_ok,broadcasts_sent,publish_secs,deliveries_expected,deliveries_received,\
delivery_p50_us,delivery_p99_us,delivery_max_us,rss_before_kib,rss_idle_kib,rss_end_kib,errors,\
broadcasts_due,publisher_lag_p99_us,publisher_lag_max_us,lost,duplicated,reordered,listen_overflows,listen_drops,\
rss_peak_kib";

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
            duplicates: 3,
            reordered: 2,
            seq_next_total: 800,
            connect_errors: ErrorCounts::from([("http status 429".to_owned(), 1)]),
            listen_drops: Some(vec![("ListenOverflows".into(), 0), ("ListenDrops".into(), 4)]),
            rss_series: (0..10).map(|s| (s, 1_024 * (s + 1))).collect(),
            stalled_joined: Some((1, 1)),
            stalled: vec![StalledSummary {
                channel: 2,
                port: Some(40_000),
                server_closed_after_secs: Some(12.0),
                server_end_at_close: Some("FIN_WAIT1, no file descriptor, 10 bytes unsent".into()),
                seen: true,
                ending: "close frame 1008 \"too slow\"".into(),
                ..StalledSummary::default()
            }],
            slow_consumers: Some(SlowConsumers { at_start: 5, refused: 300, first_secs: Some(4) }),
            ..FanoutReport::default()
        };
        let text = report.render();
        assert!(text.contains("9 / 1"), "{text}");
        assert!(text.contains("453 (353 in gaps, 100 at stream ends) / 3 / 2"), "{text}");
        assert!(text.contains("ListenOverflows +0, ListenDrops +4"), "{text}");
        assert!(
            text.contains("connect failures") && text.contains("errors  ") && text.contains("none"),
            "{text}"
        );
        assert!(text.contains("realtime:load-2 port 40000: server closed its end after 12 s"), "{text}");
        assert!(text.contains("   9:    10.0"), "{text}");
        assert!(text.contains("300 frames refused, first in the sample at 4 s"), "{text}");
        assert!(text.contains("10.0 MiB"), "{text}");
        assert!(text.contains("1.50 ms / 1.50 ms / 1.50 ms"), "{text}");
        assert!(text.contains("900 / 450 (50.00%)"), "{text}");
        assert!(text.contains("http status 429"), "{text}");
        assert!(text.contains("45.0"), "{text}");
        assert_eq!(report.csv_row().split(',').count(), CSV_HEADER.split(',').count());
    }

    #[test]
    fn renders_a_cdc_table() {
        let mut h = latency_histogram();
        h.record(2_500).unwrap();
        let report = CdcReport {
            title: "cdc".into(),
            subscribers_ok: 50,
            rows_inserted: 3_000,
            transactions: 3_000,
            insert_secs: 15.0,
            changes_decoded: Some(3_000),
            deliveries_expected: 15_000,
            deliveries_received: 15_000,
            leaked: 2,
            rows_missed: Some(1),
            rows_short: Some(0),
            row_examples: vec!["42 missed (user 3)".into()],
            insert_to_client: LatencySummary::of(&h),
            cpu: Some(CpuSample { secs: 4.5, window_secs: 18.0 }),
            machine: Some((1.93, 2)),
            ..CdcReport::default()
        };
        let text = report.render();
        assert!(text.contains("50 / 0"), "{text}");
        assert!(text.contains("3000 (200.0/s over 15.0 s, 3000 transactions)"), "{text}");
        assert!(text.contains("15000 / 15000 (100.00%)"), "{text}");
        assert!(text.contains("2 LEAKED"), "{text}");
        assert!(text.contains("1 / 0 / -"), "{text}");
        assert!(text.contains("e.g.") && text.contains("42 missed (user 3)"), "{text}");
        assert!(text.contains("1000.0"), "{text}");
        assert!(text.contains("2.50 ms / 2.50 ms / 2.50 ms"), "{text}");
        assert!(text.contains("4.50 s (25% of one core over 18.0 s)"), "{text}");
        assert!(text.contains("1.93 of 2 cores busy"), "{text}");
        assert!(text.contains("errors    ") && text.contains("none"), "{text}");
        assert_eq!(report.csv_row().split(',').count(), CDC_CSV_HEADER.split(',').count());
    }
}
