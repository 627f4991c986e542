//! The `room` scenario's churn: a pool of churner connections (connected, not joined) and a fixed
//! schedule of joins. Join `k` is due `k / rate` after the start; it goes to an idle churner, which
//! joins with presence on under key `c-<k>`, tracks `{"c": k}`, holds for `--churn-hold-ms` from its
//! join reply (reading all the while), leaves, and is idle again. A join due while every churner is
//! busy is counted as not issued on time rather than sent late (no coordinated omission), and join
//! latency counts from the due time.
//!
//! The track's ok reply time goes into the [`crate::room_members::ChurnLog`], where the observer's
//! first sight of the key meets it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{interval_at, timeout_at, Instant, MissedTickBehavior};

use crate::client::{Client, HEARTBEAT_INTERVAL};
use crate::frames::Event;
use crate::report::{latency_histogram, ErrorCounts};
use crate::room_frames::churn_key;
use crate::room_members::{await_reply, lock, next_frame, RoomShared};
use crate::schedule::{steps_in, Pacer};

/// How long a churner waits for the `phx_close` that follows its leave reply.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What the churn asks of the server.
#[derive(Debug, Clone, Copy)]
pub struct ChurnPlan {
    pub rate: f64,
    pub duration: Duration,
    pub hold: Duration,
}

/// What the churn did.
#[derive(Debug)]
pub struct ChurnResult {
    pub churners_connected: u64,
    pub due: u64,
    pub issued: u64,
    /// Due while every churner was busy (or gone).
    pub not_on_time: u64,
    pub joins_ok: u64,
    pub joins_failed: u64,
    pub tracks_ok: u64,
    /// Due time → ok join reply.
    pub join_us: Histogram<u64>,
    /// Ok joins whose reply came within the churn window, per second of it.
    pub joins_per_sec: f64,
    pub errors: ErrorCounts,
}

#[derive(Debug)]
struct Counts {
    joins_ok: u64,
    joins_in_window: u64,
    joins_failed: u64,
    tracks_ok: u64,
    join_us: Histogram<u64>,
    errors: ErrorCounts,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Connects `churners` connections (not joined), at most `concurrency` at once; the failures by kind.
pub async fn connect(shared: &RoomShared, churners: usize, concurrency: usize) -> (Vec<Client>, ErrorCounts) {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let connects = join_all((0..churners).map(|_| {
        let permits = Arc::clone(&permits);
        async move {
            let _permit = permits.acquire_owned().await.ok();
            Client::connect(&shared.endpoint, Instant::now() + shared.connect_timeout).await
        }
    }))
    .await;
    let mut errors = ErrorCounts::new();
    let mut clients = Vec::with_capacity(churners);
    for outcome in connects {
        match outcome {
            Ok(client) => clients.push(client),
            Err(e) => *errors.entry(format!("churner {}", e.kind())).or_default() += 1,
        }
    }
    (clients, errors)
}

/// Runs the schedule for `plan.duration` on the connected churners, lets the cycles in flight finish
/// (bounded by the hold and the join timeout) and closes the churners.
pub async fn run(shared: Arc<RoomShared>, clients: Vec<Client>, plan: ChurnPlan) -> ChurnResult {
    let counts = Arc::new(Mutex::new(Counts {
        joins_ok: 0,
        joins_in_window: 0,
        joins_failed: 0,
        tracks_ok: 0,
        join_us: latency_histogram(),
        errors: ErrorCounts::new(),
    }));
    let (idle_tx, mut idle_rx) = mpsc::unbounded_channel::<usize>();
    let mut commands = Vec::new();
    let mut tasks = Vec::new();
    let period = Duration::from_secs_f64(1.0 / plan.rate);
    for client in clients {
        let id = commands.len();
        let (tx, rx) = mpsc::channel(1);
        commands.push(tx);
        let _ = idle_tx.send(id);
        let (shared, counts, idle_tx) = (Arc::clone(&shared), Arc::clone(&counts), idle_tx.clone());
        tasks.push(tokio::spawn(churner(shared, client, id, rx, idle_tx, counts, plan.hold)));
    }
    drop(idle_tx);
    let connected = commands.len() as u64;
    let mut idle: VecDeque<usize> = VecDeque::new();
    let (mut issued, mut not_on_time) = (0u64, 0u64);
    let mut pacer = Pacer::with_cutoff(period, plan.duration);
    let window_end = Instant::now() + plan.duration;
    while let Some(k) = pacer.next().await {
        while let Ok(id) = idle_rx.try_recv() {
            idle.push_back(id);
        }
        let due = pacer.due(k);
        let sent = loop {
            let Some(id) = idle.pop_front() else { break false };
            // A churner whose task ended (socket gone) refuses the command; try the next.
            if commands[id].try_send((u64::from(k), due, window_end)).is_ok() {
                break true;
            }
        };
        if sent {
            issued += 1;
        } else {
            not_on_time += 1;
        }
    }
    drop(commands);
    let budget = plan.hold + 3 * shared.join_timeout + Duration::from_secs(2);
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    if tokio::time::timeout(budget, join_all(tasks)).await.is_err() {
        aborts.iter().for_each(|a| a.abort());
        *lock(&counts)
            .errors
            .entry("churner cycle still running at the end (aborted)".into())
            .or_default() += 1;
    }
    let due = steps_in(period, plan.duration);
    let c = lock(&counts);
    ChurnResult {
        churners_connected: connected,
        due,
        issued,
        not_on_time: due.saturating_sub(issued).max(not_on_time),
        joins_ok: c.joins_ok,
        joins_failed: c.joins_failed,
        tracks_ok: c.tracks_ok,
        join_us: c.join_us.clone(),
        joins_per_sec: c.joins_in_window as f64 / plan.duration.as_secs_f64().max(f64::EPSILON),
        errors: c.errors.clone(),
    }
}

/// One churner: a cycle per command until the commands end or its socket does.
async fn churner(
    shared: Arc<RoomShared>,
    mut client: Client,
    id: usize,
    mut commands: mpsc::Receiver<(u64, Instant, Instant)>,
    idle: mpsc::UnboundedSender<usize>,
    counts: Arc<Mutex<Counts>>,
    hold: Duration,
) {
    let error = |kind: String| *lock(&counts).errors.entry(format!("churner {kind}")).or_default() += 1;
    let mut heartbeat = interval_at(Instant::now() + HEARTBEAT_INTERVAL, HEARTBEAT_INTERVAL);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let command = tokio::select! {
            command = commands.recv() => command,
            _ = heartbeat.tick() => {
                if let Err(e) = client.heartbeat().await {
                    error(e.kind());
                    break;
                }
                continue;
            }
        };
        let Some((k, due, window_end)) = command else { break };
        match cycle(&shared, &mut client, k, due, window_end, &counts, hold).await {
            Ok(()) => {
                if idle.send(id).is_err() {
                    break;
                }
            }
            Err(kind) => {
                error(kind);
                return;
            }
        }
    }
    client.close().await;
}

