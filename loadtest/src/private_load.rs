//! The `private` scenario's connections, all in the parent process: the join measurements and the
//! database-broadcast subscribers.
//!
//! Both run through [`connect_phase`] (bounded concurrency, optional pacing, a phase deadline after
//! which pending connections are aborted and counted as failed), like every other scenario's
//! connections. They stay in one process because the counts this scenario needs (a few thousand
//! joins, one at a time per socket; hundreds of subscribers) fit one process's open-files limit, and
//! on a shared 2-core machine another process buys no CPU.
//!
//! - A **join probe** connects as its user, then times `phx_join` → `phx_reply` alone (the connect is
//!   timed apart: it is the same for every kind of join), and closes. Whether the join asked
//!   PostgreSQL depends only on the node's decision cache, i.e. on what joined before.
//! - A **subscriber** joins its channel (private or public) and, until told to stop, reads each
//!   database broadcast's payload ([`DbStamp`]): commit → client latency as `now − ms` (PostgreSQL's
//!   `clock_timestamp()` and this machine's clock are the same clock), and each (inserter, channel)
//!   stream's sequence numbers through [`SeqTracker`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{Client, Endpoint};
use crate::frames::{BroadcastPayload, Event};
use crate::ipc::JoinedReport;
use crate::payload::{now_unix_nanos, SeqTracker, SeqVerdict, Stamp};
use crate::receiver::JoinOutcome;
use crate::report::{latency_histogram, ErrorCounts};
use crate::session;
use crate::worker::{connect_phase, stop_tasks, ConnectArgs};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One connection to open: as user `user` (an index into the endpoints), to `topic`, private or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub topic: String,
    pub user: usize,
    pub private: bool,
    /// The group the outcome counts under (the channel index for subscribers, 0 for join probes).
    pub group: usize,
}

/// One kind of join, measured.
#[derive(Debug)]
pub struct JoinPhase {
    /// The connect phase's totals; `connect_join_us` holds the join round trips alone.
    pub joined: JoinedReport,
    /// TCP connect + WebSocket handshake of the probes that got that far.
    pub connect_us: Histogram<u64>,
    pub elapsed: Duration,
}

/// Connects each target, times its join, closes it; at most `connect.connect_concurrency` at once
/// (the caller sets it), all within `connect.connect_phase_timeout`.
pub async fn join_probes(
    endpoints: &Arc<Vec<Endpoint>>,
    targets: Vec<Target>,
    connect: &ConnectArgs,
) -> JoinPhase {
    let connect_us = Arc::new(Mutex::new(latency_histogram()));
    let (outcome_tx, outcome_rx) = mpsc::channel(1_024);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    let (connect_timeout, join_timeout) =
        (Duration::from_secs(connect.connect_timeout), Duration::from_secs(connect.join_timeout));
    let targets = Arc::new(targets);
    let spawn = |conn: usize, permit: OwnedSemaphorePermit, _stop| {
        let (endpoints, targets, connect_us, outcome_tx) =
            (Arc::clone(endpoints), Arc::clone(&targets), Arc::clone(&connect_us), outcome_tx.clone());
        async move {
            let target = &targets[conn];
            let start = Instant::now();
            let result = match Client::connect(&endpoints[target.user], start + connect_timeout).await {
                Err(e) => Err(e.kind()),
                Ok(mut client) => {
                    lock(&connect_us).saturating_record(micros(start.elapsed()));
                    let sent = Instant::now();
                    let joined =
                        client.join_channel(&target.topic, target.private, sent + join_timeout).await;
                    let join_us = micros(sent.elapsed());
                    client.close().await;
                    joined.map(|_| join_us).map_err(|e| e.kind())
                }
            };
            drop(permit);
            let _ = outcome_tx.send(JoinOutcome { conn, channel: target.group, result }).await;
        }
    };
    let joined = connect_phase(targets.len(), 1, connect, &mut tasks, outcome_rx, &stop_rx, spawn).await;
    let elapsed = started.elapsed();
    stop_tasks(stop_tx, tasks).await;
    let connect_us = lock(&connect_us).clone();
    JoinPhase { joined, connect_us, elapsed }
}

/// The payload of a database broadcast of this scenario.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DbStamp {
    /// `clock_timestamp()` when the row was built, Unix milliseconds (µs precision).
    pub ms: f64,
    /// Inserter index.
    pub p: u32,
    /// Sequence number in the (inserter, channel) stream.
    pub s: u64,
    /// Run tag.
    pub r: String,
}

#[derive(Deserialize)]
struct Wrapper<'a> {
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

impl DbStamp {
    /// Reads the stamp from a broadcast as either serializer delivers it: the user payload bytes of a
    /// binary frame, or the `{"type":"broadcast","event":…,"payload":…,"meta":…}` JSON of a text one.
    pub fn from_broadcast(payload: &BroadcastPayload) -> Option<DbStamp> {
        match payload {
            BroadcastPayload::User(bytes) => serde_json::from_slice(bytes).ok(),
            BroadcastPayload::Json(text) => {
                let wrapper: Wrapper<'_> = serde_json::from_str(text).ok()?;
                serde_json::from_str(wrapper.payload?.get()).ok()
            }
        }
    }

