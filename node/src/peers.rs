//! The node's side of the cluster: how a broadcast crosses to another node (a channel's cluster topic is
//! [`TopicKey::cluster_topic`]), and the bridge that routes [`ClusterEvent`]s from the cluster runtime into
//! the registry.
//!
//! Broadcasts are relayed where they are published (the socket actor, the REST handler), so one
//! publisher's messages enter the peer link in the order it sent them and never wait for a channel
//! actor. A relayed broadcast reaches the receiving node's channel as a local broadcast with no
//! sender, and is never relayed again.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use realtime_cluster::{ClusterConfig, ClusterEvent, ClusterHandle, NodeId};
use realtime_proto::binary::BinaryEncoding;
use tokio::sync::mpsc;

use crate::cdc::cluster::CdcInbound;
use crate::cdc::CdcHandle;
use crate::channel::messages::{RemoteBroadcast, RemotePresence};
use crate::channel::Registry;
use crate::config::Config;
use crate::peer_message::{NodeMessage, RelayPayload};
use crate::vocab::{BroadcastBody, TopicKey};
use crate::webhooks::Webhooks;

/// A broadcast as it crosses to another node.
pub fn to_payload(body: &BroadcastBody) -> RelayPayload {
    match body {
        BroadcastBody::Json(json) => RelayPayload::Json(json.to_string()),
        BroadcastBody::User { event, encoding, data, meta } => RelayPayload::User {
            event: event.to_string(),
            binary: *encoding == BinaryEncoding::Raw,
            data: data.to_vec(),
            meta: meta.as_deref().map(str::to_owned),
        },
    }
}

/// A relayed broadcast as this node's channels deliver it.
pub fn from_payload(payload: RelayPayload) -> BroadcastBody {
    match payload {
        RelayPayload::Json(json) => BroadcastBody::Json(json.into()),
        RelayPayload::User { event, binary, data, meta } => BroadcastBody::User {
            event: event.into(),
            encoding: if binary { BinaryEncoding::Raw } else { BinaryEncoding::Json },
            data: Bytes::from(data),
            meta: meta.map(Arc::from),
        },
    }
}

/// Sends a broadcast published on this node to every peer (see `ClusterHandle::relay`).
pub fn relay(cluster: Option<&ClusterHandle>, key: &TopicKey, body: &BroadcastBody) {
    if let Some(cluster) = cluster {
        cluster.relay(&key.cluster_topic(), || match to_payload(body).encode() {
            Ok(body) => body,
            Err(error) => {
                tracing::error!(%error, "cannot encode a broadcast for the peers");
                Vec::new()
            }
        });
    }
}

/// The cluster configuration from the node's, when `REALTIME_SEEDS` is set.
pub fn cluster_config(config: &Config) -> Option<ClusterConfig> {
    let settings = config.cluster.as_ref()?;
    let mut cluster = ClusterConfig::new(
        NodeId(config.node_id.clone()),
        settings.bind,
        settings.advertise,
        settings.seeds.clone(),
    );
    cluster.probe_period = settings.probe_period;
    cluster.probe_rtt = (settings.probe_period / 3).max(std::time::Duration::from_millis(1));
    cluster.suspect_to_down = settings.suspect_to_down;
    cluster.raft_remove_after = settings.raft_remove_after;
    if let Some(cdc) = &config.cdc {
        cluster.raft_handover_after = cdc.handover;
    }
    cluster.secret = settings.secret.clone();
    // No node holds more members of one channel than it has connections, nor than the channel's limit
    // (a node refuses a join once its own count plus its peers' reaches it): a peer's count above
    // that is forged or corrupt and is refused (nodes of one cluster share their settings).
    let most = config.limits.max_connections.min(config.limits.max_channel_members);
    cluster.max_members_per_node = u32::try_from(most).unwrap_or(u32::MAX);
    // Raft (who leads CDC) keeps its vote and log next to the node's other state.
    cluster.data_dir = Some(config.data_dir.clone());
    Some(cluster)
}

/// Routes cluster events to the channels (and the CDC hub, and the webhooks' user roster) of this
/// node until the cluster stops.
pub async fn bridge(
    mut events: mpsc::Receiver<ClusterEvent>,
    registry: Addr<Registry>,
    cdc: Option<CdcHandle>,
    webhooks: Option<Webhooks>,
) {
    while let Some(event) = events.recv().await {
        match event {
            ClusterEvent::Relay { topic, body } => {
                let Some(key) = TopicKey::from_cluster_topic(&topic) else { continue };
                let payload = match RelayPayload::decode(&body) {
                    Ok(payload) => payload,
                    Err(error) => {
                        tracing::warn!(%topic, %error, "a peer's relay is not a broadcast: dropped");
                        continue;
                    }
                };
                registry.do_send(RemoteBroadcast {
                    key,
                    body: from_payload(payload),
                    received_at: Instant::now(),
                    from: None,
                    stored: None,
                });
            }
            ClusterEvent::Presence(changes) => {
                for change in changes {
                    let change = match &webhooks {
                        Some(webhooks) => match webhooks.remote_presence(change) {
                            Ok(()) => continue,
                            Err(change) => change,
                        },
                        None => change,
                    };
                    let Some(key) = TopicKey::from_cluster_topic(&change.topic) else { continue };
                    registry.do_send(RemotePresence { key, change });
                }
            }
            ClusterEvent::Node { from, body } => {
                let inbound = match NodeMessage::decode(&body) {
                    Ok(NodeMessage::CdcShipped { body }) => CdcInbound::Shipped { from, body },
                    Ok(NodeMessage::CdcDelivered { lsn, gap }) => CdcInbound::Delivered { from, lsn, gap },
                    Err(error) => {
                        tracing::warn!(peer = %from, %error, "a peer's message is not one this node knows: dropped");
                        continue;
                    }
                };
                if let Some(cdc) = &cdc {
                    cdc.from_peer(inbound);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_payloads_round_trip() {
        let body = BroadcastBody::User {
            event: "e".into(),
            encoding: BinaryEncoding::Raw,
            data: Bytes::from_static(&[1, 2]),
            meta: Some("{\"id\":1}".into()),
        };
        let back = from_payload(to_payload(&body));
        assert_eq!(format!("{back:?}"), format!("{body:?}"));
        let json = BroadcastBody::Json("{\"a\":1}".into());
        assert_eq!(format!("{:?}", from_payload(to_payload(&json))), format!("{json:?}"));
    }
}
