//! Where the cluster's work runs: the data runtime and the control runtime ([`Runtimes`]).
//!
//! The data runtime (the cluster runtime's two workers) carries the bulk of the peer traffic: the data
//! links' pumps seal and write every relayed broadcast and shipped transaction, the accepted data
//! connections open and decode them, and the driver hands them to the node. A CDC catch-up (the leader
//! replaying its stream from the slot for a healed follower) is thousands of frames sealed on the
//! leader and opened on every follower: while it lasts those workers are busy, and anything queued
//! behind them waits. Raft must not: a leader's heartbeats that wait past the lease let a follower stop
//! hearing it, the pre-vote gate (`raft::campaign`) of a node coming back opens, and it deposes a
//! healthy leader.
//!
//! So raft has a thread of its own, a runtime with one worker (the control runtime), as membership
//! has ([`crate::membership`]): openraft (its core, replication and heartbeat tasks, started there by
//! `raft::node`), the node's raft tasks (status beats, leadership, bootstrap), serving raft RPCs, and
//! both ends of the control lane (the control links' pumps, and the reading of accepted control
//! connections). A socket wakes the tasks of the runtime whose reactor it was registered with, so the
//! cluster port's listener is bound and accepted on the control runtime too (an accepted connection's
//! lane is known only from its `Hello`): the control thread's reactor only passes on readiness, while
//! the handshake and the reading of a data connection stay on the data runtime (a flood of handshakes
//! costs the data runtime, never raft). The data runtime can then be busy, or blocked, without a
//! heartbeat, a vote or a status beat waiting for it.
//!
//! With the in-memory twin ([`crate::ClusterHandle::start_on`]) both are the caller's runtime.

use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// How long the control runtime's tasks get to end once the cluster has stopped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The two runtimes of one node's cluster.
#[derive(Clone)]
pub(crate) struct Runtimes {
    /// Bulk work: data links, the driver, handshakes.
    pub data: Handle,
    /// Raft and the control lane.
    pub control: Handle,
}

impl Runtimes {
    /// Both on the current runtime (the in-memory twin, unit tests).
    pub(crate) fn current() -> Runtimes {
        let here = Handle::current();
        Runtimes { data: here.clone(), control: here }
    }
}

/// The control runtime's thread; [`ControlThread::stop`] ends it.
pub(crate) struct ControlThread {
    handle: Handle,
    close: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl ControlThread {
    /// Starts the thread and its runtime.
    pub(crate) fn start() -> std::io::Result<ControlThread> {
        // One worker: raft's work is small and serial, and nothing on this runtime may block it
        // (a task that blocks the worker stops openraft's core too, and `Raft::shutdown` with it).
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cluster-raft")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let close = CancellationToken::new();
        let closed = close.clone();
        let thread = std::thread::Builder::new().name("cluster-raft-main".into()).spawn(move || {
            runtime.block_on(closed.cancelled());
            runtime.shutdown_timeout(SHUTDOWN_GRACE);
        })?;
        Ok(ControlThread { handle, close, thread: Some(thread) })
    }

    pub(crate) fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Ends the runtime (after raft has shut down on it) and waits for its thread.
    pub(crate) fn stop(mut self) {
        self.close.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ControlThread {
    fn drop(&mut self) {
        // Not joined here: a drop on an error path must not wait.
        self.close.cancel();
    }
}
