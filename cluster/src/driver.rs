//! The cluster driver: one task on the cluster runtime that reacts to membership changes, peer frames,
//! link (re)connections and local presence changes.
//!
//! - Local presence ops and member counts are batched for `presence_batch` and sent to every peer as
//!   one `PresenceDelta` / `Members` frame; a peer whose link (re)connects gets the full state.
//! - A delta that does not follow what we hold (a gap) makes us ask its origin for a snapshot, and
//!   every `digest_interval` each node tells its peers its version, so a lost last delta is noticed too.
//! - A node declared down has its entries tombstoned here, so its presences leave on every node; a
//!   restarted node's new incarnation replaces the old one's entries when its snapshot arrives.
//!
//! What peers say is checked against what membership knows before it is applied, so one forged frame
//! cannot hide or inflate a live node's state (each refusal is logged and counted in
//! [`crate::handle::RejectedView`]):
//! - a `Leaving` drops a node's presences only when it names the sender's own run and that run is the
//!   one membership holds alive; otherwise the failure detector decides (a real leaver also leaves
//!   membership, so a refused `Leaving` only delays its presences' removal);
//! - presence and member-count frames are applied only from the run of a node membership holds alive,
//!   and only when they speak for that run (a snapshot or delta naming another incarnation is refused):
//!   from another run they would replace that live run's entries, and from a node membership does
//!   not hold alive they could fill channels with members nobody can see leave. A new or restarted
//!   node whose frames arrive before membership announces it is repaired by its next digest
//!   (`digest_interval`): the snapshot request it triggers is answered with its full state;
//! - a member count above what one node can hold is refused (see [`crate::interest`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::event::ClusterEvent;
use crate::identity::PeerId;
use crate::interest::Run;
use crate::link::{self, Inbound, LinkEvent};
use crate::membership::{MemberView, MembershipCommand, MembershipEvent};
use crate::presence::{DeltaOutcome, TopicChange};
use crate::raft::node::RaftNode;
use crate::shared::{PeerLinks, Shared};
use crate::sync::{lock, read, write};
use crate::wire::{self, Lane, PeerMessage};
use crate::NodeId;

pub(crate) enum CoreCommand {
    /// Peers drop this node's presences now (the node keeps serving while it drains).
    Depart(oneshot::Sender<()>),
    /// Depart if not done yet, then leave membership.
    Leave(oneshot::Sender<()>),
}

pub(crate) struct Core {
    pub shared: Arc<Shared>,
    pub events: mpsc::Sender<ClusterEvent>,
    pub membership: mpsc::Receiver<MembershipEvent>,
    pub membership_commands: mpsc::Sender<MembershipCommand>,
    pub inbound: mpsc::Receiver<Inbound>,
    pub link_events: mpsc::Receiver<LinkEvent>,
    pub link_events_tx: mpsc::Sender<LinkEvent>,
    pub commands: mpsc::Receiver<CoreCommand>,
    pub stop: CancellationToken,
    pub raft: Option<Arc<RaftNode>>,
}

