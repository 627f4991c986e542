//! Postgres Changes in a cluster (DESIGN.md flows 5 and 6).
//!
//! ```text
//!  raft leader:  consumer ──Transaction──▶ own hub ──▶ own subscribers
//!                    │  └──ship (Outgoing)──▶ every peer's hub ──▶ their subscribers
//!                    ▲                                  │
//!                    └── ack = min(delivered by every live node) ◀── CdcDelivered
//! ```
//! - Only the node raft elected (and that confirmed it with a committed `CdcLeader` entry) runs the
//!   consumer; when it loses leadership or quorum its consumer task is aborted at once, which closes
//!   its replication connection.
//! - A new leader takes the permanent slot (ending a stale holder's connection if it is one of this
//!   project's replication connections; any other holder is a conflict, see `catalog::slot_conflict`)
//!   and resumes from the slot's confirmed position: changes after it are shipped again, and every
//!   node drops what it already delivered by commit LSN (its hub skips through its own recorded
//!   position), so nothing is lost and nothing is delivered twice.
//! - The leader acknowledges to PostgreSQL only what its own hub and every peer reachable within the
//!   hold (`REALTIME_CDC_HOLD_MS`, 30 s) delivered. Reachable: alive for the failure detector and its
//!   link not stalled ([`ClusterHandle::reachable_peers`]); a peer SWIM holds alive while its link
//!   makes no progress (a one-way loss) holds the slot for the hold, not for as long as the loss lasts,
//!   and gets no shipments meanwhile. When its link makes progress again the next transaction shows it
//!   the gap and it asks for a replay, as a peer that was down does. Each shipped transaction names the one shipped before
//!   it: a node that missed some (it was paused, or its link was cut) drops what follows and reports
//!   the gap, and the leader replays its stream from the slot, which was held at that node's position.
//!   A node out for longer than the hold is behind the slot: each stream starts with its anchor, and
//!   such a node tells its subscribers what they lost (see [`super::gap`]).
//! - A node takes shipments only from the node raft names as leader, and only after [`guard`] checked
//!   them (positions against the stream and PostgreSQL's WAL, tables against the catalog): a buggy or
//!   forged shipment is rejected, logged and counted, never delivered or recorded.
//!
//! The decisions (gap, liveness, acknowledgement, replay) are the plain state machines of [`state`];
//! this file does the I/O around them.

mod state;

use std::sync::Arc;
use std::time::{Duration, Instant};

use realtime_cluster::{ClusterHandle, NodeId};
use realtime_proto::postgres::change::Transaction;
use tokio::sync::{mpsc, watch, Notify};

use self::state::{Acks, Follower, Take, LEADER_SILENCE, REPEAT};
use super::gap::{StreamStart, Taken};
use super::guard::{self, Rejection, Rejections, Verifier};
use super::health::CdcHealth;
use super::hub::{Feed, HubCommand};
use super::shipping::{self, Outgoing, Shipped};
use crate::metrics::CdcStage;
use crate::peer_message::NodeMessage;

/// What peers send about Postgres Changes, routed here by the node's cluster bridge.
#[derive(Debug)]
pub enum CdcInbound {
    Shipped { from: NodeId, body: Vec<u8> },
    Delivered { from: NodeId, lsn: u64, gap: bool },
}

/// Where the consumer's output goes besides the local hub.
#[derive(Clone)]
pub struct Shipper {
    cluster: ClusterHandle,
}

impl Shipper {
    pub fn new(cluster: &ClusterHandle) -> Shipper {
        Shipper { cluster: cluster.clone() }
    }

    /// Ships `txn`; `prev` is the end of the transaction shipped before it in this stream (0: none).
    pub fn transaction(&self, prev: u64, txn: &Transaction) {
        self.send(&Outgoing::Transaction { prev, txn });
    }

    /// A new stream starts (see [`super::gap`]).
    pub fn stream(&self, start: StreamStart) {
        self.send(&Outgoing::Stream(start));
    }