/// Join, track, hold, leave. `Err` only when the socket is gone (the churner is then retired); other
/// failures are counted and the cycle goes on to its leave.
async fn cycle(
    shared: &RoomShared,
    client: &mut Client,
    k: u64,
    due: Instant,
    window_end: Instant,
    counts: &Mutex<Counts>,
    hold: Duration,
) -> Result<(), String> {
    let vsn = shared.vsn;
    let payload = shared.join_payload(&churn_key(k), true);
    let join_ref = client.send_join(&shared.topic, &payload).await.map_err(|e| e.kind())?;
    let joined =
        await_reply(client, vsn, &join_ref, Instant::now() + shared.join_timeout, "join", |_, _| {}).await;
    let replied = Instant::now();
    match joined {
        Ok(()) => {
            let mut c = lock(counts);
            c.joins_ok += 1;
            c.joins_in_window += u64::from(replied <= window_end);
            c.join_us.saturating_record(micros(replied - due));
        }
        Err(kind) => {
            {
                let mut c = lock(counts);
                c.joins_failed += 1;
                *c.errors.entry(format!("churner {kind}")).or_default() += 1;
            }
            if kind.starts_with("closed") {
                return Err(kind);
            }
            if kind.starts_with("join error") {
                return Ok(()); // refused: nothing joined, nothing to leave
            }
            // No reply in time: the join may still land, so it is left (without a track).
            return leave(shared, client, &join_ref).await;
        }
    }
    let meta = format!("{{\"c\":{k}}}");
    let track_ref =
        client.send_presence(&shared.topic, &join_ref, Some(&meta)).await.map_err(|e| e.kind())?;
    let track_deadline = Instant::now() + shared.join_timeout;
    match await_reply(client, vsn, &track_ref, track_deadline, "track", |_, _| {}).await {
        Ok(()) => {
            let now = Instant::now();
            lock(counts).tracks_ok += 1;
            lock(&shared.churn).acked.insert(k, now);
        }
        Err(kind) if kind.starts_with("closed") => return Err(kind),
        Err(kind) => *lock(counts).errors.entry(format!("churner {kind}")).or_default() += 1,
    }
    // Hold, reading (and discarding) what the room sends.
    let hold_end = replied + hold;
    while let Ok((_, event)) = timeout_at(hold_end, next_frame(client, vsn)).await {
        if let Event::Closed { .. } = event {
            return Err("socket closed during the hold".into());
        }
    }
    leave(shared, client, &join_ref).await
}

/// Leaves the room. The node replies to the leave, then sends `phx_close`; both are read here so
/// that the next cycle's join does not take this `phx_close` for its own.
async fn leave(shared: &RoomShared, client: &mut Client, join_ref: &str) -> Result<(), String> {
    let vsn = shared.vsn;
    let leave_ref = client.send_leave(&shared.topic, join_ref).await.map_err(|e| e.kind())?;
    match await_reply(client, vsn, &leave_ref, Instant::now() + shared.join_timeout, "leave", |_, _| {}).await
    {
        Ok(()) => {}
        Err(kind) if kind.starts_with("closed") => return Err(kind),
        // `phx_close` came first (or no reply in time): nothing more to wait for.
        Err(_) => return Ok(()),
    }
    let close_by = Instant::now() + CLOSE_WAIT;
    while let Ok((_, event)) = timeout_at(close_by, next_frame(client, vsn)).await {
        match event {
            Event::ChannelClosed { .. } => break,
            Event::Closed { .. } => return Err("socket closed after the leave".into()),
            _ => {}
        }
    }
    Ok(())
}
