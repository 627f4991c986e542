//! Restarts a CDC task that panicked, so one bug (or one input nobody foresaw) cannot silently end
//! Postgres Changes on a node while its joins still say `SUBSCRIBED`.
//!
//! Each task of the path (consumer, hub, recorder, cluster router) runs under [`supervise`]: a panic
//! is logged at error with its message, counted in `realtime_cdc_task_restarts_total{stage}`, takes
//! the node out of `/readyz` ([`CdcHealth`]) and restarts the task after a backoff that doubles from
//! [`RESTART_MIN`] up to [`RESTART_MAX`]. The node is ready again once the restarted task has run for
//! [`STABLE`] without panicking (a task that panics at every start keeps it out), and a task that
//! ran that long starts again from the shortest backoff.
//!
//! A task keeps what must survive it (its queues, the hub's subscriptions) in an
//! `Arc<tokio::sync::Mutex<_>>` that each run locks: tokio's mutex is released, not poisoned, when
//! the task unwinds, so the next run continues with the same inputs and state.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::health::CdcHealth;
use crate::metrics::{metrics, CdcStage};

pub const RESTART_MIN: Duration = Duration::from_millis(200);
pub const RESTART_MAX: Duration = Duration::from_secs(10);
/// How long a restarted task must run before the node counts as ready again.
pub const STABLE: Duration = Duration::from_secs(2);

/// Aborts the running task when the supervisor is dropped (e.g. a consumer stopped because this node
/// no longer leads), and clears the stage's health: a task that no longer runs is not failing.
struct Running {
    stage: CdcStage,
    health: Arc<CdcHealth>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.health.stage_up(self.stage.as_str());
    }
}

/// Runs `start()`'s task on the current arbiter until it returns, restarting it whenever it panics.
pub async fn supervise<F, Fut>(stage: CdcStage, health: Arc<CdcHealth>, mut start: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let mut running = Running { stage, health: health.clone(), task: None };
    let mut backoff = RESTART_MIN;
    loop {
        let started = Instant::now();
        let task = running.task.insert(actix::spawn(start()));
        let stable = tokio::time::sleep(STABLE);
        tokio::pin!(stable);
        let mut healthy = false;
        let outcome = loop {
            tokio::select! {
                outcome = &mut *task => break outcome,
                _ = &mut stable, if !healthy => {
                    healthy = true;
                    health.stage_up(stage.as_str());
                }
            }
        };
        running.task = None;
        let panic = match outcome {
            Ok(()) => return,
            Err(error) if error.is_panic() => panic_message(error.into_panic()),
            // Cancelled: the arbiter is stopping.
            Err(_) => return,
        };
        if started.elapsed() >= STABLE {
            backoff = RESTART_MIN;
        }
        metrics().cdc_task_restarted(stage);
        tracing::error!(stage = stage.as_str(), %panic, restart_in = ?backoff, "Postgres Changes task panicked: /readyz is not ready until it runs again");
        health.stage_down(stage.as_str(), panic);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RESTART_MAX);
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(text) => (*text).to_owned(),
            Err(_) => "(no message)".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A task that panics on its first two runs and then finishes: restarted twice, counted down
    /// while it fails, and the supervisor returns once it ends normally.
    #[actix::test]
    async fn a_panicking_task_is_restarted_and_the_node_is_ready_again() {
        let health = Arc::new(CdcHealth::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let start = {
            let (runs, health) = (runs.clone(), health.clone());
            move || {
                let run = runs.fetch_add(1, Ordering::SeqCst);
                // What /readyz said when this run started.
                let _ = seen_tx.send(health.unready());
                async move {
                    if run < 2 {
                        panic!("run {run} fails");
                    }
                }
            }
        };
        supervise(CdcStage::Hub, health.clone(), start).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(seen_rx.recv().await, Some(None), "ready before the first panic");
        let second = seen_rx.recv().await.flatten().expect("not ready after a panic");
        assert!(second.contains("hub") && second.contains("run 0 fails"), "{second}");
        assert!(seen_rx.recv().await.flatten().is_some_and(|r| r.contains("run 1 fails")));
        // It ended normally: nothing is failing any more.
        assert_eq!(health.unready(), None);
    }
}
