//! Raft does not wait for the data runtime (see [`crate::runtimes`]): three nodes over real sockets,
//! sealed links, every node's data runtime blocked outright (both workers held by a task that does
//! not yield, the worst a CDC catch-up's sealing and writing can do), and the leader still commits.
//!
//! The check is causal, not timed: a commit needs the leader's append to reach a follower and its
//! answer to come back, so each one proves that both ends of the control lane and openraft ran
//! while the data runtimes could run nothing. When raft shares the data runtime (as it did) no commit
//! can happen until the blocks are lifted; the bound on each only keeps that failure from hanging.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::ClusterHandle;
use crate::raft::Command;
use crate::{ClusterConfig, ClusterSecret, Keyring, NodeId};

/// Generous: a loaded 2-core machine.
const LIMIT: Duration = Duration::from_secs(20);
const COMMITS: usize = 5;
/// Addresses no other test of the workspace uses.
const HOSTS: [u8; 3] = [241, 242, 243];
const PORT: u16 = 4650;

/// Holds the tasks it blocks until it is dropped.
struct Gate {
    open: Arc<(Mutex<bool>, Condvar)>,
    blocked: Arc<AtomicUsize>,
}

impl Gate {
    fn new() -> Gate {
        Gate { open: Arc::default(), blocked: Arc::default() }
    }

    /// Occupies one worker of `runtime` with a task that blocks its thread (never yields).
    fn block(&self, runtime: &tokio::runtime::Handle) {
        let (open, blocked) = (self.open.clone(), self.blocked.clone());
        runtime.spawn(async move {
            blocked.fetch_add(1, Ordering::AcqRel);
            let (lock, opened) = &*open;
            let mut is_open = lock.lock().unwrap_or_else(|e| e.into_inner());
            while !*is_open {
                is_open = opened.wait(is_open).unwrap_or_else(|e| e.into_inner());
            }
        });
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let (lock, opened) = &*self.open;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        opened.notify_all();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, HOSTS[i]], PORT))
}

async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_leader_commits_while_every_data_runtime_is_blocked() {
    let dir = TempDir(std::env::temp_dir().join(format!("realtime-starve-{}", std::process::id())));
    let keys = Keyring::parse("starve-test-secret-0123456789abcdefghijklmnop").unwrap();
    let mut nodes = Vec::new();
    for i in 0..HOSTS.len() {
        let seeds = (0..HOSTS.len()).filter(|&j| j != i).map(|j| addr(j).to_string()).collect();
        let mut config = ClusterConfig::new(NodeId(format!("starve-{i}")), addr(i), addr(i), seeds);
        config.data_dir = Some(dir.0.join(format!("node-{i}")));
        config.secret = ClusterSecret::Fixed(keys.clone());
        let (node, mut events) = ClusterHandle::start(config).await.expect("start");
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        nodes.push(node);
    }
    let leader = wait_for("one leader, named by all", || {
        let views: Vec<_> = nodes.iter().map(|n| n.leadership().borrow().clone()).collect();
        let mine: Vec<usize> = (0..views.len()).filter(|&i| views[i].is_me).collect();
        let [leader] = mine[..] else { return None };
        let name = nodes[leader].me().node;
        views.iter().all(|v| v.leader.as_ref() == Some(&name)).then_some(leader)
    })
    .await;
    let raft = nodes[leader].raft.clone().expect("raft").raft.clone();

    let gate = Gate::new();
    for node in &nodes {
        // The data runtime has two workers: one blocking task each.
        gate.block(&node.shared.runtimes.data);
        gate.block(&node.shared.runtimes.data);
    }
    let blocked = gate.blocked.clone();
    wait_for("every data runtime's workers blocked", || {
        (blocked.load(Ordering::Acquire) == 2 * nodes.len()).then_some(())
    })
    .await;

    for n in 0..COMMITS {
        let write = tokio::time::timeout(LIMIT, raft.client_write(Command::Noop)).await;
        match write {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => panic!("commit {n} refused while the data runtimes were blocked: {error}"),
            Err(_) => panic!("commit {n} did not happen while the data runtimes were blocked"),
        }
    }
    drop(gate);
    for node in &nodes {
        node.shutdown();
    }
}
