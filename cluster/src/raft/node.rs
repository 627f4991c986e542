//! One node's running raft: the openraft instance over the control-lane transport, and the hooks
//! the cluster driver and handle call.
//!
//! Started by [`crate::ClusterHandle::start`] when `ClusterConfig::data_dir` is set, on the
//! cluster runtime. Two tasks run beside openraft: the steward (`bootstrap`: status exchange,
//! first initialization, adding members) and the leadership watch (`leadership`). Both end when
//! the cluster stops. The node id is [`raft_id`] of the node name; raft members are found on the
//! peer links by name, so a restarted pod on a new address is reached without a membership change.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::bootstrap::{self, PeerStatus};
use super::leadership::{self, name_of, Leadership};
use super::network::{Network, Raft, Rpc};
use super::{raft_id, LogStore, RaftNodeId, StateMachine, StateMachineHandle};
use crate::error::ClusterError;
use crate::handle::{lock, Shared};
use crate::identity::PeerId;
use crate::membership::MembershipEvent;
use crate::wire::PeerMessage;
use crate::NodeId;

/// How long [`RaftNode::step_down`] waits for another node to take over.
const HANDOVER_WAIT: Duration = Duration::from_secs(3);

/// The raft part of `/cluster`.
#[derive(Debug, Clone, Serialize)]
pub struct RaftView {
    pub id: RaftNodeId,
    /// `Leader`, `Follower`, `Candidate`, `Learner` or `Shutdown`.
    pub state: String,
    pub term: u64,
    pub leader: Option<String>,
    /// This node may run the CDC consumer (see [`Leadership::is_me`]).
    pub is_me: bool,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub cdc_owner: Option<String>,
    /// On the leader: how long ago a quorum last acknowledged it.
    pub quorum_ack_ms: Option<u64>,
}

pub(crate) struct RaftNode {
    pub(crate) raft: Raft,
    pub(crate) id: RaftNodeId,
    pub(crate) name: NodeId,
    pub(super) rpc: Arc<Rpc>,
    pub(super) shared: Arc<Shared>,
    pub(super) owner: StateMachineHandle,
    pub(super) leadership: watch::Sender<Leadership>,
    /// The last status each peer sent, with when it arrived.
    pub(super) statuses: Mutex<HashMap<NodeId, PeerStatus>>,
    /// When membership last changed (bootstrap waits for it to settle).
    pub(super) membership_changed: Mutex<Instant>,
    /// On the leader: since when each raft member has not been seen alive (see `bootstrap`).
    pub(super) absent_since: Mutex<HashMap<RaftNodeId, Instant>>,
    /// Wakes the steward early (membership change, a new node to add).
    pub(super) nudge: Notify,
    /// Wakes the leadership watch early (resignation).
    pub(super) refresh: Notify,
    pub(super) resigned: AtomicBool,
    /// A leader without a quorum acknowledgement for longer than this does not claim CDC.
    pub(super) lease: Duration,
    pub(super) stop: CancellationToken,
}

impl RaftNode {
    /// Opens the store in `data_dir/raft/`, starts openraft and the node's tasks.
    pub(crate) async fn start(
        shared: Arc<Shared>,
        data_dir: &Path,
        stop: CancellationToken,
    ) -> Result<Arc<RaftNode>, ClusterError> {
        let dir = data_dir.join("raft");
        let log = LogStore::open(&dir)?;
        let state_machine = StateMachine::open(&dir)?;
        let owner = state_machine.handle();
        let settings = &shared.config;
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = openraft::Config {
            cluster_name: "realtime".into(),
            heartbeat_interval: millis(settings.raft_heartbeat),
            election_timeout_min: millis(settings.raft_election_min),
            election_timeout_max: millis(settings.raft_election_max),
            install_snapshot_timeout: 1000,
            ..Default::default()
        }
        .validate()
        .map_err(|error| ClusterError::Config(format!("raft: {error}")))?;
        let name = settings.node_id.clone();
        let id = raft_id(&name.0);
        let rpc = Arc::new(Rpc::new(Arc::clone(&shared)));
        let network = Network::new(Arc::clone(&rpc), id);
        let raft = Raft::new(id, Arc::new(config), network, log, state_machine)
            .await
            .map_err(|error| ClusterError::Raft(error.to_string()))?;
        tracing::info!(%name, id, dir = %dir.display(), "raft started");
        let node = Arc::new(RaftNode {
            raft,
            id,
            name,
            rpc,
            lease: settings.raft_election_max,
            shared,
            owner,
            leadership: watch::Sender::new(Leadership::default()),
            statuses: Mutex::default(),
            absent_since: Mutex::default(),
            membership_changed: Mutex::new(Instant::now()),
            nudge: Notify::new(),
            refresh: Notify::new(),
            resigned: AtomicBool::new(false),
            stop,
        });
        tokio::spawn(leadership::run(Arc::clone(&node)));
        tokio::spawn(bootstrap::run(Arc::clone(&node)));
        Ok(node)
    }

