//! The node's side of the cluster: [`ClusterHandle`] (start, relay, member counts, presence, view) and
//! the [`ClusterEvent`]s the node receives.
//!
//! The cluster machinery runs on its own tokio runtime, on its own threads, so a busy actor or HTTP
//! worker never delays a heartbeat or a peer link; membership (SWIM) and raft have a thread each
//! besides, so the cluster runtime's bulk work (the links of a CDC catch-up) never delays a probe's
//! answer or a heartbeat (see [`crate::runtimes`]). Calls from the node only touch shared state and
//! queues; they never block on the network.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::ClusterConfig;
use crate::driver::{Core, CoreCommand};
use crate::error::ClusterError;
use crate::event::ClusterEvent;
use crate::identity::PeerId;
use crate::interest::RemoteCounts;
use crate::link;
use crate::membership::Membership;
use crate::presence::{ConnId, Entry, EntryId, LocalPresence, Replica};
use crate::raft::node::RaftNode;
use crate::raft::Leadership;
use crate::runtimes::{ControlThread, Runtimes};
use crate::secure::{self, ClusterSecret, PeerAuth};
use crate::shared::{Rejected, Shared};
use crate::sync::{lock, read};
use crate::transport::{Bound, Network, Transport};
use crate::wire::{self, PeerMessage};
use crate::NodeId;

#[cfg(test)]
mod starve_test;
mod view;

pub use view::{ClusterView, LinkView, PresenceView, RejectedView};

/// The running cluster; cheap to clone.
#[derive(Clone)]
pub struct ClusterHandle {
    shared: Arc<Shared>,
    commands: mpsc::Sender<CoreCommand>,
    stop: CancellationToken,
    /// Raft, when `ClusterConfig::data_dir` is set.
    raft: Option<Arc<RaftNode>>,
}

impl ClusterHandle {
    /// Binds the cluster port (UDP and TCP) and starts membership, links and the core on a runtime of
    /// their own. Returns once bound.
    pub async fn start(
        config: ClusterConfig,
    ) -> Result<(ClusterHandle, mpsc::Receiver<ClusterEvent>), ClusterError> {
        config.validate()?;
        let (started_tx, started_rx) = oneshot::channel();
        let thread_config = config.clone();
        std::thread::Builder::new()
            .name("cluster".into())
            .spawn(move || {
                let built = ControlThread::start().and_then(|control| {
                    let runtime = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .thread_name("cluster-worker")
                        .enable_all()
                        .build()?;
                    Ok((control, runtime))
                });
                let (control, runtime) = match built {
                    Ok(built) => built,
                    Err(error) => {
                        let _ = started_tx.send(Err(ClusterError::Runtime(error)));
                        return;
                    }
                };
                let placement = Placement::OwnThreads { control: control.handle() };
                runtime.block_on(async move {
                    match launch(thread_config, Arc::new(Network), placement).await {
                        Ok((handle, events)) => {
                            let stop = handle.stop.clone();
                            let raft = handle.raft.clone();
                            let _ = started_tx.send(Ok((handle, events)));
                            stop.cancelled().await;
                            if let Some(raft) = raft {
                                // Closes the raft store before the runtime (and the port) goes.
                                let _ =
                                    tokio::time::timeout(std::time::Duration::from_secs(2), raft.shutdown())
                                        .await;
                            }
                        }
                        Err(error) => {
                            let _ = started_tx.send(Err(error));
                        }
                    }
                });
                runtime.shutdown_timeout(std::time::Duration::from_secs(1));
                control.stop();
            })
            .map_err(ClusterError::Runtime)?;
        started_rx.await.map_err(|_| ClusterError::Config("the cluster thread ended at start-up".into()))?
    }

    /// Starts the cluster on the caller's runtime over `transport`, membership included: the
    /// in-memory twin's way ([`crate::transport::memory`]), where a test that pauses time drives
    /// every node of a cluster in one runtime. [`ClusterHandle::shutdown`] stops it.
    pub async fn start_on(
        config: ClusterConfig,
        transport: Arc<dyn Transport>,
    ) -> Result<(ClusterHandle, mpsc::Receiver<ClusterEvent>), ClusterError> {
        config.validate()?;
        launch(config, transport, Placement::Caller).await
    }

