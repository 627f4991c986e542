//! The table a `private` run prints: the join kinds side by side (so the RLS check's cost reads as a
//! difference against the public baseline, and the cache's saving against the uncached joins), then
//! the database-broadcast figures with the CPU of each process involved, which is what says where a
//! rate that could not be kept was limited (the inserter, the server, or the WAL sender decoding).

use std::fmt::Write as _;

use crate::private_load::ChannelOutcome;
use crate::report::{mib, render_table, CpuSample, ErrorCounts, LatencySummary};

/// One kind of join, measured.
#[derive(Debug, Clone, Default)]
pub struct JoinRow {
    pub kind: &'static str,
    pub ok: u64,
    pub failed: u64,
    /// `phx_join` → `phx_reply`.
    pub join: LatencySummary,
    /// TCP connect + WebSocket handshake (the same work for every kind).
    pub connect: LatencySummary,
    pub secs: f64,
}

/// One channel of the database-broadcast part.
#[derive(Debug, Clone, Default)]
pub struct ChannelRow {
    pub topic: String,
    pub private: bool,
    pub subscribers: u64,
    pub sent: u64,
    /// Rows of this run in `realtime.messages` for the topic (`None` when they could not be counted).
    pub rows: Option<u64>,
    pub outcome: ChannelOutcome,
}

/// The database-broadcast part.
#[derive(Debug, Clone, Default)]
pub struct BroadcastReport {
    pub subscribers_ok: u64,
    pub subscribers_failed: u64,
    /// Connect + join of the subscribers.
    pub subscribe: LatencySummary,
    pub inserters: usize,
    pub batch: usize,
    pub transactions: u64,
    pub transactions_due: u64,
    pub send_secs: f64,
    pub round_trip: LatencySummary,
    pub lag: LatencySummary,
    pub channels: Vec<ChannelRow>,
    pub private_latency: LatencySummary,
    pub public_latency: LatencySummary,
    pub foreign: u64,
    /// `(slot, bytes)` unconfirmed at the end of the sends and after the drain.
    pub slot_lag_at_end: Vec<(String, i64)>,
    pub slot_lag_after_drain: Vec<(String, i64)>,
    pub drain_secs: u64,
    /// `(what, CPU over the send window)`.
    pub cpu: Vec<(String, Option<CpuSample>)>,
    /// Server RSS in KiB before the subscribers and at the end.
    pub rss_before: Option<u64>,
    pub rss_end: Option<u64>,
    pub errors: ErrorCounts,
}

impl BroadcastReport {
    fn sum(&self, f: impl Fn(&ChannelRow) -> u64) -> u64 {
        self.channels.iter().map(f).sum()
    }

    fn rate(&self, n: u64) -> f64 {
        if self.send_secs > 0.0 {
            n as f64 / self.send_secs
        } else {
            0.0
        }
    }

