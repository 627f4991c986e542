//! The long-lived connections of the `room` scenario, all in this process: the fill members (join
//! with presence on, track `{"i": i}`, then count every presence frame they receive and check the
//! broadcasts) and the observer (a full presence member that notes when each churn join first shows in
//! a `presence_diff`). Also the frame reader they and the churners share ([`next_frame`],
//! [`await_reply`]), which keeps each WebSocket message's size for the byte counts.
//!
//! A member reads every frame while it waits for its join and track replies, so nothing the server
//! pushes meanwhile is missed or mistaken for a reply.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use realtime_proto::Vsn;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::time::{interval_at, timeout_at, Instant, MissedTickBehavior};

use crate::client::{closed_kind, Client, ClientError, Endpoint, HEARTBEAT_INTERVAL};
use crate::frames::{self, error_reason, BroadcastPayload, Event};
use crate::payload::{now_unix_nanos, SeqTracker, SeqVerdict, Stamp};
use crate::report::{latency_histogram, ErrorCounts};
use crate::room_frames::{churn_joins, classify, member_key, system_message, Class};
use crate::room_tally::Tally;

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// When each churn join was acknowledged (its track's ok reply at the churner) and first seen by the
/// observer, by churn join number.
#[derive(Debug, Default)]
pub struct ChurnLog {
    pub acked: HashMap<u64, Instant>,
    pub seen: HashMap<u64, Instant>,
}

/// Broadcast deliveries at the members.
#[derive(Debug)]
pub struct Deliveries {
    pub delivered: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Σ over members of the broadcasts each knew were sent (see [`SeqTracker::next_total`]).
    pub seq_next_total: u64,
    pub latency_us: Histogram<u64>,
}

impl Default for Deliveries {
    fn default() -> Self {
        Deliveries {
            delivered: 0,
            duplicates: 0,
            reordered: 0,
            seq_next_total: 0,
            latency_us: latency_histogram(),
        }
    }
}

/// What every connection of a run shares.
pub struct RoomShared {
    pub endpoint: Endpoint,
    pub vsn: Vsn,
    pub topic: String,
    pub counts_only: bool,
    pub connect_timeout: Duration,
    pub join_timeout: Duration,
    /// The observer's and the publisher's join timeout: longer, so that a slow room still gets its
    /// track → seen and broadcast figures (their join times are not among the measurements).
    pub setup_timeout: Duration,
    /// One per fill member.
    pub tallies: Vec<Tally>,
    /// The observer's own counts (not among the members').
    pub observer_tally: Tally,
    pub errors: Mutex<ErrorCounts>,
    pub deliveries: Mutex<Deliveries>,
    pub churn: Mutex<ChurnLog>,
    /// The observer notes churn joins only while this is set (the churn phase).
    pub observing: AtomicBool,
    /// Members whose socket or channel ended after they joined.
    pub members_ended: AtomicU64,
}

impl RoomShared {
    pub fn error(&self, kind: String) {
        *lock(&self.errors).entry(kind).or_default() += 1;
    }

    /// The join payload with presence under `key` (counts only when asked and `counts_only`).
    pub fn join_payload(&self, key: &str, counts_only: bool) -> String {
        frames::join_payload_with_presence_counts(self.endpoint.token(), key, counts_only && self.counts_only)
    }
}

/// The next frame and its size in bytes (0 for the end of the socket, which is [`Event::Closed`]).
/// Cancel-safe: the only await is the stream's `next`.
pub async fn next_frame(client: &mut Client, vsn: Vsn) -> (usize, Event) {
    loop {
        match client.next_message().await {
            None | Some(Err(_)) => return (0, Event::Closed { code: None }),
            Some(Ok(message)) => {
                let bytes = message.len();
                if let Some(event) = frames::parse(vsn, message) {
                    return (bytes, event);
                }
            }
        }
    }
}

/// Reads frames (each handed to `on_frame` first) until the reply to `msg_ref`: `Ok` for an ok reply,
/// else the error's label (error reply, channel or socket closed, `deadline` passed).
pub async fn await_reply(
    client: &mut Client,
    vsn: Vsn,
    msg_ref: &str,
    deadline: Instant,
    what: &str,
    mut on_frame: impl FnMut(usize, &Event),
) -> Result<(), String> {
    loop {
        let Ok((bytes, event)) = timeout_at(deadline, next_frame(client, vsn)).await else {
            return Err(format!("{what} timeout"));
        };
        on_frame(bytes, &event);
        match event {
            Event::Reply { msg_ref: Some(r), ok, response, .. } if r == msg_ref => {
                return if ok { Ok(()) } else { Err(format!("{what} error: {}", error_reason(&response))) };
            }
            Event::ChannelClosed { event, .. } => return Err(format!("{event} before the {what} reply")),
            Event::Closed { code } => {
                return Err(closed_kind(&format!("closed before the {what} reply"), code))
            }
            _ => {}
        }
    }
}

/// Which long-lived connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Fill member `i`: key `m-<i>`, tracks `{"i": i}`, counts-only when the run is.
    Member(usize),
    /// The observer: key `observer`, full presence always, no track.
    Observer,
}

