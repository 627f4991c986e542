//! The presence state of one topic as a pure structure: track, update and untrack produce the
//! `presence_diff` clients must see, and [`PresenceSet::state`] gives `presence_state`.
//!
//! One entry per connection: a socket joins a topic once and tracks under that join's key, and several
//! connections with the same key show up as several metas under the key.

use std::collections::HashMap;

use realtime_proto::presence::{meta, PresenceDiff, PresenceState};
use serde_json::{Map, Value};

use crate::channel::messages::ConnId;

#[derive(Debug, Clone, PartialEq)]
struct Tracked {
    key: String,
    payload: Map<String, Value>,
    phx_ref: String,
}

/// Presences of one topic, by connection.
#[derive(Debug, Default)]
pub struct PresenceSet {
    by_conn: HashMap<ConnId, Tracked>,
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
        self.by_conn.insert(conn, Tracked { key: key.to_owned(), payload, phx_ref });
        Some(diff)
    }

    /// Removes `conn`'s presence; `None` if it had none.
    pub fn untrack(&mut self, conn: ConnId) -> Option<PresenceDiff> {
        let gone = self.by_conn.remove(&conn)?;
        let mut diff = PresenceDiff::default();
        diff.leaves.push(&gone.key, meta(&gone.payload, &gone.phx_ref, None));
        Some(diff)
    }

    /// The whole state, for `presence_state`.
    pub fn state(&self) -> PresenceState {
        let mut state = PresenceState::default();
        for tracked in self.by_conn.values() {
            state.push(&tracked.key, meta(&tracked.payload, &tracked.phx_ref, None));
        }
        state
    }

    pub fn is_empty(&self) -> bool {
        self.by_conn.is_empty()
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

    #[test]
    fn several_connections_under_one_key() {
        let mut set = PresenceSet::default();
        set.track(1, "bob", map(json!({"tab": 1})), || "A".into());
        set.track(2, "bob", map(json!({"tab": 2})), || "B".into());
        set.track(3, "eve", map(json!({})), || "C".into());
        let state: Value = serde_json::from_str(&set.state().to_json()).unwrap();
        assert_eq!(state["bob"]["metas"].as_array().unwrap().len(), 2);
        assert_eq!(state["eve"]["metas"][0]["phx_ref"], "C");
    }
}
