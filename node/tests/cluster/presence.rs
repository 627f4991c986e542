//! Presence across nodes: one state everywhere (same keys, metas and phx_refs), diffs for tracks,
//! updates and untracks made on any node.

use std::time::Instant;

use realtime_proto::Vsn;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn t10_every_node_shows_one_presence_state() {
    let cluster = Cluster::start(21, 3, &[]).await;
    let mut clients = Vec::new();
    let mut joins = Vec::new();
    for i in 0..3 {
        let mut c = cluster.client(i, if i == 1 { Vsn::V2 } else { Vsn::V1 }).await;
        joins.push(join(&mut c, "lobby", &format!("key-{i}")).await);
        clients.push(c);
    }
    let mut models = vec![PresenceModel::default(); 3];
    let all = keys(&[0, 1, 2]);
    for i in 0..3 {
        let tracked = Instant::now();
        track(&mut clients[i], &joins[i], "lobby", json!({"node": i, "status": "online"})).await;
        for j in 0..3 {
            let want = format!("key-{i}");
            presence_until(&mut clients[j], &mut models[j], T, "track seen", |m| m.0.contains_key(&want))
                .await;
            if j != i {
                println!("track on node {i} seen on node {j} after {:?}", tracked.elapsed());
            }
        }
    }
    for (j, model) in models.iter().enumerate() {
        assert_eq!(model.keys(), all, "node {j}");
        assert_eq!(model, &models[0], "node {j} shows the same metas and refs as node 0");
    }
    // A newcomer on each node gets the same presence_state.
    for i in 0..3 {
        let mut late = cluster.client(i, Vsn::V1).await;
        join(&mut late, "lobby", "late").await;
        let mut model = PresenceModel::default();
        presence_until(&mut late, &mut model, T, "presence_state", |m| m.keys() == all).await;
        assert_eq!(model, models[0], "presence_state on node {i}");
        late.close().await;
    }
    // An update on node 2 replaces its meta everywhere; an untrack on node 1 removes it everywhere.
    track(&mut clients[2], &joins[2], "lobby", json!({"node": 2, "status": "away"})).await;
    for j in 0..3 {
        presence_until(&mut clients[j], &mut models[j], T, "update", |m| {
            m.0.get("key-2").is_some_and(|metas| metas.values().any(|meta| meta["status"] == "away"))
                && !m
                    .0
                    .get("key-2")
                    .is_some_and(|metas| metas.values().any(|meta| meta["status"] == "online"))
        })
        .await;
    }
    let untrack = json!({"type": "presence", "event": "untrack"});
    let r = clients[1].push(Some(&joins[1]), "realtime:lobby", "presence", &untrack).await;
    clients[1].expect_reply(&r, T).await;
    for j in 0..3 {
        presence_until(&mut clients[j], &mut models[j], T, "untrack", |m| m.keys() == keys(&[0, 2])).await;
    }
    for model in &models {
        assert_eq!(model, &models[0]);
    }
}
