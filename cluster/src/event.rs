//! What the cluster hands to the node: [`ClusterEvent`]. A module of its own so the driver that
//! produces events and the handle that passes them on do not import each other.

use crate::presence::TopicChange;
use crate::NodeId;

/// What the cluster hands to the node.
#[derive(Debug)]
pub enum ClusterEvent {
    /// A broadcast published on another node, for this node's members of `topic`, in the node's
    /// encoding (see [`crate::ClusterHandle::relay`]).
    Relay { topic: String, body: Vec<u8> },
    /// Presence entries of other nodes appeared, changed or left.
    Presence(Vec<TopicChange>),
    /// A message node `from` addressed to this node, in the node's encoding (see
    /// [`crate::ClusterHandle::send_to_peers`]).
    Node { from: NodeId, body: Vec<u8> },
}
