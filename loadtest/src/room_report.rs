//! The `room` scenario's table: what each phase measured, gathered in a [`RoomReport`] and printed with
//! [`render_table`]; plus the pure reductions behind some rows (track → seen from the churn log, byte
//! sizes' median and max).

use hdrhistogram::Histogram;

use crate::report::{latency_histogram, mib, render_table, ErrorCounts, LatencySummary};
use crate::room_churn::ChurnResult;
use crate::room_members::ChurnLog;
use crate::room_probe::{ProbeResults, Published};
use crate::room_tally::{Spread, WindowRates};

/// Track ack → observer's first sight, over the churn joins whose track was acknowledged.
#[derive(Debug)]
pub struct TrackSeen {
    pub latency_us: Histogram<u64>,
    pub acked: u64,
    /// Acked joins the observer saw.
    pub seen: u64,
    /// Of those, seen before their churner had the track's reply (counted as 0 µs).
    pub seen_first: u64,
}

impl TrackSeen {
    pub fn of(log: &ChurnLog) -> TrackSeen {
        let mut out = TrackSeen {
            latency_us: latency_histogram(),
            acked: log.acked.len() as u64,
            seen: 0,
            seen_first: 0,
        };
        for (k, acked) in &log.acked {
            let Some(seen) = log.seen.get(k) else { continue };
            out.seen += 1;
            if seen < acked {
                out.seen_first += 1;
            }
            let us = u64::try_from(seen.saturating_duration_since(*acked).as_micros()).unwrap_or(u64::MAX);
            out.latency_us.saturating_record(us);
        }
        out
    }
}

/// `p50 / max` of byte sizes, in KiB.
pub fn bytes_cells(sizes: &[u64]) -> String {
    if sizes.is_empty() {
        return "- / -".to_owned();
    }
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    let kib = |b: u64| format!("{:.1} KiB", b as f64 / 1_024.0);
    format!("{} / {}", kib(sorted[(sorted.len() - 1) / 2]), kib(sorted[sorted.len() - 1]))
}

/// How long the members' presence traffic took to stop.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Settle {
    pub settled: bool,
    /// Seconds from the end of the phase to the last presence frame before the quiet; to the end of
    /// the wait when the quiet never came.
    pub secs: f64,
}

impl Settle {
    pub fn text(&self) -> String {
        if self.settled {
            format!("last frame {:.1} s after the phase ended", self.secs)
        } else {
            format!("still flowing {:.0} s after the phase ended", self.secs)
        }
    }
}

/// CPU seconds over a window: the server's (with `--server-pid`) and this load generator's.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuUse {
    pub server: Option<f64>,
    pub loader: Option<f64>,
    pub window: f64,
}

impl CpuUse {
    fn text(&self) -> String {
        let cell = |s: Option<f64>| s.map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s"));
        format!("{} / {} over {:.1} s", cell(self.server), cell(self.loader), self.window)
    }
}

/// Broadcast deliveries at the members.
#[derive(Debug, Default)]
pub struct BroadcastFigures {
    /// Members alive when the publisher started.
    pub members: u64,
    pub expected: u64,
    pub delivered: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub latency: LatencySummary,
}

/// Everything a `room` run prints.
#[derive(Debug, Default)]
pub struct RoomReport {
    pub title: String,
    pub members: u64,
    pub fill_ok: u64,
    pub fill_failed: u64,
    pub fill_secs: f64,
    /// Connect → track ok, per member.
    pub fill_join: LatencySummary,
    pub fill_errors: ErrorCounts,
    pub fill_cpu: Option<CpuUse>,
    /// After the fill, until no member received presence frames for a while.
    pub settle: Settle,
    pub rss_before: Option<u64>,
    pub rss_after_fill: Option<u64>,
    pub quiet: Option<ProbeResults>,
    pub quiet_rates: WindowRates,
    pub observer_joined: bool,
    pub churn: Option<ChurnResult>,
    pub churn_probes: Option<ProbeResults>,
    pub churn_rates: WindowRates,
    pub churn_cpu: Option<CpuUse>,
    /// After the churn, before the broadcasts.
    pub churn_settle: Option<Settle>,
    /// `presence_diff` frames per member from the churn's start to the end of the run.
    pub churn_diffs: Spread,
    /// The observer's diffs over the same span.
    pub observer_diffs: u64,
    pub track_seen: Option<TrackSeen>,
    pub published: Option<Published>,
    pub broadcast: BroadcastFigures,
    pub members_ended: u64,
    pub errors: ErrorCounts,
}

