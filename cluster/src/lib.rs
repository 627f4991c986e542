//! # realtime-cluster: membership, peer links, presence CRDT and leadership
//!
//! Knows nothing of WebSockets. This crate is planned, not built yet: the spine (one node) comes first,
//! and the cluster issue fills these modules in. What exists today are the identity types the node
//! already uses, so cluster-wide names do not change later.
//!
//! ## Module plan
//! - `config`: `ClusterConfig { seeds, cluster_bind, gossip_interval, raft timings }` + `validate()`.
//! - `membership`: seed list or Kubernetes headless-service DNS → live members, failure detection,
//!   readiness; changes published through a `watch`.
//! - `transport`: one TCP link per peer, length-delimited bincode frames ([`NodeId`]-addressed).
//! - `relay`: broadcast relay to the peers that host members of a topic.
//! - `presence`: the presence CRDT (entries keyed by node and connection) and its gossip; a node's
//!   crash removes only that node's entries.
//! - `raft`: openraft log store, state machine and network; `LeaderWatch` tells which node runs CDC.
//!
//! ```text
//! gossip ── who is alive / ready ──▶ membership ──▶ presence CRDT drops dead nodes
//! raft   ── who leads ─────────────▶ LeaderWatch ─▶ node starts/stops the CDC consumer
//! ```

pub mod raft;

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's stable name (the StatefulSet pod name, `REALTIME_NODE_ID`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub String);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One run of a node: a restart is a new incarnation, so peers can tell a restarted node from a
/// stale view of the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Generation(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_display_their_name() {
        assert_eq!(NodeId("realtime-0".into()).to_string(), "realtime-0");
        assert!(Generation(1) < Generation(2));
    }
}
