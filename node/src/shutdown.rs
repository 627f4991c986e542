//! The SIGTERM drain, in order: stop dispatching Postgres changes and record what was delivered,
//! refuse new sockets and joins (`/readyz` turns 503), tell every socket to
//! close with "reconnect now" (1012) after a `system` notice on each channel, wait until the sockets are
//! gone or the grace period is over, then stop the HTTP server.

use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;

use crate::state::Shared;

/// How often the drain checks whether every socket has closed.
const POLL: Duration = Duration::from_millis(20);

/// Runs the drain; returns how many sockets were still open when it gave up waiting.
pub async fn drain(shared: &Shared, server: &ServerHandle, grace: Duration) -> usize {
    let started = Instant::now();
    if let Some(cdc) = &shared.cdc {
        // Everything dispatched is written and recorded before the sockets close: a graceful restart
        // neither loses nor repeats a change.
        cdc.shutdown(grace / 2).await;
    }
    shared.start_drain();
    tracing::info!(sockets = shared.connections.count(), "draining");
    while shared.connections.count() > 0 && started.elapsed() < grace {
        actix_web::rt::time::sleep(POLL).await;
    }
    let left = shared.connections.count();
    let remaining = grace.saturating_sub(started.elapsed());
    // Give in-flight HTTP requests what is left of the budget, then cut.
    let graceful = actix_web::rt::time::timeout(remaining.max(POLL), server.stop(true)).await;
    if graceful.is_err() {
        server.stop(false).await;
    }
    left
}
