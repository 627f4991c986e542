//! Who hosts members of which topic: this node's member counts (sent to peers as they change) and
//! every peer's (received). A channel's capacity counts members on every node. (Broadcasts are relayed
//! to every peer regardless, see [`crate::ClusterHandle::relay`]: a count arrives a moment after its
//! member's join reply, too late to route by.)
//!
//! A peer's count is bounded by what one node can hold (its connections, [`RemoteCounts::new`]'s
//! cap): a count above it can only be forged or corrupt, and applying it would fill the channel for
//! every node (one forged count of 4,000,000,000 refused every real join). Such a frame is refused as
//! a whole and nothing in it is applied.

use std::collections::{BTreeMap, HashMap};

use thiserror::Error;

use crate::NodeId;

/// This node's member counts and the changes not yet sent.
#[derive(Debug, Default)]
pub struct LocalCounts {
    counts: HashMap<String, u32>,
    pending: BTreeMap<String, u32>,
}

impl LocalCounts {
    /// Records `topic`'s member count on this node (0 = none).
    pub fn set(&mut self, topic: &str, count: u32) {
        let known = self.counts.get(topic).copied().unwrap_or(0);
        if known == count {
            return;
        }
        if count == 0 {
            self.counts.remove(topic);
        } else {
            self.counts.insert(topic.to_owned(), count);
        }
        self.pending.insert(topic.to_owned(), count);
    }

    /// The changes since the last call, oldest state first dropped (only the latest count matters).
    pub fn take_pending(&mut self) -> Vec<(String, u32)> {
        std::mem::take(&mut self.pending).into_iter().collect()
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Every non-zero count, for a peer that (re)connects.
    pub fn all(&self) -> Vec<(String, u32)> {
        let mut all: Vec<_> = self.counts.iter().map(|(t, c)| (t.clone(), *c)).collect();
        all.sort();
        all
    }
}

/// A node's run, `(incarnation, epoch)` as in [`crate::PeerId::run`]: counts belong to the run that
/// sent them.
pub type Run = (u64, u64);

/// Every peer's member counts, by topic.
///
/// Counts are held per node *and run*: a restarted node's new run may send its counts before this
/// node learns (from membership, or the old run's `Leaving`) that the old run is gone, and forgetting
/// the old run must not wipe the new one's counts.
#[derive(Debug)]
pub struct RemoteCounts {
    by_topic: HashMap<String, HashMap<NodeId, u32>>,
    by_node: HashMap<NodeId, HashMap<String, u32>>,
    runs: HashMap<NodeId, Run>,
    /// The most members of one topic one node can have.
    max_per_node: u32,
}

/// A peer's counts frame that was refused (and not applied).
#[derive(Debug, Error, PartialEq, Eq)]
#[error("member count {count} for topic {topic:?} is above what one node can hold ({max})")]
pub struct AbsurdCount {
    pub topic: String,
    pub count: u32,
    pub max: u32,
}

impl RemoteCounts {
    /// No counts yet; a peer's count of one topic above `max_per_node` is refused.
    pub fn new(max_per_node: u32) -> RemoteCounts {
        RemoteCounts { by_topic: HashMap::new(), by_node: HashMap::new(), runs: HashMap::new(), max_per_node }
    }

    /// Applies counts from `node`'s run `run`; with `full`, its earlier counts are forgotten first.
    /// Counts from an older run than the one held are stale and ignored; a newer run replaces the
    /// older one's counts. A frame holding a count above the cap is refused whole: nothing changes.
    pub fn apply(
        &mut self,
        node: &NodeId,
        run: Run,
        counts: &[(String, u32)],
        full: bool,
    ) -> Result<(), AbsurdCount> {
        if let Some((topic, count)) = counts.iter().find(|(_, count)| *count > self.max_per_node) {
            return Err(AbsurdCount { topic: topic.clone(), count: *count, max: self.max_per_node });
        }
        match self.runs.get(node) {
            Some(held) if *held > run => return Ok(()),
            Some(held) if *held == run && !full => {}
            _ => self.remove_node(node, run),
        }
        self.runs.insert(node.clone(), run);
        for (topic, count) in counts {
            self.set(node, topic, *count);
        }
        Ok(())
    }

    fn set(&mut self, node: &NodeId, topic: &str, count: u32) {
        if count == 0 {
            if let Some(nodes) = self.by_topic.get_mut(topic) {
                nodes.remove(node);
                if nodes.is_empty() {
                    self.by_topic.remove(topic);
                }
            }
            if let Some(topics) = self.by_node.get_mut(node) {
                topics.remove(topic);
                if topics.is_empty() {
                    self.by_node.remove(node);
                }
            }
        } else {
            self.by_topic.entry(topic.to_owned()).or_default().insert(node.clone(), count);
            self.by_node.entry(node.clone()).or_default().insert(topic.to_owned(), count);
        }
    }

