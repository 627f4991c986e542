//! Postgres Changes in a cluster: three node processes on loopback (127.0.0.x) on one database; only
//! the raft leader consumes, every node delivers to its own subscribers (Postgres Changes and broadcasts
//! from the database), and killing the leader loses and repeats nothing for the subscribers of the
//! nodes that stay up.

use std::time::{Duration, Instant};

use realtime_proto::Vsn;
use serde_json::{json, Value};

use crate::common::*;
use crate::support;
use crate::support::process::{self, KillOnDrop};

/// The table every cluster test follows (also `handover`'s).
pub(crate) const SCHEMA: &str = r#"
create table todos (id int8 primary key, title text);
grant select on todos to authenticated;
alter publication supabase_realtime add table todos;
"#;

pub(crate) struct Node {
    pub(crate) port: u16,
    pub(crate) ip: String,
    proc: KillOnDrop,
}

/// Three nodes on 127.0.0.`base`.. with their own data directories, sharing the test's database.
pub(crate) struct CdcCluster {
    base: u8,
    nodes: Vec<Option<Node>>,
    /// Flags every node gets besides the cluster's and the database's.
    extra: Vec<String>,
    /// Per node: the database URL it uses instead of the test's (e.g. through a proxy).
    urls: Vec<Option<String>>,
}

impl CdcCluster {
    pub(crate) fn start(db: &Db, base: u8) -> CdcCluster {
        CdcCluster::start_with(db, base, &[])
    }

    pub(crate) fn start_with(db: &Db, base: u8, extra: &[&str]) -> CdcCluster {
        CdcCluster::start_urls(db, base, extra, vec![None, None, None])
    }

    /// As [`CdcCluster::start_with`], node `i` using `urls[i]` (when set) as its database URL.
    pub(crate) fn start_urls(db: &Db, base: u8, extra: &[&str], urls: Vec<Option<String>>) -> CdcCluster {
        let extra = extra.iter().map(|a| a.to_string()).collect();
        let mut cluster = CdcCluster { base, nodes: (0..3).map(|_| None).collect(), extra, urls };
        for i in 0..3 {
            cluster.start_node(db, i);
        }
        cluster
    }

    pub(crate) fn start_node(&mut self, db: &Db, i: usize) {
        let args = support::cluster::node_args(self.base, i, 3, &db.data_dir);
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        let url = self.urls.get(i).cloned().flatten().unwrap_or_else(|| db.url.clone());
        args.extend(["--database-url", &url, "--slot", &db.slot]);
        args.extend(self.extra.iter().map(String::as_str));
        let name = format!("node-{i}");
        let log = std::env::temp_dir()
            .join(format!("realtime-cdc-cluster-{}-{name}.log", uuid::Uuid::new_v4().simple()));
        let (proc, lines) = process::spawn(&db.secret, &args, &[("RUST_LOG", "info")], log, 60);
        let port = process::wait_listening(&lines, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{name} did not print its listening line: {e}"));
        self.nodes[i] = Some(Node { port, ip: support::cluster::ip(self.base, i), proc });
    }

    pub(crate) fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().unwrap_or_else(|| panic!("node {i} is not running"))
    }

    pub(crate) async fn view(&self, i: usize) -> Value {
        support::cluster::view(&self.node(i).ip, self.node(i).port).await
    }

    /// The index of the node every running node names as leader, once they agree.
    pub(crate) async fn leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let mut named = Vec::new();
            for i in 0..3 {
                if self.nodes[i].is_some() {
                    named.push(self.view(i).await["leader"].as_str().map(str::to_owned));
                }
            }
            if let Some(Some(leader)) = named.first() {
                if named.iter().all(|n| n.as_deref() == Some(leader.as_str())) {
                    if let Some(i) = leader.strip_prefix("node-").and_then(|n| n.parse::<usize>().ok()) {
                        if self.nodes[i].is_some() {
                            return i;
                        }
                    }
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader within {timeout:?}: {named:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            node.proc.kill();
        }
    }

    /// SIGTERM (the drain), and wait for the process to exit.
    pub(crate) fn terminate(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            let _ = node.proc.sigterm();
            assert!(
                node.proc.wait_exit(Duration::from_secs(30)).is_some(),
                "node {i} did not exit on SIGTERM"
            );
        }
    }

