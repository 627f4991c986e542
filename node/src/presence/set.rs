//! The presence state of one topic as a pure structure: track, update and untrack produce the
//! `presence_diff` clients must see, and [`PresenceSet::state`] gives `presence_state`.
//!
//! One entry per connection: a socket joins a topic once and tracks under that join's key, and several
//! connections with the same key show up as several metas under the key. Entries other nodes own
//! (from the cluster's presence replica) sit beside the local ones, so `presence_state` is the same on
//! every node.

use std::collections::HashMap;

use realtime_cluster::presence::{Entry, EntryId};
use realtime_proto::presence::{meta, PresenceDiff, PresenceState};
use serde_json::{Map, Value};

use crate::vocab::ConnId;

#[derive(Debug, Clone, PartialEq)]
struct Tracked {
    key: String,
    payload: Map<String, Value>,
    phx_ref: String,
}

impl Tracked {
    /// A replicated entry; `None` when its meta is not a JSON object (never produced by a node).
    fn from_entry(entry: &Entry) -> Option<Tracked> {
        let payload = serde_json::from_str::<Map<String, Value>>(&entry.meta).ok()?;
        Some(Tracked { key: entry.key.clone(), payload, phx_ref: entry.phx_ref.clone() })
    }
}

/// Presences of one topic: this node's by connection, other nodes' by entry id.
#[derive(Debug, Default)]
pub struct PresenceSet {
    by_conn: HashMap<ConnId, Tracked>,
    remote: HashMap<EntryId, Tracked>,
    /// Metas per key, local and remote: the distinct keys without a pass over every entry.
    keys: HashMap<String, usize>,
}

impl PresenceSet {
    /// Tracks `payload` for `conn` under `key`. An identical payload is a no-op (`None`); a changed one
    /// is an update: one diff joining the new meta (with `phx_ref_prev`) and leaving the old one.
    pub fn track(
        &mut self,
        conn: ConnId,
        key: &str,
        payload: Map<String, Value>,
        new_ref: impl FnOnce() -> String,
    ) -> Option<PresenceDiff> {
        let mut diff = PresenceDiff::default();
        let previous = self.by_conn.get(&conn);
        if let Some(previous) = previous {
            if previous.key == key && previous.payload == payload {
                return None;
            }
        }
        let phx_ref = new_ref();
        let prev_ref = match previous {
            Some(previous) if previous.key == key => {
                diff.leaves.push(key, meta(&previous.payload, &previous.phx_ref, None));
                Some(previous.phx_ref.clone())
            }
            Some(previous) => {
                diff.leaves.push(&previous.key, meta(&previous.payload, &previous.phx_ref, None));
                None
            }
            None => None,
        };
        diff.joins.push(key, meta(&payload, &phx_ref, prev_ref.as_deref()));
        if let Some(replaced) = self.by_conn.insert(conn, Tracked { key: key.to_owned(), payload, phx_ref }) {
            self.key_gone(&replaced.key);
        }
        self.key_added(key);
        Some(diff)
    }

    /// Removes `conn`'s presence; `None` if it had none.
    pub fn untrack(&mut self, conn: ConnId) -> Option<PresenceDiff> {
        let gone = self.by_conn.remove(&conn)?;
        self.key_gone(&gone.key);
        let mut diff = PresenceDiff::default();
        diff.leaves.push(&gone.key, meta(&gone.payload, &gone.phx_ref, None));
        Some(diff)
    }

    /// The whole state, for `presence_state`.
    pub fn state(&self) -> PresenceState {
        let mut state = PresenceState::default();
        for tracked in self.by_conn.values().chain(self.remote.values()) {
            state.push(&tracked.key, meta(&tracked.payload, &tracked.phx_ref, None));
        }
        state
    }

    /// `conn`'s entry as other nodes replicate it.
    pub fn local_entry(&self, conn: ConnId) -> Option<Entry> {
        let tracked = self.by_conn.get(&conn)?;
        let meta = serde_json::to_string(&tracked.payload).ok()?;
        Some(Entry { key: tracked.key.clone(), phx_ref: tracked.phx_ref.clone(), meta })
    }

    /// Connections of this node with a presence.
    pub fn local_conns(&self) -> Vec<ConnId> {
        self.by_conn.keys().copied().collect()
    }

    /// Applies other nodes' changes (leaves first); returns what clients must be told, `None` when it
    /// changes nothing (a change this set already holds, e.g. read at start and then received).
    pub fn apply_remote(
        &mut self,
        joins: &[(EntryId, Entry)],
        leaves: &[(EntryId, Entry)],
    ) -> Option<PresenceDiff> {
        let mut diff = PresenceDiff::default();
        let mut changed = false;
        for (id, entry) in leaves {
            if self.remote.get(id).is_some_and(|held| held.phx_ref == entry.phx_ref) {
                if let Some(gone) = self.remote.remove(id) {
                    self.key_gone(&gone.key);
                    diff.leaves.push(&gone.key, meta(&gone.payload, &gone.phx_ref, None));
                    changed = true;
                }
            }
        }
        for (id, entry) in joins {
            let Some(tracked) = Tracked::from_entry(entry) else { continue };
            if self.remote.get(id) == Some(&tracked) {
                continue;
            }
            if let Some(replaced) = self.remote.insert(id.clone(), tracked.clone()) {
                self.key_gone(&replaced.key);
                diff.leaves.push(&replaced.key, meta(&replaced.payload, &replaced.phx_ref, None));
            }
            self.key_added(&tracked.key);
            diff.joins.push(&tracked.key, meta(&tracked.payload, &tracked.phx_ref, None));
            changed = true;
        }
        changed.then_some(diff)
    }

