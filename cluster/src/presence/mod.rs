//! # Presence CRDT: who is present on which topic, across the cluster
//!
//! Pure state, no I/O and no tokio. A gossip driver feeds it the messages it receives and ships the
//! messages it returns; the WebSocket layer turns the returned [`TopicChange`]s into `presence_diff`
//! pushes. Keeping it sans-IO lets the merge rules be tested exhaustively (see `proptests`).
//!
//! ## Why this shape
//! - **One writer per origin.** A presence entry belongs to the connection that tracked it, and that
//!   connection lives on exactly one node. So each node owns its entries ([`LocalPresence`]) and nobody
//!   else ever writes them; the others hold a read-only copy of every remote origin ([`Replica`]).
//!   Without concurrent writers there is nothing to reconcile inside an origin: merge is "the state
//!   with the larger [`Version`] wins", a state-based CRDT (commutative, associative, idempotent)
//!   because two states with the same version always have the same contents.
//! - **`Version { incarnation, epoch, seq }`, compared lexicographically.** `incarnation` is new on
//!   every process start and must grow across restarts (the node's `Generation`, e.g. its start time),
//!   so a restarted node beats anything its previous run sent. `epoch` is bumped when the membership
//!   layer renews the node's identity after the others declared it down (foca `renew`). `seq` grows by
//!   one per delta.
//! - **Deltas in steady state, snapshots to repair.** Normal traffic is a [`Delta`] of ops from `base`
//!   to `base + 1`; a replica applies it only on exactly `base`. Anything else is either old
//!   ([`DeltaOutcome::Stale`], drop it) or a hole ([`DeltaOutcome::Gap`], ask the origin for a
//!   [`Snapshot`]). A periodic digest of [`Replica::origins`] repairs whatever was lost silently.
//! - **Tombstones.** A node declared down (or leaving gracefully) is kept as a tombstone at version
//!   `(incarnation, epoch, u64::MAX)` with no entries. Late deltas and snapshots of that run and epoch
//!   are then dominated and can never resurrect its entries, while a new incarnation or a renewed epoch
//!   is larger and replaces it. A crash therefore removes only that node's entries. Tombstones are one
//!   per node name, and node names are a bounded set (StatefulSet pods), so they are never collected.
//! - **Exact diffs.** Every mutation returns what clients must be told, grouped by topic; applying the
//!   leaves then the joins to what was previously reported always reproduces
//!   [`Replica::topic_entries`].
//!
//! ## Driver contract
//! - Owner side: on a tick, [`LocalPresence::take_delta`] and broadcast it. On a foca renew,
//!   [`LocalPresence::renew`] then broadcast [`LocalPresence::snapshot`]. On a graceful shutdown,
//!   broadcast [`LocalPresence::leaving`]. Answer snapshot requests with [`LocalPresence::snapshot`].
//! - Replica side: [`Replica::apply_delta`]; on `Gap`, request the origin's snapshot and
//!   [`Replica::merge_snapshot`] it. When membership declares a node down, [`Replica::remove_origin`].

mod local;
mod replica;

#[cfg(test)]
mod proptests;

use serde::{Deserialize, Serialize};

pub use self::local::LocalPresence;
pub use self::replica::Replica;
use crate::NodeId;

/// A connection on its node; unique within one incarnation of that node.
pub type ConnId = u64;

/// One tracked presence: the client's key, the Phoenix ref of this track, and its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    pub phx_ref: String,
    /// A JSON object as text; opaque here so this crate never parses client payloads.
    pub meta: String,
}

/// The version of one origin's whole state, ordered lexicographically (field order matters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Version {
    pub incarnation: u64,
    pub epoch: u64,
    pub seq: u64,
}

impl Version {
    /// The tombstone of one run and epoch: above every live state that run and epoch can reach.
    pub(crate) fn tombstone(incarnation: u64, epoch: u64) -> Version {
        Version { incarnation, epoch, seq: u64::MAX }
    }
}

/// Who holds an entry: origin node, its incarnation, the connection on that node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntryId {
    pub node: NodeId,
    pub incarnation: u64,
    pub conn: ConnId,
}

/// One change to an origin's entries. A connection holds at most one entry per topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put { topic: String, conn: ConnId, entry: Entry },
    Remove { topic: String, conn: ConnId },
}

