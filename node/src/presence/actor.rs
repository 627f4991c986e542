//! PresenceActor: this node's presence set for one topic and the members that receive its changes.
//!
//! Changes are not sent one by one: they gather in a [`Batch`] that goes out as one `presence_diff`
//! at most once per `REALTIME_PRESENCE_BATCH_MS` ([`Pace`]: a lone change at once). A member that
//! joins while a batch is pending gets `presence_state` with that flush, so the state it receives and
//! the diffs that follow fit together (the batch's changes are in the state, not sent again). The
//! state's JSON is encoded once per change of the set, not once per joining member.
//!
//! Members that joined with `counts_only` get neither: a `system` presence count at once when they join
//! (a count needs nothing to fit with), then the counts again when they changed. Those pushes have a
//! pace of their own that slows as the counts-only members grow: every push is one frame per member,
//! and only the latest count matters, so a huge room is told less often rather than flooded
//! ([`COUNT_DELIVERIES_PER_SECOND`]). One push goes out in slices of [`COUNT_SLICE`] members
//! [`COUNT_SLICE_GAP`] apart: the socket threads (and the clients) then write a thousand frames at a
//! time between other work, such as joins, rather than every member's frame in one burst.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use realtime_cluster::ClusterHandle;
use realtime_proto::presence::{phx_ref, PresenceDiff};
use realtime_proto::{server, system, topic, Vsn};

use super::batch::{Batch, Due, Pace};
use super::messages::{MemberGone, RemoteChanges, Stop, Subscribe, Subscriber, Track, Untrack};
use super::set::PresenceSet;
use crate::delivery::{Offer, WireFrame};
use crate::metrics::metrics;
use crate::vocab::ConnId;

/// Presence of one topic on this node: its own entries, the other nodes' (replicated) and its subscribers.
pub struct PresenceActor {
    topic: Arc<str>,
    set: PresenceSet,
    subscribers: HashMap<ConnId, Subscriber>,
    /// Joined while a batch was pending: welcomed (state or counts) when it goes out.
    awaiting: Vec<Subscriber>,
    batch: Batch,
    pace: Pace,
    /// `REALTIME_PRESENCE_BATCH_MS`.
    batch_interval: Duration,
    /// When the counts may be pushed next ([`counts_interval`]).
    counts_pace: Pace,
    /// `presence_state`'s payload for the set as it is; `None` once the set changed.
    state_json: Option<Arc<str>>,
    /// The counts of the last count push (told to every counts-only member once `counts_left` is empty).
    counts_sent: Option<Counts>,
    /// Counts-only members the push under way has yet to tell.
    counts_left: Vec<ConnId>,
    /// The cluster's replica of other nodes' entries; `None` on a single node.
    cluster: Option<ClusterHandle>,
    cluster_topic: String,
}

/// Metas and distinct keys of the set.
type Counts = (usize, usize);

/// Count pushes of one topic stay within this many frames per second: the interval between two is at
/// least the counts-only members over this (10,000 members: two pushes a second), and at least
/// `REALTIME_PRESENCE_BATCH_MS`.
pub const COUNT_DELIVERIES_PER_SECOND: u32 = 20_000;
/// However many members, the counts are told at least this often while they change.
pub const COUNTS_SLOWEST: Duration = Duration::from_secs(2);

/// Counts-only members told at a time during one count push, and the pause between two slices.
pub const COUNT_SLICE: usize = 1_000;
pub const COUNT_SLICE_GAP: Duration = Duration::from_millis(10);

/// The least time between two count pushes to `members` counts-only members.
fn counts_interval(members: usize, batch: Duration) -> Duration {
    let spread = Duration::from_secs_f64(members as f64 / f64::from(COUNT_DELIVERIES_PER_SECOND));
    spread.min(COUNTS_SLOWEST).max(batch)
}

/// A process-wide counter for the low 16 bits of `phx_ref`s.
static REF_COUNTER: AtomicU16 = AtomicU16::new(0);

fn new_ref(origin: u16) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    phx_ref(now, origin, REF_COUNTER.fetch_add(1, Ordering::Relaxed))
}

impl PresenceActor {
    /// `batch`: the least time between two diffs (zero: every change at once).
    pub fn new(
        topic: Arc<str>,
        cluster_topic: String,
        cluster: Option<ClusterHandle>,
        batch: Duration,
    ) -> PresenceActor {
        PresenceActor {
            topic,
            set: PresenceSet::default(),
            subscribers: HashMap::new(),
            awaiting: Vec::new(),
            batch: Batch::default(),
            pace: Pace::new(batch),
            batch_interval: batch,
            counts_pace: Pace::new(batch),
            state_json: None,
            counts_sent: None,
            counts_left: Vec::new(),
            cluster,
            cluster_topic,
        }
    }

