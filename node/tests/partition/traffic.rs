//! The load a scenario runs under, and what every client saw: on every node a subscriber (Postgres
//! Changes INSERTs on `items` and broadcasts, on one channel) and a publisher (20 broadcasts/s, each
//! carrying its node and a sequence number), and 100 rows/s inserted from the test's own address.
//!
//! A subscriber does what an app does: when the server ends its subscription (`phx_close`,
//! `phx_error`, a closed socket) it subscribes again after a short pause. Every loop ends when the
//! traffic is stopped, and every wait is bounded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use realtime_proto::Vsn;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::checker::{self, Event, Report, Sent, SubRecord};
use crate::lab::{Lab, NODES};
use crate::support::ws::{Client as WsClient, JsonFrame as Frame};

type Client = WsClient<Frame>;

const TOPIC: &str = "realtime:lab";
/// Between two broadcasts of one publisher (20/s).
const PUBLISH_EVERY: Duration = Duration::from_millis(50);
/// Between two inserted rows (100/s).
const INSERT_EVERY: Duration = Duration::from_millis(10);
/// How long a subscriber waits before subscribing again after the server ended its subscription.
const RESUBSCRIBE_AFTER: Duration = Duration::from_millis(500);
/// The longest the end of a run waits for the last row to reach every subscriber.
const SETTLE_MAX: Duration = Duration::from_secs(20);
/// Bound on one connect or join.
const STEP: Duration = Duration::from_secs(5);

pub struct Traffic {
    stop: watch::Sender<bool>,
    settled: watch::Sender<bool>,
    origin: Instant,
    subscribers: Vec<(Arc<Mutex<SubRecord>>, JoinHandle<()>)>,
    publishers: Vec<(usize, JoinHandle<Vec<Sent>>)>,
    inserter: JoinHandle<Vec<Sent>>,
}

/// What the run gave: one report per subscriber.
pub struct Outcome {
    pub reports: Vec<Report>,
}

impl Traffic {
    /// Subscribes on every node, then starts the publishers and the inserter.
    pub async fn start(lab: &Lab) -> Traffic {
        eprintln!("node logs: {:?}", lab.logs());
        let (stop, stopped) = watch::channel(false);
        let (settled, settled_rx) = watch::channel(false);
        let origin = Instant::now();
        let mut subscribers = Vec::new();
        for i in 0..NODES {
            let (url, ready) = (lab.ws_url(i), Arc::new(tokio::sync::Notify::new()));
            let record = Arc::new(Mutex::new(SubRecord { node: i, events: Vec::new() }));
            let task = tokio::spawn(subscribe(record.clone(), url, settled_rx.clone(), ready.clone()));
            if tokio::time::timeout(Duration::from_secs(20), ready.notified()).await.is_err() {
                panic!(
                    "the subscriber on node {i} did not subscribe; its node logged:\n{}",
                    lab.log_tail(i, 30)
                );
            }
            subscribers.push((record, task));
        }
        let publishers =
            (0..NODES).map(|i| (i, tokio::spawn(publish(i, lab.ws_url(i), stopped.clone())))).collect();
        let inserter = tokio::spawn(insert(lab.db_url.clone(), stopped));
        Traffic { stop, settled, origin, subscribers, publishers, inserter }
    }

    /// Stops sending, lets what is in flight arrive (until every subscriber has the last row, at most
    /// [`SETTLE_MAX`], then `settle` more for the broadcasts), and judges every subscriber. A row still
    /// missing after that counts as lost.
    pub async fn stop(self, settle: Duration) -> Outcome {
        let until = Instant::now();
        let _ = self.stop.send(true);
        let rows = self.inserter.await.expect("inserter");
        let mut sent = BTreeMap::new();
        for (i, task) in self.publishers {
            sent.insert(i, task.await.expect("publisher"));
        }
        let last = rows.last().map(|(id, _)| *id);
        let deadline = Instant::now() + SETTLE_MAX;
        while Instant::now() < deadline
            && !self.subscribers.iter().all(|(record, _)| {
                let record = record.lock().unwrap();
                record.events.iter().rev().any(|(_, e)| matches!(e, Event::Row(id) if Some(*id) == last))
            })
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(settle).await;
        let _ = self.settled.send(true);
        let mut reports = Vec::new();
        for (record, task) in self.subscribers {
            task.await.expect("subscriber");
            let record = record.lock().unwrap().clone();
            reports.push(checker::judge(&record, &rows, &sent, self.origin, until));
        }
        Outcome { reports }
    }
}