impl Op {
    fn key(&self) -> (&str, ConnId) {
        match self {
            Op::Put { topic, conn, .. } | Op::Remove { topic, conn } => (topic, *conn),
        }
    }
}

/// Ops taking the origin from `base` to `version` (version.seq == base.seq + 1, same inc/epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    pub node: NodeId,
    pub base: Version,
    pub version: Version,
    pub ops: Vec<Op>,
}

impl Delta {
    /// Same run and epoch, one step, and not reaching the tombstone's `seq`.
    fn is_well_formed(&self) -> bool {
        self.base.incarnation == self.version.incarnation
            && self.base.epoch == self.version.epoch
            && self.version.seq != u64::MAX
            && self.base.seq.checked_add(1) == Some(self.version.seq)
    }
}

/// An origin's whole state; `gone` = tombstone (entries empty, version.seq == u64::MAX).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub node: NodeId,
    pub version: Version,
    pub gone: bool,
    /// `(topic, conn, entry)`, sorted by `(topic, conn)` when produced here.
    pub entries: Vec<(String, ConnId, Entry)>,
}

/// What clients of one topic must be told: entries that appeared (or changed: leave old + join new)
/// and left.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicChange {
    pub topic: String,
    pub joins: Vec<(EntryId, Entry)>,
    pub leaves: Vec<(EntryId, Entry)>,
}

/// The result of [`Replica::apply_delta`].
#[derive(Debug, PartialEq, Eq)]
pub enum DeltaOutcome {
    /// Applied; these are the changes, grouped by topic in topic order (empty if the ops changed
    /// nothing visible).
    Applied(Vec<TopicChange>),
    /// Already had it, or dominated by what we hold (incl. tombstone). Also returned for our own node
    /// and for a malformed delta: nothing to do either way.
    Stale,
    /// Our version for that origin is not `base` (missed deltas, or unknown origin): ask the origin
    /// for a snapshot.
    Gap,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_incarnation_then_epoch_then_seq() {
        let v = |incarnation, epoch, seq| Version { incarnation, epoch, seq };
        assert!(v(1, 0, 9) < v(1, 1, 0));
        assert!(v(1, 9, 9) < v(2, 0, 0));
        assert!(v(1, 0, 1) < v(1, 0, 2));
        assert!(v(1, 0, 1_000) < Version::tombstone(1, 0));
        assert!(Version::tombstone(1, 0) < v(1, 1, 0));
    }

    #[test]
    fn malformed_deltas_are_recognised() {
        let v = |epoch, seq| Version { incarnation: 1, epoch, seq };
        let delta = |base, version| Delta { node: NodeId("a".into()), base, version, ops: vec![] };
        assert!(delta(v(0, 0), v(0, 1)).is_well_formed());
        assert!(!delta(v(0, 0), v(0, 2)).is_well_formed());
        assert!(!delta(v(0, 1), v(1, 2)).is_well_formed());
        assert!(!delta(v(0, u64::MAX - 1), v(0, u64::MAX)).is_well_formed());
        assert!(!delta(v(0, u64::MAX), v(0, 0)).is_well_formed());
    }

    #[test]
    fn deltas_and_snapshots_round_trip_through_bincode() {
        let entry = Entry { key: "k".into(), phx_ref: "r".into(), meta: r#"{"a":1}"#.into() };
        let version = Version { incarnation: 7, epoch: 1, seq: 3 };
        let delta = Delta {
            node: NodeId("a".into()),
            base: Version { seq: 2, ..version },
            version,
            ops: vec![
                Op::Put { topic: "t".into(), conn: 1, entry: entry.clone() },
                Op::Remove { topic: "t".into(), conn: 2 },
            ],
        };
        let snapshot = Snapshot {
            node: NodeId("a".into()),
            version,
            gone: false,
            entries: vec![("t".into(), 1, entry)],
        };
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&delta, config).expect("encode delta");
        let (back, _): (Delta, usize) = bincode::serde::decode_from_slice(&bytes, config).expect("decode");
        assert_eq!(back, delta);
        let bytes = bincode::serde::encode_to_vec(&snapshot, config).expect("encode snapshot");
        let (back, _): (Snapshot, usize) = bincode::serde::decode_from_slice(&bytes, config).expect("decode");
        assert_eq!(back, snapshot);
    }
}