    pub(crate) async fn client(&self, db: &Db, i: usize, vsn: Vsn) -> Client {
        let node = self.node(i);
        let token = db.token("authenticated", &new_uuid());
        Client::connect(
            &format!("ws://{}:{}/socket/websocket?apikey={token}&vsn={vsn}", node.ip, node.port),
            vsn,
        )
        .await
    }
}

/// Reads `todos` inserts until row `last`, in commit order, once each; returns the ids.
async fn ids_until(c: &mut Client, topic: &str, last: u64, timeout: Duration) -> Vec<u64> {
    let mut got: Vec<u64> = Vec::new();
    let deadline = Instant::now() + timeout;
    while got.last() != Some(&last) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{}: stream did not reach row {last}; got {} rows, last {:?}",
            c.vsn,
            got.len(),
            got.last()
        );
        let ch = c.changes(topic, 1, left).await;
        got.push(ch[0].key("id").as_u64().expect("id"));
    }
    let repeated_or_reordered: Vec<_> = got.windows(2).filter(|w| w[0] >= w[1]).collect();
    assert!(
        repeated_or_reordered.is_empty(),
        "{}: rows out of order or repeated: {repeated_or_reordered:?}",
        c.vsn
    );
    got
}

#[tokio::test]
async fn t80_changes_reach_subscribers_on_every_node_once() {
    let db = Db::new(SCHEMA).await;
    let cluster = CdcCluster::start(&db, 71);
    let leader = cluster.leader(Duration::from_secs(20)).await;
    println!("leader: node-{leader}");
    let entries = json!([{"event": "INSERT", "schema": "public", "table": "todos"}]);
    let mut subscribers = Vec::new();
    for i in 0..3 {
        let vsn = if i == 1 { Vsn::V2 } else { Vsn::V1 };
        let mut c = cluster.client(&db, i, vsn).await;
        let (t, s) = topic("cluster");
        c.subscribe(&t, &s, &entries, None).await;
        subscribers.push((c, t));
    }
    for n in 1..=20 {
        db.exec(&format!("insert into todos values ({n}, 'row {n}')")).await;
    }
    for (i, (c, t)) in subscribers.iter_mut().enumerate() {
        let got = ids_until(c, t, 20, T).await;
        assert_eq!(got, (1..=20).collect::<Vec<u64>>(), "node {i}");
    }
}

#[tokio::test]
async fn t81_killing_the_leader_loses_and_repeats_nothing() {
    let db = Db::new(SCHEMA).await;
    let mut cluster = CdcCluster::start(&db, 74);
    cluster.leader(Duration::from_secs(20)).await;
    let entries = json!([{"event": "INSERT", "schema": "public", "table": "todos"}]);
    // One subscriber per node; a killed node's subscriber is dropped with it.
    let mut subscribers: Vec<Option<(Client, String, Instant)>> = Vec::new();
    for i in 0..3 {
        let mut c = cluster.client(&db, i, Vsn::V1).await;
        let (t, s) = topic("failover");
        c.subscribe(&t, &s, &entries, None).await;
        subscribers.push(Some((c, t, Instant::now())));
    }
    let inserter = Inserter::start(&db.url, "todos");
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let leader = cluster.leader(Duration::from_secs(20)).await;
        let killed = Instant::now();
        cluster.kill(leader);
        subscribers[leader] = None;
        let next = cluster.leader(Duration::from_secs(20)).await;
        println!(
            "round {round}: killed leader node-{leader}; node-{next} leads after {:?}",
            killed.elapsed()
        );
        cluster.start_node(&db, leader);
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let committed = inserter.stop().await;
    let last = committed.last().expect("rows were inserted").0;
    let mut checked = 0;
    for (i, sub) in subscribers.iter_mut().enumerate() {
        let Some((c, t, subscribed_at)) = sub else { continue };
        let got = ids_until(c, t, last, Duration::from_secs(30)).await;
        let must: Vec<u64> = committed.iter().filter(|(_, at)| at > subscribed_at).map(|(n, _)| *n).collect();
        let missing: Vec<u64> = must.iter().filter(|n| got.binary_search(n).is_err()).copied().collect();
        assert!(missing.is_empty(), "node {i}: committed rows never delivered: {missing:?}");
        println!("node {i}: {} rows, none lost, none repeated, across two leader kills", got.len());
        checked += 1;
    }
    assert!(checked >= 1, "at least one node was never killed");
}