    pub fn relation(&self, oid: u32) {
        self.send(&Outgoing::Relation { oid });
    }

    fn send(&self, message: &Outgoing<'_>) {
        match shipping::encode(message) {
            Ok(body) => {
                NodeMessage::CdcShipped { body }.to_peers(&self.cluster);
            }
            Err(error) => tracing::error!(%error, "cannot encode a change for the cluster"),
        }
    }
}

/// The cluster side of CDC, started by [`super::start`] when the node is in a cluster.
pub struct ClusterCdc {
    pub cluster: ClusterHandle,
    /// This node's delivered position (from its recorder).
    pub local_delivered: watch::Receiver<u64>,
    /// What the consumer acknowledges: the smallest position every live node delivered.
    pub acked: watch::Sender<u64>,
    /// Whether the leader's stream is live, as this node's hub sees it.
    pub live: Arc<watch::Sender<bool>>,
    pub transactions: mpsc::Sender<Feed>,
    pub hub: mpsc::UnboundedSender<HubCommand>,
    pub inbound: mpsc::UnboundedReceiver<CdcInbound>,
    /// Asks [`supervise`] to restart the consumer's stream from the slot's confirmed position.
    pub restart: Arc<Notify>,
    /// How long a peer that dropped out of the cluster still holds the acknowledgement back (so the
    /// stream can be replayed for it if it comes back): `REALTIME_CDC_HOLD_MS`.
    pub hold: Duration,
    /// How far this node's hub has taken transactions (and whether this node knows it missed some).
    pub taken: Arc<Taken>,
    /// Checks what peers ship against raft and the database before the hub gets it.
    pub verifier: Verifier,
    pub rejections: Rejections,
    /// This node's own probe of PostgreSQL ([`super::reach`]): a follower that cannot reach the
    /// database cannot check, and so cannot deliver, what it is shipped.
    pub database: watch::Receiver<Option<bool>>,
}

impl ClusterCdc {
    fn shipper(&self) -> Shipper {
        Shipper::new(&self.cluster)
    }

