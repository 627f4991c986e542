//! The read-only copy of every remote origin, and the exact diffs its merges produce.
//!
//! Entries are stored once, per origin (`topic → conn → entry`), because merges work per origin. A
//! small `topic → origins` index answers [`Replica::topic_entries`] without scanning every origin:
//! walking the indexed origins in node order, then their connections in order, already yields the
//! entries sorted by [`EntryId`] (an origin holds one incarnation at a time).

use std::collections::{BTreeMap, BTreeSet};

use super::{ConnId, Delta, DeltaOutcome, Entry, EntryId, Op, Snapshot, TopicChange, Version};
use crate::NodeId;

type Topics = BTreeMap<String, BTreeMap<ConnId, Entry>>;

/// One remote origin as we last heard of it.
#[derive(Debug, Clone)]
struct Origin {
    version: Version,
    /// `topic → conn → entry`; never holds an empty inner map, so its keys are the indexed topics.
    topics: Topics,
}

impl Origin {
    fn tombstone(incarnation: u64, epoch: u64) -> Origin {
        Origin { version: Version::tombstone(incarnation, epoch), topics: Topics::new() }
    }

    /// The state a snapshot describes, or `None` for a live state claiming the tombstone's `seq`
    /// (it would be indistinguishable from the tombstone). A `gone` snapshot is normalised to the
    /// tombstone of its run and epoch, so no delta can ever be applied on top of it.
    fn from_snapshot(snapshot: &Snapshot) -> Option<Origin> {
        let Version { incarnation, epoch, seq } = snapshot.version;
        if snapshot.gone {
            return Some(Origin::tombstone(incarnation, epoch));
        }
        if seq == u64::MAX {
            return None;
        }
        let mut topics = Topics::new();
        for (topic, conn, entry) in &snapshot.entries {
            topics.entry(topic.clone()).or_default().insert(*conn, entry.clone());
        }
        Some(Origin { version: snapshot.version, topics })
    }

    fn get(&self, topic: &str, conn: ConnId) -> Option<&Entry> {
        self.topics.get(topic)?.get(&conn)
    }

    /// Applies one op, returning the entry it replaced or removed.
    fn apply(&mut self, op: &Op) -> Option<Entry> {
        match op {
            Op::Put { topic, conn, entry } => match self.topics.get_mut(topic.as_str()) {
                Some(conns) => conns.insert(*conn, entry.clone()),
                None => {
                    self.topics.insert(topic.clone(), BTreeMap::from([(*conn, entry.clone())]));
                    None
                }
            },
            Op::Remove { topic, conn } => {
                let conns = self.topics.get_mut(topic.as_str())?;
                let removed = conns.remove(conn);
                if conns.is_empty() {
                    self.topics.remove(topic.as_str());
                }
                removed
            }
        }
    }
}

/// Accumulates leaves and joins, grouped by topic in topic order.
#[derive(Default)]
struct Changes(BTreeMap<String, TopicChange>);

impl Changes {
    fn topic(&mut self, topic: &str) -> &mut TopicChange {
        self.0
            .entry(topic.to_owned())
            .or_insert_with(|| TopicChange { topic: topic.to_owned(), ..TopicChange::default() })
    }

    fn leave(&mut self, topic: &str, id: EntryId, entry: Entry) {
        self.topic(topic).leaves.push((id, entry));
    }

    fn join(&mut self, topic: &str, id: EntryId, entry: Entry) {
        self.topic(topic).joins.push((id, entry));
    }

    fn into_vec(self) -> Vec<TopicChange> {
        self.0.into_values().filter(|c| !c.joins.is_empty() || !c.leaves.is_empty()).collect()
    }
}

/// Every remote origin's entries, indexed by topic for `topic_entries`.
#[derive(Debug, Clone)]
pub struct Replica {
    own: NodeId,
    origins: BTreeMap<NodeId, Origin>,
    /// `topic → origins holding at least one entry in it`.
    by_topic: BTreeMap<String, BTreeSet<NodeId>>,
}

impl Replica {
    /// An empty replica for node `own`. Deltas and snapshots about `own` are ignored: this node is
    /// the only writer of its entries and keeps them in [`super::LocalPresence`].
    pub fn new(own: NodeId) -> Replica {
        Replica { own, origins: BTreeMap::new(), by_topic: BTreeMap::new() }
    }

    /// Applies `delta` if it starts exactly at the version we hold for its origin.
    pub fn apply_delta(&mut self, delta: &Delta) -> DeltaOutcome {
        if delta.node == self.own || !delta.is_well_formed() {
            return DeltaOutcome::Stale;
        }
        let Some(origin) = self.origins.get_mut(&delta.node) else {
            return DeltaOutcome::Gap;
        };
        if delta.version <= origin.version {
            return DeltaOutcome::Stale;
        }
        if delta.base != origin.version {
            return DeltaOutcome::Gap;
        }
        // The value each touched key had before this delta (first touch wins), so several ops on one
        // key still report only the net change.
        let mut before: BTreeMap<(&str, ConnId), Option<Entry>> = BTreeMap::new();
        for op in &delta.ops {
            let previous = origin.apply(op);
            before.entry(op.key()).or_insert(previous);
        }
        origin.version = delta.version;
        let mut changes = Changes::default();
        for ((topic, conn), old) in before {
            let new = origin.get(topic, conn);
            if old.as_ref() == new {
                continue;
            }
            let id = EntryId { node: delta.node.clone(), incarnation: delta.version.incarnation, conn };
            if let Some(old) = old {
                changes.leave(topic, id.clone(), old);
            }
            if let Some(new) = new {
                changes.join(topic, id, new.clone());
            }
        }
        for topic in changes.0.keys() {
            let live = origin.topics.contains_key(topic);
            index(&mut self.by_topic, topic, &delta.node, live);
        }
        DeltaOutcome::Applied(changes.into_vec())
    }