    pub(crate) fn leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.subscribe()
    }

    /// A raft frame from `from` (request, answer or status).
    pub(crate) fn on_message(&self, from: &PeerId, msg: PeerMessage) {
        match msg {
            PeerMessage::RaftRequest { id, body } => {
                self.rpc.on_request(&self.raft, from.node.clone(), id, body)
            }
            PeerMessage::RaftResponse { id, body } => self.rpc.on_response(&from.node, id, body),
            PeerMessage::RaftStatus { initialized, .. } => {
                let status = PeerStatus { initialized, at: Instant::now() };
                lock(&self.statuses).insert(from.node.clone(), status);
                // A fresh node: the leader adds it without waiting for its next round.
                if !initialized && leadership::leading(&self.raft.metrics().borrow()) {
                    self.nudge.notify_one();
                }
            }
            other => tracing::warn!(peer = ?from, msg = ?other, "not a raft frame"),
        }
    }

    /// Membership changed: forget what a gone (or restarted) node said, let bootstrap re-settle.
    pub(crate) fn on_membership(&self, event: &MembershipEvent) {
        match event {
            MembershipEvent::Down(id) | MembershipEvent::Renamed(id, _) => {
                lock(&self.statuses).remove(&id.node);
            }
            MembershipEvent::Up(_) | MembershipEvent::Rejoined(_) => {}
        }
        *lock(&self.membership_changed) = Instant::now();
        self.nudge.notify_one();
    }

    /// Gives up leadership before this node leaves: stops claiming CDC at once, never campaigns
    /// again, and, if it leads, stops heartbeats so another voter takes over while this one can
    /// still vote for it. openraft 0.9 has no leadership transfer; this costs the followers'
    /// election timeout (lease + 300–600 ms).
    pub(crate) async fn step_down(&self) {
        self.resigned.store(true, Ordering::Release);
        self.refresh.notify_one();
        self.raft.runtime_config().elect(false);
        let metrics = self.raft.metrics().borrow().clone();
        let others = metrics.membership_config.membership().voter_ids().filter(|&v| v != self.id).count();
        if !leadership::leading(&metrics) || others == 0 {
            return;
        }
        tracing::info!(term = metrics.current_term, "raft leader stepping down");
        self.raft.runtime_config().heartbeat(false);
        let started = Instant::now();
        let handed_over = self
            .raft
            .wait(Some(HANDOVER_WAIT))
            .metrics(|m| m.current_leader.is_some_and(|leader| leader != self.id), "another leader")
            .await;
        match handed_over {
            Ok(m) => {
                tracing::info!(leader = ?m.current_leader, after = ?started.elapsed(), "raft leadership handed over")
            }
            Err(error) => tracing::warn!(%error, "no other raft leader emerged before leaving"),
        }
    }

    /// Stops openraft (its store is closed once this returns).
    pub(crate) async fn shutdown(&self) {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "raft did not shut down cleanly");
        }
    }

    /// This node's status as its peers see it.
    pub(super) fn broadcast_status(&self, initialized: bool, leader: Option<RaftNodeId>) {
        let msg = PeerMessage::RaftStatus { initialized, leader };
        let names: Vec<NodeId> =
            self.shared.links.read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        for name in names {
            self.rpc.send_control(&name, &msg);
        }
    }

    /// Alive members other than this node, with their cluster addresses.
    pub(super) fn alive_members(&self) -> BTreeMap<NodeId, String> {
        let members = self.shared.members.read().unwrap_or_else(|e| e.into_inner());
        members
            .iter()
            .filter(|m| m.state == "alive" && m.node != self.name.0)
            .map(|m| (NodeId(m.node.clone()), m.addr.to_string()))
            .collect()
    }

    /// Peers whose status arrived within `fresh`: name → initialized.
    pub(super) fn fresh_statuses(&self, fresh: Duration) -> HashMap<NodeId, bool> {
        lock(&self.statuses)
            .iter()
            .filter(|(_, status)| status.at.elapsed() <= fresh)
            .map(|(name, status)| (name.clone(), status.initialized))
            .collect()
    }

    pub(crate) fn view(&self) -> RaftView {
        let m = self.raft.metrics().borrow().clone();
        let name = |id: RaftNodeId| name_of(&m, id).map_or_else(|| format!("#{id:x}"), |n| n.0);
        let membership = m.membership_config.membership();
        RaftView {
            id: self.id,
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader: m.current_leader.map(name),
            is_me: self.leadership.borrow().is_me,
            voters: membership.voter_ids().map(name).collect(),
            learners: membership.learner_ids().map(name).collect(),
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|id| id.index),
            cdc_owner: self.owner.cdc_owner().map(|owner| name(owner.node)),
            quorum_ack_ms: m.millis_since_quorum_ack,
        }
    }
}
