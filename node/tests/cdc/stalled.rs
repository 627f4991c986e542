//! Postgres Changes subscribers that stop reading: they are closed as slow consumers (1008, or the
//! connection is reset), they do not hold back the others, and the recorded position never passes a
//! change that a subscriber still connected at a crash has not got.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use realtime_proto::Vsn;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;
use crate::support::raw::{self, read_until_end, End, RawWs};

const SLOW_REASONS: [&str; 3] = [
    "slow consumer: outbox full",
    "slow consumer: write timeout",
    "slow consumer: postgres changes not written in time",
];

const BIG: &str = "
create table big (n int8 primary key, pad text not null default '');
alter publication supabase_realtime add table big;
";

fn big_entries() -> Value {
    json!([{"event": "INSERT", "schema": "public", "table": "big"}])
}

/// Sum of every sample of the metric `name` on `server` (0 when absent).
async fn metric(server: &Server, name: &str) -> f64 {
    raw::metric(server.port, name).await
}

/// A 2.0.0 subscriber of `big` on a bare connection (with a TCP receive buffer of `recv_buf` bytes
/// when given): subscribes to `topic` and waits for `Subscribed to PostgreSQL`.
async fn raw_subscriber(server: &Server, token: &str, topic: &str, recv_buf: Option<u32>) -> RawWs {
    let mut ws = raw::connect(server.port, &server.ws_url(token, Vsn::V2), recv_buf, T).await;
    let join = json!(["1", "1", topic, "phx_join", {"config": pg_config(&big_entries())}]).to_string();
    ws.send(Message::text(join)).await.expect("send join");
    let deadline = Instant::now() + T;
    let mut replied = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next()).await.expect("join reply and system push in time");
        let Some(Ok(Message::Text(t))) = msg else { panic!("raw subscriber: unexpected {msg:?}") };
        let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
        if v[3] == "phx_reply" && v[1] == "1" {
            assert_eq!(v[4]["status"], "ok", "raw subscriber join: {v}");
            replied = true;
        } else if v[3] == "system" {
            assert!(replied, "system before the join reply: {v}");
            assert_eq!(v[4]["message"], SUBSCRIBED, "{v}");
            return ws;
        }
    }
}

async fn stalled_subscriber(server: &Server, token: &str, topic: &str) -> RawWs {
    raw_subscriber(server, token, topic, Some(4096)).await
}

/// Asserts the end of a stalled subscriber is a slow-consumer close (or a cut connection).
fn assert_slow_end(end: &End, frames: usize) {
    match end {
        End::Close(code, reason) => {
            assert_eq!(*code, 1008, "stalled subscriber close ({reason:?}) after {frames} frames");
            assert!(SLOW_REASONS.contains(&reason.as_str()), "stalled subscriber close reason {reason:?}");
        }
        End::Cut(how) => eprintln!("stalled subscriber cut after {frames} frames: {how}"),
    }
}

/// What a reading subscriber task saw.
#[derive(Default)]
struct Seen {
    /// `record.n` of every `postgres_changes` frame, in arrival order.
    rows: Vec<i64>,
    /// How the socket ended, if it did.
    end: Option<End>,
}

/// Reads `postgres_changes` frames into `seen` until the socket ends. Only `record.n` is looked at,
/// so the reader keeps up with a debug-build node replaying a large transaction.
fn spawn_reader(mut ws: RawWs, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let end = loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("JSON frame");
                    if v[3] == "postgres_changes" {
                        let n = v[4]["data"]["record"]["n"]
                            .as_i64()
                            .unwrap_or_else(|| panic!("no record.n: {v}"));
                        seen.lock().unwrap().rows.push(n);
                    }
                }
                Some(Ok(Message::Close(cf))) => {
                    break End::Close(
                        cf.as_ref().map_or(0, |c| c.code.into()),
                        cf.map(|c| c.reason.to_string()).unwrap_or_default(),
                    )
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break End::Cut(e.to_string()),
                None => break End::Cut("EOF".into()),
            }
        };
        seen.lock().unwrap().end = Some(end);
    })
}

/// Two clients in a plain broadcast channel: the node keeps relaying for everyone else.
struct Observer {
    sender: Client,
    sender_ref: String,
    receiver: Client,
    topic: String,
    n: u32,
}

