//! The figures `compare` measures for each server, and how they are shown: the table (a column per
//! server), the ratio table (this server ÷ each other server, per measure) and the CSV. Pure formatting, unit-tested here;
//! the plot is in [`crate::compare_plot`].

use std::fmt::Write as _;

use crate::report::ErrorCounts;

/// The servers `compare` knows, in table order; the first is this server.
pub const SERVERS: [&str; 5] = ["realtime", "fastapi", "socketio", "socketioxide", "tokio-fanout"];

/// A server's display name.
pub fn label(server: &str) -> &str {
    match server {
        "realtime" => "realtime",
        "fastapi" => "FastAPI",
        "socketio" => "Socket.IO",
        "socketioxide" => "socketioxide",
        "tokio-fanout" => "tokio-fanout",
        other => other,
    }
}

/// The numerator of the ratios and the servers it is divided by: this server (`realtime`) and every
/// other one, in their order; the first and the rest when this server was not measured.
pub fn reference(figures: &[ServerFigures]) -> Option<(&ServerFigures, Vec<&ServerFigures>)> {
    let at = figures.iter().position(|f| f.server == SERVERS[0]).unwrap_or(0);
    let ours = figures.get(at)?;
    let others = figures.iter().enumerate().filter(|(i, _)| *i != at).map(|(_, f)| f).collect();
    Some((ours, others))
}

/// Everything measured for one server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerFigures {
    pub server: String,
    /// Connections the load tried (members and the publishing pairs), and how many joined.
    pub attempted: u64,
    pub held: u64,
    /// Connect (TCP + WebSocket handshake + join) latency of the members, ms.
    pub connect_p50_ms: f64,
    pub connect_p99_ms: f64,
    /// Server RSS before any connection and once every connection had joined, KiB.
    pub rss_idle_kib: Option<u64>,
    pub rss_joined_kib: Option<u64>,
    /// The fixed-rate phase: messages per second over all publishers, sent, deliveries expected and
    /// received (unique), duplicates, latency from the schedule.
    pub rate: f64,
    pub fixed_sent: u64,
    pub fixed_expected: u64,
    pub fixed_unique: u64,
    pub fixed_duplicates: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// The saturation phase: its length, messages published, deliveries received by every member and
    /// tracker, the server's CPU time, and how busy the server's and the load's cores were.
    pub sat_secs: f64,
    pub sat_sent: u64,
    pub sat_deliveries: u64,
    pub sat_stalls: u64,
    pub sat_server_cpu_secs: f64,
    pub server_core_busy: Option<f64>,
    pub load_core_busy: Option<f64>,
    pub errors: ErrorCounts,
}

impl ServerFigures {
    pub fn rss_per_connection_kib(&self) -> Option<f64> {
        let (idle, joined) = (self.rss_idle_kib?, self.rss_joined_kib?);
        (self.held > 0).then(|| joined.saturating_sub(idle) as f64 / self.held as f64)
    }

    pub fn lost(&self) -> u64 {
        self.fixed_expected.saturating_sub(self.fixed_unique)
    }

    pub fn deliveries_per_sec(&self) -> Option<f64> {
        (self.sat_secs > 0.0).then(|| self.sat_deliveries as f64 / self.sat_secs)
    }

    /// Deliveries per second of the server's CPU time: deliveries per second per core.
    pub fn deliveries_per_cpu_sec(&self) -> Option<f64> {
        (self.sat_server_cpu_secs > 0.0).then(|| self.sat_deliveries as f64 / self.sat_server_cpu_secs)
    }
}

/// Which way a measure improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// One compared measure.
pub struct Measure {
    pub name: &'static str,
    /// CSV column.
    pub key: &'static str,
    pub better: Better,
    pub value: fn(&ServerFigures) -> Option<f64>,
}

