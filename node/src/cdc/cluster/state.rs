//! The decisions of [`super::ClusterCdc`] as two plain state machines, time and the node's view
//! passed in as arguments, so their orderings are unit-tested ([`tests`]) without a cluster:
//!
//! - [`Follower`]: what a node does with the leader's shipments: forward a transaction to its hub, or
//!   drop it and ask for a replay because one before it was missed (a gap); whether its hub sees the
//!   leader's stream live (the leader says so, nothing is missing, the database answers, the leader
//!   was heard lately).
//! - [`Acks`]: on the leader, the cluster-wide acknowledgement (the least position delivered by this
//!   node and every peer reachable within the hold) and when a peer's gap replays the stream.
//!
//! `cluster.rs` keeps the I/O: decoding, the [`super::guard`] checks, the hub's channels, the
//! cluster's messages and watches; it calls these at the same points, in the same order, as before.

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use realtime_cluster::NodeId;

/// How often a follower repeats its delivered position and the leader its stream state (so a new
/// leader, or a node that just joined, learns them without waiting for a change).
pub const REPEAT: Duration = Duration::from_millis(500);

/// A follower that has heard nothing from the leader (not even its repeated stream state) for this
/// long takes the stream as not live: its subscribers are told their changes are delayed after the
/// hub's notice time, as when the leader's own stream goes silent.
pub const LEADER_SILENCE: Duration = Duration::from_millis(4 * REPEAT.as_millis() as u64);

/// At most one replay of the stream per this long.
pub const REPLAY_EVERY: Duration = Duration::from_secs(2);

/// What a follower knows of the leader's shipments, to notice those it missed.
#[derive(Debug, Default)]
pub struct Follower {
    /// End of the last shipped transaction forwarded to the hub.
    forwarded: u64,
    /// A shipped transaction's predecessor was never received: this node is asking for a replay.
    gap: bool,
    /// The last transaction this node refused because it did not (yet) know its sender as leader
    /// (sender, end position): if raft then names that sender and the hub has not taken that
    /// position, it is asked for again as a gap.
    refused: Option<(NodeId, u64)>,
    /// The last leader seen announcing its streams, and whether the start of its current stream was
    /// received: from such a leader, a stream's first transaction without its start means the start
    /// (and what it would have said about a gap) was missed.
    announcer: Option<NodeId>,
    started: bool,
    /// What the leader last said about its stream. This node's hub sees the stream live only while
    /// that holds and no shipment is missing here: a follower that cannot take the leader's shipments
    /// (its link lost some, it cannot check them against the database, or its probe finds the
    /// database unreachable) has its subscribers told their changes are delayed, as the leader's own
    /// would be.
    leader_live: bool,
    /// A shipment could not be checked against the database and none has been since: this node
    /// cannot deliver, whatever the leader's stream does.
    unverifiable: bool,
    /// When the leader was last heard (any shipment it sent).
    leader_heard: Option<Instant>,
    /// This node's probe finds PostgreSQL unreachable.
    database_lost: bool,
}

/// What becomes of a shipped transaction that passed the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// To the hub.
    Forward,
    /// Dropped: one before it was missed (this node has everything through `through`); `first` when
    /// this starts the gap (it is logged once).
    Missed { through: u64, first: bool },
}

impl Follower {
    /// Whether this node is missing shipments (and asking for a replay).
    pub fn gap(&self) -> bool {
        self.gap
    }

    /// Whether this node's hub sees the leader's stream live.
    pub fn live(&self) -> bool {
        let blocked = self.gap || self.unverifiable || self.database_lost;
        self.leader_live && !blocked
    }

    /// A transaction from a sender raft does not (yet) name as leader was refused.
    pub fn refused(&mut self, from: &NodeId, end_lsn: u64) {
        self.refused = Some((from.clone(), end_lsn));
    }

    /// The leader sent something (it passed the sender check) at `now`.
    pub fn heard(&mut self, now: Instant) {
        self.leader_heard = Some(now);
    }

    /// A transaction could not be checked against the database: it counts as missed.
    pub fn unverifiable(&mut self) {
        self.gap = true;
        self.unverifiable = true;
    }

    /// A transaction passed the checks; `true` when one had not before, so the hub's view may change.
    pub fn verified(&mut self) -> bool {
        std::mem::take(&mut self.unverifiable)
    }