    /// Forgets a node's counts (down or left) if they came from run `run` or an older one.
    pub fn remove_node(&mut self, node: &NodeId, run: Run) {
        if self.runs.get(node).is_some_and(|held| *held > run) {
            return;
        }
        self.runs.remove(node);
        let Some(topics) = self.by_node.remove(node) else { return };
        for topic in topics.keys() {
            if let Some(nodes) = self.by_topic.get_mut(topic) {
                nodes.remove(node);
                if nodes.is_empty() {
                    self.by_topic.remove(topic);
                }
            }
        }
    }

    /// Members of `topic` on every peer.
    pub fn members(&self, topic: &str) -> usize {
        self.by_topic.get(topic).map(|nodes| nodes.values().map(|c| *c as usize).sum()).unwrap_or(0)
    }

    /// Topics with members on `node`.
    pub fn topics_of(&self, node: &NodeId) -> usize {
        self.by_node.get(node).map_or(0, HashMap::len)
    }

    /// Every node held: its run and how many topics it has members of, by name.
    pub fn per_node(&self) -> Vec<(NodeId, Run, usize)> {
        let mut nodes: Vec<_> =
            self.runs.iter().map(|(node, run)| (node.clone(), *run, self.topics_of(node))).collect();
        nodes.sort();
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str) -> NodeId {
        NodeId(name.into())
    }

    #[test]
    fn local_counts_send_only_the_latest_change() {
        let mut local = LocalCounts::default();
        local.set("t", 1);
        local.set("t", 2);
        local.set("u", 1);
        local.set("u", 0);
        local.set("v", 0);
        assert_eq!(local.take_pending(), vec![("t".into(), 2), ("u".into(), 0)]);
        assert!(!local.has_pending());
        local.set("t", 2);
        assert!(!local.has_pending());
        assert_eq!(local.all(), vec![("t".into(), 2)]);
    }

    #[test]
    fn remote_counts_route_and_sum() {
        let mut remote = RemoteCounts::new(100);
        remote.apply(&n("a"), (1, 0), &[("t".into(), 2), ("u".into(), 1)], true).unwrap();
        remote.apply(&n("b"), (1, 0), &[("t".into(), 3)], false).unwrap();
        assert_eq!(remote.members("t"), 5);
        remote.apply(&n("a"), (1, 0), &[("t".into(), 0)], false).unwrap();
        assert_eq!(remote.members("t"), 3);
        remote.apply(&n("b"), (1, 0), &[("w".into(), 1)], true).unwrap();
        assert_eq!(remote.members("t"), 0);
        assert_eq!(remote.topics_of(&n("b")), 1);
        remote.remove_node(&n("a"), (1, 0));
        assert_eq!(remote.members("u"), 0);
        assert_eq!(remote.topics_of(&n("a")), 0);
    }

    #[test]
    fn a_restarted_nodes_counts_survive_the_late_news_of_its_old_run() {
        let mut remote = RemoteCounts::new(100);
        remote.apply(&n("a"), (1, 0), &[("old".into(), 4)], true).unwrap();
        // The new run's link comes up first: its full counts replace the old run's.
        remote.apply(&n("a"), (2, 0), &[("t".into(), 1)], true).unwrap();
        assert_eq!(remote.members("old"), 0);
        assert_eq!(remote.members("t"), 1);
        // Then membership reports the old run down (or its `Leaving` arrives late): nothing to forget.
        remote.remove_node(&n("a"), (1, 0));
        assert_eq!(remote.members("t"), 1);
        // A late delta of the old run is ignored.
        remote.apply(&n("a"), (1, 0), &[("t".into(), 0), ("old".into(), 9)], false).unwrap();
        assert_eq!(remote.members("t"), 1);
        assert_eq!(remote.members("old"), 0);
        // A new epoch of the same run (rejoined after a false down) replaces it too.
        remote.apply(&n("a"), (2, 1), &[("u".into(), 2)], false).unwrap();
        assert_eq!(remote.members("t"), 0);
        assert_eq!(remote.members("u"), 2);
        remote.remove_node(&n("a"), (2, 1));
        assert_eq!(remote.topics_of(&n("a")), 0);
    }

    #[test]
    fn an_absurd_count_is_refused_whole_and_changes_nothing() {
        let mut remote = RemoteCounts::new(100);
        remote.apply(&n("a"), (1, 0), &[("t".into(), 2)], true).unwrap();
        let forged = [("u".into(), 1), ("t".into(), 4_000_000_000)];
        let refused = remote.apply(&n("a"), (1, 0), &forged, true).unwrap_err();
        assert_eq!(refused, AbsurdCount { topic: "t".into(), count: 4_000_000_000, max: 100 });
        assert_eq!(remote.members("t"), 2);
        assert_eq!(remote.members("u"), 0);
        // Even from a newer run: the old run's counts are not forgotten on its account.
        assert!(remote.apply(&n("a"), (2, 0), &[("t".into(), 101)], true).is_err());
        assert_eq!(remote.members("t"), 2);
        // The cap itself is a count a real node can have.
        remote.apply(&n("a"), (1, 0), &[("t".into(), 100)], false).unwrap();
        assert_eq!(remote.members("t"), 100);
    }
}
