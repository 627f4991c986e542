//! `/cluster`: a snapshot of this node's membership, links (their queued and unacknowledged bytes are the lag), presence
//! replicas and raft state, for operators and tests.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::ClusterHandle;
use crate::membership::MemberView;
use crate::raft::node::RaftView;
use crate::sync::{lock, read};

/// `/cluster`: this node, its members, links and presence replicas.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    pub node: String,
    pub incarnation: u64,
    pub epoch: u64,
    pub addr: SocketAddr,
    pub ready: bool,
    pub members: Vec<MemberView>,
    pub links: Vec<LinkView>,
    pub presence: PresenceView,
    /// Every peer's member counts as held here (for cluster-wide capacity): from which run, over how
    /// many topics.
    pub interest: Vec<InterestView>,
    pub relayed: u64,
    pub relay_drops: u64,
    /// Frames from peers dropped for not being newer than one already delivered from the same sender
    /// and lane (held up on an old connection), and older connections closed for a newer one.
    pub stale_frames_dropped: u64,
    pub superseded_connections: u64,
    /// Whether peers must hold the cluster secret, and what was refused for not holding it.
    pub secured: bool,
    pub refused: crate::secure::RefusalView,
    /// Peer frames refused because they could not be true (see [`RejectedView`]).
    pub rejected: RejectedView,
    /// Raft (id, state, term, leader, voters, …); absent when raft is off.
    pub raft: Option<RaftView>,
}

/// One peer's links: connected, bytes queued (not yet written), bytes written and not acknowledged
/// by the peer and the age of the oldest of them (together, the lag), stalls, cuts and drops.
#[derive(Debug, Serialize)]
pub struct LinkView {
    pub node: String,
    pub lane: &'static str,
    pub connected: bool,
    pub queued_bytes: usize,
    pub unacked_bytes: usize,
    /// How long the oldest write not acknowledged has waited, in ms (0: everything acknowledged).
    pub oldest_unacked_ms: u64,
    /// Stalled and no progress since: the peer is unreachable for delivery.
    pub stalled: bool,
    pub stalls: u64,
    pub cuts: u64,
    pub dropped: u64,
}

/// Peer frames refused, not applied, since start (each is logged).
#[derive(Debug, Serialize)]
pub struct RejectedView {
    /// `Members` frames holding a count above what one node can hold.
    pub member_counts: u64,
    /// `Leaving` frames that did not name the sender's current run as membership knows it.
    pub leaves: u64,
    /// Presence and member-count frames from a run membership does not hold alive: another run of
    /// a live node (they could replace its live presences), or a node not (or no longer) alive.
    pub presence: u64,
}

/// One peer's member counts: the run `(incarnation, epoch)` they came from and their topic count.
#[derive(Debug, Serialize)]
pub struct InterestView {
    pub node: String,
    pub run: (u64, u64),
    pub topics: usize,
}

/// This node's presence version and every replica's, with entry counts.
#[derive(Debug, Serialize)]
pub struct PresenceView {
    pub version: crate::presence::Version,
    pub local_entries: usize,
    pub remote_entries: usize,
    pub origins: Vec<(String, crate::presence::Version)>,
}

impl ClusterHandle {
    /// A snapshot for `/cluster`.
    pub fn view(&self) -> ClusterView {
        let me = self.me();
        let mut link_views = Vec::new();
        for (node, peer) in read(&self.shared.links).iter() {
            for (lane, link) in [("data", &peer.data), ("control", &peer.control)] {
                link_views.push(LinkView {
                    node: node.0.clone(),
                    lane,
                    connected: link.is_connected(),
                    queued_bytes: link.queued_bytes(),
                    unacked_bytes: link.unacked_bytes(),
                    oldest_unacked_ms: u64::try_from(link.oldest_unacked().as_millis()).unwrap_or(u64::MAX),
                    stalled: link.is_stalled(),
                    stalls: link.stalls(),
                    cuts: link.cuts(),
                    dropped: link.dropped(),
                });
            }
        }
        link_views.sort_by(|a, b| (&a.node, a.lane).cmp(&(&b.node, b.lane)));
        let (version, local_entries) = {
            let local = lock(&self.shared.local_presence);
            (local.version(), local.snapshot().entries.len())
        };
        let (origins, remote_entries) = {
            let replica = lock(&self.shared.replica);
            let origins = replica.origins().into_iter().map(|(node, version)| (node.0, version)).collect();
            (origins, replica.entry_count())
        };
        ClusterView {
            node: me.node.0.clone(),
            incarnation: me.incarnation,
            epoch: me.epoch,
            addr: me.addr,
            ready: self.is_ready(),
            members: read(&self.shared.members).clone(),
            links: link_views,
            presence: PresenceView { version, local_entries, remote_entries, origins },
            interest: read(&self.shared.remote_counts)
                .per_node()
                .into_iter()
                .map(|(node, run, topics)| InterestView { node: node.0, run, topics })
                .collect(),
            relayed: self.shared.relayed.load(Ordering::Relaxed),
            relay_drops: self.shared.relay_drops.load(Ordering::Relaxed),
            stale_frames_dropped: self.shared.arrivals.stale(),
            superseded_connections: self.shared.arrivals.superseded(),
            secured: self.shared.auth.is_secure(),
            refused: self.shared.auth.refusals(),
            rejected: RejectedView {
                member_counts: self.shared.rejected.member_counts.load(Ordering::Relaxed),
                leaves: self.shared.rejected.leaves.load(Ordering::Relaxed),
                presence: self.shared.rejected.presence.load(Ordering::Relaxed),
            },
            raft: self.raft.as_ref().map(|raft| raft.view()),
        }
    }
}
