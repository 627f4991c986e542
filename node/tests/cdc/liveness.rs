//! A replication stream that dies is noticed, subscribers are told, and nothing is lost or repeated.
//!
//! Cutting the TCP path of a loopback connection without closing it is not possible from a test, so
//! two stand-ins: the walsender is ended (`pg_terminate_backend`: the connection closes, the node
//! reconnects), and the walsender is paused with SIGSTOP (the connection stays open and says nothing,
//! as when the network is cut or the server hangs) for longer than the replication timeout, then
//! resumed. Only this test's walsender is paused, so the other tests sharing the PostgreSQL server
//! are not. Outcomes are asserted, not timings: the node logs and counts the loss, every subscriber
//! gets the `system` error and then the `system` ok, and every row committed before, during and after
//! arrives exactly once, in commit order, after the ok.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;
use crate::support::raw;

const DELAYED: &str =
    "PostgresChangesDelayed: The replication stream from the database is interrupted; changes \
                       will follow when it is back";
const RESUMED: &str = "PostgresChangesResumed: The replication stream from the database is back";

/// Bound of every wait for something the node must do after a fault.
const WAIT: Duration = Duration::from_secs(40);

/// A short replication timeout so the test is quick (heartbeats every 500 ms).
const REPLICATION_TIMEOUT_MS: &str = "1500";

const SCHEMA: &str = "create table live (n int8 primary key);
                      alter publication supabase_realtime add table live;";

fn entries() -> Value {
    json!([{"event": "INSERT", "schema": "public", "table": "live"}])
}

/// What a subscriber received, in order: a row number or a `system` message `(status, message)`.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    Row(i64),
    System(String, String),
}

/// Reads `topic` until `until` holds for what was received (at most [`WAIT`]); other topics' frames
/// and heartbeat replies are skipped.
async fn read_until(c: &mut Client, topic: &str, got: &mut Vec<Got>, until: impl Fn(&[Got]) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !until(got) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(frame) = c.recv(left).await else {
            panic!("{}: not there within {WAIT:?}; got {got:?}", c.vsn);
        };
        let Some(v) = frame.value() else { panic!("{}: socket closed; got {got:?}", c.vsn) };
        if v["topic"] != topic {
            continue;
        }
        match v["event"].as_str() {
            Some("postgres_changes") => {
                let raw = v.to_string();
                got.push(Got::Row(parse_change(v, raw, topic).key("n").as_i64().expect("n")));
            }
            Some("system") => {
                let p = &v["payload"];
                assert_eq!(p["extension"], "postgres_changes", "{v}");
                got.push(Got::System(
                    p["status"].as_str().unwrap_or_default().to_owned(),
                    p["message"].as_str().unwrap_or_default().to_owned(),
                ));
            }
            _ => {}
        }
    }
}

fn has_row(got: &[Got], n: i64) -> bool {
    got.contains(&Got::Row(n))
}

fn rows(got: &[Got]) -> Vec<i64> {
    got.iter().filter_map(|g| if let Got::Row(n) = g { Some(*n) } else { None }).collect()
}

async fn insert(db: &Db, range: std::ops::RangeInclusive<i64>) {
    for n in range {
        db.pg.batch_execute(&format!("insert into live (n) values ({n})")).await.expect("insert");
    }
}

