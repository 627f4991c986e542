//! # realtime-cluster: membership, peer links, presence CRDT and leadership
//!
//! Knows nothing of WebSockets: the node hands it broadcasts, member counts and presence entries, and
//! receives [`ClusterEvent`]s. Everything here runs on a tokio runtime of its own (see [`handle`]), and
//! membership and raft on a thread each besides (see [`membership`] and `runtimes`).
//!
//! ```text
//!  UDP  ── SWIM (foca): who is alive ──▶ membership ──▶ core: open/close links, drop a dead node's presences
//!  TCP  ── one link per peer and lane ─▶ core ──▶ ClusterEvent::{Relay, Presence} ──▶ node
//!  node ── relay / set_members / presence_put ──▶ links to the peers that need them
//!  raft ── who leads CDC (control lane) ──▶ the node starts/stops its consumer
//! ```
//!
//! ## Layout
//! - [`config`]: `ClusterConfig` (node id, addresses, seeds, failure detector timing) + `validate()`.
//! - [`identity`]: `PeerId` = name + incarnation + rejoin epoch + address (foca's identity).
//! - [`membership`]: foca over UDP, seeds (`host:port` or a headless-Service DNS name), readiness.
//! - [`link`]: one outbound TCP link per peer and lane, bounded queues, reconnect and resync; the
//!   accepting side acknowledges on the same connection (a link without progress is stalled), and
//!   every frame is numbered so a receiver keeps each sender's order across reconnects.
//! - [`wire`]: `PeerMessage` and its versioned bincode frames.
//! - [`transport`]: the sockets under membership and links (UDP and TCP), or their in-memory twin
//!   ([`transport::memory`]) where tests cut, delay, hold and reorder traffic in paused time
//!   (`cluster/tests/memory.rs`); [`ClusterHandle::start_on`] runs a node on it.
//! - [`secure`]: trust between nodes: the cluster secret's keyring, the Noise handshake and sealed
//!   frames of the links, sealed SWIM packets with a replay window, refusal counters.
//! - [`interest`]: member counts per topic per node, for cluster-wide capacity.
//! - [`presence`]: the presence CRDT (pure): each node's entries, deltas, snapshots, tombstones.
//! - [`raft`]: elects the CDC leader with openraft (durable store, control-lane transport,
//!   bootstrap); [`ClusterHandle::leadership`] watches the outcome.
//! - `driver` and [`handle`]: the event loop on the cluster runtime and the node's handle to it;
//!   `runtimes` says where bulk work and raft run, `stall` warns when either runs late. What they
//!   share lives apart, so neither imports the other for it: `shared` (the state), [`event`] (what
//!   the node receives), `sync` (poison-tolerant locks).
//!
//! No two top-level modules import each other, directly or around a cycle (checked by the node's
//! `layers` test). From the bottom: `sync`, `transport`, `secure`, `identity`, `presence`, `interest`,
//! `error`, `runtimes`, `stall`; `config`, `wire`, `membership`, `link`; `shared`, `event`, `raft`;
//! `driver`; `handle`.

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod config;
mod driver;
pub mod error;
pub mod event;
pub mod handle;
pub mod identity;
pub mod interest;
pub mod link;
pub mod membership;
pub mod presence;
pub mod raft;
mod runtimes;
pub mod secure;
mod shared;
mod stall;
mod sync;
pub mod transport;
pub mod wire;

pub use config::ClusterConfig;
pub use error::ClusterError;
pub use event::ClusterEvent;
pub use handle::{ClusterHandle, ClusterView};
pub use identity::PeerId;
pub use raft::Leadership;
pub use secure::{ClusterSecret, Keyring};

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
