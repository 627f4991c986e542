//! The `room` scenario's one-at-a-time connections: late-join probes (a fresh connection joins the
//! full room with presence on; the time to its `phx_reply` and to its `presence_state`, or the count
//! push of a counts-only join, and the size of what came; then it leaves) and the broadcast publisher
//! (stamped payloads on a fixed schedule, as `fanout`'s publishers send them).

use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::{timeout_at, Instant};

use crate::client::Client;
use crate::frames::{error_reason, Event};
use crate::payload::{now_unix_nanos, Stamp};
use crate::report::{latency_histogram, ErrorCounts};
use crate::room_frames::{classify, probe_key, Class};
use crate::room_members::{next_frame, RoomShared};
use crate::schedule::{steps_in, Pacer};

/// Time a probe's leave reply (and a publisher's drain) may take.
const LEAVE_BUDGET: Duration = Duration::from_secs(1);

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What one probe saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSample {
    /// `phx_join` sent → ok `phx_reply`.
    pub reply_us: u64,
    /// `phx_join` sent → the presence frame (state or count push), if one came in time.
    pub presence_us: Option<u64>,
    /// Its size in bytes.
    pub presence_bytes: Option<u64>,
    /// Which kind it was: [`Class::State`] or [`Class::Count`].
    pub presence_class: Option<Class>,
}

/// Everything the probes of one phase saw.
#[derive(Debug)]
pub struct ProbeResults {
    /// Probes the schedule made due (at most `--probes`).
    pub due: u64,
    pub reply_us: Histogram<u64>,
    pub presence_us: Histogram<u64>,
    /// Sizes of the presence frames, in bytes.
    pub presence_bytes: Vec<u64>,
    pub states: u64,
    pub counts: u64,
    /// Joined, but no presence frame within the join timeout.
    pub no_presence: u64,
    pub failed: u64,
    pub errors: ErrorCounts,
}

impl Default for ProbeResults {
    fn default() -> Self {
        ProbeResults {
            due: 0,
            reply_us: latency_histogram(),
            presence_us: latency_histogram(),
            presence_bytes: Vec::new(),
            states: 0,
            counts: 0,
            no_presence: 0,
            failed: 0,
            errors: ErrorCounts::new(),
        }
    }
}

impl ProbeResults {
    fn add(&mut self, outcome: Result<ProbeSample, String>) {
        match outcome {
            Ok(s) => {
                self.reply_us.saturating_record(s.reply_us);
                match (s.presence_us, s.presence_bytes, s.presence_class) {
                    (Some(us), Some(bytes), Some(class)) => {
                        self.presence_us.saturating_record(us);
                        self.presence_bytes.push(bytes);
                        if class == Class::Count {
                            self.counts += 1;
                        } else {
                            self.states += 1;
                        }
                    }
                    _ => self.no_presence += 1,
                }
            }
            Err(kind) => {
                self.failed += 1;
                *self.errors.entry(format!("probe {kind}")).or_default() += 1;
            }
        }
    }
}

/// Up to `count` probes one after another, the `k`-th due `k × interval` after the start (a late one
/// starts at once), none started after `window`; keys `p<phase>-<k>`.
pub async fn probes(
    shared: &RoomShared,
    phase: char,
    count: usize,
    interval: Duration,
    window: Duration,
) -> ProbeResults {
    let mut results =
        ProbeResults { due: steps_in(interval, window).min(count as u64), ..ProbeResults::default() };
    let mut pacer = Pacer::with_cutoff(interval, window);
    for _ in 0..count {
        let Some(k) = pacer.next().await else { break };
        results.add(probe(shared, &probe_key(phase, k as usize)).await);
    }
    results
}