/// The pid of the walsender streaming the test's slot, once there is one.
async fn walsender(db: &Db) -> i32 {
    let deadline = Instant::now() + WAIT;
    loop {
        let row = db
            .pg
            .query_opt("select active_pid from pg_replication_slots where slot_name = $1", &[&db.slot])
            .await
            .expect("slot query");
        if let Some(pid) = row.and_then(|r| r.get::<_, Option<i32>>(0)) {
            return pid;
        }
        assert!(Instant::now() < deadline, "no walsender for slot {} within {WAIT:?}", db.slot);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the metric `name` until it is at least `min` (at most [`WAIT`]); returns its value.
async fn metric_at_least(server: &Server, name: &str, min: f64) -> f64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = raw::metric(server.port, name).await;
        if value >= min {
            return value;
        }
        assert!(Instant::now() < deadline, "{name} is {value}, not {min} or more, within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `signal` (`STOP`, `CONT`) to `pid`.
fn signal(pid: i32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

/// Resumes a paused process when dropped (also when the test fails), so nothing stays stopped.
struct Paused(i32);

impl Drop for Paused {
    fn drop(&mut self) {
        // Already resumed (and perhaps exited) when the test went well: nothing to say then.
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Subscribes one client per protocol version and checks rows 1..=3 reach each.
async fn subscribers(db: &Db, server: &Server) -> Vec<(Client, String, Vec<Got>)> {
    let token = db.token("authenticated", &new_uuid());
    let mut clients = Vec::new();
    for vsn in VSNS {
        let mut c = server.client(&token, vsn).await;
        let (t, s) = topic("liveness");
        c.subscribe(&t, &s, &entries(), None).await;
        clients.push((c, t, Vec::new()));
    }
    insert(db, 1..=3).await;
    for (c, t, got) in &mut clients {
        read_until(c, t, got, |g| has_row(g, 3)).await;
    }
    clients
}

/// Reads until row `last` arrived, makes sure nothing more follows (a repeat would show within
/// [`QUIET`]), then [`check`]s what the subscriber saw.
async fn all_rows_once(
    c: &mut Client,
    topic: &str,
    got: &mut Vec<Got>,
    last: i64,
    during: std::ops::RangeInclusive<i64>,
    told: bool,
) {
    read_until(c, topic, got, |g| has_row(g, last)).await;
    let extra = c.drain(QUIET).await;
    assert!(
        extra.iter().filter_map(|f| f.value()).all(|v| v["event"] != "postgres_changes"),
        "{}: more changes than committed: {extra:?}",
        c.vsn
    );
    check(c.vsn, got, last, during, told);
}

/// What every subscriber must have seen: rows `1..=last` once each in commit order, and, if it was
/// told of a delay, the error and then the ok, with every row committed during the fault after the ok.
fn check(
    vsn: realtime_proto::Vsn,
    got: &[Got],
    last: i64,
    during: std::ops::RangeInclusive<i64>,
    told: bool,
) {
    assert_eq!(rows(got), (1..=last).collect::<Vec<_>>(), "{vsn}: every row once, in commit order: {got:?}");
    let delayed = got.iter().position(|g| *g == Got::System("error".into(), DELAYED.into()));
    let resumed = got.iter().position(|g| *g == Got::System("ok".into(), RESUMED.into()));
    let systems = got.iter().filter(|g| matches!(g, Got::System(..))).count();
    match (delayed, resumed) {
        (Some(d), Some(r)) => {
            assert!(d < r, "{vsn}: the error comes before the ok: {got:?}");
            assert_eq!(systems, 2, "{vsn}: one error and one ok: {got:?}");
            let first_during = got.iter().position(|g| *g == Got::Row(*during.start())).expect("row");
            assert!(r < first_during, "{vsn}: rows committed during the fault come after the ok: {got:?}");
        }
        (None, None) => {
            assert!(!told, "{vsn}: subscribers were not told: {got:?}");
            assert_eq!(systems, 0, "{vsn}: {got:?}");
        }
        _ => panic!("{vsn}: an error without an ok or the reverse: {got:?}"),
    }
}

/// The walsender is paused past the replication timeout: the node gives the silent connection up
/// (logged and counted once), its subscribers are told, and when the walsender is resumed the node
/// streams again (logged with how long it was down), tells them, and delivers what was committed
/// before, during and after, exactly once and in order.
#[tokio::test]
async fn t140_a_paused_walsender_is_noticed_subscribers_are_told_and_nothing_is_lost() {
    let db = Db::new(SCHEMA).await;
    let server = db.server(&["--replication-timeout-ms", REPLICATION_TIMEOUT_MS]);
    let mut clients = subscribers(&db, &server).await;
    let pid = walsender(&db).await;

    signal(pid, "STOP");
    let paused = Paused(pid);
    insert(&db, 4..=6).await;
    let delayed = Got::System("error".into(), DELAYED.into());
    for (c, t, got) in &mut clients {
        read_until(c, t, got, |g| g.contains(&delayed)).await;
        assert!(!has_row(got, 4), "{}: a row arrived from a paused walsender: {got:?}", c.vsn);
    }
    let log = server.log_tail(400);
    assert!(log.contains("replication stream lost"), "the loss is logged:\n{log}");
    assert!(log.contains("nothing came on the replication stream"), "the silence is named:\n{log}");
    let lost = metric_at_least(&server, "realtime_cdc_stream_lost_total", 1.0).await;
    metric_at_least(&server, "realtime_cdc_delay_notices_total", 1.0).await;

    signal(pid, "CONT");
    drop(paused);
    insert(&db, 7..=9).await;
    for (c, t, got) in &mut clients {
        all_rows_once(c, t, got, 9, 4..=6, true).await;
    }
    let log = server.log_tail(400);
    assert!(
        log.contains("replication stream back") && log.contains("down_for"),
        "the return is logged:\n{log}"
    );
    let after = raw::metric(server.port, "realtime_cdc_stream_lost_total").await;
    assert_eq!(after, lost, "one outage counted once, not per reconnect attempt");
    assert_ne!(walsender(&db).await, pid, "a new walsender streams");
}

/// The walsender is ended: the node reconnects by itself and delivers every row exactly once, in
/// order. If the reconnect took long enough for subscribers to be told, they get the ok before the rows.
#[tokio::test]
async fn t141_a_terminated_walsender_is_replaced_and_nothing_is_lost() {
    let db = Db::new(SCHEMA).await;
    let server = db.server(&["--replication-timeout-ms", REPLICATION_TIMEOUT_MS]);
    let mut clients = subscribers(&db, &server).await;
    let pid = walsender(&db).await;

    let ended: bool =
        db.pg.query_one("select pg_terminate_backend($1)", &[&pid]).await.expect("terminate").get(0);
    assert!(ended, "walsender {pid} terminated");
    insert(&db, 4..=6).await;
    for (c, t, got) in &mut clients {
        all_rows_once(c, t, got, 6, 4..=6, false).await;
    }
    assert_ne!(walsender(&db).await, pid, "a new walsender streams");
    let log = server.log_tail(400);
    assert!(log.contains("replication stream lost"), "the loss is logged:\n{log}");
    assert!(log.contains("replication stream back"), "the return is logged:\n{log}");
}

/// In a cluster the leader's walsender is paused: the subscribers of every node (followers learn it
/// from the leader) are told, and once it is resumed every node delivers every row once, in order.
#[tokio::test]
async fn t142_in_a_cluster_every_nodes_subscribers_are_told_and_nothing_is_lost() {
    let db = Db::new(SCHEMA).await;
    let cluster = crate::cluster::CdcCluster::start_with(
        &db,
        160,
        &["--replication-timeout-ms", REPLICATION_TIMEOUT_MS],
    );
    cluster.leader(Duration::from_secs(20)).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        let vsn = VSNS[i % VSNS.len()];
        let mut c = cluster.client(&db, i, vsn).await;
        let (t, s) = topic("liveness-cluster");
        c.subscribe(&t, &s, &entries(), None).await;
        clients.push((c, t, Vec::new()));
    }
    insert(&db, 1..=3).await;
    for (c, t, got) in &mut clients {
        read_until(c, t, got, |g| has_row(g, 3)).await;
    }
    let pid = walsender(&db).await;

    signal(pid, "STOP");
    let paused = Paused(pid);
    insert(&db, 4..=6).await;
    let delayed = Got::System("error".into(), DELAYED.into());
    for (i, (c, t, got)) in clients.iter_mut().enumerate() {
        read_until(c, t, got, |g| g.contains(&delayed)).await;
        assert!(!has_row(got, 4), "node {i}: a row arrived from a paused walsender: {got:?}");
    }
    signal(pid, "CONT");
    drop(paused);
    insert(&db, 7..=9).await;
    for (c, t, got) in &mut clients {
        all_rows_once(c, t, got, 9, 4..=6, true).await;
    }
}

/// `/cluster`'s `database` once `reachable` is `want` (at most [`WAIT`]).
async fn database_until(server: &Server, want: bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let view = crate::support::cluster::view("127.0.0.1", server.port).await;
        if view["database"]["reachable"] == want {
            return view["database"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "/cluster database never reachable={want} within {WAIT:?}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The database refuses this node's connections and ends the ones it had (the walsender excepted):
/// `/cluster` and the gauge say PostgreSQL is unreachable, with the error, and the log says it once.
/// When the database takes connections again, all of it comes back; rows arrive once, in order, and a
/// row that could not be delivered meanwhile is not dropped silently.
#[tokio::test]
async fn t143_a_database_that_refuses_the_node_is_reported_unreachable_and_nothing_is_dropped_silently() {
    let db = Db::new(SCHEMA).await;
    let server = db.server(&["--replication-timeout-ms", REPLICATION_TIMEOUT_MS]);
    let mut clients = subscribers(&db, &server).await;
    database_until(&server, true).await;

    // From another database (a database cannot refuse connections from inside), sparing the test's own.
    let (admin, _admin_conn) = connect(cluster_url().await).await;
    let own: i32 = db.pg.query_one("select pg_backend_pid()", &[]).await.expect("own pid").get(0);
    let refuse = format!(
        "alter database {name} allow_connections false;
         select pg_terminate_backend(pid) from pg_stat_activity
          where datname = '{name}' and pid <> {own} and backend_type = 'client backend';",
        name = db.name
    );
    admin.batch_execute(&refuse).await.expect("refuse connections");
    insert(&db, 4..=6).await;
    let unreachable = database_until(&server, false).await;
    assert!(
        unreachable["error"].as_str().is_some_and(|e| !e.is_empty()),
        "the error is shown: {unreachable}"
    );
    assert_eq!(raw::metric(server.port, "realtime_database_reachable").await, 0.0);
    let delayed = Got::System("error".into(), DELAYED.into());

    admin.batch_execute(&format!("alter database {} allow_connections true", db.name)).await.expect("allow");
    insert(&db, 7..=9).await;
    for (c, t, got) in &mut clients {
        read_until(c, t, got, |g| has_row(g, 9)).await;
        let extra = c.drain(QUIET).await;
        assert!(
            extra.iter().filter_map(|f| f.value()).all(|v| v["event"] != "postgres_changes"),
            "{}: more changes than committed: {extra:?}",
            c.vsn
        );
        // The hub reads a role's column privileges and checks RLS on connections of its own, which were
        // ended too: a check whose connection is lost is asked again on a new one for up to 5 s; rows
        // whose check still cannot be answered are dropped for the subscriber, which is told (a
        // `Row Level Security check failed` error), not silently. Everything else arrives
        // once, in order, and the delay is told with an error, then an ok.
        let rows = rows(got);
        assert!(rows.windows(2).all(|w| w[0] < w[1]), "{}: in commit order, once each: {got:?}", c.vsn);
        let expected: Vec<i64> = (1..=3).chain(7..=9).collect();
        assert!(expected.iter().all(|n| rows.contains(n)), "{}: rows before and after: {got:?}", c.vsn);
        if rows.len() < 9 {
            assert!(
                got.iter().any(|g| matches!(g, Got::System(s, m) if s == "error" && m.starts_with("Row Level Security check failed"))),
                "{}: rows were dropped without a word: {got:?}",
                c.vsn
            );
        }
        // The walsender was spared: whether the stream is given up depends on whether it stays quiet
        // (heartbeats cannot be written; on a busy server the walsender's own keepalives keep it
        // talking). If the subscriber was told of a delay, the ok comes before the rows after it.
        if let Some(d) = got.iter().position(|g| *g == delayed) {
            let resumed = got.iter().position(|g| *g == Got::System("ok".into(), RESUMED.into()));
            let seven = got.iter().position(|g| *g == Got::Row(7));
            assert!(resumed.is_some_and(|r| d < r && Some(r) < seven), "{}: error, ok, rows: {got:?}", c.vsn);
        }
    }
    database_until(&server, true).await;
    let log = server.log_tail(400);
    assert!(log.contains("PostgreSQL is not reachable from this node"), "the loss is logged:\n{log}");
    assert!(log.contains("PostgreSQL is reachable again from this node"), "the return is logged:\n{log}");
}
