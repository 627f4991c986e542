//! Broadcast across nodes: once, in order per publisher, to members on every node; REST enters on any
//! node; a channel's capacity counts members on every node.

use std::time::{Duration, Instant};

use realtime_proto::Vsn;
use serde_json::{json, Value};

use crate::common::*;

/// Waits until every client sees every key (which also means every node knows every other's members).
async fn all_present(clients: &mut [Client], models: &mut [PresenceModel], want: &[String]) {
    for (c, model) in clients.iter_mut().zip(models.iter_mut()) {
        presence_until(c, model, T, "all keys", |m| m.keys() == want).await;
    }
}

/// The `seq`s of broadcast event `event` received within `quiet` of each other, until `count` arrived.
async fn receive_seqs(c: &mut Client, event: &str, count: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    let deadline = Instant::now() + T;
    while seqs.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "received {} of {count} broadcasts: {seqs:?}", seqs.len());
        if let Some(Frame::Text(v, _)) = c.recv(left).await {
            if v["event"] == "broadcast" && v["payload"]["event"] == event {
                seqs.push(v["payload"]["payload"]["seq"].as_u64().unwrap_or(u64::MAX));
            }
        }
    }
    seqs
}

/// No broadcast of `event` arrives within `quiet`.
async fn no_more(c: &mut Client, event: &str, quiet: Duration) {
    let deadline = Instant::now() + quiet;
    while let Some(frame) = c.recv(deadline.saturating_duration_since(Instant::now())).await {
        if let Frame::Text(v, _) = frame {
            assert!(
                !(v["event"] == "broadcast" && v["payload"]["event"] == event),
                "unexpected broadcast {v}"
            );
        }
    }
}

#[tokio::test]
async fn t10_broadcasts_reach_every_node_once_in_order() {
    let cluster = Cluster::start(11, 3, &["--max-events-per-second", "10000"]).await;
    let vsns = [Vsn::V1, Vsn::V2, Vsn::V1];
    let mut clients = Vec::new();
    let mut joins = Vec::new();
    for (i, vsn) in vsns.iter().enumerate() {
        let mut c = cluster.client(i, *vsn).await;
        let jr = join(&mut c, "room", &format!("key-{i}")).await;
        track(&mut c, &jr, "room", json!({"node": i})).await;
        clients.push(c);
        joins.push(jr);
    }
    let mut models = vec![PresenceModel::default(); 3];
    all_present(&mut clients, &mut models, &keys(&[0, 1, 2])).await;

    const N: u64 = 200;
    let started = Instant::now();
    for seq in 0..N {
        let payload = json!({"type": "broadcast", "event": "m", "payload": {"seq": seq}});
        clients[0].push(Some(&joins[0]), "realtime:room", "broadcast", &payload).await;
    }
    let want: Vec<u64> = (0..N).collect();
    for i in [1, 2] {
        assert_eq!(receive_seqs(&mut clients[i], "m", N as usize).await, want, "node {i} got them in order");
    }
    println!("{N} broadcasts from node 0 reached nodes 1 and 2 in {:?}", started.elapsed());
    for c in clients.iter_mut() {
        no_more(c, "m", Duration::from_millis(300)).await;
    }

    // REST on node 2 reaches the members of every node, node 2's included.
    assert_eq!(cluster.rest_broadcast(2, "room", "rest", json!({"seq": 7})).await, 202);
    for c in clients.iter_mut() {
        assert_eq!(receive_seqs(c, "rest", 1).await, vec![7]);
    }

    // The relays show in node 0's metrics: N broadcasts to 2 peers each, no drops.
    let node = cluster.node(0);
    let url = format!("http://{}:{}/metrics", node.ip, node.port);
    let body = reqwest::get(url).await.expect("metrics").text().await.expect("metrics body");
    let value = |name| crate::support::raw::metric_sum(&body, name).unwrap_or(-1.0);
    assert_eq!(value("realtime_cluster_peers_alive"), 2.0, "{body}");
    assert_eq!(value("realtime_cluster_relays_total"), (2 * N) as f64, "{body}");
    assert_eq!(value("realtime_cluster_relay_drops_total"), 0.0, "{body}");
}

#[tokio::test]
async fn t20_channel_capacity_counts_members_on_every_node() {
    let cluster = Cluster::start(14, 3, &["--max-channel-members", "2"]).await;
    let mut a = cluster.client(0, Vsn::V1).await;
    join(&mut a, "capped", "a").await;
    let mut b = cluster.client(1, Vsn::V1).await;
    join(&mut b, "capped", "b").await;
    // Member counts travel between nodes in a few milliseconds; until node 2 has them it may admit.
    let deadline = Instant::now() + T;
    let refusal: Value = loop {
        let mut c = cluster.client(2, Vsn::V1).await;
        let jr = c.send_join("realtime:capped", &json!({"config": {}})).await;
        let reply = c.expect_reply(&jr, T).await;
        if reply["payload"]["status"] == "error" {
            break reply;
        }
        c.close().await;
        assert!(Instant::now() < deadline, "node 2 kept admitting a third member");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let reason = refusal["payload"]["response"]["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.starts_with("ChannelMembersLimitReached"), "{refusal}");
    // A member leaving on node 0 frees a place on node 2.
    a.close().await;
    let deadline = Instant::now() + T;
    loop {
        let mut c = cluster.client(2, Vsn::V1).await;
        let jr = c.send_join("realtime:capped", &json!({"config": {}})).await;
        if c.expect_reply(&jr, T).await["payload"]["status"] == "ok" {
            break;
        }
        assert!(Instant::now() < deadline, "the place freed on node 0 never showed on node 2");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