async fn connect(url: &str) -> Option<Client> {
    tokio::time::timeout(STEP, Client::connect_req(url, Vsn::V2)).await.ok()?.ok()
}

/// Subscribes on node `node` and records everything until `settled`.
async fn subscribe(
    record: Arc<Mutex<SubRecord>>,
    url: String,
    settled: watch::Receiver<bool>,
    ready: Arc<tokio::sync::Notify>,
) {
    let note = |event: Event| record.lock().unwrap().events.push((Instant::now(), event));
    let config = json!({"config": {
        "broadcast": {"self": false, "ack": false},
        "presence": {"key": ""},
        "postgres_changes": [{"event": "INSERT", "schema": "public", "table": "items"}],
        "private": false,
    }});
    let mut client: Option<Client> = None;
    'run: while !*settled.borrow() {
        let c = match client.as_mut() {
            Some(c) => c,
            None => match connect(&url).await {
                Some(c) => client.insert(c),
                None => {
                    tokio::time::sleep(RESUBSCRIBE_AFTER).await;
                    continue;
                }
            },
        };
        let join_ref = c.send_join(TOPIC, &config).await;
        // Until the subscription ends.
        loop {
            if *settled.borrow() {
                break 'run;
            }
            let Some(frame) = c.recv(Duration::from_millis(200)).await else { continue };
            let Some(v) = frame.value().cloned() else {
                note(Event::Ended(format!("socket closed ({:?})", frame)));
                client = None;
                tokio::time::sleep(RESUBSCRIBE_AFTER).await;
                continue 'run;
            };
            if v["topic"] != TOPIC {
                continue;
            }
            match v["event"].as_str().unwrap_or_default() {
                "phx_reply" if v["ref"] == join_ref.as_str() && v["payload"]["status"] != "ok" => {
                    note(Event::Ended(format!("join refused: {}", v["payload"])));
                    tokio::time::sleep(RESUBSCRIBE_AFTER).await;
                    continue 'run;
                }
                "postgres_changes" => {
                    if let Some(id) = v["payload"]["data"]["record"]["id"].as_u64() {
                        note(Event::Row(id));
                    }
                }
                "broadcast" => {
                    let p = &v["payload"]["payload"];
                    if let (Some(from), Some(seq)) = (p["from"].as_u64(), p["seq"].as_u64()) {
                        note(Event::Broadcast { from: from as usize, seq });
                    }
                }
                "system" if v["payload"]["extension"] == "postgres_changes" => {
                    let message = v["payload"]["message"].as_str().unwrap_or_default().to_owned();
                    if v["payload"]["status"] == "ok" && message.starts_with("Subscribed to PostgreSQL") {
                        note(Event::Subscribed);
                        ready.notify_one();
                    } else if message.starts_with("PostgresChangesGap") {
                        note(Event::Ended(message));
                    } else {
                        note(Event::Notice(message));
                    }
                }
                "phx_close" | "phx_error" => {
                    note(Event::Ended(v["event"].as_str().unwrap_or_default().to_owned()));
                    tokio::time::sleep(RESUBSCRIBE_AFTER).await;
                    continue 'run;
                }
                _ => {}
            }
        }
    }
}

/// Publishes `{from, seq}` broadcasts on node `node` until stopped; returns what was sent.
async fn publish(node: usize, url: String, mut stopped: watch::Receiver<bool>) -> Vec<Sent> {
    let mut sent = Vec::new();
    let mut client: Option<(Client, String)> = None;
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*stopped.borrow() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => break,
        }
        if client.is_none() {
            if let Some(mut c) = connect(&url).await {
                let join_ref = c.send_join(TOPIC, &json!({"config": {"broadcast": {"self": false}}})).await;
                let joined = tokio::time::timeout(STEP, async {
                    loop {
                        match c.recv(STEP).await {
                            Some(f) => {
                                if let Some(v) = f.value() {
                                    if v["event"] == "phx_reply" && v["ref"] == join_ref.as_str() {
                                        return v["payload"]["status"] == "ok";
                                    }
                                } else {
                                    return false;
                                }
                            }
                            None => return false,
                        }
                    }
                })
                .await;
                if joined == Ok(true) {
                    client = Some((c, join_ref));
                }
            }
            continue;
        }
        let (c, join_ref) = client.as_mut().expect("connected");
        seq += 1;
        let payload = json!({"type": "broadcast", "event": "seq", "payload": {"from": node, "seq": seq}});
        let frame = c.encode(Some(join_ref), None, TOPIC, "broadcast", &payload);
        let at = Instant::now();
        let mut broken = c.try_send(Message::text(frame)).await.is_err();
        if !broken {
            sent.push((seq, at));
        }
        // Read what the server pushes to the publisher (it follows nothing), to notice a closed socket.
        while !broken {
            match c.recv(Duration::ZERO).await {
                Some(f) if f.value().is_none() => broken = true,
                Some(_) => {}
                None => break,
            }
        }
        if broken {
            client = None;
        }
    }
    sent
}

