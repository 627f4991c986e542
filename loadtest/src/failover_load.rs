//! The `failover` scenario's load, in this process: Postgres Changes subscribers that log every row
//! they receive (id, insert time, arrival time), and one inserter committing a row at a time on a fixed
//! schedule, logging each row's id, send time and acknowledgement time. The scenario reads both logs
//! while it runs (resume times) and at the end ([`crate::failover_check`]).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{interval, timeout, Instant, MissedTickBehavior};
use tokio_postgres::Client as DbClient;

use crate::client::{Client, Endpoint};
use crate::database::{bindings_json, insert_sql, user_id};
use crate::failover_check::Committed;
use crate::frames::Event;
use crate::payload::now_unix_nanos;
use crate::pgchange::parse_change;
use crate::report::ErrorCounts;
use crate::session;
use crate::subscriber::await_subscribed;

/// A statement that takes longer than this counts as failed (its outcome unknown; the row, if it
/// committed, is then not due to anyone, as it is not in the log).
const INSERT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn count(errors: &Mutex<ErrorCounts>, kind: String) {
    *lock(errors).entry(kind).or_default() += 1;
}

/// What one subscriber saw.
#[derive(Debug, Default)]
pub struct SubLog {
    pub node: usize,
    /// When `Subscribed to PostgreSQL` arrived (Unix ns).
    pub subscribed_ns: u64,
    /// When its socket ended, unless it was stopped (Unix ns).
    pub ended_ns: Option<u64>,
    /// `(id, sent_ns, arrived_ns)` of this run's rows, in arrival order.
    pub rows: Vec<(i64, u64, u64)>,
    /// What went wrong after the subscription (a killed node's subscribers see their socket close).
    pub errors: ErrorCounts,
}

/// A live subscriber.
pub struct Subscriber {
    pub log: Arc<Mutex<SubLog>>,
    pub task: JoinHandle<()>,
}

/// Connects to `endpoint`, joins `topic` with an INSERT binding on the load table and waits for
/// `Subscribed to PostgreSQL` before `deadline`; then logs rows tagged `tag` until `stop` flips or the
/// socket ends. The error is the report label of what went wrong.
pub async fn subscribe(
    endpoint: &Endpoint,
    node: usize,
    topic: &str,
    tag: String,
    stop: watch::Receiver<bool>,
    deadline: Instant,
) -> Result<Subscriber, String> {
    let mut client = Client::connect(endpoint, deadline).await.map_err(|e| e.kind())?;
    client.join_postgres_changes(topic, &bindings_json(), deadline).await.map_err(|e| e.kind())?;
    await_subscribed(&mut client, deadline).await?;
    let log = Arc::new(Mutex::new(SubLog { node, subscribed_ns: now_unix_nanos(), ..SubLog::default() }));
    let task_log = Arc::clone(&log);
    let task = tokio::spawn(async move {
        let on_data = |event| {
            let Event::PostgresChanges { payload, .. } = event else { return };
            let now = now_unix_nanos();
            match parse_change(&payload) {
                Ok(row) if row.body.as_deref() == Some(tag.as_str()) => {
                    lock(&task_log).rows.push((row.id, row.sent_ns, now));
                }
                Ok(_) => {}
                Err(kind) => *lock(&task_log).errors.entry(kind).or_default() += 1,
            }
        };
        let stopped = stop.clone();
        let error = |kind: String| *lock(&task_log).errors.entry(kind).or_default() += 1;
        session::receive(client, stop, "after subscribed", on_data, error).await;
        if !*stopped.borrow() {
            lock(&task_log).ended_ns = Some(now_unix_nanos());
        }
    });
    Ok(Subscriber { log, task })
}

/// Inserts one row per `1 / rate` seconds (tagged `tag`, owned by user 0) until `stop` flips or the
/// connection closes, logging each committed row in `rows`.
pub async fn insert(
    db: Arc<DbClient>,
    rate: f64,
    tag: String,
    rows: Arc<Mutex<Vec<Committed>>>,
    errors: Arc<Mutex<ErrorCounts>>,
    mut stop: watch::Receiver<bool>,
) {
    let statement = match db.prepare(&insert_sql(1)).await {
        Ok(statement) => statement,
        Err(e) => return count(&errors, format!("insert prepare: {e}")),
    };
    let owner = user_id(0);
    let mut tick = interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let sent_ns = now_unix_nanos();
        let sent = i64::try_from(sent_ns).unwrap_or(i64::MAX);
        match timeout(INSERT_TIMEOUT, db.query(&statement, &[&owner, &sent, &tag])).await {
            Ok(Ok(result)) => {
                let acked_ns = now_unix_nanos();
                let mut log = lock(&rows);
                for row in result {
                    log.push(Committed { id: row.get(0), sent_ns, acked_ns });
                }
            }
            Ok(Err(e)) => {
                count(&errors, format!("insert error: {e}"));
                if db.is_closed() {
                    return;
                }
            }
            Err(_) => count(&errors, "insert timeout".into()),
        }
    }
}
