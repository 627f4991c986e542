//! Receiver connections: connect, join one channel, then record the delivery latency of every
//! broadcast (from its scheduled send time) and check each publisher's sequence numbers
//! ([`SeqTracker`]) until told to stop, heartbeating every 25 s as realtime-js does.
//!
//! All receivers of a process share one [`ReceiverStats`]; a lock per delivery is cheap next to the
//! frame decode, and one histogram per connection would cost hundreds of KiB each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::time::Instant;

use crate::client::{Client, Endpoint};
use crate::frames::{BroadcastPayload, Event};
use crate::ipc::FinishedReport;
use crate::payload::{now_unix_nanos, SeqTracker, SeqVerdict, Stamp};
use crate::report::{latency_histogram, ErrorCounts, HistogramData};
use crate::session;

/// Counters shared by every receiver of a process.
pub struct ReceiverStats {
    delivered: AtomicU64,
    duplicates: AtomicU64,
    reordered: AtomicU64,
    seq_next_total: AtomicU64,
    delivery_us: Mutex<Histogram<u64>>,
    errors: Mutex<ErrorCounts>,
}

impl Default for ReceiverStats {
    fn default() -> Self {
        ReceiverStats {
            delivered: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            reordered: AtomicU64::new(0),
            seq_next_total: AtomicU64::new(0),
            delivery_us: Mutex::new(latency_histogram()),
            errors: Mutex::new(ErrorCounts::new()),
        }
    }
}

impl ReceiverStats {
    /// Counts one delivery with its latency.
    pub fn delivered(&self, latency_us: u64) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.delivery_us.lock().unwrap_or_else(PoisonError::into_inner).saturating_record(latency_us);
    }

    /// Counts a delivery by its sequence verdict; returns whether it counts as delivered.
    pub fn sequenced(&self, verdict: SeqVerdict) -> bool {
        match verdict {
            SeqVerdict::InOrder => {}
            SeqVerdict::Reordered => {
                self.reordered.fetch_add(1, Ordering::Relaxed);
            }
            SeqVerdict::Duplicate => {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            SeqVerdict::Implausible => {
                self.error("broadcast with an implausible publisher or sequence number".into());
                return false;
            }
        }
        true
    }

    /// Counts one failure of kind `kind`.
    pub fn error(&self, kind: String) {
        *self.errors.lock().unwrap_or_else(PoisonError::into_inner).entry(kind).or_default() += 1;
    }

    /// The counts since the last call (or since the start), and starts counting again from zero: one
    /// report per phase of a run whose receivers stay connected across phases. `seq_next_total` is
    /// left out (receivers add it when they end).
    pub fn take(&self) -> FinishedReport {
        let mut histogram = self.delivery_us.lock().unwrap_or_else(PoisonError::into_inner);
        let delivery_us = HistogramData::from_histogram(&histogram);
        histogram.reset();
        drop(histogram);
        FinishedReport {
            delivered: self.delivered.swap(0, Ordering::Relaxed),
            duplicates: self.duplicates.swap(0, Ordering::Relaxed),
            reordered: self.reordered.swap(0, Ordering::Relaxed),
            seq_next_total: 0,
            delivery_us,
            errors: std::mem::take(&mut *self.errors.lock().unwrap_or_else(PoisonError::into_inner)),
            cdc: None,
        }
    }

    /// The receive-phase report.
    pub fn finish(&self) -> FinishedReport {
        FinishedReport {
            delivered: self.delivered.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            reordered: self.reordered.load(Ordering::Relaxed),
            seq_next_total: self.seq_next_total.load(Ordering::Relaxed),
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

/// What a connect(+join) started at `start` gives the collector: its latency in µs, or the kind of
/// its error; and the client, when it joined.
pub fn timed<C>(start: Instant, joined: Result<C, String>) -> (Result<u64, String>, Option<C>) {
    let latency_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    match joined {
        Ok(client) => (Ok(latency_us), Some(client)),
        Err(kind) => (Err(kind), None),
    }
}

/// What every receiver of a process shares.
pub struct ReceiverContext {
    /// The nodes' endpoints; each receiver connects to one of them.
    pub endpoints: Vec<Endpoint>,
    pub connect_timeout: Duration,
    pub join_timeout: Duration,
    pub stats: ReceiverStats,
    pub outcome_tx: mpsc::Sender<JoinOutcome>,
}

/// One receiver: connect to node `node` (an index into the endpoints) and join `topic` (holding
/// `permit` until then), report the outcome, then receive until `stop` flips (or its sender is dropped)
/// or the socket closes.
pub async fn run(
    ctx: Arc<ReceiverContext>,
    conn: usize,
    node: usize,
    channel: usize,
    topic: String,
    permit: OwnedSemaphorePermit,
    stop: watch::Receiver<bool>,
) {
    let start = Instant::now();
    let joined = async {
        let mut client = Client::connect(&ctx.endpoints[node], start + ctx.connect_timeout).await?;
        client.join(&topic, Instant::now() + ctx.join_timeout).await?;
        Ok::<_, crate::client::ClientError>(client)
    }
    .await;
    let (result, client) = timed(start, joined.map_err(|e| e.kind()));
    drop(permit);
    // The collector may be gone once the connect phase timed out; this task is then aborted.
    let _ = ctx.outcome_tx.send(JoinOutcome { conn, channel, result }).await;
    if let Some(client) = client {
        receive(client, &ctx.stats, stop).await;
    }
}

async fn receive(client: Client, stats: &ReceiverStats, stop: watch::Receiver<bool>) {
    let mut sequences = SeqTracker::default();
    let on_data = |event| {
        let Event::Broadcast { payload, .. } = event else { return };
        let now = now_unix_nanos();
        let stamp = match &payload {
            BroadcastPayload::User(bytes) => Stamp::decode(bytes),
            BroadcastPayload::Json(text) => Stamp::decode_wrapped(text),
        };
        match stamp {
            Some(stamp) => {
                if stats.sequenced(sequences.observe(&stamp)) {
                    stats.delivered(stamp.latency_micros(now));
                }
            }
            None => stats.error("broadcast without a stamp".into()),
        }
    };
    session::receive(client, stop, "after join", on_data, |kind| stats.error(kind)).await;
    stats.seq_next_total.fetch_add(sequences.next_total(), Ordering::Relaxed);
}
