//! Postgres Changes subscribers (scenario `cdc`): connect with the token of one user, join a channel
//! with one INSERT binding on the load table, wait for the `system` `Subscribed to PostgreSQL`
//! (PROTOCOL.md §2.6, §2.9), then time and check every change until told to stop, heartbeating every
//! 25 s as realtime-js does.
//!
//! Per change: rows of another run are ignored (`foreign`); with RLS a row whose owner is not this
//! subscriber's user is a leak; ids must go up per subscriber (a repeat or step back is
//! `out_of_order`). All subscribers of a process share one [`SubscriberStats`], which also counts the
//! receipts of every row id so the parent can name the rows that went missing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::time::{timeout_at, Instant};

use crate::client::{closed_kind, Client, Endpoint};
use crate::frames::Event;
use crate::ipc::{receipt_runs, CdcFinished, FinishedReport};
use crate::payload::now_unix_nanos;
use crate::pgchange::parse_change;
use crate::receiver::JoinOutcome;
use crate::report::{latency_histogram, ErrorCounts, HistogramData};
use crate::session;

/// The `system` message of a live postgres subscription.
pub const SUBSCRIBED: &str = "Subscribed to PostgreSQL";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counters shared by every subscriber of a process.
pub struct SubscriberStats {
    delivered: AtomicU64,
    leaked: AtomicU64,
    out_of_order: AtomicU64,
    foreign: AtomicU64,
    insert_us: Mutex<Histogram<u64>>,
    commit_us: Mutex<Histogram<u64>>,
    /// Row id → subscribers of this process that received it (rows they may see only).
    receipts: Mutex<HashMap<i64, u64>>,
    errors: Mutex<ErrorCounts>,
}

impl Default for SubscriberStats {
    fn default() -> Self {
        SubscriberStats {
            delivered: AtomicU64::new(0),
            leaked: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            insert_us: Mutex::new(latency_histogram()),
            commit_us: Mutex::new(latency_histogram()),
            receipts: Mutex::new(HashMap::new()),
            errors: Mutex::new(ErrorCounts::new()),
        }
    }
}

impl SubscriberStats {
    fn delivered(&self, id: i64, insert_us: u64, commit_us: Option<u64>) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        *lock(&self.receipts).entry(id).or_default() += 1;
        lock(&self.insert_us).saturating_record(insert_us);
        if let Some(us) = commit_us {
            lock(&self.commit_us).saturating_record(us);
        }
    }

    fn error(&self, kind: String) {
        *lock(&self.errors).entry(kind).or_default() += 1;
    }

    /// The receive-phase report.
    pub fn finish(&self) -> FinishedReport {
        FinishedReport {
            delivered: self.delivered.load(Ordering::Relaxed),
            delivery_us: HistogramData::from_histogram(&lock(&self.insert_us)),
            errors: lock(&self.errors).clone(),
            cdc: Some(CdcFinished {
                commit_us: HistogramData::from_histogram(&lock(&self.commit_us)),
                leaked: self.leaked.load(Ordering::Relaxed),
                out_of_order: self.out_of_order.load(Ordering::Relaxed),
                foreign: self.foreign.load(Ordering::Relaxed),
                receipts: receipt_runs(lock(&self.receipts).iter().map(|(&id, &n)| (id, n))),
            }),
            // The cdc scenario checks ordering per row id, in `cdc` above.
            ..FinishedReport::default()
        }
    }
}

/// What every subscriber of a process shares.
pub struct SubscriberContext {
    /// One endpoint per user (the user's token is the `apikey` and the join's `access_token`).
    pub endpoints: Vec<Endpoint>,
    /// User ids (the tokens' `sub`), by user index.
    pub users: Vec<String>,
    /// RLS is on: a subscriber may only see its own user's rows.
    pub rls: bool,
    /// The `body` of this run's rows.
    pub run_tag: String,
    /// `config.postgres_changes` of every join (a JSON array).
    pub bindings_json: String,
    pub connect_timeout: Duration,
    pub join_timeout: Duration,
    pub subscribe_timeout: Duration,
    pub stats: SubscriberStats,
    pub outcome_tx: mpsc::Sender<JoinOutcome>,
}

#[derive(Deserialize)]
struct SystemPayload {
    status: Option<String>,
    message: Option<String>,
}

/// One subscriber: connect as `user`, join `topic` and wait until subscribed (holding `permit` until
/// then), report the outcome (group = user index), then receive until `stop` flips or the socket closes.
pub async fn run(
    ctx: Arc<SubscriberContext>,
    conn: usize,
    user: usize,
    topic: String,
    permit: OwnedSemaphorePermit,
    stop: watch::Receiver<bool>,
) {
    let start = Instant::now();
    let subscribed = async {
        let mut client =
            Client::connect(&ctx.endpoints[user], start + ctx.connect_timeout).await.map_err(|e| e.kind())?;
        client
            .join_postgres_changes(&topic, &ctx.bindings_json, Instant::now() + ctx.join_timeout)
            .await
            .map_err(|e| e.kind())?;
        await_subscribed(&mut client, Instant::now() + ctx.subscribe_timeout).await?;
        Ok::<_, String>(client)
    }
    .await;
    let (result, client) = crate::receiver::timed(start, subscribed);
    drop(permit);
    // The collector may be gone once the connect phase timed out; this task is then aborted.
    let _ = ctx.outcome_tx.send(JoinOutcome { conn, channel: user, result }).await;
    if let Some(client) = client {
        receive(client, &ctx, &ctx.users[user], stop).await;
    }
}

/// Waits for `system` `Subscribed to PostgreSQL`; the error is the report label of what came instead.
pub async fn await_subscribed(client: &mut Client, deadline: Instant) -> Result<(), String> {
    loop {
        let event = timeout_at(deadline, client.recv()).await.map_err(|_| "subscribe timeout".to_owned())?;
        match event {
            Event::System { payload, .. } => {
                let system = serde_json::from_str::<SystemPayload>(&payload).ok();
                let (status, message) = system.map(|s| (s.status, s.message)).unwrap_or_default();
                match (status.as_deref(), message) {
                    (Some("ok"), Some(m)) if m == SUBSCRIBED => return Ok(()),
                    (Some("error"), m) => return Err(format!("subscribe error: {}", m.unwrap_or(payload))),
                    _ => {}
                }
            }
            Event::ChannelClosed { event, .. } => return Err(format!("{event} before subscribed")),
            Event::Closed { code } => return Err(closed_kind("closed before subscribed", code)),
            _ => {}
        }
    }
}

async fn receive(client: Client, ctx: &SubscriberContext, user: &str, stop: watch::Receiver<bool>) {
    let stats = &ctx.stats;
    let mut last_id: Option<i64> = None;
    let on_data = |event| {
        let Event::PostgresChanges { payload, .. } = event else { return };
        let now = now_unix_nanos();
        let row = match parse_change(&payload) {
            Ok(row) => row,
            Err(kind) => return stats.error(kind),
        };
        if row.body.as_deref() != Some(ctx.run_tag.as_str()) {
            stats.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if ctx.rls && row.owner != user {
            stats.leaked.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if last_id.is_some_and(|last| row.id <= last) {
            stats.out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        last_id = Some(last_id.map_or(row.id, |last| last.max(row.id)));
        let insert_us = now.saturating_sub(row.sent_ns) / 1_000;
        let commit_us = row.commit_ns.map(|c| now.saturating_sub(c) / 1_000);
        stats.delivered(row.id, insert_us, commit_us);
    };
    session::receive(client, stop, "after subscribed", on_data, |kind| stats.error(kind)).await;
}
