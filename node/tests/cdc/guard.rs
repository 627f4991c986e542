//! What the CDC path does with changes it cannot trust: a change whose table the catalog no longer
//! resolves (a table dropped right after its change: PostgreSQL's catalog functions answer NULL), and
//! messages a peer ships that are forged (an unknown relation, a position past PostgreSQL's WAL, a
//! position that goes backwards, a sender that is not the raft leader, bytes that do not decode).
//! None may stop delivery, reach a subscriber or be recorded as the node's position; each forged one
//! is counted in `realtime_cdc_rejected_total{reason}`.
//!
//! The forged messages come from this test process over a node's cluster port, with the project's
//! own wire types, as an attacker (or a buggy node) on the peer network would send them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use realtime_cluster::secure::codec::PeerCodec;
use realtime_cluster::secure::handshake;
use realtime_cluster::wire::{self, Lane, PeerMessage};
use realtime_cluster::{NodeId, PeerId};
use realtime_node::cdc::shipping::{self, Outgoing};
use realtime_node::peer_message::NodeMessage;
use realtime_proto::postgres::change::{Cell, Change, ChangeKind, Transaction};
use realtime_proto::postgres::table::{ColumnMeta, TableMeta};
use realtime_proto::Vsn;
use serde_json::json;
use tokio_util::codec::FramedWrite;

use crate::cluster::CdcCluster;
use crate::common::*;
use crate::support;

const SCHEMA: &str = r#"
create table todos (id int8 primary key, title text);
grant select on todos to authenticated;
alter publication supabase_realtime add table todos;
"#;

/// Reads changes of `topic` until `todos` row `last`; returns the `todos` ids, in arrival order
/// (changes of other tables are skipped).
async fn todos_until(c: &mut Client, topic: &str, last: u64) -> Vec<u64> {
    let deadline = Instant::now() + T;
    let mut got = Vec::new();
    while got.last() != Some(&last) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "todos row {last} never arrived; got {got:?}");
        let change = c.changes(topic, 1, left).await.remove(0);
        if change.data["table"] == "todos" {
            got.push(change.key("id").as_u64().expect("id"));
        }
    }
    got
}

#[tokio::test]
async fn t90_a_change_to_a_dropped_table_does_not_stop_delivery() {
    let db = Db::new(SCHEMA).await;
    let server = db.server(&[]);
    let mut c = server.client(&db.token("authenticated", &new_uuid()), Vsn::V1).await;
    let (t, s) = topic("dropped");
    c.subscribe(&t, &s, &json!([{"event": "*", "schema": "public", "table": "*"}]), None).await;
    db.exec("insert into todos values (1, 'before')").await;
    assert_eq!(todos_until(&mut c, &t, 1).await, vec![1]);
    // By the time the node asks which columns the subscriber may see, the table is gone:
    // `has_column_privilege` answers NULL for its oid.
    db.exec(
        "begin; create table doomed (id int8 primary key, v text); \
         grant select on doomed to authenticated; \
         alter publication supabase_realtime add table doomed; \
         insert into doomed values (1, 'x'); drop table doomed; commit;",
    )
    .await;
    for n in 2..=6 {
        db.exec(&format!("insert into todos values ({n}, 'after')")).await;
    }
    assert_eq!(todos_until(&mut c, &t, 6).await, vec![2, 3, 4, 5, 6]);
    let ready = reqwest::get(format!("http://127.0.0.1:{}/readyz", server.port)).await.expect("readyz");
    assert_eq!(ready.status(), 200);
}

/// A connection to a node's cluster port that says it is `node`: a peer holding the cluster secret
/// (a buggy or compromised node), so what follows is checked by the CDC guard, not the handshake.
async fn fake_peer(ip: &str, node: &str) -> Forger {
    let mut stream =
        tokio::net::TcpStream::connect((ip, support::cluster::CLUSTER_PORT)).await.expect("connect");
    let keys = realtime_cluster::Keyring::parse(support::cluster::CLUSTER_SECRET).expect("keyring");
    let codec = handshake::initiate(&mut stream, Some(&keys), wire::MAX_FRAME_BYTES)
        .await
        .expect("the cluster secret is accepted");
    let from = PeerId {
        node: NodeId(node.into()),
        incarnation: 1,
        epoch: 0,
        addr: "127.0.0.1:9".parse().expect("addr"),
    };
    let mut forger = FramedWrite::new(stream, codec);
    send(&mut forger, &PeerMessage::Hello { from, lane: Lane::Data }).await;
    forger
}