#[tokio::test]
async fn t82_a_paused_leader_is_fenced_and_nobody_loses_anything() {
    let db = Db::new(SCHEMA).await;
    let cluster = CdcCluster::start(&db, 77);
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let entries = json!([{"event": "INSERT", "schema": "public", "table": "todos"}]);
    let mut subscribers = Vec::new();
    for i in 0..3 {
        let mut c = cluster.client(&db, i, Vsn::V1).await;
        let (t, s) = topic("paused");
        c.subscribe(&t, &s, &entries, None).await;
        subscribers.push((c, t, Instant::now()));
    }
    let inserter = Inserter::start(&db.url, "todos");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Paused, the leader keeps its replication connection open: the next leader must end it.
    let pid = cluster.node(leader).proc.pid().to_string();
    let paused = Instant::now();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().is_ok_and(|s| s.success()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let next = loop {
        let mut named = None;
        for i in (0..3).filter(|i| *i != leader) {
            if let Some(name) = cluster.view(i).await["leader"].as_str() {
                named =
                    name.strip_prefix("node-").and_then(|n| n.parse::<usize>().ok()).filter(|n| *n != leader);
            }
        }
        if let Some(next) = named {
            break next;
        }
        assert!(Instant::now() < deadline, "no new leader while node-{leader} is paused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("node-{leader} paused; node-{next} leads after {:?}", paused.elapsed());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().is_ok_and(|s| s.success()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let committed = inserter.stop().await;
    let last = committed.last().expect("rows were inserted").0;
    for (i, (c, t, subscribed_at)) in subscribers.iter_mut().enumerate() {
        // In commit order and never twice, on every node (the paused one included: its own stale
        // stream and the new leader's overlap, and its hub keeps only newer positions).
        let got = ids_until(c, t, last, Duration::from_secs(30)).await;
        let must: Vec<u64> = committed.iter().filter(|(_, at)| at > subscribed_at).map(|(n, _)| *n).collect();
        let missing: Vec<u64> = must.iter().filter(|n| got.binary_search(n).is_err()).copied().collect();
        // The paused node too: its position held the slot back, and the stream was replayed for it.
        assert!(missing.is_empty(), "node {i}: committed rows never delivered: {missing:?}");
        let paused = if i == leader { " (the paused one)" } else { "" };
        println!("node {i}{paused}: {} rows, none lost, none repeated", got.len());
    }
}

#[tokio::test]
async fn t83_a_drained_leader_hands_cdc_over_and_nothing_is_lost() {
    let db = Db::new(SCHEMA).await;
    let mut cluster = CdcCluster::start(&db, 84);
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let entries = json!([{"event": "INSERT", "schema": "public", "table": "todos"}]);
    let mut subscribers = Vec::new();
    for i in (0..3).filter(|i| *i != leader) {
        let mut c = cluster.client(&db, i, Vsn::V1).await;
        let (t, s) = topic("drain");
        c.subscribe(&t, &s, &entries, None).await;
        subscribers.push((i, c, t, Instant::now()));
    }
    let inserter = Inserter::start(&db.url, "todos");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let drained = Instant::now();
    cluster.terminate(leader);
    let next = cluster.leader(Duration::from_secs(20)).await;
    println!("node-{leader} drained (SIGTERM, exited after {:?}); node-{next} leads", drained.elapsed());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let committed = inserter.stop().await;
    let last = committed.last().expect("rows were inserted").0;
    for (i, c, t, subscribed_at) in subscribers.iter_mut() {
        let got = ids_until(c, t, last, Duration::from_secs(30)).await;
        let must: Vec<u64> = committed.iter().filter(|(_, at)| at > subscribed_at).map(|(n, _)| *n).collect();
        let missing: Vec<u64> = must.iter().filter(|n| got.binary_search(n).is_err()).copied().collect();
        assert!(missing.is_empty(), "node {i}: committed rows never delivered: {missing:?}");
        println!("node {i}: {} rows, none lost, none repeated, across the leader's drain", got.len());
    }
}

/// Broadcast from the database in a cluster: the leader streams `realtime.messages` like any change,
/// and each node delivers its own members' copy, once and in send order.
#[tokio::test]
async fn t84_database_broadcasts_reach_members_on_every_node_once() {
    let db =
        Db::migrated("create policy read_all on realtime.messages for select to authenticated using (true);")
            .await;
    let cluster = CdcCluster::start(&db, 87);
    cluster.leader(Duration::from_secs(20)).await;
    let (t, sub) = topic("cluster-db");
    let mut members = Vec::new();
    for i in 0..3 {
        let vsn = if i == 1 { Vsn::V2 } else { Vsn::V1 };
        let mut c = cluster.client(&db, i, vsn).await;
        let r = c.send_join(&t, &json!({"config": {"private": true}})).await;
        assert_eq!(c.expect_reply(&r, T).await["payload"]["status"], "ok", "node {i}");
        members.push(c);
    }
    // Live everywhere: probes until each member has one, then drop the rest of them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut live = [false; 3];
    while !live.iter().all(|l| *l) {
        assert!(Instant::now() < deadline, "database broadcast not live on every node: {live:?}");
        db.exec(&format!("select realtime.send('{{\"probe\": true}}', 'probe', '{sub}')")).await;
        for (i, c) in members.iter_mut().enumerate() {
            for f in c.drain(Duration::from_millis(100)).await {
                live[i] |= f.value().is_some_and(|v| v["payload"]["event"] == "probe");
            }
        }
    }
    let mut batch = String::from("begin;");
    for n in 0..20 {
        batch.push_str(&format!("select realtime.send('{{\"n\": {n}}}', 'm', '{sub}');"));
    }
    batch.push_str("commit;");
    db.exec(&batch).await;
    for (i, c) in members.iter_mut().enumerate() {
        let mut ns = Vec::new();
        let deadline = Instant::now() + T;
        while ns.len() < 20 {
            let left = deadline.saturating_duration_since(Instant::now());
            let f = c.recv(left).await.unwrap_or_else(|| panic!("node {i}: got only {ns:?}"));
            if let Some(v) = f.value().filter(|v| v["payload"]["event"] == "m") {
                ns.push(v["payload"]["payload"]["n"].as_i64().expect("n"));
            }
        }
        assert_eq!(ns, (0..20).collect::<Vec<_>>(), "node {i}: once each, in send order");
        for f in c.drain(Duration::from_millis(300)).await {
            assert!(!f.value().is_some_and(|v| v["payload"]["event"] == "m"), "node {i}: a repeat: {f:?}");
        }
    }
}

/// Resumable delivery across nodes: a member cut off from the CDC leader, which then dies, rejoins
/// on a third node with its last position and gets exactly what it missed (sent from a socket on
/// another node, by REST and by SQL), in order, then live.
#[tokio::test]
async fn t85_a_member_resumes_on_another_node_while_leadership_moves() {
    let db = Db::migrated("").await;
    let mut cluster = CdcCluster::start_with(&db, 64, &["--resumable-topics=room:*"]);
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let (first, sending, resuming) = (leader, (leader + 1) % 3, (leader + 2) % 3);
    let sub = format!("room:{}", new_uuid());
    let t = format!("realtime:{sub}");
    let join = |position: Option<&str>| json!({"config": {"broadcast": {"resume": {"position": position}}}});
    let mut a = cluster.client(&db, first, Vsn::V2).await;
    assert_eq!(a.join_with(&t, &join(None)).await.1["status"], "ok");
    let mut s = cluster.client(&db, sending, Vsn::V1).await;
    let (s_ref, reply) = s.join_with(&t, &json!({"config": {"broadcast": {"ack": true}}})).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    // Probes until the member on the leader gets one.
    let deadline = Instant::now() + Duration::from_secs(20);
    'live: loop {
        assert!(Instant::now() < deadline, "resumable broadcasts never went live");
        let r = s
            .push(
                Some(&s_ref),
                &t,
                "broadcast",
                &json!({"type": "broadcast", "event": "probe", "payload": {}}),
            )
            .await;
        let _ = s.expect_reply(&r, T).await;
        for f in a.drain(Duration::from_millis(300)).await {
            if f.value().is_some_and(|v| v["payload"]["event"] == "probe") {
                break 'live;
            }
        }
    }
    a.drain(Duration::from_millis(300)).await;
    for n in 1..=3 {
        s.broadcast_acked(&s_ref, &t, n).await;
    }
    let got = a.broadcasts(&t, 3).await;
    assert_eq!(
        got.iter().map(|p| p["payload"]["n"].clone()).collect::<Vec<_>>(),
        vec![json!(1), json!(2), json!(3)]
    );
    let last = got[2]["meta"]["position"].as_str().expect("position").to_owned();
    drop(a);
    cluster.kill(first); // the member's node was the CDC leader

    s.broadcast_acked(&s_ref, &t, 4).await;
    s.broadcast_acked(&s_ref, &t, 5).await;
    let node = cluster.node(resuming);
    let rest = reqwest::Client::new()
        .post(format!("http://{}:{}/api/broadcast", node.ip, node.port))
        .bearer_auth(db.token("service_role", &new_uuid()))
        .json(&json!({"messages": [{"topic": sub, "event": "m", "payload": {"n": 6}}]}))
        .send()
        .await
        .expect("REST broadcast");
    assert_eq!(rest.status(), 202);
    db.exec(&format!("select realtime.send('{{\"n\": 7}}', 'm', '{sub}', false)")).await;

    let mut a = cluster.client(&db, resuming, Vsn::V1).await;
    assert_eq!(a.join_with(&t, &join(Some(&last))).await.1["status"], "ok");
    let got = a.broadcasts(&t, 4).await;
    let ns: Vec<Value> = got.iter().map(|p| p["payload"]["n"].clone()).collect();
    assert_eq!(
        ns,
        vec![json!(4), json!(5), json!(6), json!(7)],
        "exactly what was missed, in order: {got:?}"
    );
    s.broadcast_acked(&s_ref, &t, 8).await;
    assert_eq!(a.broadcasts(&t, 1).await[0]["payload"]["n"], 8);
    a.expect_silence(Duration::from_millis(500)).await;
}

/// What a subscriber on a node that was out longer than the hold saw.
#[derive(Debug, Default)]
struct Outcome {
    ids: Vec<u64>,
    /// The `system` error's payload, if one came.
    told: Option<Value>,
    closed: bool,
    /// The socket itself ended (with this close code, if any).
    disconnected: Option<Option<u16>>,
}

/// Reads the channel until row `last` arrived, or a `system` error and `phx_close` did.
async fn rows_or_told(c: &mut Client, topic: &str, last: u64, timeout: Duration) -> Outcome {
    let mut out = Outcome::default();
    let deadline = Instant::now() + timeout;
    while out.ids.last() != Some(&last) && !out.closed && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(frame) = c.recv(left).await else { break };
        if let Frame::Close(code) = frame {
            out.disconnected = Some(code);
            break;
        }
        let Some(v) = frame.value().filter(|v| v["topic"] == topic) else { continue };
        match v["event"].as_str() {
            Some("postgres_changes") => {
                let raw = serde_json::to_string(v).unwrap_or_default();
                out.ids.push(parse_change(v, raw, topic).key("id").as_u64().expect("id"));
            }
            Some("system") if v["payload"]["status"] == "error" => out.told = Some(v["payload"].clone()),
            Some("phx_close") => out.closed = true,
            _ => {}
        }
    }
    out
}

/// A follower paused (SIGSTOP) longer than the hold (2 s here) is behind the slot when it comes back:
/// its subscriber is told, by a `system` error for its `postgres_changes` naming the gap, and its
/// channel is closed; it is never left subscribed with rows silently missing. Subscribers on the
/// other nodes get every row.
#[tokio::test]
async fn t86_a_node_out_longer_than_the_hold_tells_its_subscribers() {
    let db = Db::new(SCHEMA).await;
    // A write timeout longer than the pause: the paused node's deadlines run out while it is
    // stopped, and it would close the socket as too slow before it could tell anything.
    let cluster = CdcCluster::start_with(&db, 211, &["--cdc-hold-ms", "2000", "--write-timeout-ms", "60000"]);
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let paused = (leader + 1) % 3;
    let entries = json!([{"event": "INSERT", "schema": "public", "table": "todos"}]);
    let mut subscribers = Vec::new();
    for i in 0..3 {
        let mut c = cluster.client(&db, i, Vsn::V1).await;
        let (t, s) = topic("hold");
        c.subscribe(&t, &s, &entries, None).await;
        subscribers.push((c, t, Instant::now()));
    }
    let inserter = Inserter::start(&db.url, "todos");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = cluster.node(paused).proc.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().is_ok_and(|s| s.success()));
    // Out for the failure detector (~2 s) and then the hold (2 s), with rows committed all along.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().is_ok_and(|s| s.success()));
    // Rows keep coming after it is back, so it learns what it missed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let committed = inserter.stop().await;
    let last = committed.last().expect("rows were inserted").0;
    // (It may have deposed the leader on its return: then its own hub learns the gap from its peers.)
    println!(
        "node-{paused} paused; node-{} leads after its return",
        cluster.leader(Duration::from_secs(20)).await
    );
    for (i, (c, t, subscribed_at)) in subscribers.iter_mut().enumerate() {
        let must: Vec<u64> = committed.iter().filter(|(_, at)| at > subscribed_at).map(|(n, _)| *n).collect();
        if i != paused {
            let got = ids_until(c, t, last, Duration::from_secs(30)).await;
            let missing: Vec<u64> = must.iter().filter(|n| got.binary_search(n).is_err()).copied().collect();
            assert!(missing.is_empty(), "node {i}: committed rows never delivered: {missing:?}");
            println!("node {i}: {} rows, none lost, none repeated", got.len());
            continue;
        }
        let seen = rows_or_told(c, t, last, Duration::from_secs(30)).await;
        assert_eq!(seen.disconnected, None, "node {i}: the socket ended: {seen:?}");
        assert!(seen.ids.windows(2).all(|w| w[0] < w[1]), "node {i}: rows out of order or repeated");
        let missing: Vec<u64> = must.iter().filter(|n| seen.ids.binary_search(n).is_err()).copied().collect();
        match &seen.told {
            None => {
                assert!(missing.is_empty(), "node {i}: {} rows silently missing: {missing:?}", missing.len());
                println!("node {i} (the paused one): every row, once, in order");
            }
            Some(told) => {
                assert_eq!(told["extension"], "postgres_changes", "{told}");
                let message = told["message"].as_str().unwrap_or_default();
                assert!(message.starts_with("PostgresChangesGap: "), "{told}");
                assert!(seen.closed, "node {i}: told of a gap but the channel was not closed");
                let gaps = support::raw::metric_sum(
                    &reqwest::get(format!("http://{}:{}/metrics", cluster.node(i).ip, cluster.node(i).port))
                        .await
                        .expect("metrics")
                        .text()
                        .await
                        .expect("metrics body"),
                    "realtime_cdc_gaps_total",
                );
                assert!(gaps.unwrap_or(0.0) >= 1.0, "node {i}: the gap was not counted");
                println!(
                    "node {i} (the paused one): {} rows, then told and closed ({} rows missed): {message}",
                    seen.ids.len(),
                    missing.len()
                );
            }
        }
    }
}

