//! A presence client's view of one channel, kept from `presence_state` and `presence_diff` the way
//! realtime-js keeps it (PROTOCOL.md §4.3): a state replaces the view, a diff adds its joins and then
//! removes its leaves, metas being matched by `phx_ref`. The `presence` scenario compares these views
//! across nodes, so they are kept exactly as a client would see them, not as the server means them.
//!
//! Each load client tracks `{"v": <version>}` under its own key `n<node>-c<index>`; the scenario reads
//! back the versions shown under a key and which nodes' clients are still shown.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{Map, Value};

/// One meta as compared: the tracked fields without `phx_ref`/`phx_ref_prev` (a diff carries
/// `phx_ref_prev`, a state does not), as canonical JSON.
type MetaBody = String;

/// Key → `phx_ref` → meta.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceModel {
    keys: BTreeMap<String, BTreeMap<String, MetaBody>>,
}

#[derive(Deserialize)]
struct Metas {
    metas: Vec<Map<String, Value>>,
}

type State = BTreeMap<String, Metas>;

#[derive(Deserialize)]
struct Diff {
    #[serde(default)]
    joins: State,
    #[serde(default)]
    leaves: State,
}

/// `(phx_ref, body)` of a meta; `None` without a string `phx_ref`.
fn split_meta(mut meta: Map<String, Value>) -> Option<(String, MetaBody)> {
    let Some(Value::String(phx_ref)) = meta.remove("phx_ref") else { return None };
    meta.remove("phx_ref_prev");
    let sorted: BTreeMap<String, Value> = meta.into_iter().collect();
    Some((phx_ref, serde_json::to_string(&sorted).unwrap_or_default()))
}

/// The key load client `index` of node `node` tracks under.
pub fn key_of(node: usize, index: usize) -> String {
    format!("n{node}-c{index}")
}

/// The node of a load client's key, `None` for any other key.
pub fn node_of_key(key: &str) -> Option<usize> {
    key.strip_prefix('n')?.split_once("-c")?.0.parse().ok()
}

impl PresenceModel {
    /// Replaces the view with a `presence_state` payload; returns the keys whose metas changed.
    pub fn apply_state(&mut self, payload: &str) -> Result<Vec<String>, String> {
        let state: State =
            serde_json::from_str(payload).map_err(|_| "undecodable presence_state".to_owned())?;
        let mut next: BTreeMap<String, BTreeMap<String, MetaBody>> = BTreeMap::new();
        for (key, metas) in state {
            let entry = next.entry(key).or_default();
            for meta in metas.metas {
                let (phx_ref, body) = split_meta(meta).ok_or("presence meta without phx_ref")?;
                entry.insert(phx_ref, body);
            }
        }
        next.retain(|_, metas| !metas.is_empty());
        let keys: BTreeSet<&String> = self.keys.keys().chain(next.keys()).collect();
        let changed = keys.into_iter().filter(|k| self.keys.get(*k) != next.get(*k)).cloned().collect();
        self.keys = next;
        Ok(changed)
    }

    /// Applies a `presence_diff` payload (joins, then leaves); returns the keys it named.
    pub fn apply_diff(&mut self, payload: &str) -> Result<Vec<String>, String> {
        let diff: Diff = serde_json::from_str(payload).map_err(|_| "undecodable presence_diff".to_owned())?;
        let mut touched = BTreeSet::new();
        for (key, metas) in diff.joins {
            let entry = self.keys.entry(key.clone()).or_default();
            for meta in metas.metas {
                let (phx_ref, body) = split_meta(meta).ok_or("presence meta without phx_ref")?;
                entry.insert(phx_ref, body);
            }
            touched.insert(key);
        }
        for (key, metas) in diff.leaves {
            if let Some(entry) = self.keys.get_mut(&key) {
                for meta in metas.metas {
                    if let Some(Value::String(phx_ref)) = meta.get("phx_ref") {
                        entry.remove(phx_ref);
                    }
                }
            }
            touched.insert(key);
        }
        self.keys.retain(|_, metas| !metas.is_empty());
        Ok(touched.into_iter().collect())
    }