    /// This node's current identity.
    pub fn me(&self) -> PeerId {
        read(&self.shared.me).clone()
    }

    /// Joined the cluster (or found nobody within the join window and started as the first node).
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }

    /// Sends a broadcast published here to every peer; returns to how many. The payload is only built
    /// when there is a peer.
    ///
    /// Every peer, not only those whose member counts list the topic: a member that has just joined on
    /// another node has its join reply before its count reaches this node, and must not miss what is
    /// published after that reply (the guarantee Phoenix PubSub gives too). A peer without members of
    /// the topic drops the relay in one map lookup.
    /// `body` is the node's encoding of the broadcast, made only when there is a peer to send it to.
    pub fn relay(&self, topic: &str, body: impl FnOnce() -> Vec<u8>) -> usize {
        let links = read(&self.shared.links);
        if links.is_empty() {
            return 0;
        }
        let frame = match wire::encode(&PeerMessage::Relay { topic: topic.to_owned(), body: body() }) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::error!(%error, "cannot encode a relay");
                return 0;
            }
        };
        let mut sent = 0;
        for peer in links.values() {
            // A stalled peer gets no broadcasts until its link makes progress: they would arrive
            // late (or be dropped with its queue), and its members are resynchronised on reconnect.
            if !peer.data.is_stalled() && peer.data.offer(frame.clone()) {
                sent += 1;
            } else {
                self.shared.relay_drops.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.shared.relayed.fetch_add(sent as u64, Ordering::Relaxed);
        sent
    }

    /// Records how many members `topic` has on this node.
    pub fn set_members(&self, topic: &str, count: usize) {
        lock(&self.shared.local_counts).set(topic, u32::try_from(count).unwrap_or(u32::MAX));
        self.shared.dirty.notify_one();
    }

    /// Members of `topic` on the other nodes (for cluster-wide capacity).
    pub fn remote_members(&self, topic: &str) -> usize {
        read(&self.shared.remote_counts).members(topic)
    }

    /// Tracks (or updates) a local connection's presence in `topic`.
    pub fn presence_put(&self, topic: &str, conn: ConnId, entry: Entry) {
        lock(&self.shared.local_presence).put(topic, conn, entry);
        self.shared.dirty.notify_one();
    }

    /// Removes a local connection's presence from `topic`.
    pub fn presence_remove(&self, topic: &str, conn: ConnId) {
        lock(&self.shared.local_presence).remove(topic, conn);
        self.shared.dirty.notify_one();
    }

    /// Other nodes' presence entries in `topic`.
    pub fn remote_presence(&self, topic: &str) -> Vec<(EntryId, Entry)> {
        lock(&self.shared.replica).topic_entries(topic)
    }

    /// Sends a message of the node's own (its encoding, e.g. a Postgres Changes shipment) to every
    /// peer, in order with everything else on the data lane; returns how many took it. A peer whose
    /// link is stalled is skipped (for realtime: when its link makes progress again, the next
    /// transaction shows it what it missed and it asks for a replay, or is told a gap). Arrives as
    /// [`ClusterEvent::Node`].
    pub fn send_to_peers(&self, body: Vec<u8>) -> usize {
        let frame = match wire::encode(&PeerMessage::Node { body }) {
            Ok(frame) => frame,
            Err(error) => {
                tracing::error!(%error, "cannot encode a node message");
                return 0;
            }
        };
        let links = read(&self.shared.links);
        links.values().filter(|peer| !peer.data.is_stalled() && peer.data.offer(frame.clone())).count()
    }

    /// Sends a message of the node's own to one peer, if it has a link (see
    /// [`ClusterHandle::send_to_peers`]); `false` when it was not queued.
    pub fn send_to_peer(&self, node: &NodeId, body: Vec<u8>) -> bool {
        read(&self.shared.links).get(node).is_some_and(|peer| peer.data.send(&PeerMessage::Node { body }))
    }

    /// Peers the failure detector currently holds alive (or suspect: not yet declared down).
    pub fn live_peers(&self) -> Vec<NodeId> {
        let members = read(&self.shared.members);
        let mut live: Vec<NodeId> =
            members.iter().filter(|m| m.state != "down").map(|m| NodeId(m.node.clone())).collect();
        live.sort();
        live.dedup();
        live
    }

    /// Live peers (see [`ClusterHandle::live_peers`]) this node can deliver to: those whose data link
    /// is not stalled. A peer the failure detector holds alive while its link makes no progress (a
    /// one-way loss) is not reachable.
    pub fn reachable_peers(&self) -> Vec<NodeId> {
        let mut live = self.live_peers();
        let links = read(&self.shared.links);
        live.retain(|node| links.get(node).is_none_or(|peer| !peer.data.is_stalled()));
        live
    }

    /// The first half of a graceful exit, while the node still serves its sockets: hands raft
    /// leadership over (so CDC resumes elsewhere) and has every peer drop this node's presences at once.
    pub async fn depart(&self) {
        self.step_down().await;
        self.command(CoreCommand::Depart).await;
    }

    /// Leaves the cluster (after [`ClusterHandle::depart`], or doing it first): membership is told,
    /// and this node stops being ready.
    pub async fn leave(&self) {
        self.step_down().await;
        self.command(CoreCommand::Leave).await;
    }

    async fn command(&self, command: fn(oneshot::Sender<()>) -> CoreCommand) {
        let (done, finished) = oneshot::channel();
        if self.commands.send(command(done)).await.is_ok() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), finished).await;
        }
    }

    /// Stops the cluster runtime (after [`ClusterHandle::leave`] for a graceful exit).
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Who leads the cluster and whether this node may run the CDC consumer (`is_me`). Without raft
    /// (no `data_dir`) the watch never names a leader.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        match &self.raft {
            Some(raft) => raft.leadership(),
            None => watch::channel(Leadership::default()).1,
        }
    }

    /// Whether this node could do the leader's job (for realtime: it reaches PostgreSQL). A node
    /// that cannot does not campaign while a peer that can is in reach, and a leader that cannot for
    /// `ClusterConfig::raft_handover_after` hands over to such a peer. Nodes start able.
    pub fn set_can_lead(&self, can: bool) {
        if let Some(raft) = &self.raft {
            raft.set_can_lead(can);
        }
    }

    /// Stops claiming CDC at once and, if this node leads raft, lets another voter take over
    /// (waits up to 3 s for it). Part of [`ClusterHandle::leave`]; this node does not lead again.
    pub async fn step_down(&self) {
        if let Some(raft) = &self.raft {
            raft.step_down().await;
        }
    }
}