/// Where PostgreSQL holds the test's slot (its confirmed position), as a number.
async fn slot_position(db: &Db) -> u64 {
    let sql = format!(
        "select (confirmed_flush_lsn - '0/0'::pg_lsn)::int8 from pg_replication_slots where slot_name = '{}'",
        db.slot
    );
    db.json_rows(&sql).await.first().and_then(Value::as_u64).unwrap_or(0)
}

/// A follower whose links make no progress while the failure detector keeps it alive (paused, with a
/// minute's suspicion; a one-way packet loss looks the same to the links): the leader stops holding
/// the slot for it once its link stalled (5 s) and the hold passed, instead of for as long as the
/// loss lasts; back, its subscriber gets every row or is told the gap, never a silent loss.
#[tokio::test]
async fn t87_a_stalled_follower_holds_the_slot_only_for_the_hold() {
    let db = Db::new(SCHEMA).await;
    let cluster = CdcCluster::start_with(
        &db,
        244,
        &["--cdc-hold-ms", "2000", "--write-timeout-ms", "60000", "--cluster-suspect-ms", "60000"],
    );
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let paused = (leader + 1) % 3;
    let entries = json!([{"event": "INSERT", "schema": "public", "table": "todos"}]);
    let mut c = cluster.client(&db, paused, Vsn::V1).await;
    let (t, s) = topic("stall");
    c.subscribe(&t, &s, &entries, None).await;
    let subscribed_at = Instant::now();
    let inserter = Inserter::start(&db.url, "todos");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = cluster.node(paused).proc.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().is_ok_and(|s| s.success()));
    let stopped = Instant::now();
    // Before the stall bound: the paused node is alive and reachable as far as anyone knows, so the
    // slot waits at its position.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = slot_position(&db).await;
    // Stall bound (5 s) plus the hold (2 s) plus the leader's repeat: the slot moves on.
    let mut moved_after = None;
    while stopped.elapsed() < Duration::from_secs(14) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if moved_after.is_none() && slot_position(&db).await > held {
            moved_after = Some(stopped.elapsed());
        }
    }
    let view = support::cluster::view(&cluster.node(leader).ip, cluster.node(leader).port).await;
    let members = view["members"].as_array().cloned().unwrap_or_default();
    let paused_name = format!("node-{paused}");
    assert!(
        members.iter().any(|m| m["node"] == paused_name.as_str() && m["state"] != "down"),
        "membership still holds the paused node alive: {members:?}"
    );
    assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().is_ok_and(|s| s.success()));
    let moved_after = moved_after.expect("the slot stayed at the stalled follower's position");
    println!("the slot moved past the stalled follower {moved_after:?} after it stopped");
    assert!(moved_after >= Duration::from_secs(5), "moved before the stall bound: {moved_after:?}");
    // Rows keep coming after it is back, so it learns what it missed.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let committed = inserter.stop().await;
    let last = committed.last().expect("rows were inserted").0;
    let must: Vec<u64> = committed.iter().filter(|(_, at)| *at > subscribed_at).map(|(n, _)| *n).collect();
    let seen = rows_or_told(&mut c, &t, last, Duration::from_secs(30)).await;
    assert_eq!(seen.disconnected, None, "the socket ended: {seen:?}");
    assert!(seen.ids.windows(2).all(|w| w[0] < w[1]), "rows out of order or repeated");
    let missing: Vec<u64> = must.iter().filter(|n| seen.ids.binary_search(n).is_err()).copied().collect();
    match &seen.told {
        None => {
            assert!(missing.is_empty(), "{} rows silently missing: {missing:?}", missing.len());
            println!("the stalled follower: every row, once, in order (replayed)");
        }
        Some(told) => {
            let message = told["message"].as_str().unwrap_or_default();
            assert!(message.starts_with("PostgresChangesGap: "), "{told}");
            println!(
                "the stalled follower: {} rows, then told ({} missed): {message}",
                seen.ids.len(),
                missing.len()
            );
        }
    }
}