    /// Removes `conn`'s presence here and in the cluster.
    fn untrack(&mut self, conn: ConnId, ctx: &mut Context<Self>) {
        if let Some(diff) = self.set.untrack(conn) {
            if let Some(cluster) = &self.cluster {
                cluster.presence_remove(&self.cluster_topic, conn);
            }
            self.changed(diff, ctx);
        }
    }

    /// The set changed: batch the diff and see that it goes out.
    fn changed(&mut self, diff: PresenceDiff, ctx: &mut Context<Self>) {
        metrics().presence_events.increment(1);
        self.state_json = None;
        self.batch.add(diff);
        let due = self.pace.on_change(Instant::now());
        self.when_due(due, ctx, Self::flush);
    }

    /// Runs `send` now, or after the wait `due` names; nothing when a run is already scheduled.
    fn when_due(&mut self, due: Due, ctx: &mut Context<Self>, send: fn(&mut Self, &mut Context<Self>)) {
        match due {
            Due::Now => send(self, ctx),
            Due::After(wait) => {
                ctx.run_later(wait, send);
            }
            Due::Scheduled => {}
        }
    }

    /// Sends the batch to the members, then welcomes those that joined while it was pending.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        self.pace.flushed(Instant::now());
        if let Some(diff) = self.batch.take() {
            let (json, topic) = (diff.to_json(), &self.topic);
            fan_out(
                &mut self.subscribers,
                |member| !member.counts_only,
                |vsn| server::fastlane(vsn, topic, "presence_diff", &json).into(),
            );
        }
        self.counts_may_have_changed(ctx);
        for member in std::mem::take(&mut self.awaiting) {
            self.welcome(member);
        }
    }

    /// Sends a new member what the set holds now (the state, or the counts), then its changes.
    fn welcome(&mut self, member: Subscriber) {
        if member.counts_only {
            let frame = counts_frame(&self.topic, member.vsn, self.counts());
            member.outbox.offer(frame, None);
        } else {
            let state = self.state_json.get_or_insert_with(|| self.set.state().to_json().into()).clone();
            let frame = server::channel_push(
                member.vsn,
                member.join_ref.as_deref(),
                &self.topic,
                "presence_state",
                &state,
            );
            member.outbox.offer(frame.into(), None);
        }
        self.subscribers.insert(member.conn, member);
    }

    fn counts(&self) -> Counts {
        (self.set.len(), self.set.keys())
    }

    /// The set changed: push the counts now or when their pace allows.
    fn counts_may_have_changed(&mut self, ctx: &mut Context<Self>) {
        let members = self.subscribers.values().filter(|m| m.counts_only).count();
        if members == 0 || self.counts_sent == Some(self.counts()) {
            return;
        }
        self.counts_pace.set_interval(counts_interval(members, self.batch_interval));
        let due = self.counts_pace.on_change(Instant::now());
        self.when_due(due, ctx, Self::send_counts);
    }

    /// Starts telling the counts-only members the counts, if they changed since last told. While a
    /// push is still going out nothing starts: its end looks at the counts again.
    fn send_counts(&mut self, ctx: &mut Context<Self>) {
        self.counts_pace.flushed(Instant::now());
        let counts = self.counts();
        if !self.counts_left.is_empty() || self.counts_sent == Some(counts) {
            return;
        }
        self.counts_sent = Some(counts);
        self.counts_left = self.subscribers.values().filter(|m| m.counts_only).map(|m| m.conn).collect();
        self.send_counts_slice(ctx);
    }

    /// Tells the next [`COUNT_SLICE`] members of the push under way; schedules the rest.
    fn send_counts_slice(&mut self, ctx: &mut Context<Self>) {
        let Some(counts) = self.counts_sent else { return };
        let slice = self.counts_left.split_off(self.counts_left.len().saturating_sub(COUNT_SLICE));
        let topic = &self.topic;
        let mut frames: [Option<WireFrame>; 2] = [None, None];
        for conn in slice {
            let Some(member) = self.subscribers.get(&conn) else { continue };
            let frame =
                frames[member.vsn.index()].get_or_insert_with(|| counts_frame(topic, member.vsn, counts));
            if member.outbox.offer(frame.clone(), None) != Offer::Queued {
                self.subscribers.remove(&conn);
            }
        }
        if self.counts_left.is_empty() {
            // The counts may have changed while the push went out.
            self.counts_may_have_changed(ctx);
        } else {
            ctx.run_later(COUNT_SLICE_GAP, |actor, ctx| actor.send_counts_slice(ctx));
        }
    }
}