    /// The `v` of every meta shown under `key`, sorted (empty when the key is not shown).
    pub fn versions(&self, key: &str) -> Vec<u64> {
        let mut out: Vec<u64> = self
            .keys
            .get(key)
            .into_iter()
            .flat_map(|metas| metas.values())
            .map(|body| {
                serde_json::from_str::<Value>(body)
                    .ok()
                    .and_then(|v| v.get("v")?.as_u64())
                    .unwrap_or(u64::MAX)
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Whether any client of node `node` is shown.
    pub fn shows_node(&self, node: usize) -> bool {
        self.keys.keys().any(|k| node_of_key(k) == Some(node))
    }

    /// The nodes whose clients are shown.
    pub fn nodes(&self) -> BTreeSet<usize> {
        self.keys.keys().filter_map(|k| node_of_key(k)).collect()
    }

    /// Key → versions: what the scenario expects a converged view to be.
    pub fn summary(&self) -> BTreeMap<String, Vec<u64>> {
        self.keys.keys().map(|k| (k.clone(), self.versions(k))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_then_diffs_as_realtime_js_keeps_them() {
        let mut m = PresenceModel::default();
        let changed = m
            .apply_state(
                r#"{"n0-c0":{"metas":[{"v":1,"phx_ref":"A"}]},"n1-c0":{"metas":[{"v":2,"phx_ref":"B"}]}}"#,
            )
            .unwrap();
        assert_eq!(changed, vec!["n0-c0", "n1-c0"]);
        assert_eq!((m.versions("n0-c0"), m.summary().len()), (vec![1], 2));
        // An update: the new meta joins (with phx_ref_prev), the old one leaves, in one diff.
        let update = r#"{"joins":{"n0-c0":{"metas":[{"v":3,"phx_ref":"C","phx_ref_prev":"A"}]}},
                         "leaves":{"n0-c0":{"metas":[{"v":1,"phx_ref":"A"}]}}}"#;
        assert_eq!(m.apply_diff(update).unwrap(), vec!["n0-c0"]);
        assert_eq!(m.versions("n0-c0"), vec![3]);
        let leave = r#"{"joins":{},"leaves":{"n1-c0":{"metas":[{"v":2,"phx_ref":"B"}]}}}"#;
        m.apply_diff(leave).unwrap();
        assert!(m.versions("n1-c0").is_empty());
        assert!(!m.shows_node(1) && m.shows_node(0));
        assert_eq!(m.nodes(), BTreeSet::from([0]));
        // The same view reached through a state compares equal (phx_ref_prev is not kept).
        let mut fresh = PresenceModel::default();
        fresh.apply_state(r#"{"n0-c0":{"metas":[{"phx_ref":"C","v":3}]}}"#).unwrap();
        assert_eq!(fresh, m);
        assert_eq!(fresh.apply_state(r#"{"n0-c0":{"metas":[{"phx_ref":"C","v":3}]}}"#).unwrap().len(), 0);
        assert_eq!(m.summary(), BTreeMap::from([("n0-c0".to_owned(), vec![3])]));
    }

    #[test]
    fn a_leave_of_an_unknown_ref_changes_nothing() {
        let mut m = PresenceModel::default();
        m.apply_diff(r#"{"joins":{"k":{"metas":[{"v":1,"phx_ref":"A"}]}},"leaves":{}}"#).unwrap();
        m.apply_diff(r#"{"joins":{},"leaves":{"k":{"metas":[{"v":1,"phx_ref":"Z"}]}}}"#).unwrap();
        assert_eq!(m.versions("k"), vec![1]);
        assert!(m.apply_diff("5").is_err());
        assert!(m.apply_state(r#"{"k":{"metas":[{"v":1}]}}"#).is_err());
    }

    #[test]
    fn keys_name_their_node() {
        assert_eq!(key_of(2, 17), "n2-c17");
        assert_eq!(node_of_key("n2-c17"), Some(2));
        assert_eq!(node_of_key("alice"), None);
        assert_eq!(node_of_key("n-c1"), None);
    }
}
