//! A watch on a cluster runtime: a task that sleeps [`TICK`] and says when it woke late.
//!
//! One runs on each of the two runtimes (see [`crate::runtimes`]). On the data runtime, lateness is
//! bulk work (a CDC catch-up sealing and writing thousands of frames) or a machine short of CPU: links
//! and presence wait. On the raft runtime it is only the machine (or a blocking call there), and it is
//! what makes a leader's heartbeats late and a follower start an election. The warning names the
//! runtime and how long it was away, so an election or a slow link can be told apart from a network
//! fault. (Membership has a thread of its own and its own warning: see [`crate::membership`].)

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

const TICK: Duration = Duration::from_millis(20);
/// Lateness worth a warning: a raft heartbeat interval.
const LATE: Duration = Duration::from_millis(100);

/// Watches the runtime of `on`, naming it `runtime` in the warning.
pub(crate) fn spawn(on: &tokio::runtime::Handle, runtime: &'static str, stop: CancellationToken) {
    on.spawn(async move {
        loop {
            let at = Instant::now();
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            let late = at.elapsed().saturating_sub(TICK);
            if late >= LATE {
                tracing::warn!(
                    runtime,
                    late_ms = late.as_millis() as u64,
                    "the cluster runtime ran late (busy or starved)"
                );
            }
        }
    });
}