type Forger = FramedWrite<tokio::net::TcpStream, PeerCodec>;

/// One frame, as the peer links write them (numbered by this process's link counter).
async fn send(forger: &mut Forger, message: &PeerMessage) {
    let frame = wire::sequenced(realtime_cluster::link::next_seq(), &wire::encode(message).expect("encode"));
    forger.send(frame).await.expect("write");
}

fn cdc_frame(message: &Outgoing<'_>) -> PeerMessage {
    node_message(shipping::encode(message).expect("encode"))
}

/// A shipment body as the leader wraps it for its peers.
fn node_message(body: Vec<u8>) -> PeerMessage {
    PeerMessage::Node { body: NodeMessage::CdcShipped { body }.encode().expect("encode") }
}

/// An insert into a table as the sender describes it.
fn insert(oid: u32, name: &str, id: &'static str, end_lsn: u64) -> Transaction {
    let column = |name: &str, typname: &str, primary_key| ColumnMeta {
        name: name.into(),
        typname: typname.into(),
        sql_type: typname.into(),
        primary_key,
    };
    let table = Arc::new(TableMeta {
        oid,
        schema: "public".into(),
        name: name.into(),
        columns: vec![column("id", "int8", true), column("title", "text", false)],
        rls: false,
    });
    Transaction {
        xid: 4242,
        end_lsn,
        commit_timestamp: "2026-12-07T12:00:00.000Z".into(),
        changes: vec![Change {
            kind: ChangeKind::Insert,
            table,
            new: Some(vec![
                Cell::Text(Bytes::from_static(id.as_bytes())),
                Cell::Text(Bytes::from_static(b"forged")),
            ]),
            old: None,
        }],
    }
}