    /// Replaces the origin's state with `snapshot` if the snapshot is newer than what we hold, and
    /// returns the exact difference (entries present in both with the same id and contents produce
    /// nothing). A different incarnation changes every [`EntryId`], so all its entries leave and join.
    /// A no-op for our own node, for an older or equal snapshot, and for a live snapshot claiming the
    /// tombstone's `seq`.
    pub fn merge_snapshot(&mut self, snapshot: &Snapshot) -> Vec<TopicChange> {
        if snapshot.node == self.own {
            return Vec::new();
        }
        match Origin::from_snapshot(snapshot) {
            Some(origin) if self.is_newer(&snapshot.node, origin.version) => {
                self.replace(&snapshot.node, origin)
            }
            _ => Vec::new(),
        }
    }

    /// Tombstones `node` at (incarnation, epoch) unless we already hold something newer; returns the
    /// leaves. An unknown node gets a tombstone too, so that run's late messages stay out.
    pub fn remove_origin(&mut self, node: &NodeId, incarnation: u64, epoch: u64) -> Vec<TopicChange> {
        let tombstone = Origin::tombstone(incarnation, epoch);
        if *node == self.own || !self.is_newer(node, tombstone.version) {
            return Vec::new();
        }
        self.replace(node, tombstone)
    }

    /// Membership holds `node`'s run (incarnation, epoch) alive again after this replica tombstoned
    /// that very run: this node was cut off, declared its peers down, and started over with a clean
    /// view, while they kept their runs. The tombstone goes (it holds no entries), so the run's next
    /// snapshot is taken: the one its link sends on reconnecting, or the one its next digest has us
    /// ask for. Otherwise the healed node would never see that peer's presences again. `true` if a
    /// tombstone was lifted; a live state or any other run's tombstone is kept.
    pub fn revive(&mut self, node: &NodeId, incarnation: u64, epoch: u64) -> bool {
        let tombstone = Version::tombstone(incarnation, epoch);
        let lifted = self.version_of(node) == Some(tombstone);
        if lifted {
            self.origins.remove(node);
        }
        lifted
    }

    /// The version we hold for `node`, tombstones included.
    pub fn version_of(&self, node: &NodeId) -> Option<Version> {
        self.origins.get(node).map(|origin| origin.version)
    }

    /// Every origin we know of with its version, tombstones included, in node order: the digest peers
    /// compare to find what to repair.
    pub fn origins(&self) -> Vec<(NodeId, Version)> {
        self.origins.iter().map(|(node, origin)| (node.clone(), origin.version)).collect()
    }

    /// The live entries of `topic`, sorted by [`EntryId`].
    pub fn topic_entries(&self, topic: &str) -> Vec<(EntryId, Entry)> {
        let Some(nodes) = self.by_topic.get(topic) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for node in nodes {
            let Some(origin) = self.origins.get(node) else { continue };
            let Some(conns) = origin.topics.get(topic) else { continue };
            let incarnation = origin.version.incarnation;
            out.extend(conns.iter().map(|(conn, entry)| {
                (EntryId { node: node.clone(), incarnation, conn: *conn }, entry.clone())
            }));
        }
        out
    }

    /// The number of live entries over all origins and topics.
    pub fn entry_count(&self) -> usize {
        self.origins.values().flat_map(|origin| origin.topics.values()).map(BTreeMap::len).sum()
    }

    fn is_newer(&self, node: &NodeId, version: Version) -> bool {
        !matches!(self.version_of(node), Some(held) if held >= version)
    }

    /// Installs `new` as `node`'s state and returns the difference from the old one.
    fn replace(&mut self, node: &NodeId, new: Origin) -> Vec<TopicChange> {
        let old = self.origins.remove(node);
        let mut changes = Changes::default();
        let same_run = old.as_ref().is_some_and(|old| old.version.incarnation == new.version.incarnation);
        let id = |incarnation, conn| EntryId { node: node.clone(), incarnation, conn };
        if let Some(old) = &old {
            for (topic, conns) in &old.topics {
                for (conn, entry) in conns {
                    if !(same_run && new.get(topic, *conn) == Some(entry)) {
                        changes.leave(topic, id(old.version.incarnation, *conn), entry.clone());
                    }
                }
                index(&mut self.by_topic, topic, node, false);
            }
        }
        for (topic, conns) in &new.topics {
            for (conn, entry) in conns {
                let kept = same_run && old.as_ref().and_then(|old| old.get(topic, *conn)) == Some(entry);
                if !kept {
                    changes.join(topic, id(new.version.incarnation, *conn), entry.clone());
                }
            }
            index(&mut self.by_topic, topic, node, true);
        }
        self.origins.insert(node.clone(), new);
        changes.into_vec()
    }
}

/// Records whether `node` holds entries in `topic`, dropping topics nobody holds.
fn index(by_topic: &mut BTreeMap<String, BTreeSet<NodeId>>, topic: &str, node: &NodeId, live: bool) {
    if live {
        if let Some(nodes) = by_topic.get_mut(topic) {
            nodes.insert(node.clone());
        } else {
            by_topic.insert(topic.to_owned(), BTreeSet::from([node.clone()]));
        }
    } else if let Some(nodes) = by_topic.get_mut(topic) {
        nodes.remove(node);
        if nodes.is_empty() {
            by_topic.remove(topic);
        }
    }
}

#[cfg(test)]
#[path = "replica_test.rs"]
mod tests;
