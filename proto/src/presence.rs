//! Presence wire shapes (PROTOCOL.md §4.3): `presence_state` is `{key: {"metas": [meta, …]}}` and
//! `presence_diff` is `{"joins": state, "leaves": state}`; each meta is the tracked payload plus a
//! `phx_ref` (and `phx_ref_prev` on an update).

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;
use serde_json::{Map, Value};

/// A tracked meta as sent to clients (payload fields plus `phx_ref`).
pub type Meta = Map<String, Value>;

/// Key → metas, the body of `presence_state` and of each half of a diff.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct PresenceState(pub BTreeMap<String, Metas>);

/// `{"metas": [...]}` for one key.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Metas {
    pub metas: Vec<Meta>,
}

impl PresenceState {
    /// Adds a meta under `key`.
    pub fn push(&mut self, key: &str, meta: Meta) {
        self.0.entry(key.to_owned()).or_default().metas.push(meta);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("presence state serialisation")
    }
}

/// `presence_diff` payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PresenceDiff {
    pub joins: PresenceState,
    pub leaves: PresenceState,
}

impl PresenceDiff {
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("presence diff serialisation")
    }
}

/// Builds a client meta: the tracked payload with `phx_ref` (and `phx_ref_prev` for an update) added.
pub fn meta(payload: &Map<String, Value>, phx_ref: &str, phx_ref_prev: Option<&str>) -> Meta {
    let mut meta = payload.clone();
    meta.insert("phx_ref".into(), Value::String(phx_ref.to_owned()));
    if let Some(prev) = phx_ref_prev {
        meta.insert("phx_ref_prev".into(), Value::String(prev.to_owned()));
    }
    meta
}

/// A `phx_ref` as Phoenix makes it: URL-safe base64 (no padding, 16 chars) of 12 bytes: 64-bit time in
/// nanoseconds, a 16-bit node/process hash and a 16-bit counter.
pub fn phx_ref(time_ns: u64, origin_hash: u16, counter: u16) -> String {
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&time_ns.to_be_bytes());
    bytes[8..10].copy_from_slice(&origin_hash.to_be_bytes());
    bytes[10..].copy_from_slice(&counter.to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ref_shape() {
        let r = phx_ref(1_760_000_000_000_000_000, 0xbeef, 1);
        assert_eq!(r.len(), 16);
        assert!(r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(r, phx_ref(1_760_000_000_000_000_000, 0xbeef, 2));
    }

    #[test]
    fn diff_json() {
        let payload = json!({"user": "bob"}).as_object().unwrap().clone();
        let mut diff = PresenceDiff::default();
        diff.joins.push("bob", meta(&payload, "R2", Some("R1")));
        diff.leaves.push("bob", meta(&payload, "R1", None));
        assert_eq!(
            serde_json::from_str::<Value>(&diff.to_json()).unwrap(),
            json!({"joins": {"bob": {"metas": [{"user": "bob", "phx_ref": "R2", "phx_ref_prev": "R1"}]}},
                   "leaves": {"bob": {"metas": [{"user": "bob", "phx_ref": "R1"}]}}})
        );
        assert_eq!(PresenceState::default().to_json(), "{}");
    }
}