/// `realtime_cdc_rejected_total{reason="<reason>"}` of the node at `ip:port`.
async fn rejected(ip: &str, port: u16, reason: &str) -> f64 {
    let body = reqwest::get(format!("http://{ip}:{port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let prefix = format!("realtime_cdc_rejected_total{{reason=\"{reason}\"}} ");
    body.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

/// PostgreSQL's WAL position, as an LSN number.
async fn wal(db: &Db) -> u64 {
    let row = db.pg.query_one("select (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8", &[]).await.expect("wal");
    u64::try_from(row.get::<_, i64>(0)).expect("positive")
}

#[tokio::test]
async fn t91_forged_shipments_are_rejected_counted_and_never_recorded() {
    let db = Db::new(SCHEMA).await;
    let mut cluster = CdcCluster::start(&db, 140);
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let entries = json!([{"event": "INSERT", "schema": "public", "table": "todos"}]);
    let mut c = cluster.client(&db, follower, Vsn::V1).await;
    let (t, s) = topic("forged");
    c.subscribe(&t, &s, &entries, None).await;
    db.exec("insert into todos values (1, 'real')").await;
    assert_eq!(todos_until(&mut c, &t, 1).await, vec![1]);
    let todos_oid: u32 = db.pg.query_one("select 'todos'::regclass::oid", &[]).await.expect("oid").get(0);

    let (ip, port) = (cluster.node(follower).ip.clone(), cluster.node(follower).port);
    let leader_name = format!("node-{leader}");
    let mut forger = fake_peer(&ip, &leader_name).await;
    // An unknown relation (this used to panic the node's CDC task), at a harmless position.
    let unknown = insert(4_000_000_000, "nowhere", "900", 1);
    send(&mut forger, &cdc_frame(&Outgoing::Transaction { prev: 0, txn: &unknown })).await;
    // A real table, but a position far past PostgreSQL's WAL (recorded, it would stop delivery for good).
    let far = insert(todos_oid, "todos", "901", u64::MAX / 2);
    send(&mut forger, &cdc_frame(&Outgoing::Transaction { prev: 0, txn: &far })).await;
    // A position that goes backwards in its stream.
    let backwards = insert(todos_oid, "todos", "902", 5);
    send(&mut forger, &cdc_frame(&Outgoing::Transaction { prev: 10, txn: &backwards })).await;
    // Bytes that are no CDC message.
    send(&mut forger, &node_message(vec![9, 9, 9])).await;
    // The same forged position from a node that is not the leader.
    let mut impostor = fake_peer(&ip, &format!("node-{other}")).await;
    send(&mut impostor, &cdc_frame(&Outgoing::Transaction { prev: 0, txn: &far })).await;
    send(&mut impostor, &cdc_frame(&Outgoing::Live(false))).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    for reason in ["unknown_relation", "beyond_wal", "backwards", "undecodable", "not_leader"] {
        while rejected(&ip, port, reason).await < 1.0 {
            assert!(Instant::now() < deadline, "no rejection counted as {reason}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Real changes still arrive, and none of the forged rows did.
    for n in 2..=6 {
        db.exec(&format!("insert into todos values ({n}, 'real')")).await;
    }
    assert_eq!(todos_until(&mut c, &t, 6).await, vec![2, 3, 4, 5, 6]);
    let recorded = |i: usize| {
        std::fs::read_to_string(db.data_dir.join(format!("node-{i}")).join(format!("cdc-{}.lsn", db.slot)))
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
    };
    let wal_now = wal(&db).await;
    let position = recorded(follower).expect("the follower recorded a position");
    assert!(position <= wal_now, "recorded {position}, past the WAL {wal_now}");

    drop((forger, impostor));

    // And after a restart the node delivers real changes too (SIGTERM: a graceful restart repeats
    // nothing, so exactly the new row arrives).
    drop(c);
    cluster.terminate(follower);
    cluster.start_node(&db, follower);
    let mut c = cluster.client(&db, follower, Vsn::V1).await;
    let (t, s) = topic("forged-restart");
    c.subscribe(&t, &s, &entries, None).await;
    db.exec("insert into todos values (7, 'real')").await;
    assert_eq!(todos_until(&mut c, &t, 7).await, vec![7]);
}

/// A panic in the hub (made by the debug-only `REALTIME_TEST_PANIC_TABLE` hook: no known input makes
/// it panic any more) takes the node out of `/readyz`, is counted and logged, and the hub is
/// restarted with its subscriptions: later changes reach the same subscriber.
#[tokio::test]
async fn t92_a_panicking_hub_is_restarted_and_readiness_follows() {
    let db = Db::new(&format!(
        "{SCHEMA}
        create table boom (id int8 primary key);
        grant select on boom to authenticated;
        alter publication supabase_realtime add table boom;"
    ))
    .await;
    let server = db.server_with(&[], &db.data_dir, &[("REALTIME_TEST_PANIC_TABLE", "boom")]);
    let mut c = server.client(&db.token("authenticated", &new_uuid()), Vsn::V1).await;
    let (t, s) = topic("panic");
    c.subscribe(&t, &s, &json!([{"event": "INSERT", "schema": "public", "table": "*"}]), None).await;
    db.exec("insert into todos values (1, 'before')").await;
    assert_eq!(todos_until(&mut c, &t, 1).await, vec![1]);
    assert_eq!(server.readyz().await.0, 200);

    db.exec("insert into boom values (1)").await;
    let (_, reason) = server.readyz_until(T, |status, _| status == 503).await;
    assert!(reason.contains("hub") && reason.contains("test hook"), "{reason}");
    let restarts = support::raw::metric(server.port, "realtime_cdc_task_restarts_total").await;
    assert_eq!(restarts, 1.0);
    assert!(server.log_tail(400).contains("Postgres Changes task panicked"));
    server.readyz_until(T, |status, _| status == 200).await;
    for n in 2..=4 {
        db.exec(&format!("insert into todos values ({n}, 'after')")).await;
    }
    assert_eq!(todos_until(&mut c, &t, 4).await, vec![2, 3, 4]);
}

/// A node that recorded a forged position before positions were checked (or whose data directory
/// comes from another database server) would drop every change up to it, for good: a recorded
/// position past PostgreSQL's WAL is discarded at start.
#[tokio::test]
async fn t93_a_recorded_position_past_the_wal_is_discarded_at_start() {
    let db = Db::new(SCHEMA).await;
    std::fs::create_dir_all(&db.data_dir).expect("data dir");
    let forged = u64::MAX / 2;
    std::fs::write(db.data_dir.join(format!("cdc-{}.lsn", db.slot)), format!("{forged:020}\n"))
        .expect("write");
    let server = db.server(&[]);
    let mut c = server.client(&db.token("authenticated", &new_uuid()), Vsn::V1).await;
    let (t, s) = topic("discarded");
    c.subscribe(&t, &s, &json!([{"event": "INSERT", "schema": "public", "table": "todos"}]), None).await;
    db.exec("insert into todos values (1, 'real')").await;
    assert_eq!(todos_until(&mut c, &t, 1).await, vec![1]);
    assert!(server.log_tail(400).contains("past PostgreSQL's WAL: discarded"));
    let recorded = db.recorded_position().expect("a position");
    assert!(recorded < forged && recorded <= wal(&db).await, "recorded {recorded}");
}