/// One late join: connect (not timed), join, wait for the reply and the presence frame, leave, close.
pub async fn probe(shared: &RoomShared, key: &str) -> Result<ProbeSample, String> {
    let mut client = Client::connect(&shared.endpoint, Instant::now() + shared.connect_timeout)
        .await
        .map_err(|e| e.kind())?;
    let payload = shared.join_payload(key, true);
    let sent = Instant::now();
    let join_ref = client.send_join(&shared.topic, &payload).await.map_err(|e| e.kind())?;
    let deadline = sent + shared.join_timeout;
    let mut reply_us = None;
    let mut presence: Option<(u64, u64, Class)> = None;
    while reply_us.is_none() || presence.is_none() {
        let Ok((bytes, event)) = timeout_at(deadline, next_frame(&mut client, shared.vsn)).await else {
            break;
        };
        let at = micros(sent.elapsed());
        let class = classify(&event);
        match event {
            Event::Reply { msg_ref: Some(r), ok, response, .. } if r == join_ref => {
                if !ok {
                    return Err(format!("join error: {}", error_reason(&response)));
                }
                reply_us = Some(at);
            }
            _ if matches!(class, Class::State | Class::Count) && presence.is_none() => {
                presence = Some((at, bytes as u64, class));
            }
            Event::ChannelClosed { event, .. } => return Err(format!("{event} during the join")),
            Event::Closed { .. } => return Err("closed during the join".into()),
            _ => {}
        }
    }
    let Some(reply_us) = reply_us else {
        client.close().await;
        return Err("join timeout".into());
    };
    if let Ok(leave_ref) = client.send_leave(&shared.topic, &join_ref).await {
        let leave_by = Instant::now() + LEAVE_BUDGET;
        while let Ok((_, event)) = timeout_at(leave_by, next_frame(&mut client, shared.vsn)).await {
            match event {
                Event::Reply { msg_ref: Some(r), .. } if r == leave_ref => break,
                Event::Closed { .. } => break,
                _ => {}
            }
        }
    }
    client.close().await;
    Ok(ProbeSample {
        reply_us,
        presence_us: presence.map(|p| p.0),
        presence_bytes: presence.map(|p| p.1),
        presence_class: presence.map(|p| p.2),
    })
}

/// What the publisher did.
#[derive(Debug)]
pub struct Published {
    pub sent: u64,
    pub due: u64,
    /// How late each send started relative to its schedule.
    pub lag_us: Histogram<u64>,
    pub errors: ErrorCounts,
}

/// One publisher (no presence) joins the room and broadcasts stamped payloads at `rate` per second for
/// `duration` (publisher 0, sequence from 0; broadcasts still due when the window ends are dropped),
/// then stays connected for `drain` before closing.
pub async fn publish(shared: &RoomShared, rate: f64, duration: Duration, drain: Duration) -> Published {
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut out = Published { sent: 0, due: 0, lag_us: latency_histogram(), errors: ErrorCounts::new() };
    let error =
        |errors: &mut ErrorCounts, kind: String| *errors.entry(format!("publisher {kind}")).or_default() += 1;
    let connected = async {
        let mut client = Client::connect(&shared.endpoint, Instant::now() + shared.connect_timeout).await?;
        let join_ref = client.join(&shared.topic, Instant::now() + shared.setup_timeout).await?;
        Ok::<_, crate::client::ClientError>((client, join_ref))
    }
    .await;
    let (mut client, join_ref) = match connected {
        Ok(pair) => pair,
        Err(e) => {
            error(&mut out.errors, e.kind());
            return out;
        }
    };
    out.due = steps_in(period, duration);
    let start_unix_nanos = now_unix_nanos();
    let mut pacer = Pacer::with_cutoff(period, duration);
    while let Some(k) = pacer.next().await {
        out.lag_us.saturating_record(pacer.lag_us(k));
        let offset = u64::try_from(period.as_nanos() * u128::from(k)).unwrap_or(u64::MAX);
        let stamp = Stamp {
            scheduled_unix_nanos: start_unix_nanos.saturating_add(offset),
            publisher: 0,
            seq: out.sent,
        };
        if let Err(e) =
            client.broadcast(&shared.topic, &join_ref, crate::publisher::EVENT, &stamp.encode()).await
        {
            error(&mut out.errors, e.kind());
            break;
        }
        out.sent += 1;
    }
    let drain_end = Instant::now() + drain;
    while let Ok((_, event)) = timeout_at(drain_end, next_frame(&mut client, shared.vsn)).await {
        match event {
            Event::Closed { code } => {
                error(&mut out.errors, crate::client::closed_kind("closed", code));
                break;
            }
            Event::ChannelClosed { event, .. } => error(&mut out.errors, event),
            _ => {}
        }
    }
    client.close().await;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_results_sort_what_arrived() {
        let mut r = ProbeResults::default();
        let sample = |class| ProbeSample {
            reply_us: 1_000,
            presence_us: Some(2_000),
            presence_bytes: Some(200_000),
            presence_class: Some(class),
        };
        r.add(Ok(sample(Class::State)));
        r.add(Ok(sample(Class::Count)));
        r.add(Ok(ProbeSample { reply_us: 5, presence_us: None, presence_bytes: None, presence_class: None }));
        r.add(Err("join timeout".into()));
        assert_eq!((r.states, r.counts, r.no_presence, r.failed), (1, 1, 1, 1));
        assert_eq!((r.reply_us.len(), r.presence_us.len()), (3, 2));
        assert_eq!(r.presence_bytes, vec![200_000, 200_000]);
        assert_eq!(r.errors["probe join timeout"], 1);
    }
}