    /// The stamp as the sequence checker and latency arithmetic take it (`ms` to Unix nanoseconds).
    pub fn stamp(&self) -> Option<Stamp> {
        (self.ms.is_finite() && self.ms >= 0.0).then(|| Stamp {
            scheduled_unix_nanos: (self.ms * 1e6).round() as u64,
            publisher: self.p,
            seq: self.s,
        })
    }
}

/// Counts of one channel's deliveries, summed over its subscribers.
#[derive(Debug, Default)]
pub struct ChannelCounts {
    pub delivered: AtomicU64,
    pub duplicates: AtomicU64,
    pub reordered: AtomicU64,
    /// Σ over subscribers and inserters of the next expected sequence number at the end.
    pub seq_next_total: AtomicU64,
}

/// What every subscriber shares.
pub struct BroadcastStats {
    pub channels: Vec<ChannelCounts>,
    /// Commit → client, µs, of private and public channels.
    pub private_us: Mutex<Histogram<u64>>,
    pub public_us: Mutex<Histogram<u64>>,
    /// Broadcasts of another run.
    pub foreign: AtomicU64,
    pub errors: Mutex<ErrorCounts>,
}

impl BroadcastStats {
    pub fn new(channels: usize) -> BroadcastStats {
        BroadcastStats {
            channels: (0..channels).map(|_| ChannelCounts::default()).collect(),
            private_us: Mutex::new(latency_histogram()),
            public_us: Mutex::new(latency_histogram()),
            foreign: AtomicU64::new(0),
            errors: Mutex::new(ErrorCounts::new()),
        }
    }

    pub fn error(&self, kind: String) {
        *lock(&self.errors).entry(kind).or_default() += 1;
    }
}

