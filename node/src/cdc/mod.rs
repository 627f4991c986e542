//! Postgres Changes (CDC): stream PostgreSQL's WAL by logical replication and deliver row changes to
//! the channels whose `postgres_changes` subscriptions match, under Row Level Security.
//!
//! ```text
//! PostgreSQL ──pgoutput──▶ consumer ──Transaction──▶ hub ──postgres_changes──▶ sockets
//!      ▲                      │  ▲                    │  └─ RLS check per distinct claims (rls)
//!      └── ack (applied LSN) ─┘  └──── delivered LSN ─┘
//! ```
//! - [`pgoutput`]: pure decoder of the pgoutput logical replication messages.
//! - [`values`]: column values (pgoutput text format) → typed JSON, as the reference emits them.
//! - [`matching`]: evaluation of subscription filters against a change.
//! - [`change`]: row changes and the `data` payload built from them.
//! - [`catalog`]: publication, slot, table and privilege queries.
//! - [`consumer`]: the replication session, transactions, acknowledgements.
//! - [`position`]: the last delivered position, so restarts neither lose nor repeat changes.
//! - [`recorder`]: records a position once the sockets wrote what it covers.
//! - [`hub`]: subscriptions, matching, RLS and delivery.
//! - [`rls`]: the per-viewer visibility check.
//! - [`subscriptions`]: the subscription index, grouped by parameters and viewer.
//! - [`handle`]: what sockets use to subscribe.

pub mod catalog;
pub mod change;
pub mod consumer;
pub mod error;
pub mod handle;
pub mod hub;
pub mod matching;
pub mod pgoutput;
pub mod position;
pub mod recorder;
pub mod rls;
pub mod subscriptions;
pub mod values;

use tokio::sync::{mpsc, watch};

pub use handle::{CdcHandle, SubscribeError, SubscribeErrorKind, SubscribeOutcome, SubscribeRequest};

use crate::config::CdcConfig;

/// Transactions buffered between the consumer and the hub.
const TRANSACTION_BUFFER: usize = 1024;

/// Starts the consumer and the hub on their own arbiter; returns the handle sockets use.
pub fn start(
    config: CdcConfig,
    data_dir: &std::path::Path,
    arbiter: &actix::ArbiterHandle,
) -> Result<CdcHandle, error::CdcError> {
    let position = position::DeliveredPosition::open(data_dir, &config.slot)?;
    let resume_grace = position.resumed().then_some(config.resume_grace);
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let (txn_tx, txn_rx) = mpsc::channel(TRANSACTION_BUFFER);
    let (live_tx, live_rx) = watch::channel(false);
    let (delivered_tx, delivered_rx) = watch::channel(position.lsn());
    let (record_tx, record_rx) = mpsc::unbounded_channel();
    arbiter.spawn(recorder::run(position, record_rx, delivered_tx, config.flush_deadline));
    let hub = hub::Hub::new(config.clone(), record_tx);
    let hub_live = live_rx.clone();
    arbiter.spawn(async move { hub.run(commands_rx, txn_rx, hub_live).await });
    let consumer = consumer::Consumer {
        config,
        resume_grace,
        hub: commands_tx.clone(),
        transactions: txn_tx,
        live: live_tx,
        delivered: delivered_rx,
    };
    arbiter.spawn(consumer.run());
    Ok(CdcHandle { commands: commands_tx, live: live_rx })
}