/// The `system` push of the counts `(metas, keys)` for counts-only members.
fn counts_frame(topic: &str, vsn: Vsn, (count, keys): Counts) -> WireFrame {
    let channel = topic::sub_topic(topic).unwrap_or(topic);
    server::fastlane(vsn, topic, "system", &system::presence_count(channel, count, keys)).into()
}

/// Offers one event to the subscribers `to` picks, encoded at most once per serializer; a subscriber
/// whose socket is gone is dropped.
fn fan_out(
    subscribers: &mut HashMap<ConnId, Subscriber>,
    to: impl Fn(&Subscriber) -> bool,
    encode: impl Fn(Vsn) -> WireFrame,
) {
    let mut frames: [Option<WireFrame>; 2] = [None, None];
    subscribers.retain(|_, member| {
        if !to(member) {
            return true;
        }
        let frame = frames[member.vsn.index()].get_or_insert_with(|| encode(member.vsn));
        member.outbox.offer(frame.clone(), None) == Offer::Queued
    });
}

impl Actor for PresenceActor {
    type Context = Context<Self>;

    /// Starts from the other nodes' current entries; changes after this arrive as [`RemoteChanges`]
    /// (one already read here is recognised and not told twice).
    fn started(&mut self, _: &mut Context<Self>) {
        if let Some(cluster) = &self.cluster {
            let entries = cluster.remote_presence(&self.cluster_topic);
            self.set.apply_remote(&entries, &[]);
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(cluster) = &self.cluster {
            for conn in self.set.local_conns() {
                cluster.presence_remove(&self.cluster_topic, conn);
            }
        }
    }
}

impl Handler<Subscribe> for PresenceActor {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        if !msg.send_state {
            self.subscribers.insert(msg.member.conn, msg.member);
        } else if self.batch.is_empty() || msg.member.counts_only {
            // Every member has seen the set as it is, or this one is only told counts, which need no
            // diffs to fit with: nothing to wait for.
            self.welcome(msg.member);
        } else {
            // A flush is scheduled whenever the batch holds something.
            self.awaiting.push(msg.member);
        }
    }
}

impl Handler<Track> for PresenceActor {
    type Result = ();

    fn handle(&mut self, msg: Track, ctx: &mut Context<Self>) {
        let origin = (msg.member.conn & 0xffff) as u16;
        let key = msg.member.presence_key.clone();
        let conn = msg.member.conn;
        if !self.awaiting.iter().any(|m| m.conn == conn) {
            self.subscribers.entry(conn).or_insert(msg.member);
        }
        if let Some(diff) = self.set.track(conn, &key, msg.meta, || new_ref(origin)) {
            if let (Some(cluster), Some(entry)) = (&self.cluster, self.set.local_entry(conn)) {
                cluster.presence_put(&self.cluster_topic, conn, entry);
            }
            self.changed(diff, ctx);
        }
    }
}

impl Handler<Untrack> for PresenceActor {
    type Result = ();

    fn handle(&mut self, msg: Untrack, ctx: &mut Context<Self>) {
        self.untrack(msg.conn, ctx);
    }
}

impl Handler<MemberGone> for PresenceActor {
    type Result = ();

    fn handle(&mut self, msg: MemberGone, ctx: &mut Context<Self>) {
        self.subscribers.remove(&msg.conn);
        self.awaiting.retain(|m| m.conn != msg.conn);
        self.untrack(msg.conn, ctx);
    }
}

impl Handler<RemoteChanges> for PresenceActor {
    type Result = ();

    fn handle(&mut self, msg: RemoteChanges, ctx: &mut Context<Self>) {
        if let Some(diff) = self.set.apply_remote(&msg.change.joins, &msg.change.leaves) {
            self.changed(diff, ctx);
        }
    }
}

impl Handler<Stop> for PresenceActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_slow_down_as_counts_only_members_grow() {
        let batch = Duration::from_millis(50);
        assert_eq!(counts_interval(0, batch), batch);
        assert_eq!(counts_interval(1_000, batch), batch, "1,000 members: as often as the diffs");
        assert_eq!(counts_interval(10_000, batch), Duration::from_millis(500));
        assert_eq!(counts_interval(20_000, batch), Duration::from_secs(1));
        assert_eq!(counts_interval(1_000_000, batch), COUNTS_SLOWEST);
        // A batch interval longer than the spread wins, even past the slowest pace.
        assert_eq!(counts_interval(10_000, Duration::from_secs(3)), Duration::from_secs(3));
        // Within the budget however many members.
        for members in [1, 999, 5_000, 33_333, 40_000] {
            let per_second = members as f64 / counts_interval(members, batch).as_secs_f64();
            assert!(per_second <= f64::from(COUNT_DELIVERIES_PER_SECOND) + 1.0, "{members}: {per_second}");
        }
    }
}
