//! This node's own entries: the only place they are written, and the source of its deltas.
//!
//! Local clients see a change at once ([`LocalPresence::topic_entries`]); peers see it in the next
//! delta. Between two deltas only the net change per `(topic, conn)` is kept, so a track that is
//! untracked before the tick costs no traffic at all, and `is_dirty` is exact: a key whose value
//! returns to what the last delta published is no longer pending.

use std::collections::btree_map::Entry as MapEntry;
use std::collections::BTreeMap;

use super::{ConnId, Delta, Entry, Op, Snapshot, Version};
use crate::NodeId;

/// This node's own entries and the delta not yet sent.
#[derive(Debug, Clone)]
pub struct LocalPresence {
    node: NodeId,
    /// The version peers know (or will know once the last delta arrives); pending changes are not in it.
    version: Version,
    /// After [`LocalPresence::leaving`] and until [`LocalPresence::renew`]: announced gone, so nothing
    /// more is recorded or published.
    gone: bool,
    /// `topic → conn → entry`, current (pending changes included); no empty inner maps.
    entries: BTreeMap<String, BTreeMap<ConnId, Entry>>,
    /// `(topic, conn) → value at version` for every key whose current value differs from it.
    pending: BTreeMap<(String, ConnId), Option<Entry>>,
}