    fn rows(&self) -> Vec<(String, String)> {
        let sent = self.sum(|c| c.sent);
        let rows_in_table = if self.channels.iter().all(|c| c.rows.is_some()) {
            self.sum(|c| c.rows.unwrap_or(0)).to_string()
        } else {
            "- (not counted: see errors)".into()
        };
        let expected = self.sum(|c| c.outcome.expected);
        let delivered = self.sum(|c| c.outcome.delivered);
        let pct = if expected > 0 {
            format!(" ({:.2}%)", 100.0 * delivered as f64 / expected as f64)
        } else {
            String::new()
        };
        let (lost, dup, reo, extra) = (
            self.sum(|c| c.outcome.lost),
            self.sum(|c| c.outcome.duplicates),
            self.sum(|c| c.outcome.reordered),
            self.sum(|c| c.outcome.extra),
        );
        let extra = if extra > 0 { format!(", {extra} MORE THAN EXPECTED") } else { String::new() };
        let private = self.channels.iter().filter(|c| c.private).count();
        let mut rows = vec![
            (
                "subscribers ok / failed".into(),
                format!(
                    "{} / {} on {} channels ({private} private, {} public)",
                    self.subscribers_ok,
                    self.subscribers_failed,
                    self.channels.len(),
                    self.channels.len() - private
                ),
            ),
            ("subscriber connect+join p50 / p99 / max".into(), self.subscribe.cells()),
            (
                "sends committed (realtime.send)".into(),
                format!(
                    "{sent} ({:.1}/s over {:.1} s; {} inserters, {} per transaction, {} / {} transactions due)",
                    self.rate(sent),
                    self.send_secs,
                    self.inserters,
                    self.batch,
                    self.transactions,
                    self.transactions_due
                ),
            ),
            ("rows of this run in realtime.messages".into(), rows_in_table),
            ("transaction round trip p50 / p99 / max".into(), self.round_trip.cells()),
            ("inserter lag behind schedule p50 / p99 / max".into(), self.lag.cells()),
            ("deliveries expected / received".into(), format!("{expected} / {delivered}{pct}")),
            ("deliveries/s".into(), format!("{:.1}", self.rate(delivered))),
            ("lost / duplicated / reordered".into(), format!("{lost} / {dup} / {reo}{extra}")),
            ("broadcasts of other runs".into(), self.foreign.to_string()),
        ];
        if private > 0 {
            rows.push(("commit→client, private p50 / p99 / max".into(), self.private_latency.cells()));
        }
        if private < self.channels.len() {
            rows.push(("commit→client, public p50 / p99 / max".into(), self.public_latency.cells()));
        }
        rows.push(("slot lag at end of sends".into(), slot_lag(&self.slot_lag_at_end)));
        rows.push((
            format!("slot lag after {} s drain", self.drain_secs),
            slot_lag(&self.slot_lag_after_drain),
        ));
        for (what, cpu) in &self.cpu {
            rows.push((format!("CPU {what}"), cpu_cell(cpu)));
        }
        rows.push((
            "server RSS before / end".into(),
            format!("{} / {}", mib(self.rss_before), mib(self.rss_end)),
        ));
        rows
    }

    /// Channels whose deliveries were not exactly what was due, one line each.
    fn anomalies(&self) -> Vec<String> {
        self.channels
            .iter()
            .filter(|c| {
                let o = &c.outcome;
                o.lost + o.duplicates + o.reordered + o.extra > 0 || c.rows.is_some_and(|r| r != c.sent)
            })
            .map(|c| {
                let o = &c.outcome;
                format!(
                    "{} ({}, {} subscribers): {} sent, {} rows, {} expected, {} received, lost {}, dup {}, reordered {}, extra {}",
                    c.topic,
                    if c.private { "private" } else { "public" },
                    c.subscribers,
                    c.sent,
                    c.rows.map_or_else(|| "?".into(), |r| r.to_string()),
                    o.expected,
                    o.delivered,
                    o.lost,
                    o.duplicates,
                    o.reordered,
                    o.extra
                )
            })
            .collect()
    }
}

/// Everything a `private` run prints.
#[derive(Debug, Clone, Default)]
pub struct PrivateReport {
    pub title: String,
    pub joins: Vec<JoinRow>,
    pub join_errors: ErrorCounts,
    pub broadcast: Option<BroadcastReport>,
}

impl PrivateReport {
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.joins.is_empty() {
            let rows: Vec<(String, String)> = self
                .joins
                .iter()
                .map(|j| {
                    let rate = if j.secs > 0.0 { j.ok as f64 / j.secs } else { 0.0 };
                    (
                        format!("{} join p50 / p99 / max", j.kind),
                        format!(
                            "{}   ({} ok / {} failed, {rate:.0} joins/s; connect {})",
                            j.join.cells(),
                            j.ok,
                            j.failed,
                            j.connect.cells()
                        ),
                    )
                })
                .collect();
            out.push_str(&render_table(&self.title, &rows, &[("join failures", &self.join_errors)]));
        }
        if let Some(b) = &self.broadcast {
            if !out.is_empty() {
                out.push('\n');
            }
            let title = if self.joins.is_empty() { self.title.clone() } else { "database broadcast".into() };
            out.push_str(&render_table(&title, &b.rows(), &[("errors", &b.errors)]));
            let anomalies = b.anomalies();
            if !anomalies.is_empty() {
                let _ = writeln!(out, "channels with anomalies:");
                for line in anomalies {
                    let _ = writeln!(out, "  {line}");
                }
            }
        }
        out
    }
}

