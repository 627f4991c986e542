//! How sockets talk to the CDC hub: subscribe a channel's `postgres_changes` entries, drop them, and
//! hear back whether the subscription is live.

use std::sync::Arc;

use actix::prelude::*;
use realtime_proto::Vsn;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};

use super::cluster::CdcInbound;
use super::hub::HubCommand;
use crate::auth::Claims;
use crate::delivery::Outbox;
use crate::vocab::ConnId;

/// The result of a subscription, sent to the socket that asked.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SubscribeOutcome {
    pub topic: Arc<str>,
    pub join_ref: Option<String>,
    pub result: Result<(), SubscribeError>,
}

/// Why a subscription could not be made; `message` is what the client is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeError {
    pub kind: SubscribeErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeErrorKind {
    /// Bad parameters or filters: retrying will not help.
    Invalid,
    /// The table is not in the publication.
    NotPublished,
    /// The database could not be asked.
    Unavailable,
    /// A live subscription missed changes this node can no longer get (see `cdc::gap`): the channel
    /// is closed so the client rejoins.
    Gap,
}

/// A channel's subscriptions, as the socket sends them.
#[derive(Debug)]
pub struct SubscribeRequest {
    pub conn: ConnId,
    pub topic: Arc<str>,
    pub sub_topic: Arc<str>,
    pub join_ref: Option<String>,
    pub vsn: Vsn,
    /// Where the changes go; the recorder waits on it before a position is recorded.
    pub outbox: Outbox,
    pub notify: Recipient<SubscribeOutcome>,
    /// Write `system` `Subscribed to PostgreSQL` to the outbox when the subscription is live, before
    /// any change (the socket does it itself for a join held in wait mode, after the join reply).
    pub announce: bool,
    /// `(id, raw entry)` in join order.
    pub entries: Vec<(u32, Map<String, Value>)>,
    pub claims: Claims,
}

/// A cloneable handle to the hub.
#[derive(Clone)]
pub struct CdcHandle {
    pub(super) commands: mpsc::UnboundedSender<HubCommand>,
    pub(super) live: watch::Receiver<bool>,
    /// In a cluster: where peers' CDC messages go.
    pub(super) peers: Option<mpsc::UnboundedSender<CdcInbound>>,
    pub(super) health: Arc<super::health::CdcHealth>,
    pub(super) reach: Arc<super::reach::Reach>,
}

impl CdcHandle {
    pub fn subscribe(&self, request: SubscribeRequest) {
        let _ = self.commands.send(HubCommand::Subscribe(Box::new(request)));
    }

    /// Wait mode: the join reply is written; the subscription's held changes may follow.
    pub fn activate(&self, conn: ConnId, topic: Arc<str>) {
        let _ = self.commands.send(HubCommand::Activate { conn, topic });
    }

    pub fn unsubscribe(&self, conn: ConnId, topic: Arc<str>) {
        let _ = self.commands.send(HubCommand::Unsubscribe { conn, topic });
    }

    /// Stops dispatching and waits until everything dispatched so far is written and recorded, so a
    /// graceful restart neither loses nor repeats a change. Bounded by `wait`.
    pub async fn shutdown(&self, wait: std::time::Duration) {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        if self.commands.send(HubCommand::Shutdown { done: done_tx }).is_ok() {
            let _ = tokio::time::timeout(wait, done_rx).await;
        }
    }

    /// A peer's CDC message (from the cluster bridge); ignored on a single node.
    pub fn from_peer(&self, inbound: CdcInbound) {
        if let Some(peers) = &self.peers {
            let _ = peers.send(inbound);
        }
    }

    /// Why this node's Postgres Changes path cannot do its job (`/readyz` answers 503 with it).
    pub fn unready(&self) -> Option<String> {
        self.health.unready()
    }

    /// Whether this node can reach PostgreSQL (`/cluster`'s `database`).
    pub fn database_view(&self) -> serde_json::Value {
        self.reach.view()
    }

    /// Whether the replication stream is connected and streaming.
    pub fn is_live(&self) -> bool {
        *self.live.borrow()
    }

    /// A receiver that changes when the stream goes live or drops.
    pub fn live_watch(&self) -> watch::Receiver<bool> {
        self.live.clone()
    }
}
