//! What the cluster needs to know at start: who this node is, where it listens for peers, how to find
//! them, and the failure detector's timing.
//!
//! The node builds this from its own typed configuration (`REALTIME_NODE_ID`, `REALTIME_CLUSTER_BIND`,
//! `REALTIME_SEEDS`, …); the crate never reads the environment itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::ClusterError;
use crate::secure::ClusterSecret;
use crate::NodeId;

/// The cluster's settings, validated by [`ClusterConfig::validate`].
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node_id: NodeId,
    /// Where the peer transport listens: UDP for membership, TCP for data, same port.
    pub bind: SocketAddr,
    /// The address peers use to reach this node (the bind address unless it is unspecified).
    pub advertise: SocketAddr,
    /// `host:port` entries, or DNS names resolving to every pod of a headless Service; a name without
    /// a port uses the bind port.
    pub seeds: Vec<String>,
    /// How often a random member is probed.
    pub probe_period: Duration,
    /// How long a direct probe may take before indirect probes start.
    pub probe_rtt: Duration,
    /// How long a suspected member has to refute before it is declared down.
    pub suspect_to_down: Duration,
    /// How often seeds are resolved again (new pods, partitions).
    pub reseed_interval: Duration,
    /// How long to look for peers before a node that found none considers itself the first one.
    pub join_window: Duration,
    /// A peer link's send queue, in bytes; past it the link is cut and resynchronised.
    pub max_link_queue_bytes: usize,
    /// How often each node tells its peers its presence version, so lost deltas are noticed.
    pub digest_interval: Duration,
    /// How long local presence changes are collected before they are sent as one delta.
    pub presence_batch: Duration,
    /// The most members of one topic a node can have (the node's connection and channel member
    /// limits; nodes of one cluster share them). A peer's count above it is forged or corrupt and is
    /// refused.
    pub max_members_per_node: u32,
    /// Where raft keeps its vote, log and snapshot (`<dir>/raft/`); `None` runs without raft (no
    /// leadership: [`crate::ClusterHandle::leadership`] never names a leader).
    pub data_dir: Option<PathBuf>,
    /// How often the raft leader sends heartbeats.
    pub raft_heartbeat: Duration,
    /// A follower that heard nothing from a leader for a random time between these two (plus the
    /// leader's lease, which openraft sets to the maximum) starts an election. A leader that heard
    /// from no quorum within the maximum stops claiming CDC.
    pub raft_election_min: Duration,
    pub raft_election_max: Duration,
    /// A raft member the leader has not seen alive for this long is removed from the membership (a
    /// scale-down); one that comes back later is added again. Far longer than a restart.
    pub raft_remove_after: Duration,
    /// A raft leader that has not been able to lead ([`crate::ClusterHandle::set_can_lead`]) for
    /// this long, while a voter in contact with it can, stops its heartbeats so that voter takes
    /// over.
    pub raft_handover_after: Duration,
    /// Who may speak for a node: the cluster secret(s), or nobody checked ([`ClusterSecret::Insecure`]).
    pub secret: ClusterSecret,
}

impl ClusterConfig {
    /// A configuration with LAN timings: a killed node is declared down in about 1.5 s.
    pub fn new(node_id: NodeId, bind: SocketAddr, advertise: SocketAddr, seeds: Vec<String>) -> Self {
        ClusterConfig {
            node_id,
            bind,
            advertise,
            seeds,
            probe_period: Duration::from_millis(300),
            probe_rtt: Duration::from_millis(100),
            suspect_to_down: Duration::from_millis(900),
            reseed_interval: Duration::from_secs(10),
            join_window: Duration::from_secs(2),
            max_link_queue_bytes: 64 << 20,
            digest_interval: Duration::from_secs(1),
            presence_batch: Duration::from_millis(2),
            max_members_per_node: 100_000,
            data_dir: None,
            raft_heartbeat: Duration::from_millis(100),
            raft_election_min: Duration::from_millis(300),
            raft_election_max: Duration::from_millis(600),
            raft_remove_after: Duration::from_secs(300),
            raft_handover_after: Duration::from_secs(1),
            secret: ClusterSecret::Insecure,
        }
    }

    /// Rejects settings the failure detector or the links cannot work with.
    pub fn validate(&self) -> Result<(), ClusterError> {
        let bad = |reason: &str| Err(ClusterError::Config(reason.to_owned()));
        if self.node_id.0.is_empty() || self.node_id.0.len() > 253 {
            return bad("the node id must be 1 to 253 bytes");
        }
        if self.advertise.ip().is_unspecified() {
            return bad("the advertised cluster address must be a routable address, not 0.0.0.0");
        }
        if self.probe_rtt.is_zero() || self.probe_rtt >= self.probe_period {
            return bad("the probe round trip must be above zero and below the probe period");
        }
        if self.suspect_to_down.is_zero() {
            return bad("the suspicion timeout must be above zero");
        }
        if self.max_link_queue_bytes < 1 << 20 {
            return bad("a peer link queue needs at least 1 MiB");
        }
        if self.max_members_per_node == 0 {
            return bad("the most members per node must be above zero");
        }
        if self.raft_heartbeat.is_zero()
            || self.raft_heartbeat >= self.raft_election_min
            || self.raft_election_min >= self.raft_election_max
        {
            return bad("raft timings need 0 < heartbeat < election minimum < election maximum");
        }
        if self.raft_remove_after < Duration::from_secs(1) {
            return bad("the raft removal delay must be at least a second (minutes in production)");
        }
        Ok(())
    }
}