fn slot_lag(slots: &[(String, i64)]) -> String {
    if slots.is_empty() {
        return "- (no logical slot seen)".into();
    }
    slots
        .iter()
        .map(|(name, bytes)| format!("{name} {:.1} KiB", *bytes as f64 / 1_024.0))
        .collect::<Vec<_>>()
        .join(", ")
}

fn cpu_cell(cpu: &Option<CpuSample>) -> String {
    cpu.map_or_else(
        || "- (not sampled)".to_owned(),
        |c| {
            let share = if c.window_secs > 0.0 { 100.0 * c.secs / c.window_secs } else { 0.0 };
            format!("{:.2} s ({share:.0}% of one core over {:.1} s)", c.secs, c.window_secs)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::latency_histogram;

    fn summary(us: u64) -> LatencySummary {
        let mut h = latency_histogram();
        h.record(us).unwrap();
        LatencySummary::of(&h)
    }

    #[test]
    fn renders_joins_and_broadcast() {
        let report = PrivateReport {
            title: "private".into(),
            joins: vec![
                JoinRow {
                    kind: "public",
                    ok: 10,
                    failed: 0,
                    join: summary(300),
                    connect: summary(900),
                    secs: 1.0,
                },
                JoinRow {
                    kind: "private uncached",
                    ok: 9,
                    failed: 1,
                    join: summary(2_500),
                    secs: 3.0,
                    ..JoinRow::default()
                },
            ],
            join_errors: ErrorCounts::from([("join timeout".to_owned(), 1)]),
            broadcast: Some(BroadcastReport {
                subscribers_ok: 4,
                inserters: 2,
                batch: 5,
                transactions: 40,
                transactions_due: 40,
                send_secs: 2.0,
                channels: vec![
                    ChannelRow {
                        topic: "load-x-b0".into(),
                        private: true,
                        subscribers: 2,
                        sent: 100,
                        rows: Some(100),
                        outcome: ChannelOutcome { expected: 200, delivered: 200, ..Default::default() },
                    },
                    ChannelRow {
                        topic: "load-x-b1".into(),
                        private: false,
                        subscribers: 2,
                        sent: 100,
                        rows: Some(100),
                        outcome: ChannelOutcome {
                            expected: 200,
                            delivered: 190,
                            lost: 10,
                            ..Default::default()
                        },
                    },
                ],
                private_latency: summary(4_000),
                slot_lag_at_end: vec![("slot".into(), 2_048)],
                cpu: vec![
                    ("server".into(), Some(CpuSample { secs: 1.0, window_secs: 2.0 })),
                    ("walsender".into(), None),
                ],
                drain_secs: 3,
                ..BroadcastReport::default()
            }),
        };
        let text = report.render();
        assert!(text.contains("public join p50 / p99 / max"), "{text}");
        assert!(
            text.contains("0.30 ms / 0.30 ms / 0.30 ms   (10 ok / 0 failed, 10 joins/s; connect 0.90 ms"),
            "{text}"
        );
        assert!(text.contains("(9 ok / 1 failed, 3 joins/s"), "{text}");
        assert!(text.contains("join timeout"), "{text}");
        assert!(text.contains("on 2 channels (1 private, 1 public)"), "{text}");
        assert!(
            text.contains(
                "200 (100.0/s over 2.0 s; 2 inserters, 5 per transaction, 40 / 40 transactions due)"
            ),
            "{text}"
        );
        assert!(text.contains("400 / 390 (97.50%)"), "{text}");
        assert!(text.contains("10 / 0 / 0"), "{text}");
        assert!(
            text.lines().any(
                |l| l.starts_with("commit→client, private") && l.ends_with("4.00 ms / 4.00 ms / 4.00 ms")
            ),
            "{text}"
        );
        assert!(text.contains("commit→client, public"), "{text}");
        assert!(text.contains("slot 2.0 KiB") && text.contains("- (no logical slot seen)"), "{text}");
        assert!(text.contains("50% of one core over 2.0 s") && text.contains("- (not sampled)"), "{text}");
        assert!(
            text.contains(
                "load-x-b1 (public, 2 subscribers): 100 sent, 100 rows, 200 expected, 190 received, lost 10"
            ),
            "{text}"
        );
        assert!(!text.contains("load-x-b0 ("), "{text}");
    }
}