/// Connects, joins and (a member) tracks, holding `permit` until then; reports the connect → track
/// ok latency in µs (or the failure) on `done`, then receives until `stop` flips or the socket ends.
pub async fn run(
    shared: Arc<RoomShared>,
    role: Role,
    permit: OwnedSemaphorePermit,
    stop: watch::Receiver<bool>,
    done: mpsc::UnboundedSender<(Role, Result<u64, String>)>,
) {
    let start = Instant::now();
    let tally = match role {
        Role::Member(i) => &shared.tallies[i],
        Role::Observer => &shared.observer_tally,
    };
    let joined = join(&shared, role, tally, start).await;
    drop(permit);
    let client = match joined {
        Ok(client) => {
            let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
            tally.set_alive(true);
            let _ = done.send((role, Ok(micros)));
            client
        }
        Err(kind) => {
            let _ = done.send((role, Err(kind)));
            return;
        }
    };
    receive(&shared, role, tally, client, stop).await;
    tally.set_alive(false);
}

async fn join(shared: &RoomShared, role: Role, tally: &Tally, start: Instant) -> Result<Client, String> {
    let mut client = Client::connect(&shared.endpoint, start + shared.connect_timeout)
        .await
        .map_err(|e: ClientError| e.kind())?;
    let (key, counts_only) = match role {
        Role::Member(i) => (member_key(i), true),
        Role::Observer => ("observer".to_owned(), false),
    };
    let payload = shared.join_payload(&key, counts_only);
    let join_ref = client.send_join(&shared.topic, &payload).await.map_err(|e| e.kind())?;
    let timeout = if role == Role::Observer { shared.setup_timeout } else { shared.join_timeout };
    let deadline = Instant::now() + timeout;
    let count = |bytes: usize, event: &Event| tally.add(classify(event), bytes);
    await_reply(&mut client, shared.vsn, &join_ref, deadline, "join", count).await?;
    if let Role::Member(i) = role {
        let meta = format!("{{\"i\":{i}}}");
        let track_ref =
            client.send_presence(&shared.topic, &join_ref, Some(&meta)).await.map_err(|e| e.kind())?;
        let deadline = Instant::now() + shared.join_timeout;
        await_reply(&mut client, shared.vsn, &track_ref, deadline, "track", count).await?;
    }
    Ok(client)
}

/// The joined phase: heartbeats, counts, broadcast checks, the observer's churn notes.
async fn receive(
    shared: &RoomShared,
    role: Role,
    tally: &Tally,
    mut client: Client,
    mut stop: watch::Receiver<bool>,
) {
    let mut heartbeat = interval_at(Instant::now() + HEARTBEAT_INTERVAL, HEARTBEAT_INTERVAL);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut pending_heartbeat: Option<String> = None;
    let mut sequences = SeqTracker::default();
    let ended = loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break None,
            (bytes, event) = next_frame(&mut client, shared.vsn) => {
                let class = classify(&event);
                tally.add(class, bytes);
                match (class, event) {
                    (Class::Diff, Event::Presence { payload, .. }) if role == Role::Observer => observe(shared, &payload),
                    (Class::Broadcast, Event::Broadcast { payload, .. }) if role != Role::Observer => {
                        delivered(shared, &mut sequences, &payload);
                    }
                    (Class::OtherSystem, Event::System { payload, .. }) => shared.error(system_message(&payload)),
                    (_, Event::Reply { msg_ref, ok, response, .. }) => {
                        if msg_ref.is_some() && msg_ref == pending_heartbeat {
                            pending_heartbeat = None;
                        } else if !ok {
                            shared.error(format!("reply error after join: {}", error_reason(&response)));
                        }
                    }
                    (_, Event::ChannelClosed { event, .. }) => break Some(format!("{event} after join")),
                    (_, Event::Closed { code }) => break Some(closed_kind("closed after join", code)),
                    (_, Event::Undecodable) => shared.error("undecodable frame".into()),
                    _ => {}
                }
            }
            _ = heartbeat.tick() => {
                if pending_heartbeat.is_some() {
                    shared.error("heartbeat timeout".into());
                }
                match client.heartbeat().await {
                    Ok(r) => pending_heartbeat = Some(r),
                    Err(e) => break Some(e.kind()),
                }
            }
        }
    };
    lock(&shared.deliveries).seq_next_total += sequences.next_total();
    match ended {
        None => client.close().await,
        Some(kind) => {
            if let Role::Member(_) = role {
                shared.members_ended.fetch_add(1, Ordering::Relaxed);
            }
            let who = if role == Role::Observer { "observer" } else { "member" };
            shared.error(format!("{who} {kind}"));
        }
    }
}

fn delivered(shared: &RoomShared, sequences: &mut SeqTracker, payload: &BroadcastPayload) {
    let now = now_unix_nanos();
    let stamp = match payload {
        BroadcastPayload::User(bytes) => Stamp::decode(bytes),
        BroadcastPayload::Json(text) => Stamp::decode_wrapped(text),
    };
    let Some(stamp) = stamp else { return shared.error("broadcast without a stamp".into()) };
    let verdict = sequences.observe(&stamp);
    let mut d = lock(&shared.deliveries);
    match verdict {
        SeqVerdict::InOrder => {}
        SeqVerdict::Reordered => d.reordered += 1,
        SeqVerdict::Duplicate => d.duplicates += 1,
        SeqVerdict::Implausible => {
            drop(d);
            return shared.error("broadcast with an implausible sequence number".into());
        }
    }
    d.delivered += 1;
    d.latency_us.saturating_record(stamp.latency_micros(now));
}

/// Notes the first time the observer saw each churn join.
fn observe(shared: &RoomShared, payload: &str) {
    if !shared.observing.load(Ordering::Relaxed) {
        return;
    }
    let now = Instant::now();
    match churn_joins(payload) {
        Ok(joins) if joins.is_empty() => {}
        Ok(joins) => {
            let mut log = lock(&shared.churn);
            for k in joins {
                log.seen.entry(k).or_insert(now);
            }
        }
        Err(kind) => shared.error(kind),
    }
}
