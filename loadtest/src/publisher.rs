//! Publisher connections (run in the parent process): each joins its share of the channels and
//! broadcasts stamped payloads at its share of the total rate, round-robin over its channels.
//!
//! The schedule is absolute: broadcast `k` of publisher `p` is due at `start + offset(p) + k × period`,
//! and that due time, not the moment it went out, is what its stamp carries (see [`crate::payload`]).
//! How far behind schedule each send was (its *lag*) is recorded too, so a report can tell a slow
//! server from a stalled load generator; broadcasts still due when the window closes are counted, not
//! sent late.
//!
//! A publisher that fell behind catches up at once, but never faster than `max_per_second` in any
//! sliding second: a burst past the server's per-socket limit would get it disconnected and turn a
//! slow run into a broken one.
//!
//! With several nodes, publishers take them in turn, so a broadcast reaches most receivers through the
//! cluster's relay.
//!
//! Publishers are separate sockets from the receivers and join with `self: false`, so they never
//! receive their own broadcasts. The server limits events per socket per second (100 by default),
//! which is why the total rate is spread over several publishers.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::future::join_all;
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::time::{interval_at, sleep_until, timeout_at, Instant, MissedTickBehavior};

use crate::client::{closed_kind, Client, ClientError, Endpoint, HEARTBEAT_INTERVAL};
use crate::frames::{self, Event};
use crate::payload::{now_unix_nanos, Stamp};
use crate::report::{latency_histogram, merge_errors, ErrorCounts};
use crate::scenario::fanout::topic;

/// User event name of every load broadcast.
pub const EVENT: &str = "load";

/// Most channels one socket may join on a default server (`--max-channels-per-client`).
pub const MAX_CHANNELS_PER_PUBLISHER: usize = 100;

/// What the publishers do.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    pub publishers: usize,
    pub channels: usize,
    /// Broadcasts per second over all publishers.
    pub rate: f64,
    pub duration: Duration,
    /// Size of each broadcast's JSON payload (the stamp padded); 0 for the bare stamp.
    pub payload_bytes: usize,
    /// Most broadcasts one publisher sends in any one-second window, catching up included.
    pub max_per_second: usize,
    /// How long publishers stay connected after the window (the drain), before closing.
    pub linger: Duration,
    pub connect_timeout: Duration,
    pub join_timeout: Duration,
}

/// What the publishers did.
#[derive(Debug, Clone)]
pub struct PublishResult {
    /// Publishers that connected and joined all their channels.
    pub connected: u64,
    pub sent_per_channel: Vec<u64>,
    /// Broadcasts the connected publishers' schedules made due before the window closed.
    pub due: u64,
    /// How late each send started relative to its due time (µs).
    pub lag_us: Histogram<u64>,
    /// Time from the first scheduled send until the last publisher stopped (the window, unless they
    /// all stopped early).
    pub elapsed: Duration,
    pub errors: ErrorCounts,
}

impl Default for PublishResult {
    fn default() -> Self {
        PublishResult {
            connected: 0,
            sent_per_channel: Vec::new(),
            due: 0,
            lag_us: latency_histogram(),
            elapsed: Duration::ZERO,
            errors: ErrorCounts::new(),
        }
    }
}

/// Channels publisher `p` of `publishers` sends to: every `publishers`-th channel starting at `p`, or a
/// single shared channel when there are more publishers than channels.
pub fn channels_of(p: usize, publishers: usize, channels: usize) -> Vec<usize> {
    if publishers >= channels {
        vec![p % channels]
    } else {
        (p..channels).step_by(publishers).collect()
    }
}

/// A joined channel of a publisher.
struct Joined {
    channel: usize,
    topic: String,
    join_ref: String,
    open: bool,
}

struct Publisher {
    index: usize,
    client: Client,
    channels: Vec<Joined>,
}

