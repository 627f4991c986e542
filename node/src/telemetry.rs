//! Logs: `tracing` to stderr, filtered by `RUST_LOG` (default `info`). Stdout is kept for the one
//! machine-readable line announcing the listener.
//!
//! Made to be shipped: `REALTIME_LOG_FORMAT=json` writes one JSON object per line (time, level,
//! target, message and fields, and `span`: the span it happened in with its fields, such as the
//! socket's `conn` and `user` when `RUST_LOG` enables `realtime_node::socket=debug`), and the text format has ANSI colours only when stderr is a terminal, so a log shipper
//! never stores escape codes. openraft's own INFO lines (every election step, membership change and
//! snapshot) are half of a start-up log and say nothing the node does not log itself (the leader, the
//! CDC owner): unless `RUST_LOG` names openraft, only its warnings and errors are shown.
//!
//! One targeted filter on top: openraft 0.9 logs every failed replication RPC to a voter it cannot
//! reach, five lines per retry (`openraft::replication`: WARN `error replication to target=…`,
//! ERROR `RPCError`, WARN `… backoff mode …`; `openraft::engine::handler::replication_handler`: WARN
//! `update progress error`, WARN `heartbeat error: …`), many a second while one voter is down, even
//! for a planned restart. The raft transport logs the same fact once per change of state, with a
//! reminder every 30 s (`realtime_cluster`'s `raft::reachability`), so [`QuietRaftRetries`] drops
//! exactly those openraft events whose error is `Unreachable` or `Timeout`. Every other openraft
//! event passes, including replication errors of any other kind. A `RUST_LOG` that names openraft (`RUST_LOG=info,openraft=info`) keeps them
//! all: whoever asks about openraft gets all of it.

use std::fmt;
use std::io::IsTerminal as _;

use serde::Deserialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// How log lines are written (`REALTIME_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people: one line per event, coloured only on a terminal.
    #[default]
    Text,
    /// For log shippers: one JSON object per line.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// The filter: `RUST_LOG` (default `info`), with openraft held to warnings unless `RUST_LOG` names it
/// (`asks_for_raft`).
fn filter(rust_log: Option<&str>, asks_for_raft: bool) -> EnvFilter {
    let spec = rust_log.unwrap_or("info");
    let quiet_raft = if asks_for_raft { "" } else { ",openraft=warn" };
    EnvFilter::try_new(format!("{spec}{quiet_raft}")).unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"))
}

pub fn init(format: LogFormat) {
    let rust_log = std::env::var("RUST_LOG").ok();
    // Whoever asks about openraft gets all of it: its INFO lines and its per-retry ones.
    let asks_for_raft = rust_log.as_deref().is_some_and(|spec| spec.contains("openraft"));
    let text = (format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
    });
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            // The span an event names as its parent (a socket's), which the span list would miss.
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
    });
    let _ = tracing_subscriber::registry()
        .with((!asks_for_raft).then_some(QuietRaftRetries))
        .with(filter(rust_log.as_deref(), asks_for_raft))
        .with(text)
        .with(json)
        .try_init();
}

/// Drops openraft's per-retry lines about a voter that is unreachable or does not answer in time
/// (see the module docs); nothing else.
pub struct QuietRaftRetries;

/// openraft's modules that log each failed replication RPC.
const REPLICATION: &str = "openraft::replication";
const PROGRESS: &str = "openraft::engine::handler::replication_handler";

impl<S: Subscriber> Layer<S> for QuietRaftRetries {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if (meta.target() != REPLICATION && meta.target() != PROGRESS) || *meta.level() > Level::WARN {
            return true;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        !fields.is_retry_noise(meta.target(), *meta.level())
    }
}

/// How an RPC error to a peer that is down reads ([`openraft::error::Unreachable`] and
/// [`openraft::error::Timeout`]'s `Display`).
fn peer_down(error: &str) -> bool {
    error.starts_with("Unreachable node") || error.starts_with("timeout after")
}

/// The message and error text of an openraft replication event.
#[derive(Default)]
struct Fields {
    message: String,
    error: String,
}

impl Fields {
    fn is_retry_noise(&self, target: &str, level: Level) -> bool {
        let warn = level == Level::WARN;
        if target == PROGRESS {
            return warn
                && ((self.message == "update progress error" && peer_down(&self.error))
                    || self.message.strip_prefix("heartbeat error: ").is_some_and(peer_down));
        }
        // Only entered after an `Unreachable`.
        if warn && self.message.contains("backoff mode: drain events") {
            return true;
        }
        let per_rpc = (warn && self.message.starts_with("error replication to target"))
            || (level == Level::ERROR && self.message == "RPCError");
        per_rpc && peer_down(&self.error)
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "error" | "err" | "result" => self.error = format!("{value:?}"),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "error" | "err" | "result" => self.error = value.to_owned(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// Counts the events that reach it.
    struct Count(Arc<AtomicUsize>);

    impl<S: Subscriber> Layer<S> for Count {
        fn on_event(&self, _event: &Event<'_>, _ctx: Context<'_, S>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Emits what openraft 0.9.25's `replication/mod.rs` logs for one failed RPC to a down voter,
    /// then events that must pass; returns how many passed.
    fn passed(emit: impl FnOnce()) -> usize {
        let count = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry().with(QuietRaftRetries).with(Count(count.clone()));
        tracing::subscriber::with_default(subscriber, emit);
        count.load(Ordering::Relaxed)
    }

    #[test]
    fn openraft_retry_lines_about_a_down_voter_are_dropped() {
        let unreachable = "Unreachable node: no connected control link to node-2";
        let timeout = "timeout after 100ms when AppendEntries 1->2";
        let dropped = passed(|| {
            for error in [unreachable, timeout] {
                tracing::warn!(target: "openraft::replication", error = %error, "error replication to target={}", 2);
                tracing::error!(target: "openraft::replication", err = %error, "RPCError");
            }
            tracing::warn!(target: "openraft::replication", interval = ?std::time::Duration::from_millis(150), "{} backoff mode: drain events without processing them", "backoff_drain_events");
            for error in [unreachable, timeout] {
                tracing::warn!(target: PROGRESS, request_id = %"HeartBeat", result = %error, "update progress error");
                tracing::warn!(target: PROGRESS, "heartbeat error: {}, no update to inflight data", error);
            }
        });
        assert_eq!(dropped, 0);
    }

    #[test]
    fn everything_else_passes() {
        let kept = passed(|| {
            let network = "NetworkError: cannot decode";
            tracing::warn!(target: "openraft::replication", error = %network, "error replication to target={}", 2);
            tracing::error!(target: "openraft::replication", err = %network, "RPCError");
            tracing::error!(target: "openraft::replication", error = %"storage failed", "error replication to target={}", 2);
            tracing::warn!(target: "openraft::core", error = %"Unreachable node: x", "error replication to target={}", 2);
            tracing::warn!(target: "realtime_cluster::raft::reachability", "raft peer unreachable: retrying quietly");
            tracing::info!(target: "openraft::replication", "RPCError");
            tracing::warn!(target: PROGRESS, result = %network, "update progress error");
            tracing::warn!(target: PROGRESS, "heartbeat error: {}, no update to inflight data", network);
            tracing::error!(target: PROGRESS, error = %"Unreachable node: x", "update_matching");
        });
        assert_eq!(kept, 9);
    }
}
