//! One client of the `presence` scenario: joins its topic with presence on, keeps its view
//! ([`PresenceModel`]) from every `presence_state`/`presence_diff`, reports each key whose view changed
//! to the [`Tracker`], and carries out the driver's commands (track, untrack, leave and rejoin), telling
//! the tracker when its node acknowledged each.
//!
//! The join reply is read in the same loop as everything else (not with [`Client::join`], which drops
//! other frames) because the node may push `presence_state` before the reply reaches the socket. A
//! leave is acknowledged by its reply; the rejoin is sent once the node's `phx_close` for the old join
//! arrived, and the next `presence_state` replaces the view.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{interval_at, timeout_at, Instant, MissedTickBehavior};

use crate::client::{closed_kind, Client, Endpoint, HEARTBEAT_INTERVAL};
use crate::convergence::Tracker;
use crate::frames::{error_reason, Event};
use crate::presence_model::PresenceModel;
use crate::report::ErrorCounts;

/// What the driver asks a client to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Track (or update to) `{"v": version}`.
    Track(u64),
    Untrack,
    /// `phx_leave`, then join again.
    Rejoin,
}

/// What a client tells the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The first join was answered ok.
    Joined,
    /// The client is gone (socket closed, join refused, or stopped).
    Gone,
}

/// What every client shares with the driver.
pub struct PresenceShared {
    pub endpoints: Vec<Endpoint>,
    pub tracker: Mutex<Tracker>,
    /// Each client's view, by client id.
    pub models: Vec<Mutex<PresenceModel>>,
    pub errors: Mutex<ErrorCounts>,
    pub connect_timeout: Duration,
    /// The node the driver killed (`usize::MAX` until then): its clients' ends are expected.
    pub killed: AtomicUsize,
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PresenceShared {
    pub fn error(&self, kind: String) {
        *lock(&self.errors).entry(kind).or_default() += 1;
    }
}

/// Who a client is.
#[derive(Debug, Clone)]
pub struct Spec {
    pub id: usize,
    pub node: usize,
    pub topic: String,
    pub key: String,
}

/// The push a client waits on.
enum Pending {
    Presence(String),
    Leave(String),
    /// Left; the rejoin goes out when the node's `phx_close` arrives.
    Closing,
    Join(String),
}

/// Runs one client until `stop` flips or its socket ends; reports `Joined` once and `Gone` at the end.
pub async fn run(
    shared: &PresenceShared,
    spec: Spec,
    mut commands: mpsc::Receiver<Command>,
    status: mpsc::UnboundedSender<(usize, Status)>,
    mut stop: watch::Receiver<bool>,
) {
    let deadline = Instant::now() + shared.connect_timeout;
    let connected = timeout_at(deadline, async {
        let mut client = Client::connect(&shared.endpoints[spec.node], deadline).await?;
        let join_ref = client.send_presence_join(&spec.topic, &spec.key).await?;
        Ok::<_, crate::client::ClientError>((client, join_ref))
    })
    .await;
    let (mut client, join_ref) = match connected {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            shared.error(e.kind());
            let _ = status.send((spec.id, Status::Gone));
            return;
        }
        Err(_) => {
            shared.error("connect timeout".into());
            let _ = status.send((spec.id, Status::Gone));
            return;
        }
    };
    let mut join_ref = join_ref;
    let mut pending = Some(Pending::Join(join_ref.clone()));
    let mut joined_once = false;
    let mut heartbeat = interval_at(Instant::now() + HEARTBEAT_INTERVAL, HEARTBEAT_INTERVAL);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut heartbeat_ref: Option<String> = None;
    let end = loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break None,
            event = client.recv() => match event {
                Event::Reply { msg_ref: Some(r), ok, response, .. } => {
                    let now = Instant::now();
                    match pending.take() {
                        Some(Pending::Join(j)) if j == r => {
                            if !ok {
                                break Some(format!("join error: {}", error_reason(&response)));
                            }
                            if !joined_once {
                                joined_once = true;
                                let _ = status.send((spec.id, Status::Joined));
                            }
                        }
                        Some(Pending::Presence(p)) if p == r => {
                            if ok {
                                lock(&shared.tracker).acked(&spec.key, now);
                            } else {
                                lock(&shared.tracker).abandon(&spec.key);
                                shared.error(format!("presence push refused: {}", error_reason(&response)));
                            }
                        }
                        Some(Pending::Leave(l)) if l == r => {
                            if !ok {
                                break Some(format!("leave refused: {}", error_reason(&response)));
                            }
                            lock(&shared.tracker).acked(&spec.key, now);
                            pending = Some(Pending::Closing);
                        }
                        other => {
                            pending = other;
                            if heartbeat_ref.as_deref() == Some(r.as_str()) {
                                heartbeat_ref = None;
                            }
                        }
                    }
                }
                Event::Presence { diff, payload, .. } => observe(shared, spec.id, diff, &payload),
                Event::ChannelClosed { event, .. } => {
                    if !matches!(pending, Some(Pending::Closing)) {
                        break Some(format!("{event} after join"));
                    }
                    match client.send_presence_join(&spec.topic, &spec.key).await {
                        Ok(j) => {
                            join_ref = j.clone();
                            pending = Some(Pending::Join(j));
                        }
                        Err(e) => break Some(e.kind()),
                    }
                }
                Event::System { payload, .. } => shared.error(format!("system: {payload}")),
                Event::Closed { code } => break Some(closed_kind("closed after join", code)),
                Event::Undecodable => shared.error("undecodable frame".into()),
                _ => {}
            },
            Some(command) = commands.recv(), if pending.is_none() => {
                let sent = match command {
                    Command::Track(v) => {
                        let meta = format!("{{\"v\":{v}}}");
                        client.send_presence(&spec.topic, &join_ref, Some(&meta)).await.map(Pending::Presence)
                    }
                    Command::Untrack => client.send_presence(&spec.topic, &join_ref, None).await.map(Pending::Presence),
                    Command::Rejoin => client.send_leave(&spec.topic, &join_ref).await.map(Pending::Leave),
                };
                match sent {
                    Ok(p) => pending = Some(p),
                    Err(e) => break Some(e.kind()),
                }
            }
            _ = heartbeat.tick() => {
                if heartbeat_ref.is_some() {
                    shared.error("heartbeat timeout".into());
                }
                match client.heartbeat().await {
                    Ok(r) => heartbeat_ref = Some(r),
                    Err(e) => break Some(e.kind()),
                }
            }
        }
    };
    if let Some(kind) = end {
        if shared.killed.load(Ordering::Relaxed) == spec.node {
            shared.error("ended by the node's kill (expected)".into());
        } else {
            shared.error(kind);
        }
        lock(&shared.tracker).abandon(&spec.key);
    } else {
        client.close().await;
    }
    let _ = status.send((spec.id, Status::Gone));
}

/// Applies a presence event to client `id`'s view and tells the tracker what it now shows.
fn observe(shared: &PresenceShared, id: usize, diff: bool, payload: &str) {
    let now = Instant::now();
    let (seen, shown_nodes) = {
        let mut model = lock(&shared.models[id]);
        let keys = if diff { model.apply_diff(payload) } else { model.apply_state(payload) };
        let keys = match keys {
            Ok(keys) => keys,
            Err(kind) => return shared.error(kind),
        };
        let seen: Vec<(String, Vec<u64>)> = keys
            .into_iter()
            .map(|k| {
                let versions = model.versions(&k);
                (k, versions)
            })
            .collect();
        (seen, model.nodes())
    };
    // The view's lock is released first: the driver takes the tracker's lock, then views'.
    let mut tracker = lock(&shared.tracker);
    for (key, versions) in &seen {
        tracker.observe(id, key, versions, now);
    }
    tracker.observe_kill(id, |node| shown_nodes.contains(&node), now);
}
