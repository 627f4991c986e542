//! The publishing side of `compare`, in the parent process: one *pair* per room, a publisher and a
//! tracker (a plain member of the same room, read here so the publisher can see its messages arrive).
//!
//! Two paces ([`Pace`]):
//! - `Fixed`: the pairs publish at a total rate on an absolute schedule (pair `i` offset by
//!   `i / pairs` of a period); each stamp carries its *scheduled* send time, so the members' latency
//!   counts any time the server (or the publisher) fell behind (no coordinated omission).
//! - `Closed`: each publisher sends as fast as it may while at most `window` of its messages have not
//!   yet reached its tracker; so the server is kept busy without any queue growing without bound. A
//!   publisher whose tracker sees nothing for [`STALL`] writes its window off (counted as a stall) and
//!   goes on.
//!
//! Every loop ends at its phase's deadline; heartbeats (for protocols that need them) are sent every
//! [`HEARTBEAT_INTERVAL`] across phases.

use std::time::Duration;

use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use tokio::time::{interval_at, sleep_until, Instant, MissedTickBehavior};

use crate::client::HEARTBEAT_INTERVAL;
use crate::payload::{now_unix_nanos, Stamp};
use crate::peer_client::{PeerClient, PeerEvent};
use crate::peer_protocol::{room_name, Conversation, Protocol};
use crate::publisher::due_before;
use crate::report::{latency_histogram, merge_errors, ErrorCounts};

/// Time a closed-loop publisher waits for its tracker before writing its window off.
pub const STALL: Duration = Duration::from_secs(10);
/// Pairs connecting at once.
const CONNECT_CONCURRENCY: usize = 32;

/// A publisher and a tracker in one room.
pub struct Pair {
    room: usize,
    publisher: PeerClient,
    tracker: PeerClient,
    next_heartbeat: Instant,
    alive: bool,
}

/// How the publishers of a phase send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Messages per second over all pairs, on a fixed schedule.
    Fixed { rate: f64 },
    /// At most `window` messages in flight per publisher.
    Closed { window: u64 },
}

/// What the pairs did in one phase.
#[derive(Debug, Clone)]
pub struct PhaseOutcome {
    /// Messages sent, by room.
    pub sent_per_room: Vec<u64>,
    /// Messages the fixed schedule made due (0 for a closed loop).
    pub due: u64,
    /// Deliveries the trackers received (their own publisher's and any other).
    pub tracker_deliveries: u64,
    /// Closed-loop windows written off after [`STALL`].
    pub stalls: u64,
    /// How late each fixed-rate send started relative to its due time (µs).
    pub lag_us: Histogram<u64>,
    pub errors: ErrorCounts,
}

impl PhaseOutcome {
    fn new(rooms: usize) -> PhaseOutcome {
        PhaseOutcome {
            sent_per_room: vec![0; rooms],
            due: 0,
            tracker_deliveries: 0,
            stalls: 0,
            lag_us: latency_histogram(),
            errors: ErrorCounts::new(),
        }
    }

    pub fn sent(&self) -> u64 {
        self.sent_per_room.iter().sum()
    }
}

/// Connects a pair in each of `rooms` rooms (at most [`CONNECT_CONCURRENCY`] connecting at once);
/// returns the pairs that joined and the failures by kind.
pub async fn connect_pairs(
    addr: std::net::SocketAddr,
    protocol: Protocol,
    token: &str,
    rooms: usize,
    connect_timeout: Duration,
    join_timeout: Duration,
) -> (Vec<Pair>, ErrorCounts) {
    let connect_one = |room: usize| async move {
        let client = || {
            let now = Instant::now();
            let conversation = Conversation::new(protocol, room_name(room), token);
            PeerClient::connect(addr, conversation, now + connect_timeout, now + join_timeout)
        };
        let publisher = client().await?;
        let tracker = client().await?;
        Ok::<_, crate::client::ClientError>(Pair {
            room,
            publisher,
            tracker,
            next_heartbeat: Instant::now() + HEARTBEAT_INTERVAL,
            alive: true,
        })
    };
    let outcomes: Vec<_> =
        stream::iter(0..rooms).map(connect_one).buffer_unordered(CONNECT_CONCURRENCY).collect().await;
    let mut errors = ErrorCounts::new();
    let mut pairs = Vec::with_capacity(rooms);
    for outcome in outcomes {
        match outcome {
            Ok(pair) => pairs.push(pair),
            Err(e) => *errors.entry(format!("pair {}", e.kind())).or_default() += 1,
        }
    }
    pairs.sort_by_key(|p| p.room);
    (pairs, errors)
}