    /// Routes peers' messages, tells the leader what this node delivered, ships the leader's stream
    /// state and computes the cluster-wide acknowledgement. Runs until the hub is gone.
    pub async fn run(&mut self) {
        let mut leadership = self.cluster.leadership();
        let mut peers = Acks::default();
        let mut received = Follower::default();
        let mut repeat = tokio::time::interval(REPEAT);
        repeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut live_rx = self.live.subscribe();
        loop {
            tokio::select! {
                inbound = self.inbound.recv() => match inbound {
                    Some(CdcInbound::Shipped { from, body }) => {
                        let was_gap = received.gap();
                        if !self.on_shipped(&mut received, &from, &body).await {
                            return;
                        }
                        if received.gap() != was_gap {
                            self.taken.set_missing(received.gap());
                            self.follow_live(&received);
                        }
                        if received.gap() && !was_gap {
                            self.report(true);
                        }
                    }
                    Some(CdcInbound::Delivered { from, lsn, gap }) => {
                        // This node may have missed, before it led, what a peer has (see `gap`).
                        if self.taken.lost_before_stream(lsn)
                            && self.cluster.leadership().borrow().is_me
                            && self.transactions.send(Feed::PeerTook(lsn)).await.is_err()
                        {
                            return;
                        }
                        let taken = self.taken.through();
                        // No node can have delivered more than this stream took: a position past it
                        // would let the slot move past what that node really has. (Just after a failover
                        // it can be legitimate for a moment; the report is repeated.)
                        let lsn = if lsn > taken {
                            self.rejections.record(&from, &Rejection::DeliveredAhead { lsn, taken });
                            0
                        } else {
                            lsn
                        };
                        self.on_delivered(&mut peers, from, lsn, gap);
                        self.update_ack(&mut peers);
                    }
                    None => return,
                },
                changed = self.local_delivered.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.report(received.gap());
                    self.update_ack(&mut peers);
                }
                changed = leadership.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let (is_me, leader) = {
                        let view = leadership.borrow_and_update();
                        (view.is_me, view.leader.clone())
                    };
                    // A new leader's first shipments may come before raft told this node who leads.
                    let missed = received.leadership(is_me, leader.as_ref(), self.taken.through());
                    if !is_me {
                        // A follower's hub waits for the (new) leader to say its stream is live.
                        self.live.send_replace(false);
                    }
                    if missed {
                        self.taken.set_missing(true);
                    }
                    self.report(received.gap());
                }
                changed = self.database.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    received.database(*self.database.borrow_and_update());
                    self.follow_live(&received);
                }
                changed = live_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let live = *live_rx.borrow_and_update();
                    if self.cluster.leadership().borrow().is_me {
                        self.shipper().send(&Outgoing::Live(live));
                    }
                }
                _ = repeat.tick() => {
                    if received.tick(Instant::now()) {
                        tracing::warn!(after = ?LEADER_SILENCE, "nothing heard from the Postgres Changes leader: its stream is taken as not live here");
                        self.follow_live(&received);
                    }
                    self.report(received.gap());
                    self.update_ack(&mut peers);
                    if self.cluster.leadership().borrow().is_me {
                        let live = *self.live.borrow();
                        self.shipper().send(&Outgoing::Live(live));
                    }
                }
            }
        }
    }

    /// Hands a shipped message to this node's hub; `false` once the hub is gone. Only messages from
    /// the node raft names as leader are taken, and a transaction only once [`Verifier`] passed it
    /// (see [`guard`]): a rejected message is logged, counted and never reaches the hub, so its
    /// position is never recorded.
    ///
    /// A transaction whose predecessor in the leader's stream this node never received (it was out
    /// of the cluster, its link was cut) is dropped, and the gap reported to the leader, which replays
    /// the stream from the slot; the replay's first transaction (`prev` 0) closes the gap. A
    /// transaction that could not be checked (the database did not answer) is handled the same way.
    async fn on_shipped(&mut self, received: &mut Follower, from: &NodeId, body: &[u8]) -> bool {
        let shipped = match shipping::decode(body) {
            Ok(shipped) => shipped,
            Err(error) => {
                self.rejections.record(from, &Rejection::Undecodable(error.to_string()));
                return true;
            }
        };
        let leadership = self.cluster.leadership().borrow().clone();
        if let Err(rejection) = guard::check_sender(from, &leadership) {
            if let Shipped::Transaction { txn, .. } = &shipped {
                received.refused(from, txn.end_lsn);
            }
            self.rejections.record(from, &rejection);
            return true;
        }
        received.heard(Instant::now());
        match shipped {
            Shipped::Transaction { prev, txn } => {
                let (txn, dropped) = match self.verifier.transaction(prev, txn).await {
                    Ok(checked) => checked,
                    Err(rejection) => {
                        if matches!(rejection, Rejection::Unverifiable(_)) {
                            received.unverifiable();
                        }
                        self.rejections.record(from, &rejection);
                        return true;
                    }
                };
                for rejection in &dropped {
                    self.rejections.record(from, rejection);
                }
                if received.verified() {
                    self.follow_live(received);
                }
                match received.transaction(from, prev, txn.end_lsn, self.taken.through()) {
                    Take::Forward => self.transactions.send(Feed::Transaction(txn)).await.is_ok(),
                    Take::Missed { through, first } => {
                        if first {
                            tracing::warn!(leader = %from, missed_after = through, "missed shipped changes: asking for a replay");
                        }
                        true
                    }
                }
            }
            // What follows is the leader's stream from `start.from` on: whatever this node missed
            // before is either replayed or, when the hub has not taken the anchor, told as lost.
            Shipped::Stream(start) => {
                received.stream(from);
                // A leader that missed transactions before it led names too early an anchor: a node
                // that has a later one tells it (as a delivered position), so that its own hub tells
                // its subscribers (see `gap`).
                if !self.taken.missing() {
                    let anchor = self.taken.anchor(start.from);
                    if anchor > start.anchor {
                        NodeMessage::CdcDelivered { lsn: anchor, gap: false }.to_peer(&self.cluster, from);
                    }
                }
                self.transactions.send(Feed::Stream(start)).await.is_ok()
            }
            Shipped::Relation { oid } => {
                self.verifier.forget(oid);
                self.hub.send(HubCommand::RelationChanged { oid }).is_ok()
            }
            Shipped::Live(live) => {
                received.leader_says(live);
                self.follow_live(received);
                true
            }
        }
    }

    /// On a follower: the hub's view of the stream ([`Follower::live`]).
    fn follow_live(&self, received: &Follower) {
        if !self.cluster.leadership().borrow().is_me {
            self.live.send_replace(received.live());
        }
    }

    /// A follower tells the leader how far it delivered, and whether it is missing shipments.
    fn report(&self, gap: bool) {
        let leadership = self.cluster.leadership();
        let leadership = leadership.borrow();
        if let (Some(leader), false) = (&leadership.leader, leadership.is_me) {
            let lsn = *self.local_delivered.borrow();
            NodeMessage::CdcDelivered { lsn, gap }.to_peer(&self.cluster, leader);
        }
    }

    /// A peer's delivered position; a gap it reports replays the stream from the slot (see
    /// [`Acks::delivered`]), and every node drops what it already has.
    fn on_delivered(&self, peers: &mut Acks, from: NodeId, lsn: u64, gap: bool) {
        let leading = self.cluster.leadership().borrow().is_me;
        if let Some(held) = peers.delivered(from.clone(), lsn, gap, leading, Instant::now()) {
            tracing::warn!(peer = %from, delivered = held, "a peer missed shipped changes: replaying the stream from the slot");
            self.restart.notify_one();
        }
    }

    /// The acknowledgement ([`Acks::ack`]), never moving back.
    fn update_ack(&self, peers: &mut Acks) {
        let ack = peers.ack(
            *self.local_delivered.borrow(),
            self.cluster.reachable_peers(),
            self.hold,
            Instant::now(),
        );
        self.acked.send_if_modified(|acked| state::advance(acked, ack));
    }
}

