//! A CDC leader that loses PostgreSQL hands over to a node that reaches it, and a node that cannot
//! reach PostgreSQL does not take leadership.
//!
//! Every node reaches the database through its own `scripts/freeze-proxy.py` (whichever node raft
//! elects, its path can be cut). SIGUSR1 freezes a proxy: its connections stay open and say nothing,
//! as when the network path is cut (nothing is refused, so only an unanswered probe notices).

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use realtime_proto::Vsn;
use serde_json::{json, Value};

use super::cluster::{CdcCluster, SCHEMA};
use crate::common::*;

/// Bound of every wait for something the cluster must do after a fault.
const WAIT: Duration = Duration::from_secs(30);

/// The handover bound the tests run with (the default).
const HANDOVER_MS: &str = "1000";

/// `scripts/freeze-proxy.py` on a free loopback port, forwarding to the test database's port.
struct Proxy {
    child: Child,
    port: u16,
}

impl Proxy {
    fn start(db_url: &str) -> Proxy {
        let target = db_port(db_url);
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/freeze-proxy.py");
        let child = Command::new("python3")
            .arg(script)
            .args([port.to_string(), target.to_string()])
            .spawn()
            .expect("python3 scripts/freeze-proxy.py");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the freeze proxy did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Proxy { child, port }
    }

    /// `db_url` through this proxy.
    fn url(&self, db_url: &str) -> String {
        db_url.replacen(&format!(":{}/", db_port(db_url)), &format!(":{}/", self.port), 1)
    }

    fn signal(&self, signal: &str) {
        let status =
            Command::new("kill").args([signal, &self.child.id().to_string()]).status().expect("kill");
        assert!(status.success(), "kill {signal} on the proxy");
    }

    fn freeze(&self) {
        self.signal("-USR1");
    }