/// Publishes at `pace` for `duration` from every live pair; stamps name publisher `publisher_base +
/// pair index` (so each phase's sequence numbers start afresh for the members' checks).
pub async fn run_phase(
    pairs: &mut [Pair],
    rooms: usize,
    pace: Pace,
    publisher_base: u32,
    duration: Duration,
) -> PhaseOutcome {
    let live = pairs.iter().filter(|p| p.alive).count().max(1);
    let start = Instant::now() + Duration::from_millis(10);
    let start_unix_nanos = now_unix_nanos() + 10_000_000;
    let end = start + duration;
    let outcomes = join_all(pairs.iter_mut().filter(|p| p.alive).enumerate().map(|(i, pair)| {
        let schedule = match pace {
            Pace::Fixed { rate } => {
                let period = Duration::from_secs_f64(live as f64 / rate);
                let offset = period.mul_f64(i as f64 / live as f64);
                Some(Schedule {
                    first: start + offset,
                    first_unix_nanos: start_unix_nanos + u64::try_from(offset.as_nanos()).unwrap_or(0),
                    period,
                })
            }
            Pace::Closed { .. } => None,
        };
        let window = match pace {
            Pace::Closed { window } => window.max(1),
            Pace::Fixed { .. } => u64::MAX,
        };
        drive(pair, publisher_base + i as u32, schedule, window, start, end)
    }))
    .await;
    let mut total = PhaseOutcome::new(rooms);
    for (room, outcome) in outcomes {
        total.sent_per_room[room] += outcome.sent;
        total.due += outcome.due;
        total.tracker_deliveries += outcome.tracker_deliveries;
        total.stalls += outcome.stalls;
        let _ = total.lag_us.add(&outcome.lag_us);
        merge_errors(&mut total.errors, &outcome.errors);
    }
    total
}

/// Keeps every live pair reading (and heartbeating) until `until`, publishing nothing: the drain after
/// a phase. Returns the trackers' deliveries and the errors.
pub async fn drain(pairs: &mut [Pair], until: Instant) -> (u64, ErrorCounts) {
    let outcomes = join_all(
        pairs.iter_mut().filter(|p| p.alive).map(|pair| drive(pair, u32::MAX, None, 0, until, until)),
    )
    .await;
    let mut errors = ErrorCounts::new();
    let mut delivered = 0;
    for (_, outcome) in outcomes {
        delivered += outcome.tracker_deliveries;
        merge_errors(&mut errors, &outcome.errors);
    }
    (delivered, errors)
}

/// Closes every pair.
pub async fn close(pairs: Vec<Pair>) {
    join_all(pairs.into_iter().map(|p| async move {
        tokio::join!(p.publisher.close(), p.tracker.close());
    }))
    .await;
}

struct Schedule {
    first: Instant,
    first_unix_nanos: u64,
    period: Duration,
}

struct PairOutcome {
    sent: u64,
    due: u64,
    tracker_deliveries: u64,
    stalls: u64,
    lag_us: Histogram<u64>,
    errors: ErrorCounts,
}

