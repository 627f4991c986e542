//! The SIGTERM drain, in order: stop dispatching Postgres changes and record what was delivered,
//! refuse new sockets and joins (`/readyz` turns 503), tell every socket to
//! close with "reconnect now" (1012) after a `system` notice on each channel, wait until the sockets are
//! gone or the grace period is over, then stop the HTTP server (in-flight requests get one more second).
//! The node then gives the webhook sender [`WEBHOOK_FLUSH_BOUND`] to deliver what is queued.

use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;

use crate::state::Shared;

/// How often the drain checks whether every socket has closed.
const POLL: Duration = Duration::from_millis(20);

/// What in-flight HTTP requests get once the sockets are gone, after which their connections are cut
/// (the server's `shutdown_timeout`): a keep-alive connection that keeps sending requests would
/// otherwise hold the exit forever.
pub const HTTP_STOP_GRACE: Duration = Duration::from_secs(1);

/// How long the drain gives the webhook sender to deliver the events still queued (the sockets'
/// `socket.disconnect` among them) once the sockets are gone.
pub const WEBHOOK_FLUSH_BOUND: Duration = Duration::from_secs(3);

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
    // In-flight HTTP requests get `HTTP_STOP_GRACE`, then the workers cut what is left. (A second,
    // forced stop would not help: the server handles its commands one at a time, so it would wait
    // behind the graceful one.)
    server.stop(true).await;
    left
}
