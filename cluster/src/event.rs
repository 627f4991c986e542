//! What the cluster hands to the node: [`ClusterEvent`]. A module of its own so the driver that
//! produces events and the handle that passes them on do not import each other.

use crate::presence::TopicChange;
use crate::wire::RelayPayload;
use crate::NodeId;

/// What the cluster hands to the node.
#[derive(Debug)]
pub enum ClusterEvent {
    /// A broadcast published on another node, for this node's members of `topic`.
    Relay { topic: String, payload: RelayPayload },
    /// Presence entries of other nodes appeared, changed or left.
    Presence(Vec<TopicChange>),
    /// Postgres Changes shipped by the CDC leader `from`.
    Cdc { from: NodeId, body: Vec<u8> },
    /// Node `from` delivered every change up to `lsn` (and, with `gap`, missed some after it).
    CdcDelivered { from: NodeId, lsn: u64, gap: bool },
}
