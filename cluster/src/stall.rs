//! A watch on the cluster runtime: a task that sleeps [`TICK`] and says when it woke late.
//!
//! Raft heartbeats, votes and the peer links run on the cluster runtime; when its workers are busy
//! (a CDC catch-up sealing and writing thousands of frames) or the machine is short of CPU, they wait,
//! and a follower may start an election. The warning names how long the runtime was away, so an
//! election or a slow link can be told apart from a network fault. (Membership has a thread of its
//! own and its own warning: see [`crate::membership`].)

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

const TICK: Duration = Duration::from_millis(20);
/// Lateness worth a warning: a raft heartbeat interval.
const LATE: Duration = Duration::from_millis(100);

pub(crate) fn spawn(stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let at = Instant::now();
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            let late = at.elapsed().saturating_sub(TICK);
            if late >= LATE {
                tracing::warn!(
                    late_ms = late.as_millis() as u64,
                    "the cluster runtime ran late (busy or starved)"
                );
            }
        }
    });
}
