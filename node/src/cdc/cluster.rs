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
//! - A new leader takes the permanent slot (ending a stale holder's connection) and resumes from the
//!   slot's confirmed position: changes after it are shipped again, and every node drops what it already
//!   delivered by commit LSN (its hub skips through its own recorded position), so nothing is lost and
//!   nothing is delivered twice.
//! - The leader acknowledges to PostgreSQL only what its own hub and every live peer delivered.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use realtime_cluster::{ClusterHandle, NodeId};
use tokio::sync::{mpsc, watch};

use super::change::Transaction;
use super::hub::HubCommand;
use super::shipping::{self, Outgoing, Shipped};

/// How often a follower repeats its delivered position and the leader its stream state (so a new
/// leader, or a node that just joined, learns them without waiting for a change).
const REPEAT: Duration = Duration::from_millis(500);

/// What peers send about Postgres Changes, routed here by the node's cluster bridge.
#[derive(Debug)]
pub enum CdcInbound {
    Shipped { from: NodeId, body: Vec<u8> },
    Delivered { from: NodeId, lsn: u64 },
}

/// Where the consumer's output goes besides the local hub.
#[derive(Clone)]
pub struct Shipper {
    cluster: ClusterHandle,
}

impl Shipper {
    pub fn transaction(&self, txn: &Transaction) {
        self.send(&Outgoing::Transaction(txn));
    }

    pub fn relation(&self, oid: u32) {
        self.send(&Outgoing::Relation { oid });
    }

    fn send(&self, message: &Outgoing<'_>) {
        match shipping::encode(message) {
            Ok(body) => {
                self.cluster.ship_cdc(body);
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
    pub transactions: mpsc::Sender<Transaction>,
    pub hub: mpsc::UnboundedSender<HubCommand>,
    pub inbound: mpsc::UnboundedReceiver<CdcInbound>,
}

impl ClusterCdc {
    pub fn shipper(cluster: &ClusterHandle) -> Shipper {
        Shipper { cluster: cluster.clone() }
    }

    /// Routes peers' messages, tells the leader what this node delivered, ships the leader's stream
    /// state and computes the cluster-wide acknowledgement. Runs until the hub is gone.
    pub async fn run(mut self) {
        let mut leadership = self.cluster.leadership();
        let mut peers: HashMap<NodeId, u64> = HashMap::new();
        let mut repeat = tokio::time::interval(REPEAT);
        repeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut live_rx = self.live.subscribe();
        loop {
            tokio::select! {
                inbound = self.inbound.recv() => match inbound {
                    Some(CdcInbound::Shipped { from, body }) => {
                        if !self.on_shipped(&from, &body).await {
                            return;
                        }
                    }
                    Some(CdcInbound::Delivered { from, lsn }) => {
                        let held = peers.entry(from).or_insert(0);
                        *held = (*held).max(lsn);
                        self.update_ack(&peers);
                    }
                    None => return,
                },
                changed = self.local_delivered.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.report();
                    self.update_ack(&peers);
                }
                changed = leadership.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let is_me = leadership.borrow_and_update().is_me;
                    if !is_me {
                        // A follower's hub waits for the (new) leader to say its stream is live.
                        self.live.send_replace(false);
                    }
                    self.report();
                }
                changed = live_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let live = *live_rx.borrow_and_update();
                    if self.cluster.leadership().borrow().is_me {
                        ClusterCdc::shipper(&self.cluster).send(&Outgoing::Live(live));
                    }
                }
                _ = repeat.tick() => {
                    self.report();
                    self.update_ack(&peers);
                    if self.cluster.leadership().borrow().is_me {
                        let live = *self.live.borrow();
                        ClusterCdc::shipper(&self.cluster).send(&Outgoing::Live(live));
                    }
                }
            }
        }
    }

    /// Hands a shipped message to this node's hub; `false` once the hub is gone. Transactions go in
    /// even while this node believes it leads (it may have just been deposed): the hub keeps only
    /// commit positions past what it already delivered, so a stream it also consumes is harmless.
    async fn on_shipped(&mut self, from: &NodeId, body: &[u8]) -> bool {
        match shipping::decode(body) {
            Ok(Shipped::Transaction(txn)) => self.transactions.send(txn).await.is_ok(),
            Ok(Shipped::Relation { oid }) => self.hub.send(HubCommand::RelationChanged { oid }).is_ok(),
            Ok(Shipped::Live(live)) => {
                if !self.cluster.leadership().borrow().is_me {
                    self.live.send_replace(live);
                }
                true
            }
            Err(error) => {
                tracing::warn!(%error, peer = %from, "undecodable CDC message ignored");
                true
            }
        }
    }

    /// A follower tells the leader how far it delivered.
    fn report(&self) {
        let leadership = self.cluster.leadership();
        let leadership = leadership.borrow();
        if let (Some(leader), false) = (&leadership.leader, leadership.is_me) {
            self.cluster.cdc_delivered(leader, *self.local_delivered.borrow());
        }
    }

    /// The acknowledgement: what this node and every live peer delivered (never moving back).
    fn update_ack(&self, peers: &HashMap<NodeId, u64>) {
        let mut ack = *self.local_delivered.borrow();
        for peer in self.cluster.live_peers() {
            ack = ack.min(peers.get(&peer).copied().unwrap_or(0));
        }
        self.acked.send_if_modified(|acked| {
            if ack > *acked {
                *acked = ack;
                true
            } else {
                false
            }
        });
    }
}

/// Runs a consumer from `make` while this node leads CDC, and aborts it (closing its replication
/// connection) the moment it does not.
pub async fn supervise(
    mut leadership: watch::Receiver<realtime_cluster::Leadership>,
    make: impl Fn() -> super::consumer::Consumer,
    live: Arc<watch::Sender<bool>>,
) {
    loop {
        while !leadership.borrow_and_update().is_me {
            if leadership.changed().await.is_err() {
                return;
            }
        }
        let term = leadership.borrow().term;
        tracing::info!(term, "leading Postgres Changes: consumer started");
        let consumer = actix::spawn(make().run());
        let ended = loop {
            if !leadership.borrow_and_update().is_me {
                break false;
            }
            if leadership.changed().await.is_err() {
                break true;
            }
        };
        consumer.abort();
        live.send_replace(false);
        tracing::warn!(term, "no longer leading Postgres Changes: consumer stopped");
        if ended {
            return;
        }
    }
}