    fn thaw(&self) {
        self.signal("-USR2");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn db_port(url: &str) -> u16 {
    let after_host = url.rsplit_once('@').map_or(url, |(_, rest)| rest);
    let (host_port, _) = after_host.split_once('/').expect("a database URL with a path");
    host_port.rsplit_once(':').expect("a database URL with a port").1.parse().expect("port")
}

/// A cluster whose every node reaches the database through its own proxy.
fn cluster(db: &Db, base: u8) -> (CdcCluster, Vec<Proxy>) {
    let proxies: Vec<Proxy> = (0..3).map(|_| Proxy::start(&db.url)).collect();
    let urls = proxies.iter().map(|p| Some(p.url(&db.url))).collect();
    let extra = ["--cdc-handover-ms", HANDOVER_MS, "--replication-timeout-ms", "1500"];
    (CdcCluster::start_urls(db, base, &extra, urls), proxies)
}

/// `/cluster` of node `i` once `until` holds for it (at most [`WAIT`]).
async fn view_until(cluster: &CdcCluster, i: usize, what: &str, until: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let view = cluster.view(i).await;
        if until(&view) {
            return view;
        }
        assert!(Instant::now() < deadline, "node {i}: never {what} within {WAIT:?}: {view}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn named(view: &Value, i: usize) -> bool {
    view["leader"] == format!("node-{i}")
}

/// Reads `todos` inserts on `topic` until row `last` arrived; system messages are skipped. Returns
/// each row's id with when it arrived.
async fn rows_until(c: &mut Client, topic: &str, last: u64) -> Vec<(u64, Instant)> {
    let deadline = Instant::now() + WAIT;
    let mut got: Vec<(u64, Instant)> = Vec::new();
    while got.last().map(|(id, _)| *id) != Some(last) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(frame) = c.recv(left).await else {
            panic!(
                "{}: row {last} not there within {WAIT:?}; {} rows, last {:?}",
                c.vsn,
                got.len(),
                got.last()
            );
        };
        let Some(v) = frame.value() else { panic!("{}: socket closed", c.vsn) };
        if v["topic"] != topic || v["event"] != "postgres_changes" {
            continue;
        }
        let change = parse_change(v, v.to_string(), topic);
        got.push((change.key("id").as_u64().expect("id"), Instant::now()));
    }
    got
}

/// Every committed row sent after `since` arrived, and nothing arrived twice or out of order.
fn exactly_once(node: usize, got: &[(u64, Instant)], committed: &[(u64, Instant)], since: Instant) {
    let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    let disorder: Vec<_> = ids.windows(2).filter(|w| w[0] >= w[1]).collect();
    assert!(disorder.is_empty(), "node {node}: rows repeated or out of order: {disorder:?}");
    let missing: Vec<u64> = committed
        .iter()
        .filter(|(id, sent)| *sent > since && ids.binary_search(id).is_err())
        .map(|(id, _)| *id)
        .collect();
    assert!(missing.is_empty(), "node {node}: committed rows never delivered: {missing:?}");
}

#[tokio::test]
async fn t144_a_leader_that_loses_postgresql_hands_cdc_over_and_nothing_is_lost() {
    let db = Db::new(SCHEMA).await;
    let (cluster, proxies) = cluster(&db, 221);
    let leader = cluster.leader(WAIT).await;
    let old = view_until(&cluster, leader, "is_me", |v| v["raft"]["is_me"] == true).await;
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let entries = json!([{"event": "INSERT", "schema": "public", "table": "todos"}]);
    let mut subscribers = Vec::new();
    for &i in &followers {
        let mut c = cluster.client(&db, i, Vsn::V1).await;
        let (t, s) = topic("handover");
        c.subscribe(&t, &s, &entries, None).await;
        subscribers.push((i, c, t, Instant::now()));
    }
    let inserter = Inserter::start(&db.url, "todos");
    tokio::time::sleep(Duration::from_millis(1000)).await;

    proxies[leader].freeze();
    let cut = Instant::now();
    let unreachable =
        view_until(&cluster, leader, "without the database", |v| v["database"]["reachable"] == false).await;
    let noticed = cut.elapsed();
    assert_eq!(unreachable["raft"]["can_lead"], false, "{unreachable}");
    let view = view_until(&cluster, followers[0], "naming a new leader", |v| {
        v["leader"].as_str().is_some_and(|l| l != format!("node-{leader}"))
    })
    .await;
    let next: usize =
        view["leader"].as_str().expect("leader").trim_start_matches("node-").parse().expect("node-<i>");
    let new = view_until(&cluster, next, "running CDC", |v| v["raft"]["is_me"] == true).await;
    let moved = cut.elapsed();
    assert!(followers.contains(&next), "the node without the database leads again: {new}");
    assert!(new["raft"]["term"].as_u64() > old["raft"]["term"].as_u64(), "a new term: {old} → {new}");
    // The node that cut from the database no longer claims anything, and does not campaign; it
    // learns the new owner's claim when raft's log reaches it (after it names the leader).
    view_until(&cluster, leader, "deposed", |v| {
        v["raft"]["is_me"] == false
            && named(v, next)
            && v["raft"]["campaign"] == false
            && v["raft"]["cdc_owner"] == format!("node-{next}")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let committed = inserter.stop().await;
    let last = committed.last().expect("rows were inserted").0;
    let mut resumed = Vec::new();
    for (i, c, t, subscribed) in &mut subscribers {
        let got = rows_until(c, t, last).await;
        exactly_once(*i, &got, &committed, *subscribed);
        // When the first row committed after the cut arrived: CDC resumed.
        let first_after = committed.iter().find(|(_, sent)| *sent > cut).expect("rows after the cut").0;
        let at = got.iter().find(|(id, _)| *id == first_after).expect("delivered").1;
        resumed.push(at.duration_since(cut));
        println!(
            "node {i}: {} rows, none lost, none repeated; rows resumed {:?} after the cut",
            got.len(),
            at - cut
        );
    }
    println!(
        "leader node-{leader} cut from PostgreSQL: noticed after {noticed:?}, node-{next} leads and runs CDC \
         after {moved:?}, rows flow again after {resumed:?}"
    );
    proxies[leader].thaw();
    let back = view_until(&cluster, leader, "with the database again", |v| {
        v["database"]["reachable"] == true && v["raft"]["can_lead"] == true
    })
    .await;
    assert!(
        named(&back, next) && back["raft"]["term"] == new["raft"]["term"],
        "no leader change on return: {back}"
    );
}

#[tokio::test]
async fn t145_a_node_that_cannot_reach_postgresql_does_not_take_over_from_a_killed_leader() {
    let db = Db::new(SCHEMA).await;
    let (mut cluster, proxies) = cluster(&db, 224);
    let leader = cluster.leader(WAIT).await;
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (cut_off, able) = (followers[0], followers[1]);
    proxies[cut_off].freeze();
    // The probe's answer reaches raft's status a moment after `/cluster` shows it: wait for both.
    view_until(&cluster, cut_off, "out of the election", |v| {
        v["database"]["reachable"] == false
            && v["raft"]["campaign"] == false
            && v["raft"]["can_lead"] == false
    })
    .await;
    let entries = json!([{"event": "INSERT", "schema": "public", "table": "todos"}]);
    let mut c = cluster.client(&db, able, Vsn::V1).await;
    let (t, s) = topic("no-takeover");
    c.subscribe(&t, &s, &entries, None).await;
    let subscribed = Instant::now();
    let inserter = Inserter::start(&db.url, "todos");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let killed = Instant::now();
    cluster.kill(leader);
    let new = view_until(&cluster, able, "leading", |v| v["raft"]["is_me"] == true).await;
    println!("leader node-{leader} killed; node-{able} runs CDC after {:?}", killed.elapsed());
    let other = cluster.view(cut_off).await;
    assert!(named(&other, able) && other["raft"]["is_me"] == false, "{other}");
    assert_eq!(other["raft"]["term"], new["raft"]["term"], "{other} / {new}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let committed = inserter.stop().await;
    let got = rows_until(&mut c, &t, committed.last().expect("rows").0).await;
    exactly_once(able, &got, &committed, subscribed);
    // The node without the database never led: its log has no election won.
    proxies[cut_off].thaw();
}
