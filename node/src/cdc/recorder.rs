//! Records the delivered position, in order, only once the sockets that received a batch's changes
//! have them in the kernel (their outbox [`reached`](Outbox::reached) the batch's mark), so a crash of
//! this process cannot lose a change for a client that stays connected.
//!
//! No socket may hold the position back for the others: a batch's sockets share one deadline, counted
//! from its dispatch. A socket that has not written the batch by then was not keeping up; it is closed
//! as a slow consumer *before* the position moves past what it was sent, so every client still
//! connected at a crash has every change up to the recorded position. A crash can repeat at most what
//! was written while a record was pending.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::position::DeliveredPosition;
use crate::close::SlowCause;
use crate::delivery::Outbox;

/// How often a pending batch's sockets are looked at.
const POLL: Duration = Duration::from_millis(2);

/// What the recorder is asked to do, in dispatch order.
pub enum Record {
    /// A batch was handed to these sockets (each with the mark of its last frame); record `end_lsn`
    /// once they wrote it.
    Batch { end_lsn: u64, sockets: Vec<(Outbox, u64)>, dispatched_at: Instant },
    /// Answer once everything before it is recorded.
    Barrier(oneshot::Sender<()>),
}

/// Waits until every socket reached its mark, or closes those that did not by `deadline`.
async fn flushed(mut sockets: Vec<(Outbox, u64)>, deadline: Instant) {
    loop {
        sockets.retain(|(outbox, mark)| !outbox.reached(*mark));
        if sockets.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            for (outbox, _) in sockets {
                outbox.close_slow(SlowCause::FlushDeadline);
            }
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs until the hub is gone; `flush_deadline` is how long a batch's sockets have to write it.
pub async fn run(
    position: &mut DeliveredPosition,
    records: &mut mpsc::UnboundedReceiver<Record>,
    delivered: &watch::Sender<u64>,
    flush_deadline: Duration,
) {
    while let Some(record) = records.recv().await {
        match record {
            Record::Batch { end_lsn, sockets, dispatched_at } => {
                flushed(sockets, dispatched_at + flush_deadline).await;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::delivery::{Link, OutboxLimits, WireFrame};

    #[tokio::test]
    async fn a_socket_that_misses_the_deadline_is_closed_before_the_position_moves() {
        let limits =
            OutboxLimits { max_bytes: 1 << 20, max_frames: 100, close_grace: Duration::from_secs(1) };
        let stuck = Outbox::new(limits, Link::default(), Arc::default());
        stuck.offer(WireFrame::Text("change".into()), None);
        let mark = stuck.mark();
        let started = Instant::now();
        flushed(vec![(stuck.clone(), mark)], started + Duration::from_millis(30)).await;
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert!(!stuck.is_open(), "closed as a slow consumer");
        assert!(stuck.reached(mark), "a closed socket holds nothing back");
    }
}