/// Connects every publisher (publisher `p` to node `p mod nodes`), then publishes for `plan.duration`
/// starting at the same instant, then keeps them connected for `plan.linger` (the drain).
pub async fn run(endpoints: &[Endpoint], plan: &PublishPlan) -> PublishResult {
    let mut result = PublishResult { sent_per_channel: vec![0; plan.channels], ..PublishResult::default() };
    let connects =
        join_all((0..plan.publishers).map(|p| connect(&endpoints[p % endpoints.len()], p, plan))).await;
    let mut ready = Vec::new();
    for outcome in connects {
        match outcome {
            Ok(publisher) => ready.push(publisher),
            Err(e) => *result.errors.entry(format!("publisher {}", e.kind())).or_default() += 1,
        }
    }
    result.connected = ready.len() as u64;
    let start = Instant::now();
    let start_unix_nanos = now_unix_nanos();
    let end = start + plan.duration;
    let schedule = Schedule { start, start_unix_nanos, end };
    let mut last_stop = start;
    for outcome in join_all(ready.into_iter().map(|p| p.publish(plan, &schedule))).await {
        last_stop = last_stop.max(outcome.stopped);
        for (channel, n) in outcome.sent {
            result.sent_per_channel[channel] += n;
        }
        result.due += outcome.due;
        let _ = result.lag_us.add(&outcome.lag_us);
        merge_errors(&mut result.errors, &outcome.errors);
    }
    result.elapsed = (last_stop - start).min(plan.duration);
    result
}

async fn connect(endpoint: &Endpoint, index: usize, plan: &PublishPlan) -> Result<Publisher, ClientError> {
    let mut client = Client::connect(endpoint, Instant::now() + plan.connect_timeout).await?;
    let mut channels = Vec::new();
    for channel in channels_of(index, plan.publishers, plan.channels) {
        let topic = topic(channel);
        let join_ref = client.join(&topic, Instant::now() + plan.join_timeout).await?;
        channels.push(Joined { channel, topic, join_ref, open: true });
    }
    Ok(Publisher { index, client, channels })
}

/// The publish window every publisher shares.
struct Schedule {
    start: Instant,
    /// `start` on the wall clock, which stamps use.
    start_unix_nanos: u64,
    end: Instant,
}

/// What one publisher did.
struct Outcome {
    /// Broadcasts sent per channel.
    sent: Vec<(usize, u64)>,
    due: u64,
    lag_us: Histogram<u64>,
    errors: ErrorCounts,
    /// When it stopped sending.
    stopped: Instant,
}