/// The measures of the ratio table and the plot.
pub const MEASURES: [Measure; 7] = [
    Measure { name: "connections held", key: "held", better: Better::Higher, value: |f| Some(f.held as f64) },
    Measure {
        name: "connect p99 (ms)",
        key: "connect_p99_ms",
        better: Better::Lower,
        value: |f| (f.held > 0).then_some(f.connect_p99_ms),
    },
    Measure {
        name: "RSS per connection (KiB)",
        key: "rss_per_conn_kib",
        better: Better::Lower,
        value: ServerFigures::rss_per_connection_kib,
    },
    Measure {
        name: "latency p50 at the fixed rate (ms)",
        key: "latency_p50_ms",
        better: Better::Lower,
        value: |f| (f.fixed_unique > 0).then_some(f.latency_p50_ms),
    },
    Measure {
        name: "latency p99 at the fixed rate (ms)",
        key: "latency_p99_ms",
        better: Better::Lower,
        value: |f| (f.fixed_unique > 0).then_some(f.latency_p99_ms),
    },
    Measure {
        name: "deliveries/s at saturation",
        key: "deliveries_per_s",
        better: Better::Higher,
        value: ServerFigures::deliveries_per_sec,
    },
    Measure {
        name: "deliveries per server CPU-second",
        key: "deliveries_per_cpu_s",
        better: Better::Higher,
        value: ServerFigures::deliveries_per_cpu_sec,
    },
];

/// `a ÷ b`, when both are known and `b` is not zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    let (a, b) = (a?, b?);
    (b != 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

/// A ratio as `12.3×` (`n/a` when unknown).
pub fn format_ratio(r: Option<f64>) -> String {
    match r {
        None => "n/a".into(),
        Some(r) if r >= 100.0 => format!("{r:.0}×"),
        Some(r) if r >= 10.0 => format!("{r:.1}×"),
        Some(r) if r >= 0.1 => format!("{r:.2}×"),
        Some(r) => format!("{r:.3}×"),
    }
}

/// A figure with precision that suits its size (`-` when unknown).
pub fn format_value(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.abs() >= 1_000.0 => group_thousands(v.round() as i64),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn group_thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.0} %", v * 100.0))
}

/// The side-by-side table: one column per server, one row per figure (Markdown).
pub fn render_table(figures: &[ServerFigures]) -> String {
    let mut out = String::new();
    let _ = write!(out, "| measure |");
    for f in figures {
        let _ = write!(out, " {} |", label(&f.server));
    }
    let _ = write!(out, "\n|---|");
    out.push_str(&"---:|".repeat(figures.len()));
    out.push('\n');
    let mut row = |name: &str, cell: &dyn Fn(&ServerFigures) -> String| {
        let _ = write!(out, "| {name} |");
        for f in figures {
            let _ = write!(out, " {} |", cell(f));
        }
        out.push('\n');
    };
    row("connections held / tried", &|f| format!("{} / {}", f.held, f.attempted));
    row("connect p50 / p99 (ms)", &|f| {
        format!("{} / {}", format_value(Some(f.connect_p50_ms)), format_value(Some(f.connect_p99_ms)))
    });
    row("server RSS idle → joined (MiB)", &|f| match (f.rss_idle_kib, f.rss_joined_kib) {
        (Some(a), Some(b)) => format!("{:.1} → {:.1}", a as f64 / 1024.0, b as f64 / 1024.0),
        _ => "-".into(),
    });
    row("RSS per connection (KiB)", &|f| format_value(f.rss_per_connection_kib()));
    row("fixed rate: msgs/s, sent", &|f| format!("{} , {}", format_value(Some(f.rate)), f.fixed_sent));
    row("fixed rate: deliveries expected / lost / dup", &|f| {
        format!("{} / {} / {}", f.fixed_expected, f.lost(), f.fixed_duplicates)
    });
    row("latency p50 / p99 / max (ms)", &|f| {
        format!(
            "{} / {} / {}",
            format_value(Some(f.latency_p50_ms)),
            format_value(Some(f.latency_p99_ms)),
            format_value(Some(f.latency_max_ms))
        )
    });
    row("saturation: msgs published", &|f| f.sat_sent.to_string());
    row("saturation: deliveries/s", &|f| format_value(f.deliveries_per_sec()));
    row("saturation: server CPU-s / s", &|f| {
        format_value((f.sat_secs > 0.0).then(|| f.sat_server_cpu_secs / f.sat_secs))
    });
    row("saturation: deliveries per server CPU-s", &|f| format_value(f.deliveries_per_cpu_sec()));
    row("saturation: server core / load core busy", &|f| {
        format!("{} / {}", percent(f.server_core_busy), percent(f.load_core_busy))
    });
    row("saturation: stalled windows", &|f| f.sat_stalls.to_string());
    row("errors", &|f| {
        if f.errors.is_empty() {
            "none".into()
        } else {
            f.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect::<Vec<_>>().join("; ")
        }
    });
    out
}

