//! Rotating the cluster secret without downtime: every node reads its secrets from a file
//! (`--cluster-secret-file`), rewritten in the three documented steps (accept the new secret, send
//! with it, drop the old one) and picked up on SIGHUP. Broadcasts cross between nodes after every
//! step, no node is ever declared down, and once the old secret is dropped a peer holding only it is
//! refused.

use std::path::Path;
use std::time::{Duration, Instant};

use realtime_cluster::secure::handshake;
use realtime_cluster::wire;
use realtime_cluster::Keyring;
use realtime_proto::Vsn;
use serde_json::json;
use tokio::net::TcpStream;

use crate::common::*;
use crate::support::cluster::CLUSTER_PORT;

const OLD: &str = "old-cluster-secret-0123456789abcdefghijklmnopqrstu";
const NEW: &str = "new-cluster-secret-0123456789abcdefghijklmnopqrstu";
const TOPIC: &str = "rotation";

fn write_all(dir: &Path, size: usize, secrets: &str) {
    for i in 0..size {
        std::fs::write(dir.join(format!("node-{i}")), format!("{}\n", secrets.replace(',', "\n")))
            .expect("write secret file");
    }
}

/// Rewrites every node's file and has each read it now (SIGHUP; the 10 s re-read would do too).
async fn rotate(cluster: &Cluster, dir: &Path, secrets: &str) {
    write_all(dir, 3, secrets);
    for i in 0..3 {
        cluster.signal(i, "-HUP");
    }
    // Read when every node accepts exactly the listed secrets.
    let deadline = Instant::now() + T;
    for i in 0..3 {
        for secret in [OLD, NEW] {
            let listed = secrets.split(',').any(|s| s == secret);
            while admits(cluster, i, secret).await != listed {
                assert!(Instant::now() < deadline, "node {i} did not pick up {secrets:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    cluster.wait_formed(T).await;
}

/// A broadcast sent on node 0 reaches the member on node 2.
async fn crosses(cluster: &Cluster, sender: &mut Client, jr: &str, receiver: &mut Client, seq: u64) {
    let payload = json!({"type": "broadcast", "event": "step", "payload": {"seq": seq}});
    sender.push(Some(jr), &format!("realtime:{TOPIC}"), "broadcast", &payload).await;
    let deadline = Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "broadcast {seq} did not cross: {:?}", cluster.view(0).await);
        if let Some(Frame::Text(v, _)) = receiver.recv(left).await {
            if v["event"] == "broadcast" && v["payload"]["payload"]["seq"] == seq {
                return;
            }
        }
    }
}

/// Whether node `i` completes a link handshake with a peer holding only `secret`.
async fn admits(cluster: &Cluster, i: usize, secret: &str) -> bool {
    let keys = Keyring::parse(secret).expect("keyring");
    let addr = format!("{}:{CLUSTER_PORT}", cluster.node(i).ip);
    let Ok(mut stream) = TcpStream::connect(addr).await else { return false };
    matches!(
        tokio::time::timeout(
            Duration::from_secs(5),
            handshake::initiate(&mut stream, Some(&keys), wire::MAX_FRAME_BYTES)
        )
        .await,
        Ok(Ok(_))
    )
}

/// The epochs node 0 holds for its peers: a peer declared down and back would have renewed its epoch.
async fn epochs(cluster: &Cluster) -> Vec<(String, u64)> {
    let view = cluster.view(0).await;
    let mut epochs: Vec<(String, u64)> = view["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| (m["node"].as_str().unwrap_or_default().to_owned(), m["epoch"].as_u64().unwrap_or(0)))
        .collect();
    epochs.sort();
    epochs
}

#[tokio::test]
async fn t10_the_secret_rotates_in_three_steps_without_downtime() {
    let dir = std::env::temp_dir().join(format!("realtime-rotation-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("secret dir");
    write_all(&dir, 3, OLD);
    let cluster = Cluster::start_with_secret_files(201, 3, &dir).await;
    let mut sender = cluster.client(0, Vsn::V1).await;
    let jr = join(&mut sender, TOPIC, "sender").await;
    let mut receiver = cluster.client(2, Vsn::V1).await;
    join(&mut receiver, TOPIC, "receiver").await;
    crosses(&cluster, &mut sender, &jr, &mut receiver, 0).await;
    let before = epochs(&cluster).await;
    assert_eq!(before.len(), 2, "node 0 sees both peers: {before:?}");
    assert!(admits(&cluster, 1, OLD).await && !admits(&cluster, 1, NEW).await);

    // 1. Accept the new secret everywhere (still sending with the old one).
    rotate(&cluster, &dir, &format!("{OLD},{NEW}")).await;
    crosses(&cluster, &mut sender, &jr, &mut receiver, 1).await;
    // 2. Send with the new secret (the old one still accepted).
    rotate(&cluster, &dir, &format!("{NEW},{OLD}")).await;
    crosses(&cluster, &mut sender, &jr, &mut receiver, 2).await;
    // 3. Drop the old secret: links still cross, and a peer holding only the old one is refused.
    rotate(&cluster, &dir, NEW).await;
    crosses(&cluster, &mut sender, &jr, &mut receiver, 3).await;
    assert_eq!(epochs(&cluster).await, before, "no node was declared down during the rotation");
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}
