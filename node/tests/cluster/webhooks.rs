//! Lifecycle webhooks across two nodes: a user's liveness is cluster-wide (the presence CRDT's internal
//! users topic) and exactly one node reports it. The receiver listens on this suite's own loopback
//! address block and checks every signature.

use std::time::Duration;

use realtime_proto::Vsn;
use serde_json::{json, Value};

use crate::common::{Client, Cluster, T};
use crate::support::jwt::{now, sign};
use crate::support::webhook::Receiver;

const GRACE_MS: u64 = 1_500;

async fn start(base: u8, receiver: &Receiver) -> Cluster {
    let mut flags = receiver.flags();
    flags.extend(["--offline-grace-ms", &GRACE_MS.to_string(), "--webhook-batch-ms", "20"].map(String::from));
    Cluster::start(base, 2, &flags.iter().map(String::as_str).collect::<Vec<_>>()).await
}

async fn connect_as(cluster: &Cluster, i: usize, sub: &str) -> Client {
    let token = sign(
        &cluster.secret,
        &json!({"role": "authenticated", "sub": sub, "iat": now(), "exp": now() + 3600}),
    );
    let node = cluster.node(i);
    let url = format!("ws://{}:{}/socket/websocket?apikey={token}&vsn=2.0.0", node.ip, node.port);
    Client::connect_req(url, Vsn::V2).await.unwrap_or_else(|e| panic!("connect to {}: {e}", node.name))
}

fn at(event: &Value) -> u64 {
    event["at"].as_u64().expect("`at` is unix ms")
}

#[tokio::test]
async fn offline_is_reported_once_and_only_after_the_last_socket_anywhere() {
    let receiver = Receiver::start("127.0.0.132", &[]).await;
    let cluster = start(130, &receiver).await;
    let on_0 = connect_as(&cluster, 0, "gus").await;
    let on_1 = connect_as(&cluster, 1, "gus").await;
    receiver.wait_for("socket.connect", Some("gus"), 2, T).await;
    receiver.wait_for("user.online", Some("gus"), 1, T).await;

    // One socket goes; the other, on the other node, stays longer than the grace.
    on_0.close().await;
    receiver.wait_for("socket.disconnect", Some("gus"), 1, T).await;
    tokio::time::sleep(Duration::from_millis(2 * GRACE_MS)).await;
    assert!(receiver.named("user.offline", Some("gus")).is_empty(), "offline while a socket remains");
    on_1.close().await;
    let disconnects = receiver.wait_for("socket.disconnect", Some("gus"), 2, T).await;
    let offline =
        receiver.wait_for("user.offline", Some("gus"), 1, T + Duration::from_millis(GRACE_MS)).await;
    // A quiet period longer than the grace: no second report from the other node.
    tokio::time::sleep(Duration::from_millis(GRACE_MS + 500)).await;
    let (online, offlines) =
        (receiver.named("user.online", Some("gus")), receiver.named("user.offline", Some("gus")));
    assert_eq!((online.len(), offlines.len()), (1, 1), "{:#?}", receiver.events());
    let last = disconnects.iter().map(at).max().unwrap();
    assert!(
        at(&offline[0]) >= last + GRACE_MS,
        "offline {} ms after the last socket",
        at(&offline[0]) - last
    );
    println!("user.online by {}, user.offline by {}", online[0]["node"], offline[0]["node"]);
}

#[tokio::test]
async fn a_killed_nodes_user_goes_offline_after_the_failure_detector_and_the_grace() {
    let receiver = Receiver::start("127.0.0.135", &[]).await;
    let mut cluster = start(133, &receiver).await;
    let _socket = connect_as(&cluster, 1, "hal").await;
    receiver.wait_for("user.online", Some("hal"), 1, T).await;
    // Node 0 must have the entry before node 1 dies, or there is nothing for it to see leave.
    let deadline = std::time::Instant::now() + T;
    while cluster.view(0).await["presence"]["remote_entries"].as_u64().unwrap_or(0) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "node-0 never saw node-1's entry: {}",
            cluster.view(0).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = std::time::Instant::now();
    cluster.kill(1);
    let offline =
        receiver.wait_for("user.offline", Some("hal"), 1, T + Duration::from_millis(GRACE_MS)).await;
    assert_eq!(offline[0]["node"], "node-0", "the survivor reports it");
    assert!(receiver.named("socket.disconnect", Some("hal")).is_empty(), "a killed node sends nothing");
    println!(
        "killed node's user offline after {:?} (failure detector + {GRACE_MS} ms grace)",
        killed.elapsed()
    );
}