    /// A checked transaction from the leader `from`, shipped after the one ending at `prev` (0: the
    /// first of a stream); `taken` is how far this node's hub took the stream. It is forwarded
    /// unless its predecessor is neither forwarded nor taken here, or it starts a stream whose start
    /// this node missed from a leader that announces its streams.
    pub fn transaction(&mut self, from: &NodeId, prev: u64, end_lsn: u64, taken: u64) -> Take {
        let through = self.forwarded.max(taken);
        let start_missed = prev == 0 && !self.started && self.announcer.as_ref() == Some(from);
        if (prev != 0 && prev > through) || start_missed {
            let first = !self.gap;
            self.gap = true;
            return Take::Missed { through, first };
        }
        if prev == 0 {
            self.started = false;
        }
        self.gap = false;
        self.forwarded = self.forwarded.max(end_lsn);
        Take::Forward
    }

    /// The leader `from` starts a stream: what follows is its stream from the start on, so whatever
    /// was missed before is replayed or told as lost; no gap is pending.
    pub fn stream(&mut self, from: &NodeId) {
        self.gap = false;
        self.announcer = Some(from.clone());
        self.started = true;
    }

    /// The leader says whether its stream is live.
    pub fn leader_says(&mut self, live: bool) {
        self.leader_live = live;
    }

    /// This node's probe of PostgreSQL: reachable, unreachable, or not known yet.
    pub fn database(&mut self, reachable: Option<bool>) {
        self.database_lost = reachable == Some(false);
    }

    /// Raft changed who leads (`is_me`: this node). A follower waits for the (new) leader to say its
    /// stream is live. `true` when a transaction refused before raft named its sender turns out to be
    /// the leader's and not yet taken: a gap, found now.
    pub fn leadership(&mut self, is_me: bool, leader: Option<&NodeId>, taken: u64) -> bool {
        if !is_me {
            self.leader_live = false;
        }
        let Some((sender, end_lsn)) = self.refused.take() else { return false };
        let through = self.forwarded.max(taken);
        if leader == Some(&sender) && end_lsn > through {
            self.gap = true;
            return true;
        }
        false
    }

    /// The periodic check at `now`: `true` when the leader has been silent past [`LEADER_SILENCE`]
    /// while its stream was live, which is then taken as not live.
    pub fn tick(&mut self, now: Instant) -> bool {
        let silent = self.leader_heard.is_some_and(|at| now.saturating_duration_since(at) > LEADER_SILENCE);
        if silent && self.leader_live {
            self.leader_live = false;
            return true;
        }
        false
    }
}

/// What the leader knows of its peers: their positions (for the acknowledgement) and when the stream
/// was last replayed.
#[derive(Debug, Default)]
pub struct Acks {
    /// Each peer's highest reported delivered position.
    delivered: HashMap<NodeId, u64>,
    /// When each peer was last seen reachable (alive for the failure detector, link not stalled).
    last_live: HashMap<NodeId, Instant>,
    /// When the stream was last replayed for a peer that missed shipments.
    replayed_at: Option<Instant>,
}

impl Acks {
    /// A peer's delivered position at `now` (positions never move back). A peer that reports a gap
    /// missed shipments: when this node leads and has not replayed within [`REPLAY_EVERY`], the
    /// stream is replayed from the slot, which [`Acks::ack`] kept at or below that peer's position.
    /// `Some(position held for the peer)` when the stream is to be replayed.
    pub fn delivered(
        &mut self,
        from: NodeId,
        lsn: u64,
        gap: bool,
        leading: bool,
        now: Instant,
    ) -> Option<u64> {
        let held = self.delivered.entry(from).or_insert(0);
        *held = (*held).max(lsn);
        let held = *held;
        if !gap || !leading {
            return None;
        }
        if self.replayed_at.is_some_and(|at| now.saturating_duration_since(at) < REPLAY_EVERY) {
            return None;
        }
        self.replayed_at = Some(now);
        Some(held)
    }

    /// The acknowledgement at `now`: the least of this node's position (`local`) and of every peer's
    /// seen reachable within `hold` (`reachable` are those reachable now; one never heard from counts
    /// as 0). Holding a recently gone (or stalled) peer keeps the slot at its position, so if it comes
    /// back (it was paused or cut off, not dead) the stream can be replayed for it.
    pub fn ack(
        &mut self,
        local: u64,
        reachable: impl IntoIterator<Item = NodeId>,
        hold: Duration,
        now: Instant,
    ) -> u64 {
        for peer in reachable {
            self.last_live.insert(peer, now);
        }
        self.last_live.retain(|_, at| now.saturating_duration_since(*at) <= hold);
        self.last_live.keys().fold(local, |ack, peer| ack.min(self.delivered.get(peer).copied().unwrap_or(0)))
    }
}

/// Moves the acknowledgement `acked` forward to `ack`, never back; `true` when it moved.
pub fn advance(acked: &mut u64, ack: u64) -> bool {
    if ack > *acked {
        *acked = ack;
        return true;
    }
    false
}
