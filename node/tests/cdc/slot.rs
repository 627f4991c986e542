//! A replication slot the node cannot stream: created in another database of the same server, or
//! streamed by another node. The node names the conflict once (which slot, who has it, which setting
//! to change), answers `/readyz` with 503 while it lasts, looks again every few seconds, and streams
//! by itself once the conflict is gone.

use std::time::Duration;

use realtime_proto::Vsn;
use serde_json::json;

use crate::common::*;

const SCHEMA: &str = r#"
create table todos (id int8 primary key, title text);
grant select on todos to authenticated;
alter publication supabase_realtime add table todos;
"#;

/// Longer than the node's retry after a conflict (5 s), so it looked again at least once.
const RETRIED: Duration = Duration::from_secs(6);

/// Subscribes on `server`, inserts `id` and expects it.
async fn delivers(db: &Db, server: &Server, id: u64) {
    let mut c = server.client(&db.token("authenticated", &new_uuid()), Vsn::V1).await;
    let (t, s) = topic("slot");
    c.subscribe(&t, &s, &json!([{"event": "INSERT", "schema": "public", "table": "todos"}]), None).await;
    db.exec(&format!("insert into todos values ({id}, 'x')")).await;
    let got = c.exactly_changes(&t, 1, T).await;
    assert_eq!(got[0].key("id"), json!(id));
}

fn conflict_lines(server: &Server) -> usize {
    server.log_tail(2000).lines().filter(|l| l.contains("Postgres Changes cannot run")).count()
}

/// A slot named like the test database's, created in database `postgres`: the node finds its slot
/// belongs to another database until it is released.
struct ForeignSlot {
    admin: tokio_postgres::Client,
    conn: tokio::task::JoinHandle<()>,
}

impl ForeignSlot {
    async fn take(db: &Db) -> ForeignSlot {
        let (admin, conn) = connect(cluster_url().await).await;
        admin
            .query("select pg_create_logical_replication_slot($1, 'pgoutput')", &[&db.slot])
            .await
            .expect("a slot of the same name in database postgres");
        ForeignSlot { admin, conn }
    }

    async fn release(self, db: &Db) {
        self.admin
            .query("select pg_drop_replication_slot($1)", &[&db.slot])
            .await
            .expect("drop the other slot");
        drop(self.admin);
        self.conn.abort();
    }
}

#[tokio::test]
async fn t95_a_slot_of_another_database_is_named_once_and_the_node_recovers() {
    let db = Db::new(SCHEMA).await;
    let foreign = ForeignSlot::take(&db).await;
    let server = db.server(&[]);
    let (_, reason) = server.readyz_until(T, |status, _| status == 503).await;
    assert!(
        reason.contains(&format!("\"{}\"", db.slot))
            && reason.contains("belongs to database \"postgres\"")
            && reason.contains("REALTIME_SLOT"),
        "{reason}"
    );
    tokio::time::sleep(RETRIED).await;
    assert_eq!(server.readyz().await.0, 503, "still not ready while the conflict lasts");
    assert_eq!(conflict_lines(&server), 1, "the conflict is logged once:\n{}", server.log_tail(60));

    foreign.release(&db).await;
    server.readyz_until(Duration::from_secs(20), |status, _| status == 200).await;
    assert!(server.log_tail(400).contains("replication slot usable again"));
    delivers(&db, &server, 1).await;
}

#[tokio::test]
async fn t96_two_nodes_on_one_slot_the_second_waits_not_ready_and_takes_over() {
    let db = Db::new(SCHEMA).await;
    let mut first = db.server(&[]);
    delivers(&db, &first, 1).await;
    let second_dir = db.data_dir.join("second");
    let second = db.server_with(&[], &second_dir, &[]);
    let (_, reason) = second.readyz_until(T, |status, _| status == 503).await;
    assert!(reason.contains("is streamed by another client") && reason.contains("REALTIME_SLOT"), "{reason}");
    assert_eq!(first.readyz().await.0, 200, "the node that streams stays ready");
    tokio::time::sleep(RETRIED).await;
    assert_eq!(conflict_lines(&second), 1, "the conflict is logged once:\n{}", second.log_tail(60));
    assert_eq!(conflict_lines(&first), 0);

    first.kill();
    second.readyz_until(Duration::from_secs(30), |status, _| status == 200).await;
    delivers(&db, &second, 2).await;
}

/// In a cluster only the leader streams: it is the node that goes not ready when the slot is taken;
/// the followers serve on. Once the slot is free the leader streams, and followers deliver.
#[tokio::test]
async fn t97_in_a_cluster_only_the_leader_goes_not_ready() {
    let db = Db::new(SCHEMA).await;
    let foreign = ForeignSlot::take(&db).await;
    let cluster = crate::cluster::CdcCluster::start(&db, 150);
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let readyz = |i: usize| {
        let node = cluster.node(i);
        let url = format!("http://{}:{}/readyz", node.ip, node.port);
        async move {
            let resp = reqwest::get(url).await.expect("GET /readyz");
            (resp.status().as_u16(), resp.text().await.unwrap_or_default())
        }
    };
    let deadline = std::time::Instant::now() + T;
    loop {
        let (status, body) = readyz(leader).await;
        if status == 503 {
            assert!(body.contains("belongs to database \"postgres\""), "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the leader stayed ready: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in (0..3).filter(|i| *i != leader) {
        assert_eq!(readyz(i).await.0, 200, "follower node-{i} stays ready");
    }

    foreign.release(&db).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while readyz(leader).await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "the leader did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let follower = (leader + 1) % 3;
    let mut c = cluster.client(&db, follower, Vsn::V1).await;
    let (t, s) = topic("slot-cluster");
    c.subscribe(&t, &s, &json!([{"event": "INSERT", "schema": "public", "table": "todos"}]), None).await;
    db.exec("insert into todos values (1, 'x')").await;
    assert_eq!(c.exactly_changes(&t, 1, T).await[0].key("id"), json!(1));
}
