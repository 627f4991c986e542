//! Peer links under a node that stops reading (SIGSTOP): its kernel still takes and acknowledges TCP
//! data, so only the links' own acknowledgements show that nothing makes progress. The failure
//! detector is told to wait a minute before declaring anyone down, so membership keeps calling the
//! paused node alive throughout (as it does for a one-way packet loss, which indirect probes route
//! around).

use std::time::{Duration, Instant};

use realtime_proto::Vsn;
use serde_json::{json, Value};

use crate::common::*;

/// Node `of`'s data link to `to`, as `/cluster` on `of` shows it.
async fn data_link(cluster: &Cluster, of: usize, to: &str) -> Value {
    let view = cluster.view(of).await;
    view["links"]
        .as_array()
        .and_then(|links| links.iter().find(|l| l["node"] == to && l["lane"] == "data"))
        .cloned()
        .unwrap_or(Value::Null)
}

async fn metrics(cluster: &Cluster, i: usize) -> String {
    let node = cluster.node(i);
    let url = format!("http://{}:{}/metrics", node.ip, node.port);
    reqwest::get(url).await.expect("metrics").text().await.expect("metrics body")
}

/// A sample's value in a Prometheus text body (0 when absent).
fn sample(body: &str, name: &str) -> f64 {
    body.lines()
        .find(|line| line.split_whitespace().next() == Some(name))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The `seq`s of broadcast event `event` that reach `c`, until none has come for `quiet`.
async fn seqs_until_quiet(c: &mut Client, event: &str, quiet: Duration) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut deadline = Instant::now() + quiet;
    while let Some(frame) = c.recv(deadline.saturating_duration_since(Instant::now())).await {
        if let Frame::Text(v, _) = frame {
            if v["event"] == "broadcast" && v["payload"]["event"] == event {
                seqs.push(v["payload"]["payload"]["seq"].as_u64().unwrap_or(u64::MAX));
                deadline = Instant::now() + quiet;
            }
        }
    }
    seqs
}

/// Broadcast `n` with `seq`, from a member of `order`.
async fn publish(c: &mut Client, jr: &str, seq: u64) {
    let payload = json!({"type": "broadcast", "event": "n", "payload": {"seq": seq}});
    c.push(Some(jr), "realtime:order", "broadcast", &payload).await;
}

#[tokio::test]
async fn t30_a_paused_peer_stalls_the_links_to_it_and_order_holds_after() {
    let cluster =
        Cluster::start(241, 3, &["--cluster-suspect-ms", "60000", "--max-events-per-second", "10000"]).await;
    let mut publisher = cluster.client(0, Vsn::V1).await;
    let jr = join(&mut publisher, "order", "publisher").await;
    let mut receiver = cluster.client(2, Vsn::V1).await;
    join(&mut receiver, "order", "receiver").await;
    let mut seq = 0u64;
    // The path works before the pause.
    publish(&mut publisher, &jr, seq).await;
    seq += 1;
    assert_eq!(seqs_until_quiet(&mut receiver, "n", Duration::from_secs(2)).await, vec![0]);

    cluster.signal(2, "-STOP");
    let paused = Instant::now();
    let mut stalled_after = None;
    let mut most_unacked = (0u64, 0u64);
    let mut looked = Instant::now();
    while paused.elapsed() < Duration::from_secs(9) {
        publish(&mut publisher, &jr, seq).await;
        seq += 1;
        if looked.elapsed() >= Duration::from_millis(250) {
            looked = Instant::now();
            let link = data_link(&cluster, 0, "node-2").await;
            let unacked = (
                link["unacked_bytes"].as_u64().unwrap_or(0),
                link["oldest_unacked_ms"].as_u64().unwrap_or(0),
            );
            most_unacked = (most_unacked.0.max(unacked.0), most_unacked.1.max(unacked.1));
            if link["stalled"] == true && stalled_after.is_none() {
                stalled_after = Some(paused.elapsed());
                println!("node 0's link to paused node 2 stalled after {:?}: {link}", paused.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stalled_after = stalled_after.expect("the link to the paused node never stalled");
    assert!(stalled_after >= Duration::from_millis(4_500), "stalled before the bound: {stalled_after:?}");
    println!("most unacknowledged before the stall: {} bytes, oldest {} ms", most_unacked.0, most_unacked.1);
    assert!(most_unacked.0 > 0 && most_unacked.1 >= 1_000, "the lag showed: {most_unacked:?}");
    let view = cluster.view(0).await;
    let members = view["members"].as_array().cloned().unwrap_or_default();
    assert!(
        members.iter().any(|m| m["node"] == "node-2" && m["state"] != "down"),
        "membership still holds node 2 alive: {members:?}"
    );
    let body = metrics(&cluster, 0).await;
    assert!(sample(&body, "realtime_cluster_link_stalls_total") >= 1.0, "{body}");
    assert_eq!(sample(&body, "realtime_cluster_peers_unreachable"), 1.0, "{body}");

    cluster.signal(2, "-CONT");
    let resumed = Instant::now();
    let mut recovered = None;
    while resumed.elapsed() < Duration::from_secs(4) {
        publish(&mut publisher, &jr, seq).await;
        seq += 1;
        if recovered.is_none() && data_link(&cluster, 0, "node-2").await["stalled"] == false {
            recovered = Some(resumed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered = recovered.expect("the link to node 2 did not make progress again");
    println!("node 0's link to node 2 made progress again {recovered:?} after SIGCONT");
    let last = seq - 1;
    let got = seqs_until_quiet(&mut receiver, "n", Duration::from_secs(2)).await;
    println!("node 2's subscriber got {} of {} broadcasts sent during and after the pause", got.len(), last);
    assert!(got.windows(2).all(|w| w[0] < w[1]), "an older broadcast after a newer one: {got:?}");
    assert_eq!(got.last().copied(), Some(last), "the last broadcast arrived: {got:?}");
    let log = std::fs::read_to_string(&cluster.node(0).log).expect("node 0's log");
    let stalls = log.lines().filter(|l| l.contains("peer link stalled") && l.contains("node-2")).count();
    assert!(stalls >= 1, "the stall was logged");
    assert!(log.contains("peer link makes progress again"), "the recovery was logged");
    let view = cluster.view(2).await;
    println!(
        "node 2 dropped {} stale frames and closed {} superseded connections",
        view["stale_frames_dropped"], view["superseded_connections"]
    );
}
