//! Postgres Changes (CDC): stream PostgreSQL's WAL by logical replication and deliver row changes to
//! the channels whose `postgres_changes` subscriptions match, under Row Level Security.
//!
//! ```text
//! PostgreSQL ──pgoutput──▶ consumer ──Transaction──▶ hub ──postgres_changes──▶ sockets
//!      ▲                      │  ▲                    │  └─ RLS check per distinct claims (rls)
//!      └── ack (applied LSN) ─┘  └──── delivered LSN ─┘
//! ```
//!
//! What needs no connection lives in [`realtime_proto::postgres`], pure and tested without a database:
//! the pgoutput decoder, value conversion, row changes and their `data` payload, filter matching.
//!
//! - [`catalog`]: publication, slot, table and privilege queries.
//! - [`consumer`]: the replication session, transactions, acknowledgements.
//! - [`position`]: the last delivered position, so restarts neither lose nor repeat changes.
//! - [`recorder`]: records a position once the sockets wrote what it covers.
//! - [`hub`]: subscriptions, RLS questions and delivery; [`plan`]: who gets what, decided without I/O.
//! - [`rls`]: the per-viewer visibility check.
//! - [`subscriptions`]: the subscription index, grouped by parameters and viewer.
//! - [`handle`]: what sockets use to subscribe.
//! - [`health`]: whether the CDC path can run (`/readyz`).
//! - [`reach`]: whether this node can reach PostgreSQL (`/cluster`), leader or not.
//! - [`supervisor`]: restarts a CDC task that panicked.
//! - [`cluster`] and [`shipping`]: in a cluster, only the raft leader consumes; it ships transactions
//!   to every node and acknowledges what all of them delivered.
//! - [`gap`]: changes a node missed for good (out longer than the hold) are told to its subscribers.
//! - [`guard`]: what a node checks before it takes what a peer shipped (sender, positions, relations).

pub mod catalog;
pub mod cluster;
pub mod consumer;
pub mod db_broadcast;
pub mod error;
pub mod gap;
pub mod guard;
pub mod handle;
pub mod health;
pub mod hub;
pub mod notifications;
pub mod plan;
pub mod position;
pub mod reach;
pub mod recorder;
pub mod rls;
pub mod shipping;
pub mod subscriptions;
pub mod supervisor;

use std::sync::Arc;

use realtime_cluster::ClusterHandle;
use tokio::sync::{mpsc, watch, Mutex};

pub use handle::{CdcHandle, SubscribeError, SubscribeErrorKind, SubscribeOutcome, SubscribeRequest};

use crate::config::CdcConfig;
use crate::metrics::CdcStage;

/// Transactions buffered between the consumer and the hub.
const TRANSACTION_BUFFER: usize = 1024;