fn probe_rows(rows: &mut Vec<(String, String)>, name: &str, p: &ProbeResults) {
    rows.push((
        format!("{name} probes ok / failed / due"),
        format!("{} / {} / {}", p.reply_us.len(), p.failed, p.due),
    ));
    rows.push((format!("{name} join → reply p50 / p99 / max"), LatencySummary::of(&p.reply_us).cells()));
    rows.push((
        format!("{name} join → presence p50 / p99 / max"),
        LatencySummary::of(&p.presence_us).cells(),
    ));
    rows.push((
        format!("{name} presence frame p50 / max"),
        format!(
            "{} ({} presence_state, {} count pushes, {} none in time)",
            bytes_cells(&p.presence_bytes),
            p.states,
            p.counts,
            p.no_presence
        ),
    ));
}

fn rate_rows(rows: &mut Vec<(String, String)>, name: &str, r: &WindowRates) {
    rows.push((
        format!("{name}: diffs/member/s mean / max"),
        format!("{} (over {} members, {:.1} s)", r.diffs.cells(1), r.members, r.secs),
    ));
    rows.push((format!("{name}: count pushes/member/s mean / max"), r.counts.cells(2)));
    rows.push((
        format!("{name}: presence KiB/member/s mean / max"),
        format!("{:.1} / {:.1}", r.bytes.mean / 1_024.0, r.bytes.max / 1_024.0),
    ));
}