/// The ratio table: this server ([`reference`]) ÷ each other server, per measure (Markdown).
pub fn render_ratios(figures: &[ServerFigures]) -> String {
    let Some((ours, peers)) = reference(figures) else { return String::new() };
    let mut out = String::from("| measure | better |");
    for p in &peers {
        let _ = write!(out, " {} ÷ {} |", label(&ours.server), label(&p.server));
    }
    let _ = write!(out, "\n|---|---|");
    out.push_str(&"---:|".repeat(peers.len()));
    out.push('\n');
    for m in &MEASURES {
        let better = match m.better {
            Better::Higher => "higher",
            Better::Lower => "lower",
        };
        let _ = write!(out, "| {} | {better} |", m.name);
        for p in &peers {
            let _ = write!(out, " {} |", format_ratio(ratio((m.value)(ours), (m.value)(p))));
        }
        out.push('\n');
    }
    out
}

fn csv_cell(v: Option<f64>) -> String {
    v.map_or_else(String::new, |v| format!("{v:.3}"))
}

/// The CSV: a header, one row per server with every figure, then one `realtime/<server>` row per other
/// server ([`reference`]) with the ratios of the compared measures (other columns empty).
pub fn render_csv(figures: &[ServerFigures]) -> String {
    let mut out = String::from(
        "server,attempted,held,connect_p50_ms,connect_p99_ms,rss_idle_kib,rss_joined_kib,rss_per_conn_kib,\
         rate,fixed_sent,fixed_expected,fixed_lost,fixed_duplicates,latency_p50_ms,latency_p99_ms,latency_max_ms,\
         sat_secs,sat_sent,sat_deliveries,deliveries_per_s,sat_server_cpu_s,deliveries_per_cpu_s,\
         server_core_busy,load_core_busy,errors\n",
    );
    for f in figures {
        let errors: u64 = f.errors.values().sum();
        let _ = writeln!(
            out,
            "{},{},{},{:.3},{:.3},{},{},{},{},{},{},{},{},{:.3},{:.3},{:.3},{:.3},{},{},{},{:.3},{},{},{},{}",
            f.server,
            f.attempted,
            f.held,
            f.connect_p50_ms,
            f.connect_p99_ms,
            f.rss_idle_kib.map_or_else(String::new, |v| v.to_string()),
            f.rss_joined_kib.map_or_else(String::new, |v| v.to_string()),
            csv_cell(f.rss_per_connection_kib()),
            f.rate,
            f.fixed_sent,
            f.fixed_expected,
            f.lost(),
            f.fixed_duplicates,
            f.latency_p50_ms,
            f.latency_p99_ms,
            f.latency_max_ms,
            f.sat_secs,
            f.sat_sent,
            f.sat_deliveries,
            csv_cell(f.deliveries_per_sec()),
            f.sat_server_cpu_secs,
            csv_cell(f.deliveries_per_cpu_sec()),
            csv_cell(f.server_core_busy),
            csv_cell(f.load_core_busy),
            errors,
        );
    }
    if let Some((ours, peers)) = reference(figures) {
        let _ = writeln!(out, "\nratio,{}", MEASURES.iter().map(|m| m.key).collect::<Vec<_>>().join(","));
        for p in peers {
            let cells: Vec<String> =
                MEASURES.iter().map(|m| csv_cell(ratio((m.value)(ours), (m.value)(p)))).collect();
            let _ = writeln!(out, "{}/{},{}", ours.server, p.server, cells.join(","));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(server: &str, held: u64, deliveries: u64, cpu: f64) -> ServerFigures {
        ServerFigures {
            server: server.into(),
            attempted: 10_000,
            held,
            connect_p50_ms: 1.5,
            connect_p99_ms: 12.0,
            rss_idle_kib: Some(10_240),
            rss_joined_kib: Some(10_240 + held * 20),
            rate: 100.0,
            fixed_sent: 2_000,
            fixed_expected: 200_000,
            fixed_unique: 199_990,
            latency_p50_ms: 2.0,
            latency_p99_ms: 8.0,
            latency_max_ms: 30.0,
            sat_secs: 20.0,
            sat_deliveries: deliveries,
            sat_server_cpu_secs: cpu,
            ..ServerFigures::default()
        }
    }

    #[test]
    fn derived_figures() {
        let f = figures("realtime", 10_000, 4_000_000, 19.0);
        assert_eq!(f.rss_per_connection_kib(), Some(20.0));
        assert_eq!(f.lost(), 10);
        assert_eq!(f.deliveries_per_sec(), Some(200_000.0));
        assert!((f.deliveries_per_cpu_sec().unwrap() - 210_526.3).abs() < 0.1);
        let empty = ServerFigures::default();
        assert_eq!((empty.rss_per_connection_kib(), empty.deliveries_per_sec()), (None, None));
        assert_eq!(empty.deliveries_per_cpu_sec(), None);
    }

    #[test]
    fn ratios_and_formats() {
        assert_eq!(ratio(Some(10.0), Some(4.0)), Some(2.5));
        assert_eq!(ratio(Some(10.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(format_ratio(Some(2.5)), "2.50×");
        assert_eq!(format_ratio(Some(12.34)), "12.3×");
        assert_eq!(format_ratio(Some(123.4)), "123×");
        assert_eq!(format_ratio(Some(0.0048)), "0.005×");
        assert_eq!(format_ratio(None), "n/a");
        assert_eq!(format_value(Some(1_234_567.4)), "1,234,567");
        assert_eq!(format_value(Some(-1_234.0)), "-1,234");
        assert_eq!(format_value(Some(123.4)), "123");
        assert_eq!(format_value(Some(12.34)), "12.3");
        assert_eq!(format_value(Some(1.234)), "1.23");
        assert_eq!(format_value(None), "-");
    }

    #[test]
    fn tables_and_csv() {
        let all = vec![
            figures("realtime", 10_000, 4_000_000, 20.0),
            figures("fastapi", 10_000, 200_000, 20.0),
            figures("socketio", 5_000, 1_000_000, 20.0),
            figures("socketioxide", 10_000, 2_000_000, 20.0),
            figures("tokio-fanout", 10_000, 8_000_000, 20.0),
        ];
        let ratios = render_ratios(&all);
        assert!(
            ratios.starts_with(
                "| measure | better | realtime ÷ FastAPI | realtime ÷ Socket.IO | realtime ÷ socketioxide | \
                 realtime ÷ tokio-fanout |\n"
            ),
            "{ratios}"
        );
        assert!(
            ratios.contains("| deliveries/s at saturation | higher | 20.0× | 4.00× | 2.00× | 0.50× |"),
            "{ratios}"
        );
        assert!(ratios.contains("| connections held | higher | 1.00× | 2.00× | 1.00× | 1.00× |"), "{ratios}");
        let table = render_table(&all);
        assert!(
            table.starts_with("| measure | realtime | FastAPI | Socket.IO | socketioxide | tokio-fanout |\n")
        );
        assert!(
            table.contains(
                "| connections held / tried | 10000 / 10000 | 10000 / 10000 | 5000 / 10000 | 10000 / 10000 | \
                 10000 / 10000 |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| saturation: deliveries/s | 200,000 | 10,000 | 50,000 | 100,000 | 400,000 |"),
            "{table}"
        );
        let csv = render_csv(&all);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
        assert!(
            lines[1].starts_with("realtime,10000,10000,1.500,12.000,10240,210240,20.000,100,"),
            "{}",
            lines[1]
        );
        assert!(lines[5].starts_with("tokio-fanout,10000,"), "{}", lines[5]);
        assert!(csv.contains("\nratio,held,connect_p99_ms,"), "{csv}");
        assert!(csv.contains("\nrealtime/fastapi,1.000,1.000,1.000,1.000,1.000,20.000,20.000\n"), "{csv}");
        assert!(csv.contains("\nrealtime/tokio-fanout,1.000,1.000,1.000,1.000,1.000,0.500,0.500\n"), "{csv}");
        assert_eq!(render_ratios(&[]), "");
    }

    /// The ratios are this server's over every other one's, wherever it is in the run's order.
    #[test]
    fn realtime_is_the_reference() {
        let all = vec![
            figures("socketioxide", 10_000, 2_000_000, 20.0),
            figures("tokio-fanout", 10_000, 8_000_000, 20.0),
            figures("realtime", 10_000, 4_000_000, 20.0),
        ];
        let ratios = render_ratios(&all);
        assert!(
            ratios.starts_with("| measure | better | realtime ÷ socketioxide | realtime ÷ tokio-fanout |\n"),
            "{ratios}"
        );
        assert!(ratios.contains("| deliveries/s at saturation | higher | 2.00× | 0.50× |"), "{ratios}");
        let csv = render_csv(&all);
        assert!(
            csv.contains("\nrealtime/socketioxide,") && csv.contains("\nrealtime/tokio-fanout,"),
            "{csv}"
        );
        // Without this server, the first is the reference.
        let (first, rest) = reference(&all[..2]).unwrap();
        assert_eq!((first.server.as_str(), rest.len()), ("socketioxide", 1));
    }
}