impl Observer {
    async fn new(server: &Server, token: &str) -> Observer {
        let (topic, _) = topic("observer");
        let mut receiver = server.client(token, Vsn::V2).await;
        receiver.join_pg(&topic, &json!([]), None).await;
        let mut sender = server.client(token, Vsn::V1).await;
        let (sender_ref, _) = sender.join_pg(&topic, &json!([]), None).await;
        Observer { sender, sender_ref, receiver, topic, n: 0 }
    }

    async fn check(&mut self, after: &str) {
        self.n += 1;
        let body = json!({"type": "broadcast", "event": "obs", "payload": {"n": self.n}});
        self.sender.push(Some(&self.sender_ref), &self.topic, "broadcast", &body).await;
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.receiver.recv(left).await {
                Some(Frame::Text(v, _)) if v["event"] == "broadcast" => {
                    assert_eq!(v["payload"], body, "observer broadcast after {after}");
                    return;
                }
                Some(Frame::Close(code)) => panic!("observer closed ({code:?}) after {after}"),
                Some(_) => {}
                None => panic!("no observer broadcast within {T:?} after {after}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------

/// Row 2: a subscriber stalls during a large transaction and is closed; then the node is SIGKILLed
/// and restarted. A subscriber that kept reading (and was connected at the crash) has every row once it
/// resubscribed to the restarted node: no gaps across the crash (repeats allowed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t90_stalled_subscriber_closed_then_sigkill_loses_nothing_for_the_reader() {
    let db = Db::new(BIG).await;
    let token = db.token("authenticated", &new_uuid());
    let flags = ["--max-outbox-bytes", "1048576", "--write-timeout-ms", "2000"];
    let mut server = db.server(&flags);
    let mut obs = Observer::new(&server, &token).await;
    let (rt, _rs) = topic("reader");
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let task = spawn_reader(raw_subscriber(&server, &token, &rt, None).await, seen.clone());
    let (st, _ss) = topic("stalled");
    let mut stalled = stalled_subscriber(&server, &token, &st).await;
    let closes_before = metric(&server, "realtime_slow_consumer_closes_total").await;

    // One transaction of 30,000 rows, then 10 of 1,000, back to back, while the stalled subscriber
    // never reads.
    let batches: Vec<(i64, i64)> = std::iter::once((1, 30_000))
        .chain((0..10).map(|t| (30_001 + t * 1_000, 31_000 + t * 1_000)))
        .collect();
    let last = batches.last().unwrap().1;
    let committed = Arc::new(AtomicI64::new(0));
    let inserter = {
        let (url, committed) = (db.url.clone(), committed.clone());
        tokio::spawn(async move {
            let (pg, _conn) = connect(&url).await;
            for (a, b) in batches {
                pg.batch_execute(&format!(
                    "insert into big (n, pad) select g, repeat('x', 200) from generate_series({a}, {b}) g"
                ))
                .await
                .expect("insert");
                committed.store(b, Ordering::SeqCst);
            }
        })
    };

    // The stalled one is closed (outbox bound, write timeout or flush deadline) while the stream runs.
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&server, "realtime_slow_consumer_closes_total").await <= closes_before {
        assert!(Instant::now() < deadline, "the stalled subscriber was not closed within 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    obs.check("a stalled subscriber closed").await;
    // SIGKILL in the middle of the stream (most likely inside the 30,000-row transaction).
    while seen.lock().unwrap().rows.len() < 2_000 {
        assert!(Instant::now() < deadline + T, "the reader got {} rows", seen.lock().unwrap().rows.len());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill();
    let at_kill = committed.load(Ordering::SeqCst);
    tokio::time::timeout(T, task).await.expect("reader ended after the kill").expect("reader task");
    let before_kill = {
        let mut s = seen.lock().unwrap();
        let end = s.end.take().expect("reader ended");
        // Not closed by the node (a 1008 would mean it was dropped as a slow consumer): cut by the kill.
        assert!(
            matches!(end, End::Cut(_)),
            "the reader must be connected until the crash; it ended with {end:?} after {} rows",
            s.rows.len()
        );
        s.rows.len()
    };
    // The stalled one had been closed before the crash (counted above); what it reads now ends in its
    // 1008 or in a cut connection.
    let (end, frames) = read_until_end(&mut stalled, T).await;
    assert_slow_end(&end, frames);

    // Restart; the reader resubscribes on the same topic; the inserter may still be going.
    let server = db.server(&[&flags[..], &["--cdc-resume-grace-ms", "3000"]].concat());
    let task = spawn_reader(raw_subscriber(&server, &token, &rt, None).await, seen.clone());
    let mut obs = Observer::new(&server, &token).await;
    inserter.await.expect("inserter");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        {
            let s = seen.lock().unwrap();
            if s.rows.contains(&last) {
                break;
            }
            assert!(s.end.is_none(), "the reader was closed after the restart: {:?}", s.end);
        }
        assert!(Instant::now() < deadline, "the reader did not reach row {last} within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    obs.check("the restart").await;
    let rows = seen.lock().unwrap().rows.clone();
    let mut have = vec![false; last as usize + 1];
    for n in &rows {
        have[*n as usize] = true;
    }
    let missing: Vec<i64> = (1..=last).filter(|n| !have[*n as usize]).collect();
    assert!(
        missing.is_empty(),
        "rows lost across the SIGKILL: {} of {last} missing (killed after {at_kill} committed and \
         {before_kill} received); first missing {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    eprintln!(
        "t90: {last} rows; killed after {at_kill} committed / {before_kill} received; {} repeated",
        rows.len() as i64 - last
    );
    drop(server);
}

/// Row 3: a stalled subscriber does not hold back another one (changes committed after the stall
/// began reach it within a bounded wait), and is closed.
#[tokio::test]
async fn t91_stalled_subscriber_does_not_hold_back_the_others() {
    let db = Db::new(BIG).await;
    let token = db.token("authenticated", &new_uuid());
    let server = db.server(&["--max-outbox-bytes", "262144", "--write-timeout-ms", "1000"]);
    let mut obs = Observer::new(&server, &token).await;
    let (st, _ss) = topic("stalled");
    let mut stalled = stalled_subscriber(&server, &token, &st).await;
    let (rt, rs) = topic("live");
    let mut live = server.client(&token, Vsn::V2).await;
    live.subscribe(&rt, &rs, &big_entries(), None).await;
    let closes_before = metric(&server, "realtime_slow_consumer_closes_total").await;

    // Rows of 8 KiB, 50 per transaction: the stalled socket's buffers fill within a few transactions.
    // Each transaction reaches the live subscriber within the bound, stalled neighbour or not.
    const BOUND: Duration = Duration::from_secs(3);
    let mut n = 0i64;
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    let mut txns_after_close = 0;
    while txns_after_close < 3 {
        assert!(started.elapsed() < Duration::from_secs(15), "stalled subscriber not closed within 15 s");
        if metric(&server, "realtime_slow_consumer_closes_total").await > closes_before {
            txns_after_close += 1;
        }
        let t0 = Instant::now();
        db.exec(&format!(
            "insert into big (n, pad) select g, repeat('y', 8192) from generate_series({}, {}) g",
            n + 1,
            n + 50
        ))
        .await;
        n += 50;
        let got = live.changes(&rt, 50, BOUND).await;
        slowest = slowest.max(t0.elapsed());
        let got: Vec<i64> = got.iter().map(|c| c.key("n").as_i64().expect("n")).collect();
        assert_eq!(got, ((n - 49)..=n).collect::<Vec<_>>(), "live subscriber, rows up to {n}");
    }
    obs.check("a stalled postgres subscriber").await;
    let (end, frames) = read_until_end(&mut stalled, Duration::from_secs(15)).await;
    assert_slow_end(&end, frames);
    live.heartbeat().await;
    eprintln!("t91: {n} rows; slowest transaction reached the live subscriber in {slowest:?}");
}

/// A transaction of 20,000 rows reaches a subscriber that reads, with the default outbox bounds.
#[tokio::test]
async fn t92_large_transaction_reaches_a_reading_subscriber_with_default_bounds() {
    let db = Db::new(BIG).await;
    let token = db.token("authenticated", &new_uuid());
    let server = db.server(&[]);
    let (rt, rs) = topic("reader");
    let mut reader = server.client(&token, Vsn::V2).await;
    reader.subscribe(&rt, &rs, &big_entries(), None).await;
    db.exec("insert into big (n) select g from generate_series(1, 20000) g").await;
    let got = reader.changes(&rt, 20_000, Duration::from_secs(60)).await;
    let rows: Vec<i64> = got.iter().map(|c| c.key("n").as_i64().expect("n")).collect();
    assert_eq!(rows, (1..=20_000).collect::<Vec<_>>());
    reader.heartbeat().await;
}