impl LocalPresence {
    /// No entries, at version `(incarnation, 0, 0)`. `incarnation` must be new for this process and
    /// above every earlier run's, so peers replace what the previous run left behind.
    pub fn new(node: NodeId, incarnation: u64) -> LocalPresence {
        LocalPresence {
            node,
            version: Version { incarnation, epoch: 0, seq: 0 },
            gone: false,
            entries: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// Sets `conn`'s entry in `topic`, recording the change for the next delta. Putting the entry
    /// already there is a no-op; so is anything after [`LocalPresence::leaving`].
    pub fn put(&mut self, topic: &str, conn: ConnId, entry: Entry) {
        if self.gone {
            return;
        }
        let previous = match self.entries.get_mut(topic) {
            Some(conns) if conns.get(&conn) == Some(&entry) => return,
            Some(conns) => conns.insert(conn, entry),
            None => {
                self.entries.insert(topic.to_owned(), BTreeMap::from([(conn, entry)]));
                None
            }
        };
        self.note(topic, conn, previous);
    }

    /// Removes `conn`'s entry in `topic`, recording the change for the next delta; a no-op when absent.
    pub fn remove(&mut self, topic: &str, conn: ConnId) {
        let Some(conns) = self.entries.get_mut(topic) else { return };
        let Some(previous) = conns.remove(&conn) else { return };
        if conns.is_empty() {
            self.entries.remove(topic);
        }
        self.note(topic, conn, Some(previous));
    }

    /// The pending changes as one delta from the current version to the next (`seq + 1`), one op per
    /// changed `(topic, conn)` in key order; `None` when nothing is pending.
    pub fn take_delta(&mut self) -> Option<Delta> {
        if self.pending.is_empty() {
            return None;
        }
        let base = self.version;
        self.version.seq += 1;
        let ops = std::mem::take(&mut self.pending)
            .into_keys()
            .map(|(topic, conn)| match current(&self.entries, &topic, conn) {
                Some(entry) => Op::Put { entry: entry.clone(), topic, conn },
                None => Op::Remove { topic, conn },
            })
            .collect();
        Some(Delta { node: self.node.clone(), base, version: self.version, ops })
    }

    /// The state at [`LocalPresence::version`]: changes still pending are left out (they travel in
    /// the next delta), so the snapshot always matches its version whenever it is called. To publish
    /// everything, call [`LocalPresence::take_delta`] first. After `leaving`, the tombstone.
    pub fn snapshot(&self) -> Snapshot {
        let mut committed: BTreeMap<(&str, ConnId), &Entry> = BTreeMap::new();
        if !self.gone {
            for (topic, conns) in &self.entries {
                committed.extend(conns.iter().map(|(conn, entry)| ((topic.as_str(), *conn), entry)));
            }
            for ((topic, conn), published) in &self.pending {
                match published {
                    Some(entry) => committed.insert((topic.as_str(), *conn), entry),
                    None => committed.remove(&(topic.as_str(), *conn)),
                };
            }
        }
        let entries = committed
            .into_iter()
            .map(|((topic, conn), entry)| (topic.to_owned(), conn, entry.clone()))
            .collect();
        Snapshot { node: self.node.clone(), version: self.version, gone: self.gone, entries }
    }

    /// After a rejoin (the others declared this node down and it renewed its identity): version
    /// `(incarnation, epoch, 0)`, pending changes folded into it rather than sent as a delta. The
    /// caller then broadcasts [`LocalPresence::snapshot`], which peers accept over their tombstone.
    /// `epoch` must be above the current one, or peers would keep ignoring this node.
    pub fn renew(&mut self, epoch: u64) {
        debug_assert!(epoch > self.version.epoch, "renew must raise the epoch");
        self.version = Version { epoch, seq: 0, ..self.version };
        self.pending.clear();
        self.gone = false;
    }

    /// A graceful leave: clears the entries and returns the tombstone snapshot to broadcast, so
    /// peers drop this node's entries at once instead of waiting for failure detection.
    pub fn leaving(&mut self) -> Snapshot {
        self.version = Version::tombstone(self.version.incarnation, self.version.epoch);
        self.gone = true;
        self.entries.clear();
        self.pending.clear();
        self.snapshot()
    }

    /// The version of the last delta (or renew / leave); pending changes are not in it.
    pub fn version(&self) -> Version {
        self.version
    }

    /// This node's current entries in `topic`, pending changes included, sorted by connection.
    pub fn topic_entries(&self, topic: &str) -> Vec<(ConnId, Entry)> {
        self.entries
            .get(topic)
            .map(|conns| conns.iter().map(|(conn, entry)| (*conn, entry.clone())).collect())
            .unwrap_or_default()
    }

    /// Whether [`LocalPresence::take_delta`] would return a delta.
    pub fn is_dirty(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Remembers the published value of a key on its first change since the last delta, and
    /// forgets the key once its value is back to the published one.
    fn note(&mut self, topic: &str, conn: ConnId, previous: Option<Entry>) {
        match self.pending.entry((topic.to_owned(), conn)) {
            MapEntry::Vacant(slot) => {
                slot.insert(previous);
            }
            MapEntry::Occupied(slot) => {
                if slot.get().as_ref() == current(&self.entries, topic, conn) {
                    slot.remove();
                }
            }
        }
    }
}

fn current<'a>(
    entries: &'a BTreeMap<String, BTreeMap<ConnId, Entry>>,
    topic: &str,
    conn: ConnId,
) -> Option<&'a Entry> {
    entries.get(topic)?.get(&conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, meta: u32) -> Entry {
        Entry { key: key.into(), phx_ref: format!("ref-{key}"), meta: format!(r#"{{"n":{meta}}}"#) }
    }

    fn local() -> LocalPresence {
        LocalPresence::new(NodeId("a".into()), 7)
    }

    fn v(epoch: u64, seq: u64) -> Version {
        Version { incarnation: 7, epoch, seq }
    }

    fn put(topic: &str, conn: ConnId, entry: Entry) -> Op {
        Op::Put { topic: topic.into(), conn, entry }
    }

    fn remove(topic: &str, conn: ConnId) -> Op {
        Op::Remove { topic: topic.into(), conn }
    }

    #[test]
    fn starts_empty_and_clean() {
        let mut local = local();
        assert_eq!(local.version(), v(0, 0));
        assert!(!local.is_dirty());
        assert_eq!(local.take_delta(), None);
        let snapshot = local.snapshot();
        assert_eq!((snapshot.version, snapshot.gone, snapshot.entries.len()), (v(0, 0), false, 0));
    }

    #[test]
    fn take_delta_ships_pending_ops_once_and_bumps_seq() {
        let mut local = local();
        local.put("t", 1, entry("x", 1));
        assert!(local.is_dirty());
        let delta = local.take_delta().expect("a delta");
        assert_eq!((delta.node.0.as_str(), delta.base, delta.version), ("a", v(0, 0), v(0, 1)));
        assert_eq!(delta.ops, vec![put("t", 1, entry("x", 1))]);
        assert_eq!(local.version(), v(0, 1));
        assert!(!local.is_dirty());
        assert_eq!(local.take_delta(), None);
        local.remove("t", 1);
        let delta = local.take_delta().expect("a delta");
        assert_eq!((delta.base, delta.version, delta.ops), (v(0, 1), v(0, 2), vec![remove("t", 1)]));
    }

    #[test]
    fn identical_put_and_absent_remove_are_no_ops() {
        let mut local = local();
        local.put("t", 1, entry("x", 1));
        local.take_delta();
        local.put("t", 1, entry("x", 1));
        local.remove("t", 2);
        local.remove("u", 1);
        assert!(!local.is_dirty());
        assert_eq!(local.take_delta(), None);
    }

    #[test]
    fn ops_coalesce_per_key_and_come_out_in_key_order() {
        let mut local = local();
        local.put("t", 1, entry("gone-before-tick", 1));
        local.remove("t", 1);
        assert!(!local.is_dirty(), "a put undone before the tick costs nothing");
        local.put("u", 2, entry("y", 1));
        local.put("t", 9, entry("z", 1));
        local.put("u", 2, entry("y", 2));
        local.put("t", 3, entry("w", 1));
        let delta = local.take_delta().expect("a delta");
        assert_eq!(
            delta.ops,
            vec![put("t", 3, entry("w", 1)), put("t", 9, entry("z", 1)), put("u", 2, entry("y", 2))]
        );
    }

    #[test]
    fn a_key_back_to_its_published_value_is_clean() {
        let mut local = local();
        local.put("t", 1, entry("x", 1));
        local.take_delta();
        local.put("t", 1, entry("x", 2));
        local.put("t", 1, entry("x", 1));
        assert!(!local.is_dirty());
        local.remove("t", 1);
        local.put("t", 1, entry("x", 1));
        assert!(!local.is_dirty());
        local.remove("t", 1);
        local.put("t", 1, entry("x", 3));
        assert_eq!(local.take_delta().expect("a delta").ops, vec![put("t", 1, entry("x", 3))]);
    }

    #[test]
    fn snapshot_describes_its_version_not_pending_changes() {
        let mut local = local();
        local.put("t", 1, entry("x", 1));
        local.take_delta();
        local.remove("t", 1);
        local.put("t", 2, entry("y", 1));
        let snapshot = local.snapshot();
        assert_eq!(snapshot.version, v(0, 1));
        assert_eq!(snapshot.entries, vec![("t".to_owned(), 1, entry("x", 1))]);
        assert_eq!(local.topic_entries("t"), vec![(2, entry("y", 1))], "local clients see changes at once");
        local.take_delta();
        let snapshot = local.snapshot();
        assert_eq!((snapshot.version, snapshot.entries), (v(0, 2), vec![("t".to_owned(), 2, entry("y", 1))]));
    }

    #[test]
    fn topic_entries_are_per_topic_and_sorted_by_conn() {
        let mut local = local();
        local.put("t", 5, entry("b", 1));
        local.put("t", 2, entry("a", 1));
        local.put("u", 1, entry("c", 1));
        assert_eq!(local.topic_entries("t"), vec![(2, entry("a", 1)), (5, entry("b", 1))]);
        assert_eq!(local.topic_entries("none"), vec![]);
    }

    #[test]
    fn renew_folds_pending_changes_into_the_new_epoch() {
        let mut local = local();
        local.put("t", 1, entry("x", 1));
        local.take_delta();
        local.put("t", 2, entry("y", 1));
        local.renew(3);
        assert_eq!(local.version(), v(3, 0));
        assert!(!local.is_dirty());
        assert_eq!(local.take_delta(), None);
        let snapshot = local.snapshot();
        assert_eq!(snapshot.version, v(3, 0));
        assert_eq!(snapshot.entries.len(), 2, "the snapshot carries what the dropped delta would have");
        local.remove("t", 1);
        let delta = local.take_delta().expect("a delta");
        assert_eq!((delta.base, delta.version), (v(3, 0), v(3, 1)));
    }

    #[test]
    fn leaving_returns_a_tombstone_and_ignores_later_changes_until_renew() {
        let mut local = local();
        local.put("t", 1, entry("x", 1));
        local.take_delta();
        local.put("t", 2, entry("y", 1));
        let tombstone = local.leaving();
        assert_eq!((tombstone.version, tombstone.gone, tombstone.entries.len()), (v(0, u64::MAX), true, 0));
        assert_eq!(local.snapshot(), tombstone);
        local.put("t", 3, entry("z", 1));
        local.remove("t", 1);
        assert!(!local.is_dirty());
        assert_eq!(local.take_delta(), None);
        assert_eq!(local.topic_entries("t"), vec![]);
        local.renew(1);
        let snapshot = local.snapshot();
        assert_eq!((snapshot.version, snapshot.gone, snapshot.entries.len()), (v(1, 0), false, 0));
        local.put("t", 3, entry("z", 1));
        assert_eq!(local.take_delta().expect("a delta").version, v(1, 1));
    }
}