/// Where membership and raft run.
enum Placement {
    /// Membership on a thread of its own (see `membership::start`), raft and the control lane on the
    /// runtime of `control` (see [`crate::runtimes`]), beside the cluster runtime.
    OwnThreads { control: tokio::runtime::Handle },
    /// On the caller's runtime, with everything else.
    Caller,
}

/// Binds and spawns everything on the current (cluster) runtime.
async fn launch(
    config: ClusterConfig,
    transport: Arc<dyn Transport>,
    placement: Placement,
) -> Result<(ClusterHandle, mpsc::Receiver<ClusterEvent>), ClusterError> {
    let runtimes = match &placement {
        Placement::OwnThreads { control } => {
            Runtimes { data: tokio::runtime::Handle::current(), control: control.clone() }
        }
        Placement::Caller => Runtimes::current(),
    };
    // Bound on the raft runtime: the listener (and so every accepted connection) is registered with
    // its reactor, which keeps turning while the data runtime is busy (see `runtimes`).
    let binding = {
        let (transport, at) = (transport.clone(), config.bind);
        runtimes.control.spawn(async move { transport.bind(at).await })
    };
    let Bound { listener, datagrams } = binding
        .await
        .map_err(|joined| std::io::Error::other(joined.to_string()))
        .and_then(|bound| bound)
        .map_err(|source| ClusterError::Bind { addr: config.bind, source })?;
    let me = PeerId::start(config.node_id.clone(), config.advertise);
    tracing::info!(identity = ?me, seeds = ?config.seeds, "cluster starting");
    let stop = CancellationToken::new();
    let auth = Arc::new(match &config.secret {
        ClusterSecret::Insecure => PeerAuth::insecure(),
        ClusterSecret::Fixed(keys) | ClusterSecret::File { keys, .. } => PeerAuth::new(keys.clone()),
    });
    if let ClusterSecret::File { path, .. } = &config.secret {
        tokio::spawn(secure::reload(auth.clone(), path.clone(), stop.clone()));
    }
    let shared = Arc::new(Shared {
        local_presence: Mutex::new(LocalPresence::new(me.node.clone(), me.incarnation)),
        replica: Mutex::new(Replica::new(me.node.clone())),
        me: Arc::new(RwLock::new(me)),
        ready: Arc::new(AtomicBool::new(false)),
        members: Arc::default(),
        links: RwLock::default(),
        local_counts: Mutex::default(),
        remote_counts: RwLock::new(RemoteCounts::new(config.max_members_per_node)),
        dirty: Notify::new(),
        relayed: AtomicU64::new(0),
        relay_drops: AtomicU64::new(0),
        auth: auth.clone(),
        rejected: Rejected::default(),
        arrivals: Arc::default(),
        transport,
        runtimes: runtimes.clone(),
        config: config.clone(),
    });
    let (events_tx, events_rx) = mpsc::channel(65_536);
    let (membership_tx, membership_rx) = mpsc::channel(1024);
    let (membership_commands_tx, membership_commands_rx) = mpsc::channel(4);
    let (inbound_tx, inbound_rx) = mpsc::channel(4096);
    let (link_events_tx, link_events_rx) = mpsc::channel(1024);
    let (commands_tx, commands_rx) = mpsc::channel(16);
    let membership = {
        let (auth, me, view, ready, stop) =
            (auth.clone(), shared.me.clone(), shared.members.clone(), shared.ready.clone(), stop.clone());
        Membership {
            config,
            socket: datagrams,
            auth,
            me,
            events: membership_tx,
            commands: membership_commands_rx,
            view,
            ready,
            stop,
        }
    };
    // Raft first: a node whose store cannot open must not show up in membership. Started on the raft
    // runtime, where openraft spawns its tasks and the node's raft tasks run.
    let raft = match shared.config.data_dir.clone() {
        Some(dir) => {
            let (shared, stop) = (shared.clone(), stop.clone());
            let started = runtimes.control.spawn(async move { RaftNode::start(shared, &dir, stop).await });
            Some(started.await.map_err(|joined| ClusterError::Raft(joined.to_string()))??)
        }
        None => None,
    };
    match placement {
        Placement::OwnThreads { .. } => {
            crate::membership::start(membership).map_err(ClusterError::Runtime)?
        }
        Placement::Caller => drop(tokio::spawn(membership.run())),
    }
    crate::stall::spawn(&runtimes.data, "data", stop.clone());
    crate::stall::spawn(&runtimes.control, "raft", stop.clone());
    // Control-lane frames (raft) go straight to raft, never behind the driver's data queue.
    let (control_tx, mut control_rx) = mpsc::channel::<link::Inbound>(4096);
    let control_raft = raft.clone();
    runtimes.control.spawn(async move {
        while let Some(inbound) = control_rx.recv().await {
            if let Some(raft) = &control_raft {
                raft.on_message(&inbound.from, inbound.msg);
            }
        }
    });
    let inboxes = link::Inboxes { data: inbound_tx, control: control_tx };
    let accepting = link::Accepting { runtimes: runtimes.clone(), auth, arrivals: shared.arrivals.clone() };
    runtimes.control.spawn(link::accept(listener, inboxes, accepting, stop.clone()));
    let core = Core {
        shared: shared.clone(),
        events: events_tx,
        membership: membership_rx,
        membership_commands: membership_commands_tx,
        inbound: inbound_rx,
        link_events: link_events_rx,
        link_events_tx,
        commands: commands_rx,
        stop: stop.clone(),
        raft: raft.clone(),
    };
    tokio::spawn(core.run());
    Ok((ClusterHandle { shared, commands: commands_tx, stop, raft }, events_rx))
}