/// Broadcasts due in `[first, end)` at one per `period` from `first`.
pub fn due_before(first: Instant, period: Duration, end: Instant) -> u64 {
    if end <= first {
        return 0;
    }
    let span = (end - first).as_nanos();
    u64::try_from(span.div_ceil(period.as_nanos().max(1))).unwrap_or(u64::MAX)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[derive(Deserialize)]
struct SystemPayload {
    message: Option<String>,
}

impl Publisher {
    /// Sends at `rate / publishers` per second on the shared schedule (offset so publishers interleave)
    /// until its end; returns what it sent, how late, and the errors seen.
    async fn publish(mut self, plan: &PublishPlan, schedule: &Schedule) -> Outcome {
        let mut errors = ErrorCounts::new();
        let mut lag_us = latency_histogram();
        let mut sent: Vec<(usize, u64)> = self.channels.iter().map(|j| (j.channel, 0)).collect();
        let period = Duration::from_secs_f64(plan.publishers as f64 / plan.rate);
        let offset = period.mul_f64(self.index as f64 / plan.publishers as f64);
        let first = schedule.start + offset;
        let first_unix_nanos = schedule.start_unix_nanos + u64::try_from(offset.as_nanos()).unwrap_or(0);
        let due = due_before(first, period, schedule.end);
        let mut tick = interval_at(first, period);
        // Absolute schedule: with tokio's 1 ms timer granularity, `Delay` would drift ~1% below the rate.
        // A late tick is caught up at once (the stamps still carry the due times, so the lateness is
        // measured); only a stall of most of a second could then exceed the server's per-socket limit.
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut heartbeat = interval_at(schedule.start + HEARTBEAT_INTERVAL, HEARTBEAT_INTERVAL);
        let cap = plan.max_per_second.max(1);
        let mut recent: VecDeque<Instant> = VecDeque::with_capacity(cap);
        let mut error = |kind: String| *errors.entry(format!("publisher {kind}")).or_default() += 1;
        let (mut k, mut next) = (0u64, 0usize);
        let finished = sleep_until(schedule.end);
        tokio::pin!(finished);
        loop {
            tokio::select! {
                biased;
                _ = &mut finished => break,
                event = self.client.recv() => match event {
                    Event::ChannelClosed { topic, event } => {
                        error(event);
                        self.channels.iter_mut().filter(|j| j.topic == topic).for_each(|j| j.open = false);
                    }
                    Event::System { payload, .. } => {
                        let message = serde_json::from_str::<SystemPayload>(&payload).ok().and_then(|p| p.message);
                        error(format!("system: {}", message.unwrap_or(payload)));
                    }
                    Event::Reply { ok: false, response, .. } => error(format!("reply error: {}", frames::error_reason(&response))),
                    Event::Closed { code } => {
                        error(closed_kind("closed", code));
                        break;
                    }
                    _ => {}
                },
                due_at = tick.tick() => {
                    let Some(slot) = (0..self.channels.len()).map(|i| (next + i) % self.channels.len()).find(|&i| self.channels[i].open) else {
                        break;
                    };
                    next = slot + 1;
                    if recent.len() >= cap {
                        // Bounded by a second; the window's end bounds it too.
                        let free_at = recent.pop_front().map_or(due_at, |t| t + Duration::from_secs(1));
                        sleep_until(free_at.min(schedule.end)).await;
                    }
                    let now = Instant::now();
                    recent.push_back(now);
                    lag_us.saturating_record(micros(now.saturating_duration_since(due_at)));
                    let scheduled = first_unix_nanos.saturating_add(u64::try_from(period.as_nanos() * u128::from(k)).unwrap_or(u64::MAX));
                    let stamp = Stamp { scheduled_unix_nanos: scheduled, publisher: self.index as u32, seq: sent[slot].1 };
                    let joined = &self.channels[slot];
                    let data = stamp.encode_padded(plan.payload_bytes);
                    if let Err(e) = self.client.broadcast(&joined.topic, &joined.join_ref, EVENT, &data).await {
                        error(e.kind());
                        break;
                    }
                    sent[slot].1 += 1;
                    k += 1;
                }
                _ = heartbeat.tick() => {
                    if let Err(e) = self.client.heartbeat().await {
                        error(e.kind());
                        break;
                    }
                }
            }
        }
        let stopped = Instant::now();
        // Stay connected (reading, discarding) through the drain: closing right after the last send
        // lost that broadcast for every receiver in 2 of 5 runs tried (a close with unread
        // data in the socket resets it, which may discard what the server had not read yet).
        let linger_end = schedule.end + plan.linger;
        while let Ok(event) = timeout_at(linger_end, self.client.recv()).await {
            if let Event::Closed { .. } = event {
                break;
            }
        }
        self.client.close().await;
        Outcome { sent, due, lag_us, errors, stopped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_split_between_publishers() {
        assert_eq!(channels_of(0, 3, 10), vec![0, 3, 6, 9]);
        assert_eq!(channels_of(2, 3, 10), vec![2, 5, 8]);
        let mut all: Vec<usize> = (0..3).flat_map(|p| channels_of(p, 3, 10)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(channels_of(7, 20, 5), vec![2]);
        assert_eq!(channels_of(0, 1, 1), vec![0]);
    }

    #[test]
    fn due_counts_the_schedule() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(due_before(t, ms(10), t + ms(100)), 10);
        assert_eq!(due_before(t, ms(10), t + ms(101)), 11);
        assert_eq!(due_before(t, ms(10), t + ms(1)), 1);
        assert_eq!(due_before(t + ms(5), ms(10), t), 0);
    }
}