/// Runs a consumer from `make` while this node leads CDC, and aborts it (closing its replication
/// connection) the moment it does not; `restart` replays the stream from the slot's confirmed position.
/// The consumer runs under [`super::supervisor::supervise`]: a panic restarts it (while this node leads).
pub async fn supervise(
    mut leadership: watch::Receiver<realtime_cluster::Leadership>,
    make: impl Fn() -> super::consumer::Consumer + Clone + 'static,
    live: Arc<watch::Sender<bool>>,
    restart: Arc<Notify>,
    health: Arc<CdcHealth>,
) {
    loop {
        while !leadership.borrow_and_update().is_me {
            if leadership.changed().await.is_err() {
                return;
            }
        }
        let term = leadership.borrow().term;
        tracing::info!(term, "leading Postgres Changes: consumer started");
        let run = || {
            let make = make.clone();
            actix::spawn(super::supervisor::supervise(CdcStage::Consumer, health.clone(), move || {
                make().run()
            }))
        };
        let mut consumer = run();
        let ended = loop {
            if !leadership.borrow_and_update().is_me {
                break false;
            }
            tokio::select! {
                changed = leadership.changed() => {
                    if changed.is_err() {
                        break true;
                    }
                }
                _ = restart.notified() => {
                    consumer.abort();
                    consumer = run();
                }
            }
        };
        consumer.abort();
        live.send_replace(false);
        // A slot this node could not stream is no longer its business: the next leader will say.
        health.slot_usable();
        tracing::warn!(term, "no longer leading Postgres Changes: consumer stopped");
        if ended {
            return;
        }
    }
}
