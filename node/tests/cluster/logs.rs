//! What the logs say when the cluster is degraded: a voter that is down is news once, not a line on
//! every raft retry.

use std::time::{Duration, Instant};

use crate::common::*;

/// The node every running node names as leader, once they agree.
async fn leader(cluster: &Cluster) -> usize {
    let deadline = Instant::now() + T;
    loop {
        let mut named = Vec::new();
        for i in (0..3).filter(|i| cluster.nodes[*i].is_some()) {
            named.push(cluster.view(i).await["leader"].as_str().map(str::to_owned));
        }
        if let Some(Some(name)) = named.first() {
            if named.iter().all(|n| n.as_deref() == Some(name.as_str())) {
                if let Some(i) = name.strip_prefix("node-").and_then(|n| n.parse().ok()) {
                    return i;
                }
            }
        }
        assert!(Instant::now() < deadline, "no agreed leader: {named:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A follower stopped gracefully (SIGTERM) stays a raft voter, and the leader keeps trying it. The
/// leader says so once (`raft peer unreachable`, WARN); openraft's own lines for every retry (ERROR
/// `RPCError`, WARN `error replication to target`, `backoff mode`, `update progress error`,
/// `heartbeat error`) are not in the log: no openraft line at warn or error at all.
#[tokio::test]
async fn t50_a_stopped_voter_is_logged_once_not_on_every_retry() {
    let mut cluster = Cluster::start(214, 3, &[]).await;
    let leader = leader(&cluster).await;
    let stopped = (leader + 1) % 3;
    let log = cluster.node(leader).log.clone();
    let before = std::fs::read_to_string(&log).expect("leader log").lines().count();
    cluster.terminate(stopped);
    // Long enough for ~25 retries at the backoff (150 ms) and a dozen heartbeats' timeouts.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let text = std::fs::read_to_string(&log).expect("leader log");
    let after: Vec<&str> = text.lines().skip(before).collect();
    let retries: Vec<&&str> = after
        .iter()
        .filter(|l| l.contains("openraft") && (l.contains("WARN") || l.contains("ERROR")))
        .collect();
    let unreachable = after.iter().filter(|l| l.contains("raft peer unreachable")).count();
    let warn_or_error = after.iter().filter(|l| l.contains("WARN") || l.contains("ERROR")).count();
    println!(
        "{} lines after the stop ({warn_or_error} at warn or error):\n{}",
        after.len(),
        after.join("\n")
    );
    assert!(retries.is_empty(), "openraft's lines at warn or error: {retries:#?}");
    assert_eq!(unreachable, 1, "the stopped voter is news once");
}