/// One pair's phase: publish on `schedule` (fixed) or within `window` (closed loop; `window` 0
/// publishes nothing) from `start` until `end`, reading both sockets throughout.
async fn drive(
    pair: &mut Pair,
    publisher: u32,
    schedule: Option<Schedule>,
    window: u64,
    start: Instant,
    end: Instant,
) -> (usize, PairOutcome) {
    let mut out = PairOutcome {
        sent: 0,
        due: 0,
        tracker_deliveries: 0,
        stalls: 0,
        lag_us: latency_histogram(),
        errors: ErrorCounts::new(),
    };
    let (first, period) =
        schedule.as_ref().map_or((end, Duration::from_secs(3_600)), |s| (s.first, s.period));
    if schedule.is_some() {
        out.due = due_before(first, period, end);
    }
    let mut tick = interval_at(first, period);
    // Absolute schedule: late ticks are caught up at once, their stamps still carry the due times.
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let closed_loop = schedule.is_none() && window > 0;
    let (mut acked, mut last_progress) = (0u64, start);
    let error = |errors: &mut ErrorCounts, kind: String| *errors.entry(kind).or_default() += 1;
    let finished = sleep_until(end);
    tokio::pin!(finished);
    let started = sleep_until(start);
    tokio::pin!(started);
    loop {
        let open = closed_loop && out.sent - acked < window && started.is_elapsed();
        let stalled = closed_loop && out.sent - acked >= window;
        tokio::select! {
            biased;
            _ = &mut finished => break,
            event = pair.tracker.recv() => match event {
                PeerEvent::Delivery(stamp) => {
                    out.tracker_deliveries += 1;
                    if stamp.publisher == publisher {
                        acked = (acked + 1).min(out.sent);
                        last_progress = Instant::now();
                    }
                }
                PeerEvent::Reply(frame) => if let Err(e) = pair.tracker.send(frame).await {
                    error(&mut out.errors, format!("tracker {}", e.kind()));
                    pair.alive = false;
                    break;
                },
                PeerEvent::Ended(why) => {
                    error(&mut out.errors, format!("tracker {why}"));
                    pair.alive = false;
                    break;
                }
                PeerEvent::Problem(what) => error(&mut out.errors, format!("tracker {what}")),
                PeerEvent::Other => {}
            },
            event = pair.publisher.recv() => match event {
                PeerEvent::Reply(frame) => if let Err(e) = pair.publisher.send(frame).await {
                    error(&mut out.errors, format!("publisher {}", e.kind()));
                    pair.alive = false;
                    break;
                },
                PeerEvent::Ended(why) => {
                    error(&mut out.errors, format!("publisher {why}"));
                    pair.alive = false;
                    break;
                }
                // A publisher is excluded from its own messages; there are no others in its room.
                PeerEvent::Delivery(_) => error(&mut out.errors, "publisher received a message".into()),
                PeerEvent::Problem(what) => error(&mut out.errors, format!("publisher {what}")),
                PeerEvent::Other => {}
            },
            _ = sleep_until(pair.next_heartbeat) => {
                pair.next_heartbeat = Instant::now() + HEARTBEAT_INTERVAL;
                let sent = match pair.publisher.heartbeat().await {
                    Ok(()) => pair.tracker.heartbeat().await,
                    Err(e) => Err(e),
                };
                if let Err(e) = sent {
                    error(&mut out.errors, format!("heartbeat {}", e.kind()));
                    pair.alive = false;
                    break;
                }
            }
            due_at = tick.tick(), if schedule.is_some() => {
                let s = schedule.as_ref().expect("guarded");
                let now = Instant::now();
                out.lag_us.saturating_record(u64::try_from(now.saturating_duration_since(due_at).as_micros()).unwrap_or(u64::MAX));
                let k = u32::try_from(out.sent).unwrap_or(u32::MAX);
                let scheduled = s.first_unix_nanos.saturating_add(u64::try_from((s.period * k).as_nanos()).unwrap_or(u64::MAX));
                let stamp = Stamp { scheduled_unix_nanos: scheduled, publisher, seq: out.sent };
                if let Err(e) = pair.publisher.publish(&stamp.encode()).await {
                    error(&mut out.errors, format!("publisher {}", e.kind()));
                    pair.alive = false;
                    break;
                }
                out.sent += 1;
            }
            _ = &mut started, if closed_loop && !started.is_elapsed() => {
                last_progress = Instant::now();
            }
            _ = std::future::ready(()), if open => {
                let stamp = Stamp { scheduled_unix_nanos: now_unix_nanos(), publisher, seq: out.sent };
                if let Err(e) = pair.publisher.publish(&stamp.encode()).await {
                    error(&mut out.errors, format!("publisher {}", e.kind()));
                    pair.alive = false;
                    break;
                }
                out.sent += 1;
            }
            _ = sleep_until(last_progress + STALL), if stalled => {
                out.stalls += 1;
                acked = out.sent;
                last_progress = Instant::now();
            }
        }
    }
    (pair.room, out)
}