impl Core {
    pub(crate) async fn run(mut self) {
        let mut digest = tokio::time::interval(self.shared.config.digest_interval);
        let mut departed = false;
        digest.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                Some(inbound) = self.inbound.recv() => self.on_inbound(inbound).await,
                Some(event) = self.membership.recv() => self.on_membership(event).await,
                Some(LinkEvent::Up { peer, lane }) = self.link_events.recv() => self.on_link_up(&peer, lane),
                _ = self.shared.dirty.notified() => {
                    tokio::time::sleep(self.shared.config.presence_batch).await;
                    self.send_pending();
                }
                _ = digest.tick() => {
                    let version = lock(&self.shared.local_presence).version();
                    self.to_all(&PeerMessage::PresenceDigest { version });
                }
                Some(command) = self.commands.recv() => match command {
                    CoreCommand::Depart(done) => {
                        self.depart(&mut departed).await;
                        let _ = done.send(());
                    }
                    CoreCommand::Leave(done) => {
                        self.depart(&mut departed).await;
                        self.leave().await;
                        let _ = done.send(());
                    }
                },
            }
        }
        for (_, peer) in write(&self.shared.links).drain() {
            peer.close();
        }
    }

    /// Sends `msg` on every peer's data link.
    fn to_all(&self, msg: &PeerMessage) {
        let Ok(frame) = wire::encode(msg) else { return };
        for peer in read(&self.shared.links).values() {
            peer.data.offer(frame.clone());
        }
    }

    /// Sends `msg` on one peer's data link, if it has one.
    fn to_peer(&self, node: &NodeId, msg: &PeerMessage) {
        if let Some(peer) = read(&self.shared.links).get(node) {
            peer.data.send(msg);
        }
    }

    /// Sends the batched local changes to every peer.
    fn send_pending(&self) {
        let counts = lock(&self.shared.local_counts).take_pending();
        if !counts.is_empty() {
            self.to_all(&PeerMessage::Members { counts, full: false });
        }
        let delta = lock(&self.shared.local_presence).take_delta();
        if let Some(delta) = delta {
            self.to_all(&PeerMessage::PresenceDelta(delta));
        }
    }

    /// Sends everything pending to all, then this node's full state to `node`.
    fn resync(&self, node: &NodeId) {
        self.send_pending();
        let counts = lock(&self.shared.local_counts).all();
        self.to_peer(node, &PeerMessage::Members { counts, full: true });
        // Taken together so the snapshot is exactly the state after the delta; sent after the lock
        // is released (no lock is held while another is taken).
        let (delta, snapshot) = {
            let mut local = lock(&self.shared.local_presence);
            (local.take_delta(), local.snapshot())
        };
        if let Some(delta) = delta {
            self.to_all(&PeerMessage::PresenceDelta(delta));
        }
        self.to_peer(node, &PeerMessage::PresenceSnapshot(snapshot));
    }

    fn on_link_up(&self, peer: &PeerId, lane: Lane) {
        if lane == Lane::Data {
            self.resync(&peer.node);
        }
    }

    async fn emit(&self, changes: Vec<TopicChange>) {
        if !changes.is_empty() {
            let _ = self.events.send(ClusterEvent::Presence(changes)).await;
        }
    }

    /// How `from` stands with membership right now.
    fn standing(&self, from: &PeerId) -> Standing {
        standing(&read(&self.shared.members), from)
    }

    /// Refuses (logs and counts) a presence or member-count frame unless membership holds its
    /// sender's run alive and the frame is about that run (`incarnation`: the run its contents name);
    /// `true` if the frame may be applied.
    fn may_replace_state(&self, from: &PeerId, incarnation: u64, kind: &'static str) -> bool {
        let standing = self.standing(from);
        match standing {
            Standing::Current(_) if incarnation == from.incarnation => return true,
            Standing::Current(_) => tracing::warn!(
                peer = ?from,
                incarnation,
                kind,
                "peer frame refused: it speaks for another run than its sender's"
            ),
            // Another run of a live node: a forgery, or a restart on the same address a moment
            // before membership sees it.
            Standing::Other(alive) => tracing::warn!(
                peer = ?from,
                ?alive,
                kind,
                "peer frame refused: membership holds another run of this node alive"
            ),
            // Every node's first frames to a peer usually arrive before its announcement does.
            Standing::Unknown => tracing::info!(
                peer = ?from,
                kind,
                "peer frame refused: membership does not hold this node alive (yet)"
            ),
        }
        self.shared.rejected.presence.fetch_add(1, Ordering::Relaxed);
        false
    }

    async fn on_inbound(&self, Inbound { from, msg, .. }: Inbound) {
        match msg {
            PeerMessage::Relay { topic, body } => {
                let _ = self.events.send(ClusterEvent::Relay { topic, body }).await;
            }
            PeerMessage::Members { counts, full } => {
                if !self.may_replace_state(&from, from.incarnation, "members") {
                    return;
                }
                let applied = write(&self.shared.remote_counts).apply(&from.node, from.run(), &counts, full);
                if let Err(refused) = applied {
                    self.shared.rejected.member_counts.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(peer = ?from, %refused, "peer member counts refused");
                }
            }
            PeerMessage::PresenceDelta(delta) if delta.node == from.node => {
                if !self.may_replace_state(&from, delta.version.incarnation, "presence delta") {
                    return;
                }
                let outcome = lock(&self.shared.replica).apply_delta(&delta);
                match outcome {
                    DeltaOutcome::Applied(changes) => self.emit(changes).await,
                    DeltaOutcome::Stale => {}
                    DeltaOutcome::Gap => self.to_peer(&from.node, &PeerMessage::SnapshotRequest),
                }
            }
            PeerMessage::PresenceSnapshot(snapshot) if snapshot.node == from.node => {
                if !self.may_replace_state(&from, snapshot.version.incarnation, "presence snapshot") {
                    return;
                }
                let changes = lock(&self.shared.replica).merge_snapshot(&snapshot);
                self.emit(changes).await;
            }
            PeerMessage::PresenceDigest { version } => {
                let held = lock(&self.shared.replica).version_of(&from.node);
                if held.is_none_or(|held| held < version) {
                    self.to_peer(&from.node, &PeerMessage::SnapshotRequest);
                }
            }
            PeerMessage::SnapshotRequest => self.resync(&from.node),
            PeerMessage::Node { body } => {
                let _ = self.events.send(ClusterEvent::Node { from: from.node, body }).await;
            }
            PeerMessage::Leaving { incarnation, epoch } => {
                match self.check_leave(&from, (incarnation, epoch)) {
                    Ok(()) => {
                        tracing::info!(peer = ?from, "peer is leaving");
                        self.forget(&from.node, incarnation, epoch).await;
                    }
                    Err(refused) => {
                        self.shared.rejected.leaves.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(peer = ?from, %refused, "peer Leaving refused");
                    }
                }
            }
            msg @ (PeerMessage::RaftRequest { .. }
            | PeerMessage::RaftResponse { .. }
            | PeerMessage::RaftStatus { .. }) => {
                if let Some(raft) = &self.raft {
                    raft.on_message(&from, msg);
                }
            }
            PeerMessage::PresenceDelta(_) | PeerMessage::PresenceSnapshot(_) | PeerMessage::Hello { .. } => {
                tracing::warn!(peer = ?from, "unexpected peer frame ignored");
            }
        }
    }

    fn check_leave(&self, from: &PeerId, named: Run) -> Result<(), LeaveRefused> {
        check_leave(&read(&self.shared.members), from, named)
    }

    /// Drops a node's member counts and presences (its run `(incarnation, epoch)` or older).
    async fn forget(&self, node: &NodeId, incarnation: u64, epoch: u64) {
        write(&self.shared.remote_counts).remove_node(node, (incarnation, epoch));
        let changes = lock(&self.shared.replica).remove_origin(node, incarnation, epoch);
        self.emit(changes).await;
    }

    async fn on_membership(&self, event: MembershipEvent) {
        if let Some(raft) = &self.raft {
            raft.on_membership(&event);
        }
        match event {
            MembershipEvent::Up(id) => {
                self.revive(&id);
                self.connect(id);
            }
            MembershipEvent::Renamed(old, new) => {
                if new.incarnation != old.incarnation {
                    // A restart: the old process is gone with everything it held.
                    self.forget(&old.node, old.incarnation, old.epoch).await;
                }
                self.revive(&new);
                self.connect(new);
            }
            MembershipEvent::Down(id) => {
                let removed = {
                    let mut links = write(&self.shared.links);
                    match links.get(&id.node) {
                        Some(peer) if peer.id.run() <= id.run() => links.remove(&id.node),
                        _ => None,
                    }
                };
                if let Some(peer) = removed {
                    peer.close();
                }
                self.forget(&id.node, id.incarnation, id.epoch).await;
            }
            MembershipEvent::Rejoined(me) => {
                let snapshot = {
                    let mut local = lock(&self.shared.local_presence);
                    local.renew(me.epoch);
                    local.snapshot()
                };
                self.to_all(&PeerMessage::PresenceSnapshot(snapshot));
                let counts = lock(&self.shared.local_counts).all();
                self.to_all(&PeerMessage::Members { counts, full: true });
            }
        }
    }

    /// A run this node declared down is alive again (see [`crate::presence::Replica::revive`]).
    fn revive(&self, id: &PeerId) {
        if lock(&self.shared.replica).revive(&id.node, id.incarnation, id.epoch) {
            tracing::info!(peer = ?id, "peer declared down is alive again: its presences are resynchronised");
        }
    }

    /// Opens links to `id` unless links to this very identity exist.
    fn connect(&self, id: PeerId) {
        let me = read(&self.shared.me).node.clone();
        if id.node == me {
            return;
        }
        let mut links = write(&self.shared.links);
        if links.get(&id.node).is_some_and(|peer| peer.id == id) {
            return;
        }
        let max = self.shared.config.max_link_queue_bytes;
        let bind = self.shared.config.bind.ip();
        let dialer = link::Dialer {
            me: self.shared.me.clone(),
            source: (!bind.is_unspecified()).then_some(bind),
            transport: self.shared.transport.clone(),
            auth: self.shared.auth.clone(),
            runtimes: self.shared.runtimes.clone(),
        };
        let open = |lane| link::spawn(id.clone(), lane, dialer.clone(), max, self.link_events_tx.clone());
        let peer = PeerLinks { data: open(Lane::Data), control: open(Lane::Control), id: id.clone() };
        if let Some(old) = links.insert(id.node.clone(), peer) {
            old.close();
        }
    }

    /// Graceful exit, first half: peers drop our presences now (once), and the links drain (up to 1 s,
    /// until every connected peer acknowledged everything).
    async fn depart(&self, departed: &mut bool) {
        if std::mem::replace(departed, true) {
            return;
        }
        self.send_pending();
        let me = read(&self.shared.me).clone();
        lock(&self.shared.local_presence).leaving();
        self.to_all(&PeerMessage::Leaving { incarnation: me.incarnation, epoch: me.epoch });
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        while tokio::time::Instant::now() < deadline {
            let drained = read(&self.shared.links).values().all(|peer| {
                // Acknowledged, not only written: the peer has the `Leaving`.
                !peer.data.is_connected() || (peer.data.queued_bytes() == 0 && peer.data.unacked_bytes() == 0)
            });
            if drained {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Graceful exit, second half: membership says goodbye; this node is no longer ready.
    async fn leave(&self) {
        self.send_pending();
        let (done, left) = oneshot::channel();
        if self.membership_commands.send(MembershipCommand::Leave(done)).await.is_ok() {
            let _ = left.await;
        }
        self.shared.ready.store(false, Ordering::Release);
    }
}

/// How the run that sent a frame (the identity in its link's `Hello`) stands with membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Membership holds this node alive (or suspect) under the sender's incarnation; the run held,
    /// whose epoch may be newer than the sender's (a link keeps the identity of its `Hello`, and a
    /// rejoin renews only the epoch).
    Current(Run),
    /// Membership holds no live run of this node (a node not announced yet, one declared down, or
    /// one that does not exist).
    Unknown,
    /// Membership holds this live run of the node, another process than the sender.
    Other(Run),
}

/// The newest live run membership holds for `from`'s node, compared with `from`.
fn standing(members: &[MemberView], from: &PeerId) -> Standing {
    let alive = members
        .iter()
        .filter(|m| m.node == from.node.0 && m.state != "down")
        .map(|m| (m.incarnation, m.epoch))
        .max();
    match alive {
        None => Standing::Unknown,
        Some(run) if run.0 == from.incarnation => Standing::Current(run),
        Some(run) => Standing::Other(run),
    }
}

/// Why a `Leaving` was refused.
#[derive(Debug, Error, PartialEq, Eq)]
enum LeaveRefused {
    #[error("it names run {named:?}, not the sender's {sender:?}")]
    NotTheSenders { named: Run, sender: Run },
    #[error("membership holds no live run of this node")]
    NothingAlive,
    #[error("it names run {named:?}, membership holds {alive:?}")]
    Superseded { named: Run, alive: Run },
}

/// A `Leaving` naming run `named` is accepted only from that very process (the link's incarnation,
/// at its epoch or a later one) and only when that run is the one membership holds alive.
fn check_leave(members: &[MemberView], from: &PeerId, named: Run) -> Result<(), LeaveRefused> {
    if named.0 != from.incarnation || named < from.run() {
        return Err(LeaveRefused::NotTheSenders { named, sender: from.run() });
    }
    match standing(members, from) {
        Standing::Current(alive) if alive == named => Ok(()),
        Standing::Current(alive) | Standing::Other(alive) => Err(LeaveRefused::Superseded { named, alive }),
        Standing::Unknown => Err(LeaveRefused::NothingAlive),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeId;

    fn member(node: &str, incarnation: u64, epoch: u64, state: &'static str) -> MemberView {
        MemberView { node: node.into(), incarnation, epoch, addr: "127.0.0.1:4100".parse().unwrap(), state }
    }

    fn sender(node: &str, incarnation: u64, epoch: u64) -> PeerId {
        PeerId { node: NodeId(node.into()), incarnation, epoch, addr: "127.0.0.9:4100".parse().unwrap() }
    }

    #[test]
    fn a_sender_is_current_only_as_the_incarnation_membership_holds_alive() {
        let members = [member("a", 5, 1, "alive"), member("a", 4, 0, "down"), member("b", 7, 0, "suspect")];
        assert_eq!(standing(&members, &sender("a", 5, 0)), Standing::Current((5, 1)));
        assert_eq!(standing(&members, &sender("a", 5, 1)), Standing::Current((5, 1)));
        assert_eq!(standing(&members, &sender("b", 7, 0)), Standing::Current((7, 0)));
        // A forged (or not yet announced) newer run, and a late old one.
        assert_eq!(standing(&members, &sender("a", 9, 0)), Standing::Other((5, 1)));
        assert_eq!(standing(&members, &sender("a", 4, 0)), Standing::Other((5, 1)));
        // A node membership does not hold, or holds only down.
        assert_eq!(standing(&members, &sender("c", 1, 0)), Standing::Unknown);
        assert_eq!(standing(&[member("a", 4, 0, "down")], &sender("a", 5, 0)), Standing::Unknown);
        // A restarted pod on a new address: its old run is still suspect, the new one alive.
        let moved = [member("a", 5, 0, "suspect"), member("a", 6, 0, "alive")];
        assert_eq!(standing(&moved, &sender("a", 6, 0)), Standing::Current((6, 0)));
    }

    #[test]
    fn a_leaving_is_accepted_only_for_the_senders_live_run() {
        let members = [member("a", 5, 1, "alive"), member("b", 7, 0, "down")];
        assert_eq!(check_leave(&members, &sender("a", 5, 1), (5, 1)), Ok(()));
        // The link's Hello predates a rejoin: the same process names its renewed epoch.
        assert_eq!(check_leave(&members, &sender("a", 5, 0), (5, 1)), Ok(()));
        // The spoofed leave of issue 16: a live node's name with a run far ahead.
        assert_eq!(
            check_leave(&members, &sender("a", 5, 1), (u64::MAX, u64::MAX)),
            Err(LeaveRefused::NotTheSenders { named: (u64::MAX, u64::MAX), sender: (5, 1) })
        );
        assert_eq!(
            check_leave(&members, &sender("a", 9, 0), (9, 0)),
            Err(LeaveRefused::Superseded { named: (9, 0), alive: (5, 1) })
        );
        assert_eq!(
            check_leave(&members, &sender("a", 5, 1), (5, 0)),
            Err(LeaveRefused::NotTheSenders { named: (5, 0), sender: (5, 1) })
        );
        assert_eq!(
            check_leave(&members, &sender("a", 5, 0), (5, 0)),
            Err(LeaveRefused::Superseded { named: (5, 0), alive: (5, 1) })
        );
        assert_eq!(check_leave(&members, &sender("b", 7, 0), (7, 0)), Err(LeaveRefused::NothingAlive));
        assert_eq!(check_leave(&members, &sender("c", 1, 0), (1, 0)), Err(LeaveRefused::NothingAlive));
    }
}
