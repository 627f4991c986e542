//! What this node says to its peers in its own words: a broadcast as it crosses ([`RelayPayload`])
//! and the node's messages to a peer node ([`NodeMessage`]: Postgres Changes shipments and how far
//! each node delivered them). The cluster crate carries both as bytes (`PeerMessage::{Relay, Node}`)
//! without knowing them, so a new cross-node feature is a variant here, not a change to the cluster's
//! wire format. Encoded with the cluster's bincode settings (`realtime_cluster::wire::encode_body`),
//! so a body is bounded as a frame is.
//!
//! A leaf of the crate: it names nothing else in it, so the CDC code that sends and the bridge in
//! `peers` that receives both use it without importing each other.

use realtime_cluster::error::WireError;
use realtime_cluster::{wire, ClusterHandle, NodeId};
use serde::{Deserialize, Serialize};

/// A broadcast as it crosses to another node; the receiving node encodes it for its own clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayPayload {
    /// A JSON payload delivered as event `broadcast`.
    Json(String),
    /// A user broadcast: event name, `binary` = opaque bytes (else UTF-8 JSON), and its `meta`.
    User { event: String, binary: bool, data: Vec<u8>, meta: Option<String> },
}

/// A message of this node to a peer node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeMessage {
    /// Postgres Changes from the CDC leader (a transaction, a relation change, stream liveness), in
    /// the CDC shipping encoding (`cdc::shipping`).
    CdcShipped { body: Vec<u8> },
    /// The sender has delivered (and recorded) every change up to `lsn`: the leader acknowledges
    /// to PostgreSQL only what every live node delivered. `gap`: the sender missed shipped changes
    /// (it was out of the cluster) and asks the leader to replay the stream from the slot.
    CdcDelivered { lsn: u64, gap: bool },
}

impl RelayPayload {
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        wire::encode_body(self)
    }

    pub fn decode(body: &[u8]) -> Result<RelayPayload, WireError> {
        wire::decode_body(body)
    }
}

impl NodeMessage {
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        wire::encode_body(self)
    }

    pub fn decode(body: &[u8]) -> Result<NodeMessage, WireError> {
        wire::decode_body(body)
    }

    /// Sends this to every reachable peer (see `ClusterHandle::send_to_peers`); how many took it.
    pub fn to_peers(&self, cluster: &ClusterHandle) -> usize {
        self.encoded().map_or(0, |body| cluster.send_to_peers(body))
    }

    /// Sends this to one peer; `false` when it was not queued.
    pub fn to_peer(&self, cluster: &ClusterHandle, node: &NodeId) -> bool {
        self.encoded().is_some_and(|body| cluster.send_to_peer(node, body))
    }

    /// The body, or `None` (logged) in the impossible case that it does not fit a frame.
    fn encoded(&self) -> Option<Vec<u8>> {
        self.encode()
            .map_err(|error| tracing::error!(%error, ?self, "cannot encode a message for the peers"))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_an_error() {
        let messages = [
            NodeMessage::CdcShipped { body: vec![0, 255, 7] },
            NodeMessage::CdcDelivered { lsn: 42, gap: true },
        ];
        for message in messages {
            assert_eq!(NodeMessage::decode(&message.encode().unwrap()).unwrap(), message);
        }
        let payload =
            RelayPayload::User { event: "e".into(), binary: true, data: vec![1], meta: Some("{}".into()) };
        assert_eq!(RelayPayload::decode(&payload.encode().unwrap()).unwrap(), payload);
        assert!(NodeMessage::decode(&[9, 9, 9]).is_err());
        assert!(RelayPayload::decode(&[]).is_err());
        let mut trailing = NodeMessage::CdcDelivered { lsn: 1, gap: false }.encode().unwrap();
        trailing.push(0);
        assert!(NodeMessage::decode(&trailing).is_err(), "trailing bytes are refused");
    }
}