/// Inserts rows 1, 2, … into `items` until stopped; returns each with the instant its insert was sent.
async fn insert(url: String, mut stopped: watch::Receiver<bool>) -> Vec<Sent> {
    let (pg, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("inserter connects");
    tokio::spawn(conn);
    let mut rows = Vec::new();
    let mut tick = tokio::time::interval(INSERT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut id = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => break,
        }
        id += 1;
        let at = Instant::now();
        pg.batch_execute(&format!("insert into items (id, title) values ({id}, 'x')")).await.expect("insert");
        rows.push((id, at));
    }
    rows
}

impl Outcome {
    /// Prints one line per subscriber (the figures docs/benchmarks.md records).
    pub fn print(&self, scenario: &str) {
        eprintln!("== {scenario}");
        for r in &self.reports {
            let b = r.broadcasts.values().fold(checker::Counts::default(), |mut sum, c| {
                sum.expected += c.expected;
                sum.received += c.received;
                sum.lost_told += c.lost_told;
                sum.lost_silent += c.lost_silent;
                sum.duplicated += c.duplicated;
                sum.reordered += c.reordered;
                sum
            });
            eprintln!(
                "node-{}: rows {}/{} lost told {} silent {} dup {} reordered {}, slowest row {} ms; \
                 broadcasts {}/{} lost {} dup {} reordered {}; told {:?}",
                r.node,
                r.rows.received,
                r.rows.expected,
                r.rows.lost_told,
                r.rows.lost_silent,
                r.rows.duplicated,
                r.rows.reordered,
                r.max_row_delay.as_millis(),
                b.received,
                b.expected,
                b.lost_told + b.lost_silent,
                b.duplicated,
                b.reordered,
                r.told
                    .iter()
                    .map(|(at, what)| format!("{:.1}s {}", at.as_secs_f64(), short(what)))
                    .collect::<Vec<_>>()
            );
        }
    }

    /// What every scenario asserts: [`Outcome::assert_rows_exact_or_told`] and
    /// [`Outcome::assert_broadcast_order`].
    pub fn assert_nothing_silently_lost_or_reordered(&self) {
        self.assert_rows_exact_or_told();
        self.assert_broadcast_order();
    }

    /// The rule: every row exactly once and in order, or the subscriber was told.
    pub fn assert_rows_exact_or_told(&self) {
        for r in &self.reports {
            assert_eq!(r.rows.lost_silent, 0, "node-{}: rows lost with nothing said: {:?}", r.node, r.rows);
            assert_eq!(r.rows.duplicated, 0, "node-{}: rows duplicated: {:?}", r.node, r.rows);
            assert_eq!(r.rows.reordered, 0, "node-{}: rows out of commit order: {:?}", r.node, r.rows);
            assert!(r.rows.expected > 0, "node-{}: no row was expected: was it ever subscribed?", r.node);
        }
    }

    /// No subscriber got a broadcast twice or after a newer one from the same publisher.
    pub fn assert_broadcast_order(&self) {
        for r in &self.reports {
            for (from, c) in &r.broadcasts {
                assert_eq!(c.duplicated, 0, "node-{}: broadcasts from node-{from} duplicated: {c:?}", r.node);
                assert_eq!(
                    c.reordered, 0,
                    "node-{}: broadcasts from node-{from} out of order: {c:?}",
                    r.node
                );
            }
        }
    }

    pub fn report(&self, node: usize) -> &Report {
        self.reports.iter().find(|r| r.node == node).expect("a report per node")
    }
}

fn short(text: &str) -> String {
    text.chars().take(60).collect()
}
