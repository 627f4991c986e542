//! Which raft peers answer, logged once per change of state.
//!
//! While a voter is down, openraft retries it every heartbeat (or, when the transport says
//! `Unreachable`, after [`super::network`]'s backoff) and logs every failure itself: WARN `error
//! replication to target=…`, ERROR `RPCError`, WARN `… backoff mode …`, about ten lines a second per
//! down voter, which buries everything else and pages people for a follower's planned restart. The
//! transport knows what a failure means (no connected link, no answer in time), so it reports a
//! peer becoming unreachable once (WARN), reminds every [`REMINDER`] while it stays so (WARN), and
//! says when it answers again (INFO); the node's log filter drops openraft's own per-RPC lines for
//! those two failures only (`node/src/telemetry.rs`).
//!
//! Pure bookkeeping ([`Reachability::failed`], [`Reachability::answered`] take the time), so the
//! state changes are tested without a clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::lock;
use crate::NodeId;

/// How often a peer that stays unreachable is mentioned again.
pub const REMINDER: Duration = Duration::from_secs(30);

/// Most peers tracked as unreachable at once (names are stable in practice; this bounds the map).
const MAX_TRACKED: usize = 1024;

/// A peer that does not answer.
#[derive(Debug)]
struct Down {
    since: Instant,
    reminded: Instant,
    failures: u64,
}

/// What to log about a peer after a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Report {
    /// It answered before; now it does not.
    Unreachable,
    /// Still not answering, [`REMINDER`] after the last mention.
    Still { down_for: Duration, failures: u64 },
    /// It answers again.
    Back { down_for: Duration, failures: u64 },
}

/// Peers that do not answer raft RPCs, and since when.
#[derive(Debug, Default)]
pub(crate) struct Reachability {
    down: Mutex<HashMap<NodeId, Down>>,
}

impl Reachability {
    /// A call to `node` failed for want of a link or an answer.
    pub(crate) fn failed(&self, node: &NodeId, now: Instant) -> Option<Report> {
        let mut down = lock(&self.down);
        if let Some(peer) = down.get_mut(node) {
            peer.failures += 1;
            if now.saturating_duration_since(peer.reminded) < REMINDER {
                return None;
            }
            peer.reminded = now;
            return Some(Report::Still {
                down_for: now.saturating_duration_since(peer.since),
                failures: peer.failures,
            });
        }
        if down.len() >= MAX_TRACKED {
            return None;
        }
        down.insert(node.clone(), Down { since: now, reminded: now, failures: 1 });
        Some(Report::Unreachable)
    }

    /// A call to `node` got its answer.
    pub(crate) fn answered(&self, node: &NodeId, now: Instant) -> Option<Report> {
        let peer = lock(&self.down).remove(node)?;
        Some(Report::Back { down_for: now.saturating_duration_since(peer.since), failures: peer.failures })
    }
}

/// Logs a report about `node`; `reason` is why the last call failed.
pub(crate) fn log(node: &NodeId, report: &Report, reason: &dyn std::fmt::Display) {
    match report {
        Report::Unreachable => {
            tracing::warn!(peer = %node, %reason, reminder_every = ?REMINDER, "raft peer unreachable: retrying quietly")
        }
        Report::Still { down_for, failures } => {
            tracing::warn!(peer = %node, %reason, ?down_for, failures, "raft peer still unreachable")
        }
        Report::Back { down_for, failures } => {
            tracing::info!(peer = %node, ?down_for, failures, "raft peer reachable again")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_reported_once_per_change_with_a_reminder() {
        let peers = Reachability::default();
        let (a, b) = (NodeId("a".into()), NodeId("b".into()));
        let t0 = Instant::now();
        assert_eq!(peers.answered(&a, t0), None, "answering peers are not news");
        assert_eq!(peers.failed(&a, t0), Some(Report::Unreachable));
        // Ten attempts a second for 29 s: nothing more to say.
        let quiet = (1..290).filter_map(|i| peers.failed(&a, t0 + Duration::from_millis(100 * i))).count();
        assert_eq!(quiet, 0);
        assert_eq!(peers.failed(&b, t0), Some(Report::Unreachable), "each peer on its own");
        let reminder = peers.failed(&a, t0 + REMINDER);
        assert_eq!(reminder, Some(Report::Still { down_for: REMINDER, failures: 291 }));
        assert_eq!(peers.failed(&a, t0 + REMINDER + Duration::from_secs(1)), None);
        assert_eq!(
            peers.answered(&a, t0 + Duration::from_secs(40)),
            Some(Report::Back { down_for: Duration::from_secs(40), failures: 292 })
        );
        assert_eq!(peers.answered(&a, t0 + Duration::from_secs(41)), None);
        assert_eq!(peers.failed(&a, t0 + Duration::from_secs(42)), Some(Report::Unreachable), "down again");
    }

    #[test]
    fn the_map_is_bounded() {
        let peers = Reachability::default();
        let now = Instant::now();
        for i in 0..MAX_TRACKED + 10 {
            peers.failed(&NodeId(format!("n{i}")), now);
        }
        assert_eq!(lock(&peers.down).len(), MAX_TRACKED);
    }
}