impl RoomReport {
    fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![
            (
                "fill: members tracked / failed / asked".into(),
                format!(
                    "{} / {} / {} in {:.1} s",
                    self.fill_ok, self.fill_failed, self.members, self.fill_secs
                ),
            ),
            ("fill: connect → track ok p50 / p99 / max".into(), self.fill_join.cells()),
            ("settle after the fill".into(), self.settle.text()),
            (
                "server RSS before / after fill".into(),
                format!("{} / {}", mib(self.rss_before), mib(self.rss_after_fill)),
            ),
        ];
        if let Some(cpu) = &self.fill_cpu {
            rows.push(("fill: CPU server / loader".into(), cpu.text()));
        }
        if let Some(q) = &self.quiet {
            probe_rows(&mut rows, "quiet", q);
            rate_rows(&mut rows, "quiet window", &self.quiet_rates);
        }
        if let Some(c) = &self.churn {
            rows.push((
                "churn: churners connected".into(),
                format!("{} (observer joined: {})", c.churners_connected, self.observer_joined),
            ));
            rows.push((
                "churn: joins due / issued / not on time".into(),
                format!("{} / {} / {}", c.due, c.issued, c.not_on_time),
            ));
            rows.push((
                "churn: joins ok / failed, tracks ok".into(),
                format!("{} / {}, {}", c.joins_ok, c.joins_failed, c.tracks_ok),
            ));
            rows.push(("churn: joins/s reached".into(), format!("{:.1}", c.joins_per_sec)));
            rows.push((
                "churn: due → join reply p50 / p99 / max".into(),
                LatencySummary::of(&c.join_us).cells(),
            ));
            rate_rows(&mut rows, "churn idle members", &self.churn_rates);
            if let Some(cpu) = &self.churn_cpu {
                rows.push(("churn: CPU server / loader".into(), cpu.text()));
            }
        }
        if let Some(t) = &self.track_seen {
            rows.push((
                "churn: track ok → observer p50 / p99 / max".into(),
                LatencySummary::of(&t.latency_us).cells(),
            ));
            rows.push((
                "churn: tracks acked / seen (seen first)".into(),
                format!("{} / {} ({})", t.acked, t.seen, t.seen_first),
            ));
        }
        if let Some(p) = &self.churn_probes {
            probe_rows(&mut rows, "churn", p);
        }
        if let Some(settle) = &self.churn_settle {
            rows.push(("settle after the churn".into(), settle.text()));
        }
        if let Some(p) = &self.published {
            let b = &self.broadcast;
            let unique = b.delivered.saturating_sub(b.duplicates);
            rows.push((
                "broadcast: sent / due, to members".into(),
                format!("{} / {}, {}", p.sent, p.due, b.members),
            ));
            rows.push(("broadcast: expected / received".into(), format!("{} / {}", b.expected, b.delivered)));
            rows.push((
                "broadcast: not received by the end / dup / reordered".into(),
                format!("{} / {} / {}", b.expected.saturating_sub(unique), b.duplicates, b.reordered),
            ));
            rows.push(("broadcast: latency p50 / p99 / max".into(), b.latency.cells()));
            rows.push((
                "broadcast: publisher lag p50 / p99 / max".into(),
                LatencySummary::of(&p.lag_us).cells(),
            ));
        }
        if let Some(c) = &self.churn {
            rows.push((
                "churn → end of run: diffs/member mean / max".into(),
                format!(
                    "{} (observer {}) for ~{} changes (tracks acked + their leaves)",
                    self.churn_diffs.cells(0),
                    self.observer_diffs,
                    c.tracks_ok * 2
                ),
            ));
        }
        rows.push(("members ended during the run".into(), self.members_ended.to_string()));
        rows
    }

    /// The table printed at the end of a run.
    pub fn render(&self) -> String {
        render_table(
            &self.title,
            &self.rows(),
            &[("fill failures", &self.fill_errors), ("errors", &self.errors)],
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    #[test]
    fn track_seen_pairs_acks_with_sightings() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut log = ChurnLog::default();
        log.acked.insert(1, t0);
        log.acked.insert(2, t0 + ms(10));
        log.acked.insert(3, t0);
        log.seen.insert(1, t0 + ms(5));
        log.seen.insert(2, t0 + ms(4)); // before its ack: 0
        log.seen.insert(9, t0); // never acked: not counted
        let t = TrackSeen::of(&log);
        assert_eq!((t.acked, t.seen, t.seen_first), (3, 2, 1));
        assert!((4_995..=5_005).contains(&t.latency_us.max()), "{}", t.latency_us.max());
        assert_eq!(t.latency_us.min(), 0);
    }

    #[test]
    fn byte_cells_show_median_and_max() {
        assert_eq!(bytes_cells(&[]), "- / -");
        assert_eq!(bytes_cells(&[2_048, 1_024, 10_240]), "2.0 KiB / 10.0 KiB");
    }

    #[test]
    fn renders_every_phase() {
        let mut q = ProbeResults { due: 2, ..ProbeResults::default() };
        q.reply_us.record(34_000).unwrap();
        q.presence_us.record(40_000).unwrap();
        q.presence_bytes.push(207 * 1_024);
        q.states = 1;
        let report = RoomReport {
            title: "room".into(),
            members: 10,
            fill_ok: 9,
            fill_failed: 1,
            fill_errors: ErrorCounts::from([("join timeout".to_owned(), 1)]),
            quiet: Some(q),
            settle: Settle { settled: true, secs: 1.5 },
            fill_cpu: Some(CpuUse { server: Some(2.5), loader: None, window: 10.0 }),
            ..RoomReport::default()
        };
        let text = report.render();
        assert!(text.contains("9 / 1 / 10"), "{text}");
        assert!(text.contains("34.0") && text.contains("ms / 34.0"), "{text}");
        assert!(text.contains("207.0 KiB / 207.0 KiB (1 presence_state, 0 count pushes"), "{text}");
        assert!(text.contains("last frame 1.5 s after") && text.contains("join timeout"), "{text}");
        assert!(text.contains("2.5 s / - over 10.0 s"), "{text}");
        assert_eq!(Settle { settled: false, secs: 60.0 }.text(), "still flowing 60 s after the phase ended");
        assert!(!text.contains("churn:"), "{text}");
    }
}