/// The subscribers, joined and receiving.
pub struct Subscribers {
    pub joined: JoinedReport,
    pub stats: Arc<BroadcastStats>,
    stop_tx: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Subscribers {
    /// Connects and joins every target (group = channel index), then leaves them receiving.
    pub async fn start(
        endpoints: &Arc<Vec<Endpoint>>,
        targets: Vec<Target>,
        channels: usize,
        run_tag: &str,
        connect: &ConnectArgs,
    ) -> Subscribers {
        let stats = Arc::new(BroadcastStats::new(channels));
        let (outcome_tx, outcome_rx) = mpsc::channel(1_024);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let (connect_timeout, join_timeout) =
            (Duration::from_secs(connect.connect_timeout), Duration::from_secs(connect.join_timeout));
        let targets = Arc::new(targets);
        let run_tag: Arc<str> = run_tag.into();
        let spawn = |conn: usize, permit: OwnedSemaphorePermit, stop: watch::Receiver<bool>| {
            let (endpoints, targets, stats, outcome_tx, run_tag) = (
                Arc::clone(endpoints),
                Arc::clone(&targets),
                Arc::clone(&stats),
                outcome_tx.clone(),
                Arc::clone(&run_tag),
            );
            async move {
                let target = &targets[conn];
                let start = Instant::now();
                let joined = async {
                    let mut client =
                        Client::connect(&endpoints[target.user], start + connect_timeout).await?;
                    client.join_channel(&target.topic, target.private, Instant::now() + join_timeout).await?;
                    Ok::<_, crate::client::ClientError>(client)
                }
                .await;
                let (result, client) = crate::receiver::timed(start, joined.map_err(|e| e.kind()));
                drop(permit);
                let _ = outcome_tx.send(JoinOutcome { conn, channel: target.group, result }).await;
                if let Some(client) = client {
                    receive(client, &stats, target.group, target.private, &run_tag, stop).await;
                }
            }
        };
        let joined =
            connect_phase(targets.len(), channels, connect, &mut tasks, outcome_rx, &stop_rx, spawn).await;
        Subscribers { joined, stats, stop_tx, tasks }
    }

    /// Tells every subscriber to stop and waits (bounded) for them to close; the stats are final then.
    pub async fn stop(self) -> Arc<BroadcastStats> {
        stop_tasks(self.stop_tx, self.tasks).await;
        self.stats
    }
}

async fn receive(
    client: Client,
    stats: &BroadcastStats,
    channel: usize,
    private: bool,
    run_tag: &str,
    stop: watch::Receiver<bool>,
) {
    let counts = &stats.channels[channel];
    let mut sequences = SeqTracker::default();
    let on_data = |event| {
        let Event::Broadcast { payload, .. } = event else { return };
        let now = now_unix_nanos();
        let Some(db) = DbStamp::from_broadcast(&payload) else {
            return stats.error("broadcast without a database stamp".into());
        };
        if db.r != run_tag {
            stats.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(stamp) = db.stamp() else { return stats.error("broadcast with an unusable ms".into()) };
        match sequences.observe(&stamp) {
            SeqVerdict::InOrder => {}
            SeqVerdict::Reordered => {
                counts.reordered.fetch_add(1, Ordering::Relaxed);
            }
            SeqVerdict::Duplicate => {
                counts.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            SeqVerdict::Implausible => {
                return stats.error("broadcast with an implausible inserter or sequence number".into())
            }
        }
        counts.delivered.fetch_add(1, Ordering::Relaxed);
        let histogram = if private { &stats.private_us } else { &stats.public_us };
        lock(histogram).saturating_record(stamp.latency_micros(now));
    };
    session::receive(client, stop, "after join", on_data, |kind| stats.error(kind)).await;
    counts.seq_next_total.fetch_add(sequences.next_total(), Ordering::Relaxed);
}

/// One channel's outcome: what was due to its subscribers and what they got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelOutcome {
    pub expected: u64,
    pub delivered: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Distinct deliveries beyond the expected (another run on the same topics, or a bug).
    pub extra: u64,
}

/// Per channel: every subscriber joined to it is due every send committed to it.
pub fn channel_outcomes(sent: &[u64], subscribed: &[u64], counts: &[ChannelCounts]) -> Vec<ChannelOutcome> {
    sent.iter()
        .zip(subscribed)
        .zip(counts)
        .map(|((&sent, &subscribed), c)| {
            let delivered = c.delivered.load(Ordering::Relaxed);
            let duplicates = c.duplicates.load(Ordering::Relaxed);
            let unique = delivered.saturating_sub(duplicates);
            let expected = sent * subscribed;
            ChannelOutcome {
                expected,
                delivered,
                duplicates,
                reordered: c.reordered.load(Ordering::Relaxed),
                lost: expected.saturating_sub(unique),
                extra: unique.saturating_sub(expected),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn stamps_read_from_both_serializers() {
        let user = br#"{"ms":1764547200123.456,"p":2,"s":7,"r":"tag","id":"0b7c"}"#;
        let want = DbStamp { ms: 1_764_547_200_123.456, p: 2, s: 7, r: "tag".into() };
        assert_eq!(
            DbStamp::from_broadcast(&BroadcastPayload::User(Bytes::from_static(user))),
            Some(want.clone())
        );
        let json = r#"{"type":"broadcast","event":"load","payload":{"ms":1764547200123.456,"p":2,"s":7,"r":"tag"},"meta":{"id":"x"}}"#;
        assert_eq!(DbStamp::from_broadcast(&BroadcastPayload::Json(json.into())), Some(want.clone()));
        // µs precision survives the f64.
        let stamp = want.stamp().unwrap();
        assert_eq!(stamp.scheduled_unix_nanos, 1_764_547_200_123_456_000);
        assert_eq!((stamp.publisher, stamp.seq), (2, 7));
        assert_eq!(stamp.latency_micros(1_764_547_200_125_456_000), 2_000);
    }

    #[test]
    fn other_broadcasts_are_not_stamps() {
        let other = BroadcastPayload::Json(r#"{"type":"broadcast","event":"x","payload":{"n":1}}"#.into());
        assert_eq!(DbStamp::from_broadcast(&other), None);
        assert_eq!(DbStamp::from_broadcast(&BroadcastPayload::User(Bytes::from_static(b"not json"))), None);
        let bad = DbStamp { ms: f64::NAN, p: 0, s: 0, r: String::new() };
        assert_eq!(bad.stamp(), None);
        assert_eq!(DbStamp { ms: -1.0, ..bad }.stamp(), None);
    }

    #[test]
    fn outcomes_per_channel() {
        let counts = [ChannelCounts::default(), ChannelCounts::default(), ChannelCounts::default()];
        // Channel 0: 10 sends to 3 subscribers, all received once plus 2 repeats.
        counts[0].delivered.store(32, Ordering::Relaxed);
        counts[0].duplicates.store(2, Ordering::Relaxed);
        // Channel 1: 10 sends to 2 subscribers, 5 never came, 1 came late.
        counts[1].delivered.store(15, Ordering::Relaxed);
        counts[1].reordered.store(1, Ordering::Relaxed);
        // Channel 2: nobody subscribed, yet something arrived.
        counts[2].delivered.store(1, Ordering::Relaxed);
        let got = channel_outcomes(&[10, 10, 10], &[3, 2, 0], &counts);
        assert_eq!(
            got[0],
            ChannelOutcome { expected: 30, delivered: 32, duplicates: 2, ..Default::default() }
        );
        assert_eq!(
            got[1],
            ChannelOutcome { expected: 20, delivered: 15, reordered: 1, lost: 5, ..Default::default() }
        );
        assert_eq!(got[2], ChannelOutcome { delivered: 1, extra: 1, ..Default::default() });
    }
}
