//! Who hosts members of which topic: this node's member counts (sent to peers as they change) and
//! every peer's (received). A broadcast is relayed only to peers with members of its topic, and a
//! channel's capacity counts members on every node.

use std::collections::{BTreeMap, HashMap};

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

/// Every peer's member counts, by topic.
#[derive(Debug, Default)]
pub struct RemoteCounts {
    by_topic: HashMap<String, HashMap<NodeId, u32>>,
    by_node: HashMap<NodeId, HashMap<String, u32>>,
}

impl RemoteCounts {
    /// Applies counts from `node`; with `full`, its earlier counts are forgotten first.
    pub fn apply(&mut self, node: &NodeId, counts: &[(String, u32)], full: bool) {
        if full {
            self.remove_node(node);
        }
        for (topic, count) in counts {
            self.set(node, topic, *count);
        }
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

    /// Forgets a node (down or left).
    pub fn remove_node(&mut self, node: &NodeId) {
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

    /// Peers with members of `topic`.
    pub fn nodes_with(&self, topic: &str) -> Vec<NodeId> {
        self.by_topic.get(topic).map(|nodes| nodes.keys().cloned().collect()).unwrap_or_default()
    }

    /// Members of `topic` on every peer.
    pub fn members(&self, topic: &str) -> usize {
        self.by_topic.get(topic).map(|nodes| nodes.values().map(|c| *c as usize).sum()).unwrap_or(0)
    }

    /// Topics with members on `node`.
    pub fn topics_of(&self, node: &NodeId) -> usize {
        self.by_node.get(node).map_or(0, HashMap::len)
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
        let mut remote = RemoteCounts::default();
        remote.apply(&n("a"), &[("t".into(), 2), ("u".into(), 1)], true);
        remote.apply(&n("b"), &[("t".into(), 3)], false);
        assert_eq!(remote.members("t"), 5);
        let mut with_t = remote.nodes_with("t");
        with_t.sort();
        assert_eq!(with_t, vec![n("a"), n("b")]);
        remote.apply(&n("a"), &[("t".into(), 0)], false);
        assert_eq!(remote.nodes_with("t"), vec![n("b")]);
        remote.apply(&n("b"), &[("w".into(), 1)], true);
        assert_eq!(remote.members("t"), 0);
        assert_eq!(remote.topics_of(&n("b")), 1);
        remote.remove_node(&n("a"));
        assert_eq!(remote.members("u"), 0);
        assert!(remote.nodes_with("u").is_empty());
    }
}
