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
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::bootstrap::{self, PeerStatus};
use super::campaign::{self, PeerBeat};
use super::leadership::{self, name_of, Leadership};
use super::network::{Network, Raft, Rpc};
use super::{raft_id, LogStore, RaftNodeId, StateMachine, StateMachineHandle};
use crate::error::ClusterError;
use crate::identity::PeerId;
use crate::membership::MembershipEvent;
use crate::shared::Shared;
use crate::sync::{lock, read};
use crate::wire::PeerMessage;
use crate::NodeId;

/// How long [`RaftNode::step_down`] waits for another node to take over.
const HANDOVER_WAIT: Duration = Duration::from_secs(3);
/// Most peer ids kept from one status's `hears` (a cluster has a handful of voters).
const MAX_HEARS: usize = 64;

/// [`RaftNode::initialized`]: not yet asked of the raft core.
const INIT_UNKNOWN: u8 = 0;
const INIT_NO: u8 = 1;
const INIT_YES: u8 = 2;

/// The raft part of `/cluster`.
#[derive(Debug, Clone, Serialize)]
pub struct RaftView {
    pub id: RaftNodeId,
    /// `Leader`, `Follower`, `Candidate`, `Learner` or `Shutdown`.
    pub state: String,
    pub term: u64,
    /// The leader as this node sees it ([`Leadership::leader`]): never this node while it has no
    /// quorum acknowledgement within the lease, whatever `state` says.
    pub leader: Option<String>,
    /// This node may run the CDC consumer (see [`Leadership::is_me`]).
    pub is_me: bool,
    /// On the leader: a quorum acknowledged it within the lease.
    pub has_quorum: bool,
    /// This node's election timer runs (see `raft::campaign`): it could win a pre-vote, and it can
    /// lead or nobody in reach can.
    pub campaign: bool,
    /// This node could do the leader's job (it reaches PostgreSQL), as the node last said.
    pub can_lead: bool,
    /// This leader cannot lead and a peer can: it stopped heartbeats so the peer takes over.
    pub yielding: bool,
    /// Peers in two-way contact with this node (their status beat, within the contact window,
    /// names this node).
    pub contact: Vec<String>,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    /// The node whose CDC claim the log holds; on this node, itself only while `is_me`.
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
    /// The node says it could do the leader's job ([`RaftNode::set_can_lead`]).
    pub(super) can_lead: AtomicBool,
    /// Since when it could not.
    pub(super) unable_since: Mutex<Option<Instant>>,
    /// Set by `campaign`: this leader is handing over (it does not claim CDC).
    pub(super) yielding: AtomicBool,
    /// Set by `campaign`: the election timer runs.
    pub(super) campaigning: AtomicBool,
    /// Set by the leadership watch: this node leads with a quorum ack within the lease.
    pub(super) has_quorum: AtomicBool,
    /// Whether raft is initialized, as the steward last asked the core (`INIT_*`); no status is
    /// sent before it is known, so a restarted node never looks pristine.
    pub(super) initialized: AtomicU8,
    /// Wakes the campaign task early (the node's capability changed).
    pub(super) reconsider: Notify,
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
            can_lead: AtomicBool::new(true),
            unable_since: Mutex::new(None),
            yielding: AtomicBool::new(false),
            campaigning: AtomicBool::new(false),
            has_quorum: AtomicBool::new(false),
            initialized: AtomicU8::new(INIT_UNKNOWN),
            reconsider: Notify::new(),
            stop,
        });
        // Campaigning waits for contact with a quorum (`campaign`); a fresh cluster's first
        // election does not (`initialize` starts it directly).
        node.raft.runtime_config().elect(false);
        tokio::spawn(leadership::run(Arc::clone(&node)));
        tokio::spawn(campaign::run(Arc::clone(&node)));
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
            PeerMessage::RaftStatus { initialized, can_lead, hears_leader, mut hears, .. } => {
                hears.truncate(MAX_HEARS);
                let status = PeerStatus { initialized, at: Instant::now(), can_lead, hears_leader, hears };
                let before = lock(&self.statuses).insert(from.node.clone(), status);
                // A fresh node: the leader adds it without waiting for its next round (once, not
                // on every beat).
                let news = before.is_none_or(|before| before.initialized);
                if !initialized && news && leadership::leading(&self.raft.metrics().borrow()) {
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

    /// The node says whether it could do the leader's job (for realtime: reach PostgreSQL); see
    /// `raft::campaign`.
    pub(crate) fn set_can_lead(&self, can: bool) {
        if self.can_lead.swap(can, Ordering::AcqRel) == can {
            return;
        }
        *lock(&self.unable_since) = (!can).then(Instant::now);
        tracing::info!(can_lead = can, "raft: this node's ability to lead changed");
        self.reconsider.notify_one();
    }

    /// How long this node has not been able to lead (`None`: it can).
    pub(super) fn unable_for(&self) -> Option<Duration> {
        lock(&self.unable_since).map(|since| since.elapsed())
    }

    /// Whether this node is, or follows, a leader it heard from within the lease.
    pub(super) fn hears_leader(&self, metrics: &openraft::RaftMetrics<RaftNodeId, super::RaftPeer>) -> bool {
        if leadership::leading(metrics) {
            return self.has_quorum.load(Ordering::Acquire);
        }
        self.rpc.since_append().is_some_and(|since| since <= self.lease)
    }

    /// The latest beat of every peer heard within `window`, by raft id.
    pub(super) fn beats(&self, window: Duration) -> HashMap<RaftNodeId, PeerBeat> {
        lock(&self.statuses)
            .iter()
            .filter(|(_, status)| status.at.elapsed() <= window)
            .map(|(name, status)| {
                let beat = PeerBeat {
                    hears_me: status.hears.contains(&self.id),
                    hears_leader: status.hears_leader,
                    can_lead: status.can_lead,
                };
                (raft_id(&name.0), beat)
            })
            .collect()
    }

    /// Sends this node's status to every linked peer (once the steward knows whether raft is
    /// initialized).
    pub(super) fn send_beat(
        &self,
        metrics: &openraft::RaftMetrics<RaftNodeId, super::RaftPeer>,
        hears_leader: bool,
        window: Duration,
    ) {
        let initialized = match self.initialized.load(Ordering::Acquire) {
            INIT_YES => true,
            INIT_NO => false,
            _ => return,
        };
        let hears: Vec<RaftNodeId> = lock(&self.statuses)
            .iter()
            .filter(|(_, status)| status.at.elapsed() <= window)
            .map(|(name, _)| raft_id(&name.0))
            .collect();
        let msg = PeerMessage::RaftStatus {
            initialized,
            leader: metrics.current_leader,
            can_lead: self.can_lead.load(Ordering::Acquire),
            hears_leader,
            hears,
        };
        let names: Vec<NodeId> = read(&self.shared.links).keys().cloned().collect();
        for name in names {
            self.rpc.send_control(&name, &msg);
        }
    }

    /// Records what the steward learned from the raft core.
    pub(super) fn set_initialized(&self, yes: bool) {
        self.initialized.store(if yes { INIT_YES } else { INIT_NO }, Ordering::Release);
    }

    /// Stops openraft (its store is closed once this returns).
    pub(crate) async fn shutdown(&self) {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "raft did not shut down cleanly");
        }
    }

    /// Alive members other than this node, with their cluster addresses.
    pub(super) fn alive_members(&self) -> BTreeMap<NodeId, String> {
        let members = read(&self.shared.members);
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
        let leadership = self.leadership.borrow().clone();
        let window = self.shared.config.raft_election_min;
        let mut contact: Vec<String> = self
            .beats(window)
            .into_iter()
            .filter(|(_, beat)| beat.hears_me)
            .map(|(id, _)| name(id))
            .collect();
        contact.sort();
        let cdc_owner = self
            .owner
            .cdc_owner()
            .filter(|owner| owner.node != self.id || leadership.is_me)
            .map(|owner| name(owner.node));
        RaftView {
            id: self.id,
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader: leadership.leader.map(|leader| leader.0),
            is_me: leadership.is_me,
            has_quorum: leadership::leading(&m) && self.has_quorum.load(Ordering::Acquire),
            campaign: self.campaigning.load(Ordering::Acquire),
            can_lead: self.can_lead.load(Ordering::Acquire),
            yielding: self.yielding.load(Ordering::Acquire),
            contact,
            voters: membership.voter_ids().map(name).collect(),
            learners: membership.learner_ids().map(name).collect(),
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|id| id.index),
            cdc_owner,
            quorum_ack_ms: m.millis_since_quorum_ack,
        }
    }
}
