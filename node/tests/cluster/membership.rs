//! Failures and restarts: a killed node's presences leave every other node (and only its own); a
//! paused node is declared down and heals when it resumes; a node restarted under its name rejoins as a
//! new incarnation; a node stopped with SIGTERM removes its presences at once.

use std::time::{Duration, Instant};

use realtime_proto::Vsn;
use serde_json::json;

use crate::common::*;

/// Three nodes, one client on each that joined `topic` and tracked `key-<i>`, all seeing all three.
async fn three_tracked(base: u8, topic: &str) -> (Cluster, Vec<Client>, Vec<PresenceModel>) {
    let cluster = Cluster::start(base, 3, &[]).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut c = cluster.client(i, Vsn::V1).await;
        let jr = join(&mut c, topic, &format!("key-{i}")).await;
        track(&mut c, &jr, topic, json!({"node": i})).await;
        clients.push(c);
    }
    let mut models = vec![PresenceModel::default(); 3];
    for (c, model) in clients.iter_mut().zip(models.iter_mut()) {
        presence_until(c, model, T, "all tracked", |m| m.keys() == keys(&[0, 1, 2])).await;
    }
    (cluster, clients, models)
}

#[tokio::test]
async fn t10_a_killed_nodes_presences_leave_everywhere_else() {
    let (mut cluster, mut clients, mut models) = three_tracked(31, "kill").await;
    let killed = Instant::now();
    cluster.kill(2);
    for j in 0..2 {
        presence_until(&mut clients[j], &mut models[j], T, "killed node's presence gone", |m| {
            m.keys() == keys(&[0, 1])
        })
        .await;
        println!("node 2 killed: its presence left node {j} after {:?}", killed.elapsed());
    }
    cluster.wait_formed(T).await;
    let view = cluster.view(0).await;
    let node2 = view["members"].as_array().and_then(|m| m.iter().find(|m| m["node"] == "node-2")).cloned();
    assert!(node2.as_ref().is_none_or(|m| m["state"] == "down"), "{view}");
    let mut late = cluster.client(1, Vsn::V1).await;
    join(&mut late, "kill", "late").await;
    let mut model = PresenceModel::default();
    presence_until(&mut late, &mut model, T, "state after the kill", |m| m.keys() == keys(&[0, 1])).await;
}

#[tokio::test]
async fn t20_a_paused_node_is_declared_down_then_heals() {
    let (cluster, mut clients, mut models) = three_tracked(41, "pause").await;
    let paused = Instant::now();
    cluster.signal(2, "-STOP");
    for j in 0..2 {
        presence_until(&mut clients[j], &mut models[j], T, "paused node's presence gone", |m| {
            m.keys() == keys(&[0, 1])
        })
        .await;
    }
    println!("node 2 paused: declared down (presence gone on nodes 0 and 1) after {:?}", paused.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.signal(2, "-CONT");
    let resumed = Instant::now();
    for j in 0..3 {
        presence_until(&mut clients[j], &mut models[j], T, "healed", |m| m.keys() == keys(&[0, 1, 2])).await;
    }
    println!("node 2 resumed: its presence back everywhere after {:?}", resumed.elapsed());
    cluster.wait_formed(T).await;
    // Quiet, the three views are identical.
    for j in 0..3 {
        let deadline = Instant::now() + Duration::from_millis(500);
        while let Some(Frame::Text(v, _)) =
            clients[j].recv(deadline.saturating_duration_since(Instant::now())).await
        {
            models[j].apply_frame(&v);
        }
    }
    for model in &models {
        assert_eq!(model, &models[0]);
    }
}

#[tokio::test]
async fn t30_a_node_restarted_under_its_name_rejoins_as_a_new_incarnation() {
    let (mut cluster, mut clients, mut models) = three_tracked(51, "restart").await;
    let before = cluster.view(2).await["incarnation"].as_u64().expect("incarnation");
    cluster.kill(2);
    cluster.start_node(2);
    cluster.wait_formed(T).await;
    for j in 0..2 {
        presence_until(&mut clients[j], &mut models[j], T, "old incarnation's presence gone", |m| {
            m.keys() == keys(&[0, 1])
        })
        .await;
    }
    let after = cluster.view(2).await["incarnation"].as_u64().expect("incarnation");
    assert!(after > before, "a restart is a new incarnation ({before} → {after})");
    let view = cluster.view(0).await;
    let entries: Vec<_> =
        view["members"].as_array().into_iter().flatten().filter(|m| m["node"] == "node-2").collect();
    assert_eq!(entries.len(), 1, "one member named node-2: {view}");
    assert_eq!(entries[0]["incarnation"].as_u64(), Some(after));
    let mut c = cluster.client(2, Vsn::V1).await;
    let jr = join(&mut c, "restart", "key-2").await;
    track(&mut c, &jr, "restart", json!({"node": 2, "again": true})).await;
    for j in 0..2 {
        presence_until(&mut clients[j], &mut models[j], T, "new presence", |m| m.keys() == keys(&[0, 1, 2]))
            .await;
    }
}

#[tokio::test]
async fn t40_a_node_stopped_with_sigterm_removes_its_presences_at_once() {
    let (mut cluster, mut clients, mut models) = three_tracked(61, "term").await;
    let stopped = Instant::now();
    cluster.terminate(2);
    for j in 0..2 {
        presence_until(&mut clients[j], &mut models[j], T, "left", |m| m.keys() == keys(&[0, 1])).await;
    }
    println!("node 2 stopped with SIGTERM: presence gone on nodes 0 and 1 after {:?}", stopped.elapsed());
    cluster.wait_formed(T).await;
}