    /// Metas of every node (one per tracking connection).
    pub fn len(&self) -> usize {
        self.by_conn.len() + self.remote.len()
    }

    /// Distinct presence keys of every node.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    fn key_added(&mut self, key: &str) {
        *self.keys.entry(key.to_owned()).or_default() += 1;
    }

    fn key_gone(&mut self, key: &str) {
        if let Some(metas) = self.keys.get_mut(key) {
            *metas -= 1;
            if *metas == 0 {
                self.keys.remove(key);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_conn.is_empty() && self.remote.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn to_value(diff: &PresenceDiff) -> Value {
        serde_json::from_str(&diff.to_json()).unwrap()
    }

    #[test]
    fn join_update_noop_leave() {
        let mut set = PresenceSet::default();
        let d = set.track(1, "alice", map(json!({"online": true})), || "R1".into()).unwrap();
        assert_eq!(
            to_value(&d),
            json!({"joins": {"alice": {"metas": [{"online": true, "phx_ref": "R1"}]}}, "leaves": {}})
        );
        assert!(set.track(1, "alice", map(json!({"online": true})), || "R9".into()).is_none());
        let d = set.track(1, "alice", map(json!({"online": false})), || "R2".into()).unwrap();
        assert_eq!(
            to_value(&d),
            json!({"joins": {"alice": {"metas": [{"online": false, "phx_ref": "R2", "phx_ref_prev": "R1"}]}},
                   "leaves": {"alice": {"metas": [{"online": true, "phx_ref": "R1"}]}}})
        );
        let d = set.untrack(1).unwrap();
        assert_eq!(
            to_value(&d),
            json!({"joins": {}, "leaves": {"alice": {"metas": [{"online": false, "phx_ref": "R2"}]}}})
        );
        assert!(set.untrack(1).is_none());
        assert!(set.is_empty());
    }

    fn remote(conn: u64, key: &str, phx_ref: &str, meta: &str) -> (EntryId, Entry) {
        let id = EntryId { node: realtime_cluster::NodeId("peer".into()), incarnation: 1, conn };
        (id, Entry { key: key.into(), phx_ref: phx_ref.into(), meta: meta.into() })
    }

    #[test]
    fn remote_entries_join_update_and_leave_once() {
        let mut set = PresenceSet::default();
        set.track(1, "alice", map(json!({"here": true})), || "L1".into());
        let bob = remote(7, "bob", "R1", r#"{"tab":1}"#);
        let d = set.apply_remote(std::slice::from_ref(&bob), &[]).unwrap();
        assert_eq!(
            to_value(&d),
            json!({"joins": {"bob": {"metas": [{"tab": 1, "phx_ref": "R1"}]}}, "leaves": {}})
        );
        assert!(set.apply_remote(std::slice::from_ref(&bob), &[]).is_none(), "a join already held is silent");
        let state: Value = serde_json::from_str(&set.state().to_json()).unwrap();
        assert_eq!(state["bob"]["metas"][0]["phx_ref"], "R1");
        assert_eq!(state["alice"]["metas"][0]["phx_ref"], "L1");
        let bob2 = remote(7, "bob", "R2", r#"{"tab":2}"#);
        let d = set.apply_remote(std::slice::from_ref(&bob2), std::slice::from_ref(&bob)).unwrap();
        assert_eq!(
            to_value(&d),
            json!({"joins": {"bob": {"metas": [{"tab": 2, "phx_ref": "R2"}]}}, "leaves": {"bob": {"metas": [{"tab": 1, "phx_ref": "R1"}]}}})
        );
        assert!(set.apply_remote(&[], std::slice::from_ref(&bob)).is_none(), "a stale leave is silent");
        assert!(set.apply_remote(&[], std::slice::from_ref(&bob2)).is_some());
        assert!(set.apply_remote(&[remote(8, "x", "R", "not json")], &[]).is_none());
        assert_eq!(set.local_entry(1).unwrap().meta, r#"{"here":true}"#);
    }

    #[test]
    fn several_connections_under_one_key() {
        let mut set = PresenceSet::default();
        set.track(1, "bob", map(json!({"tab": 1})), || "A".into());
        set.track(2, "bob", map(json!({"tab": 2})), || "B".into());
        set.track(3, "eve", map(json!({})), || "C".into());
        let state: Value = serde_json::from_str(&set.state().to_json()).unwrap();
        assert_eq!(state["bob"]["metas"].as_array().unwrap().len(), 2);
        assert_eq!(state["eve"]["metas"][0]["phx_ref"], "C");
        assert_eq!((set.len(), set.keys()), (3, 2));
        // Moving to another key, leaving, and remote entries replaced or gone keep the counts exact.
        set.track(3, "bob", map(json!({})), || "D".into());
        assert_eq!((set.len(), set.keys()), (3, 1));
        set.untrack(1);
        let zed = remote(9, "zed", "Z1", "{}");
        set.apply_remote(std::slice::from_ref(&zed), &[]);
        assert_eq!((set.len(), set.keys()), (3, 2));
        set.apply_remote(&[remote(9, "bob", "Z2", "{}")], &[]);
        assert_eq!((set.len(), set.keys()), (3, 1));
        set.apply_remote(&[], &[remote(9, "bob", "Z2", "{}")]);
        set.untrack(2);
        set.untrack(3);
        assert_eq!((set.len(), set.keys()), (0, 0));
        assert!(set.is_empty());
    }
}
