//! The joined phase every scenario's listening connections share: heartbeats every 25 s (a missed
//! reply is an error), and the control events that end or disturb a session (channel closed, `system`
//! errors, socket closed, undecodable frames) reported the same way. Each scenario handles only its
//! data events.

use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::{interval_at, Instant, MissedTickBehavior};

use crate::client::{closed_kind, Client, HEARTBEAT_INTERVAL};
use crate::frames::Event;

#[derive(Deserialize)]
struct SystemPayload {
    message: Option<String>,
}

/// Receives until `stop` changes (then closes the socket) or the session ends. Data events
/// (`broadcast`, `postgres_changes`) go to `on_data`; everything that goes wrong goes to `error`,
/// labelled with `phase` (e.g. `after join`).
pub async fn receive(
    mut client: Client,
    mut stop: watch::Receiver<bool>,
    phase: &str,
    mut on_data: impl FnMut(Event),
    error: impl Fn(String),
) {
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
                event @ (Event::Broadcast { .. } | Event::PostgresChanges { .. }) => on_data(event),
                Event::Reply { msg_ref, .. } => {
                    if msg_ref.is_some() && msg_ref == pending_heartbeat {
                        pending_heartbeat = None;
                    }
                }
                Event::ChannelClosed { event, .. } => {
                    error(format!("{event} {phase}"));
                    break;
                }
                Event::System { payload, .. } => {
                    let message = serde_json::from_str::<SystemPayload>(&payload).ok().and_then(|p| p.message);
                    error(format!("system: {}", message.unwrap_or(payload)));
                }
                Event::Closed { code } => {
                    error(closed_kind(&format!("closed {phase}"), code));
                    return;
                }
                Event::Undecodable => error("undecodable frame".into()),
                Event::Other { .. } | Event::Presence { .. } => {}
            },
            _ = heartbeat.tick() => {
                if pending_heartbeat.is_some() {
                    error("heartbeat timeout".into());
                }
                match client.heartbeat().await {
                    Ok(msg_ref) => pending_heartbeat = Some(msg_ref),
                    Err(e) => {
                        error(e.kind());
                        return;
                    }
                }
            }
        }
    }
    client.close().await;
}
