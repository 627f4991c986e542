//! The `presence` scenario's clock work, kept apart from sockets so it can be tested: when did a
//! presence change become visible on every other node, and when did a killed node's presences vanish.
//!
//! A change (track, update, untrack, or leave) is registered *before* its push is sent, with what the
//! observers (the clients on the other nodes, in the same topic) must then show under the subject's key:
//! `[v]` or nothing. Each observer reports the versions it shows under a key whenever its view of that
//! key changes; the first report matching the expectation is when that observer saw it. The change
//! converged when its push was acknowledged and every observer saw it; its convergence time is the
//! last sighting minus the acknowledgement (0 when the relay beat the reply to the sender).
//!
//! At most one change per key is open at a time, so a sighting can only be of the open change.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::report::latency_histogram;

struct Open {
    expected: Vec<u64>,
    registered: Instant,
    acked: Option<Instant>,
    pending: BTreeSet<usize>,
    last_seen: Option<Instant>,
}

/// The eviction watch after a node was killed.
struct KillWatch {
    node: usize,
    at: Instant,
    pending: BTreeSet<usize>,
}

/// Open changes and what was measured.
pub struct Tracker {
    open: HashMap<String, Open>,
    kill: Option<KillWatch>,
    /// Acknowledgement → visible on every other node, µs.
    pub convergence: Histogram<u64>,
    /// Changes not converged within the timeout.
    pub timed_out: u64,
    /// Changes whose push failed or whose client went away before they converged.
    pub abandoned: u64,
    /// Kill → the killed node's presences gone, µs, one per observer.
    pub eviction: Histogram<u64>,
    /// Observers still showing the killed node's presences at the eviction timeout.
    pub not_evicted: u64,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            open: HashMap::new(),
            kill: None,
            convergence: latency_histogram(),
            timed_out: 0,
            abandoned: 0,
            eviction: latency_histogram(),
            not_evicted: 0,
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Tracker {
    /// Whether `key` has an open change.
    pub fn is_open(&self, key: &str) -> bool {
        self.open.contains_key(key)
    }

    pub fn open_changes(&self) -> usize {
        self.open.len()
    }

    /// Opens a change of `key`: `observers` must come to show `expected` under it (the caller leaves out
    /// those that already do).
    pub fn register(&mut self, key: &str, expected: Vec<u64>, observers: BTreeSet<usize>, now: Instant) {
        let change = Open { expected, registered: now, acked: None, pending: observers, last_seen: None };
        if self.open.insert(key.to_owned(), change).is_some() {
            self.abandoned += 1;
        }
    }

    /// The subject's node acknowledged the change at `at`.
    pub fn acked(&mut self, key: &str, at: Instant) {
        if let Some(change) = self.open.get_mut(key) {
            change.acked = Some(at);
        }
        self.settle(key);
    }

    /// The push failed or the subject left: the change will never converge.
    pub fn abandon(&mut self, key: &str) {
        if self.open.remove(key).is_some() {
            self.abandoned += 1;
        }
    }

    /// Observer `observer` now shows `versions` under `key`.
    pub fn observe(&mut self, observer: usize, key: &str, versions: &[u64], now: Instant) {
        let Some(change) = self.open.get_mut(key) else { return };
        if change.expected == versions && change.pending.remove(&observer) {
            change.last_seen = Some(change.last_seen.map_or(now, |t| t.max(now)));
            self.settle(key);
        }
    }

    /// Observer `observer` shows (`true`) or no longer shows any client of the killed node.
    pub fn observe_kill(&mut self, observer: usize, shows_killed: impl FnOnce(usize) -> bool, now: Instant) {
        let Some(kill) = self.kill.as_mut() else { return };
        if kill.pending.contains(&observer) && !shows_killed(kill.node) {
            kill.pending.remove(&observer);
            self.eviction.saturating_record(micros(now.saturating_duration_since(kill.at)));
        }
    }

    /// Node `node` was killed at `at`: its clients are no observers any more, their open changes are
    /// abandoned, and `observers` (the clients elsewhere still showing its presences) are watched.
    pub fn killed(
        &mut self,
        node: usize,
        clients: &BTreeSet<usize>,
        subjects: &[String],
        observers: BTreeSet<usize>,
        at: Instant,
    ) {
        for key in subjects {
            self.abandon(key);
        }
        let keys: Vec<String> = self.open.keys().cloned().collect();
        for change in self.open.values_mut() {
            change.pending.retain(|o| !clients.contains(o));
        }
        for key in keys {
            self.settle(&key);
        }
        self.kill = Some(KillWatch { node, at, pending: observers });
    }

    /// Observers still showing the killed node (0 without a kill).
    pub fn eviction_pending(&self) -> usize {
        self.kill.as_ref().map_or(0, |k| k.pending.len())
    }

    /// Ends the eviction watch, counting the observers that never stopped showing the killed node.
    pub fn end_kill_watch(&mut self) {
        if let Some(kill) = self.kill.take() {
            self.not_evicted += kill.pending.len() as u64;
        }
    }

    /// Times out the changes registered more than `timeout` before `now`.
    pub fn expire(&mut self, now: Instant, timeout: Duration) {
        let before = self.open.len();
        self.open.retain(|_, c| now.saturating_duration_since(c.registered) < timeout);
        self.timed_out += (before - self.open.len()) as u64;
    }

    /// Forgets what was measured so far (after the initial tracks).
    pub fn reset_figures(&mut self) {
        *self = Tracker { open: std::mem::take(&mut self.open), ..Tracker::default() };
    }

    fn settle(&mut self, key: &str) {
        let Some(change) = self.open.get(key) else { return };
        let (Some(acked), true) = (change.acked, change.pending.is_empty()) else { return };
        let seen = change.last_seen.unwrap_or(acked);
        self.convergence.saturating_record(micros(seen.saturating_duration_since(acked)));
        self.open.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[usize]) -> BTreeSet<usize> {
        v.iter().copied().collect()
    }

    #[test]
    fn a_change_converges_at_its_last_sighting_after_the_ack() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = Tracker::default();
        t.register("n0-c0", vec![5], set(&[1, 2]), t0);
        t.observe(1, "n0-c0", &[4], t0 + ms(1)); // not yet
        t.observe(1, "n0-c0", &[5], t0 + ms(2));
        t.acked("n0-c0", t0 + ms(3));
        assert!(t.is_open("n0-c0"));
        t.observe(2, "n0-c0", &[5], t0 + ms(10));
        assert!(!t.is_open("n0-c0"));
        assert_eq!(t.convergence.len(), 1);
        assert!((6_990..=7_010).contains(&t.convergence.max()), "{}", t.convergence.max());
        // Seen everywhere before the ack: 0.
        t.register("k", vec![], set(&[1]), t0);
        t.observe(1, "k", &[], t0 + ms(1));
        t.acked("k", t0 + ms(4));
        assert_eq!((t.convergence.len(), t.convergence.min()), (2, 0));
    }

    #[test]
    fn timeouts_abandons_and_kills() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = Tracker::default();
        t.register("a", vec![1], set(&[1]), t0);
        t.register("b", vec![1], set(&[1, 7]), t0 + s(5));
        t.acked("b", t0 + s(5));
        t.expire(t0 + s(6), s(3));
        assert_eq!((t.timed_out, t.open_changes()), (1, 1));
        // Node 3 (client 7) dies: b now waits only on 1; c (a change of node 3's client) is abandoned.
        t.register("n3-c7", vec![], set(&[1]), t0 + s(5));
        t.killed(3, &set(&[7]), &["n3-c7".into()], set(&[1, 2]), t0 + s(6));
        assert_eq!(t.abandoned, 1);
        t.observe(1, "b", &[1], t0 + s(7));
        assert_eq!(t.open_changes(), 0);
        t.observe_kill(1, |node| node != 3, t0 + s(8));
        t.observe_kill(2, |_| true, t0 + s(8));
        assert_eq!((t.eviction.len(), t.eviction_pending()), (1, 1));
        t.end_kill_watch();
        assert_eq!(t.not_evicted, 1);
        t.reset_figures();
        assert_eq!((t.convergence.len(), t.timed_out, t.not_evicted), (0, 0, 0));
    }
}
