//! Records the delivered position, in order, only once the sockets that received a batch's changes
//! have written them (each answered a [`Flush`] queued behind its frames). Until then the position is
//! not recorded and PostgreSQL is not acknowledged, so a crash re-sends rather than loses; a crash can
//! repeat at most what was written while its record was pending.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{mpsc, oneshot, watch};

use super::position::DeliveredPosition;
use crate::socket::messages::Flush;

/// How long a socket may take to answer before its batch is recorded anyway (a stuck client must not
/// hold the slot back; it is closed as a slow consumer by then).
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// What the recorder is asked to do, in dispatch order.
pub enum Record {
    /// A batch was handed to these sockets; record `end_lsn` once they wrote it.
    Batch { end_lsn: u64, sockets: Vec<Recipient<Flush>> },
    /// Answer once everything before it is recorded.
    Barrier(oneshot::Sender<()>),
}

/// Runs until the hub is gone.
pub async fn run(
    mut position: DeliveredPosition,
    mut records: mpsc::UnboundedReceiver<Record>,
    delivered: watch::Sender<u64>,
) {
    while let Some(record) = records.recv().await {
        match record {
            Record::Batch { end_lsn, sockets } => {
                let flushed = futures_util::future::join_all(sockets.iter().map(|s| s.send(Flush)));
                let _ = tokio::time::timeout(FLUSH_WAIT, flushed).await;
                if let Err(error) = position.store(end_lsn) {
                    tracing::error!(%error, "cannot record the delivered position");
                }
                delivered.send_replace(end_lsn);
            }
            Record::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
}
