//! # raft: who runs the CDC consumer
//!
//! Postgres allows one logical-replication consumer per slot, so exactly one node may run the CDC
//! consumer at a time. Raft (openraft 0.9, storage-v2) elects that node: the raft leader proposes
//! [`Command::CdcLeader`] naming itself, and once the entry is committed every node's
//! [`StateMachine`] reports the same owner through a [`StateMachineHandle`].
//!
//! The log carries only these tiny leadership commands, never user data (broadcasts, presence and
//! database changes travel over the peer links). That keeps the store simple: the whole log fits in
//! memory, and the state machine is three small fields.
//!
//! ## Why the store is durable
//! A raft node that forgets its vote after a restart may vote twice in one term, and two leaders
//! could then both start CDC. So the vote and the log live in a directory (`REALTIME_DATA_DIR`) and
//! reach the disk before openraft is told they did. See [`LogStore`] for the file format.
//!
//! ## Layout
//! - this file: the raft types, declared once ([`TypeConfig`]), and [`raft_id`].
//! - `error`: [`StoreError`], the one error type of the store.
//! - `durable`: file header, checksummed records, replace-by-rename.
//! - `log_store`: [`LogStore`] (vote, log, committed id).
//! - `state_machine`: [`StateMachine`], snapshots, [`StateMachineHandle`].
//! - `network`: openraft's RPCs over the peer links' control lane.
//! - `reachability`: which peers answer, logged once per change of state.
//! - `node`: the running raft of this node and the hooks the driver and handle call.
//! - `bootstrap`: status exchange, exactly-one-node initialization, the leader adding members.
//! - `leadership`: the [`Leadership`] watch (who leads, and may this node run CDC).
//! - `campaign`: status beats, and the one place that turns openraft's election timer and
//!   heartbeats on and off (pre-vote, handing over when this node cannot lead).

mod bootstrap;
mod campaign;
mod durable;
mod error;
mod leadership;
mod log_store;
pub(crate) mod network;
pub(crate) mod node;
mod reachability;
mod state_machine;
#[cfg(test)]
mod store_test;

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

pub use bootstrap::MAX_VOTERS;
pub use error::StoreError;
pub use leadership::Leadership;
pub use log_store::{LogReader, LogStore};
pub use network::MAX_TTL;
pub use node::RaftView;
pub use state_machine::{SnapshotBuilder, StateMachine, StateMachineHandle};

openraft::declare_raft_types!(
    /// The raft types of the cluster: `u64` ids from [`raft_id`], peers as [`RaftPeer`],
    /// [`Command`]s in the log, snapshots as in-memory JSON bytes.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = RaftPeer,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The raft node id of a node: openraft wants a `Copy` integer, nodes are known by a stable name.
pub type RaftNodeId = u64;

/// A member as raft's membership config stores it: enough to dial the node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftPeer {
    /// The node's stable name ([`crate::NodeId`]); [`raft_id`] of it is the raft id.
    pub name: String,
    /// Where the node's raft link listens (`host:port`).
    pub addr: String,
}

/// Who owns the CDC consumer, as decided by the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CdcOwner {
    /// Raft id of the owning node.
    pub node: RaftNodeId,
    /// Raft term in which the owner claimed CDC; a claim with a lower term never replaces it.
    pub term: u64,
}

impl fmt::Display for CdcOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} (term {})", self.node, self.term)
    }
}

/// A command in the raft log. Only leadership facts, never user data.
///
/// Externally tagged (serde's default) so that it also travels in bincode frames on the raft link;
/// internally tagged enums need a self-describing format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// `node` now owns the CDC consumer; proposed by the leader of `term` right after election.
    /// Ignored when the current owner claimed in a later term (a late entry cannot steal CDC back).
    CdcLeader { node: RaftNodeId, term: u64 },
    /// Changes nothing; lets a leader commit an entry of its own term on demand.
    Noop,
}

/// What applying an entry returns: the CDC owner after the entry, so a proposer learns whether
/// its claim took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub cdc_owner: Option<CdcOwner>,
}

/// The raft id of the node named `name`: 64-bit FNV-1a over the name's UTF-8 bytes.
///
/// The algorithm is part of the on-disk and on-wire format (votes and membership store these ids),
/// so it must never change; `raft_id_is_stable` pins it. FNV-1a is used because it is tiny, has no
/// seed and is specified byte by byte (the std hashers are neither stable across releases nor
/// documented). With a handful of nodes a collision has probability about n²/2⁶⁵; the node layer
/// should still refuse to start a cluster whose members' ids collide.
pub fn raft_id(name: &str) -> RaftNodeId {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    name.bytes().fold(OFFSET_BASIS, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_id_is_stable() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(raft_id(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(raft_id("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(raft_id("foobar"), 0x8594_4171_f739_67e8);
        // Our pod names: these values are stored in votes and membership on disk.
        assert_eq!(raft_id("realtime-0"), 0x80ef_b778_3a95_d909);
        assert_eq!(raft_id("realtime-1"), 0x80ef_b678_3a95_d756);
    }

    #[test]
    fn commands_are_tagged_json() {
        let json = serde_json::to_string(&Command::CdcLeader { node: 7, term: 3 }).unwrap();
        assert_eq!(json, r#"{"cdc_leader":{"node":7,"term":3}}"#);
        assert_eq!(serde_json::from_str::<Command>(r#""noop""#).unwrap(), Command::Noop);
    }

    #[test]
    fn entries_round_trip_through_bincode() {
        let config = bincode::config::standard();
        let peer = RaftPeer { name: "realtime-0".into(), addr: "10.0.0.1:4001".into() };
        let membership =
            openraft::Membership::new(vec![[1].into()], std::collections::BTreeMap::from([(1, peer)]));
        let log_id = openraft::testing::log_id(1, 1, 1);
        for payload in [
            openraft::EntryPayload::Normal(Command::CdcLeader { node: 7, term: 3 }),
            openraft::EntryPayload::Normal(Command::Noop),
            openraft::EntryPayload::Membership(membership),
        ] {
            let entry = openraft::Entry::<TypeConfig> { log_id, payload };
            let bytes = bincode::serde::encode_to_vec(&entry, config).unwrap();
            let (back, _): (openraft::Entry<TypeConfig>, _) =
                bincode::serde::decode_from_slice(&bytes, config).unwrap();
            assert_eq!(back, entry);
        }
    }
}