/// Starts the hub (and, alone or as the cluster's CDC leader, the consumer) on their own arbiter;
/// returns the handle sockets use. Every task runs under [`supervisor::supervise`]: a panic restarts
/// it and takes the node out of `/readyz` meanwhile ([`health`]).
pub async fn start(
    config: CdcConfig,
    data_dir: &std::path::Path,
    arbiter: &actix::ArbiterHandle,
    cluster: Option<ClusterHandle>,
    broadcasts: hub::DbBroadcasts,
) -> Result<CdcHandle, error::CdcError> {
    let mut position = position::DeliveredPosition::open(data_dir, &config.slot)?;
    check_recorded(&mut position, &config.database_url).await?;
    let resume_grace = position.resumed().then_some(config.resume_grace);
    let health = Arc::new(health::CdcHealth::default());
    let reach = Arc::new(reach::Reach::default());
    arbiter.spawn(reach::probe(reach.clone(), config.database_url.clone()));
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let (txn_tx, txn_rx) = mpsc::channel(TRANSACTION_BUFFER);
    let (live_tx, live_rx) = watch::channel(false);
    let live_tx = Arc::new(live_tx);
    let (delivered_tx, delivered_rx) = watch::channel(position.lsn());
    let (record_tx, record_rx) = mpsc::unbounded_channel();
    let taken = Arc::new(gap::Taken::new(position.lsn()));
    let hub = hub::Hub::new(config.clone(), record_tx, position.lsn(), taken.clone(), broadcasts);
    let flush_deadline = config.flush_deadline;
    let recorder = Arc::new(Mutex::new((position, record_rx, delivered_tx)));
    arbiter.spawn(supervisor::supervise(CdcStage::Recorder, health.clone(), move || {
        let recorder = recorder.clone();
        async move {
            let mut state = recorder.lock_owned().await;
            let (position, records, delivered) = &mut *state;
            recorder::run(position, records, delivered, flush_deadline).await;
        }
    }));
    let inputs = hub::HubInputs { commands: commands_rx, transactions: txn_rx, live: live_rx.clone() };
    let hub = Arc::new(Mutex::new((hub, inputs, false)));
    arbiter.spawn(supervisor::supervise(CdcStage::Hub, health.clone(), move || {
        let hub = hub.clone();
        async move {
            let mut state = hub.lock_owned().await;
            let (hub, inputs, restarted) = &mut *state;
            if std::mem::replace(restarted, true) {
                hub.recover();
            }
            hub.run(inputs).await;
        }
    }));
    let verifier = guard::Verifier::new(&config.database_url);
    let config_hold = config.hold;
    let (hub_commands, transactions, consumer_live) = (commands_tx.clone(), txn_tx.clone(), live_tx.clone());
    let consumer_health = health.clone();
    let consumer_taken = taken.clone();
    let consumer = move |delivered, ship| consumer::Consumer {
        config: config.clone(),
        resume_grace: None,
        hub: hub_commands.clone(),
        transactions: transactions.clone(),
        live: consumer_live.clone(),
        delivered,
        ship,
        health: consumer_health.clone(),
        taken: consumer_taken.clone(),
    };
    let Some(cluster) = cluster else {
        // The grace applies to the first run only, not to a restart after a panic.
        let mut grace = resume_grace;
        arbiter.spawn(supervisor::supervise(CdcStage::Consumer, health.clone(), move || {
            let mut consumer = consumer(delivered_rx.clone(), None);
            consumer.resume_grace = grace.take();
            consumer.run()
        }));
        return Ok(CdcHandle { commands: commands_tx, live: live_rx, peers: None, health, reach });
    };
    // In a cluster the consumer acknowledges what every live node delivered, and runs only on the
    // node raft elected.
    arbiter.spawn(reach::share(reach.clone(), cluster.clone()));
    let (acked_tx, acked_rx) = watch::channel(0);
    let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
    let restart = Arc::new(tokio::sync::Notify::new());
    let cluster_cdc = Arc::new(Mutex::new(cluster::ClusterCdc {
        cluster: cluster.clone(),
        local_delivered: delivered_rx,
        acked: acked_tx,
        live: live_tx.clone(),
        transactions: txn_tx.clone(),
        hub: commands_tx.clone(),
        inbound: inbound_rx,
        restart: restart.clone(),
        hold: config_hold,
        taken,
        verifier,
        rejections: guard::Rejections::default(),
        database: reach.watch(),
    }));
    arbiter.spawn(supervisor::supervise(CdcStage::Cluster, health.clone(), move || {
        let cluster_cdc = cluster_cdc.clone();
        async move { cluster_cdc.lock_owned().await.run().await }
    }));
    let shipper = cluster::Shipper::new(&cluster);
    let live = live_tx.clone();
    let leadership = cluster.leadership();
    let handle = CdcHandle {
        commands: commands_tx.clone(),
        live: live_rx,
        peers: Some(inbound_tx),
        health: health.clone(),
        reach,
    };
    arbiter.spawn(async move {
        let make = move || consumer(acked_rx.clone(), Some(shipper.clone()));
        // A failover resumes at once (no grace): the subscribers are connected to the other nodes.
        cluster::supervise(leadership, make, live, restart, health).await;
    });
    Ok(handle)
}

/// A recorded position past PostgreSQL's WAL position cannot be real: a forged position a peer
/// shipped before [`guard`] checked them, or a file from another database server. Kept, it would make
/// the node drop every change up to it, for good; it is discarded (logged), and the node delivers from
/// the slot's confirmed position again. When the database cannot be asked, the position is kept.
async fn check_recorded(
    position: &mut position::DeliveredPosition,
    database_url: &str,
) -> Result<(), error::CdcError> {
    if position.lsn() == 0 {
        return Ok(());
    }
    let wal = match catalog::connect(database_url).await {
        Ok(client) => catalog::wal_position(&client).await,
        Err(error) => Err(error),
    };
    match wal {
        Ok(wal) if position.lsn() > wal => {
            tracing::error!(
                recorded = position.lsn(),
                wal,
                "the recorded Postgres Changes position is past PostgreSQL's WAL: discarded"
            );
            position.discard()
        }
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::warn!(%error, "could not check the recorded Postgres Changes position against the WAL");
            Ok(())
        }
    }
}
