//! The state one node's cluster parts share: [`Shared`] (membership's view, links, member counts,
//! presence, refusal counters) and [`PeerLinks`]. The handle reads it for the node, the driver and
//! raft act on it; it lives apart from all three so none of them imports another for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::Notify;

use crate::config::ClusterConfig;
use crate::identity::PeerId;
use crate::interest::{LocalCounts, RemoteCounts};
use crate::link::{self, Link};
use crate::membership::MemberView;
use crate::presence::{LocalPresence, Replica};
use crate::runtimes::Runtimes;
use crate::secure::PeerAuth;
use crate::transport::Transport;
use crate::NodeId;

/// The links to one peer.
pub(crate) struct PeerLinks {
    pub id: PeerId,
    pub data: Arc<Link>,
    pub control: Arc<Link>,
}

impl PeerLinks {
    pub(crate) fn close(&self) {
        self.data.close();
        self.control.close();
    }
}

/// State shared by the node's threads and the cluster runtime.
pub(crate) struct Shared {
    pub config: ClusterConfig,
    pub me: Arc<RwLock<PeerId>>,
    pub ready: Arc<AtomicBool>,
    pub members: Arc<RwLock<Vec<MemberView>>>,
    pub links: RwLock<HashMap<NodeId, PeerLinks>>,
    pub local_counts: Mutex<LocalCounts>,
    pub remote_counts: RwLock<RemoteCounts>,
    pub local_presence: Mutex<LocalPresence>,
    pub replica: Mutex<Replica>,
    /// Local presence or member counts changed: the core sends them after a short batch.
    pub dirty: Notify,
    pub relayed: AtomicU64,
    pub relay_drops: AtomicU64,
    /// Who may speak for a node (links and membership packets).
    pub auth: Arc<PeerAuth>,
    /// Peer frames refused by the driver's checks, by kind (see [`crate::handle::RejectedView`]).
    pub rejected: Rejected,
    /// The order of what accepted links deliver, and what they dropped as stale.
    pub arrivals: Arc<link::Arrivals>,
    /// How links reach peers (the network, or its in-memory twin).
    pub transport: Arc<dyn Transport>,
    /// Where bulk work and raft run (see [`crate::runtimes`]).
    pub runtimes: Runtimes,
}

/// Counts of peer frames the driver refused.
#[derive(Default)]
pub(crate) struct Rejected {
    pub member_counts: AtomicU64,
    pub leaves: AtomicU64,
    pub presence: AtomicU64,
}
