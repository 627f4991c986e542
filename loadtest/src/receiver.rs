//! Receiver connections: connect, join one channel, then record the delivery latency of every
//! broadcast until told to stop, heartbeating every 25 s as realtime-js does.
//!
//! All receivers of a process share one [`ReceiverStats`]; a lock per delivery is cheap next to the
//! frame decode, and one histogram per connection would cost hundreds of KiB each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::time::{interval_at, Instant, MissedTickBehavior};

use crate::client::{closed_kind, Client, Endpoint, HEARTBEAT_INTERVAL};
use crate::frames::{BroadcastPayload, Event};
use crate::ipc::FinishedReport;
use crate::payload::{now_unix_nanos, Stamp};
use crate::report::{latency_histogram, ErrorCounts, HistogramData};

/// Counters shared by every receiver of a process.
pub struct ReceiverStats {
    delivered: AtomicU64,
    delivery_us: Mutex<Histogram<u64>>,
    errors: Mutex<ErrorCounts>,
}

impl Default for ReceiverStats {
    fn default() -> Self {
        ReceiverStats {
            delivered: AtomicU64::new(0),
            delivery_us: Mutex::new(latency_histogram()),
            errors: Mutex::new(ErrorCounts::new()),
        }
    }
}

impl ReceiverStats {
    fn delivered(&self, latency_us: u64) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.delivery_us.lock().unwrap_or_else(PoisonError::into_inner).saturating_record(latency_us);
    }

    fn error(&self, kind: String) {
        *self.errors.lock().unwrap_or_else(PoisonError::into_inner).entry(kind).or_default() += 1;
    }

    /// The receive-phase report.
    pub fn finish(&self) -> FinishedReport {
        FinishedReport {
            delivered: self.delivered.load(Ordering::Relaxed),
            delivery_us: HistogramData::from_histogram(
                &self.delivery_us.lock().unwrap_or_else(PoisonError::into_inner),
            ),
            errors: self.errors.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            cdc: None,
        }
    }
}

/// How one connection's connect phase ended.
#[derive(Debug)]
pub struct JoinOutcome {
    /// Index of the connection within its process.
    pub conn: usize,
    pub channel: usize,
    /// Connect+join latency in µs, or the error kind.
    pub result: Result<u64, String>,
}

/// What every receiver of a process shares.
pub struct ReceiverContext {
    pub endpoint: Endpoint,
    pub connect_timeout: Duration,
    pub join_timeout: Duration,
    pub stats: ReceiverStats,
    pub outcome_tx: mpsc::Sender<JoinOutcome>,
}

/// One receiver: connect and join `topic` (holding `permit` until then), report the outcome, then
/// receive until `stop` flips (or its sender is dropped) or the socket closes.
pub async fn run(
    ctx: Arc<ReceiverContext>,
    conn: usize,
    channel: usize,
    topic: String,
    permit: OwnedSemaphorePermit,
    stop: watch::Receiver<bool>,
) {
    let start = Instant::now();
    let joined = async {
        let mut client = Client::connect(&ctx.endpoint, start + ctx.connect_timeout).await?;
        client.join(&topic, Instant::now() + ctx.join_timeout).await?;
        Ok::<_, crate::client::ClientError>(client)
    }
    .await;
    let latency_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    drop(permit);
    let (result, client) = match joined {
        Ok(client) => (Ok(latency_us), Some(client)),
        Err(e) => (Err(e.kind()), None),
    };
    // The collector may be gone once the connect phase timed out; this task is then aborted.
    let _ = ctx.outcome_tx.send(JoinOutcome { conn, channel, result }).await;
    if let Some(client) = client {
        receive(client, &ctx.stats, stop).await;
    }
}

#[derive(Deserialize)]
struct SystemPayload {
    message: Option<String>,
}

async fn receive(mut client: Client, stats: &ReceiverStats, mut stop: watch::Receiver<bool>) {
    let mut heartbeat = interval_at(Instant::now() + HEARTBEAT_INTERVAL, HEARTBEAT_INTERVAL);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut pending_heartbeat: Option<String> = None;
    if *stop.borrow() {
        client.close().await;
        return;
    }
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            event = client.recv() => match event {
                Event::Broadcast { payload, .. } => {
                    let now = now_unix_nanos();
                    let stamp = match &payload {
                        BroadcastPayload::User(bytes) => Stamp::decode(bytes),
                        BroadcastPayload::Json(text) => Stamp::decode_wrapped(text),
                    };
                    match stamp {
                        Some(stamp) => stats.delivered(stamp.latency_micros(now)),
                        None => stats.error("broadcast without a stamp".into()),
                    }
                }
                Event::Reply { msg_ref, .. } => {
                    if msg_ref.is_some() && msg_ref == pending_heartbeat {
                        pending_heartbeat = None;
                    }
                }
                Event::ChannelClosed { event, .. } => {
                    stats.error(format!("{event} after join"));
                    break;
                }
                Event::System { payload, .. } => {
                    let message = serde_json::from_str::<SystemPayload>(&payload).ok().and_then(|p| p.message);
                    stats.error(format!("system: {}", message.unwrap_or(payload)));
                }
                Event::Closed { code } => {
                    stats.error(closed_kind("closed after join", code));
                    return;
                }
                Event::Undecodable => stats.error("undecodable frame".into()),
                Event::PostgresChanges { .. } | Event::Other { .. } => {}
            },
            _ = heartbeat.tick() => {
                if pending_heartbeat.is_some() {
                    stats.error("heartbeat timeout".into());
                }
                match client.heartbeat().await {
                    Ok(msg_ref) => pending_heartbeat = Some(msg_ref),
                    Err(e) => {
                        stats.error(e.kind());
                        return;
                    }
                }
            }
        }
    }
    client.close().await;
}
