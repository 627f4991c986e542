//! PresenceActor: this node's presence set for one topic and the members that receive its diffs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use realtime_cluster::ClusterHandle;
use realtime_proto::presence::{phx_ref, PresenceDiff};
use realtime_proto::server;

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
    /// The cluster's replica of other nodes' entries; `None` on a single node.
    cluster: Option<ClusterHandle>,
    cluster_topic: String,
}

/// A process-wide counter for the low 16 bits of `phx_ref`s.
static REF_COUNTER: AtomicU16 = AtomicU16::new(0);

fn new_ref(origin: u16) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    phx_ref(now, origin, REF_COUNTER.fetch_add(1, Ordering::Relaxed))
}

impl PresenceActor {
    pub fn new(topic: Arc<str>, cluster_topic: String, cluster: Option<ClusterHandle>) -> PresenceActor {
        PresenceActor {
            topic,
            set: PresenceSet::default(),
            subscribers: HashMap::new(),
            cluster,
            cluster_topic,
        }
    }

    /// Removes `conn`'s presence here and in the cluster, and tells the subscribers.
    fn untrack(&mut self, conn: ConnId) {
        if let Some(diff) = self.set.untrack(conn) {
            if let Some(cluster) = &self.cluster {
                cluster.presence_remove(&self.cluster_topic, conn);
            }
            self.publish(diff);
        }
    }

    fn publish(&mut self, diff: PresenceDiff) {
        metrics().presence_events.increment(1);
        let json = diff.to_json();
        let mut frames: [Option<WireFrame>; 2] = [None, None];
        self.subscribers.retain(|_, member| {
            let frame = frames[member.vsn.index()].get_or_insert_with(|| {
                server::fastlane(member.vsn, &self.topic, "presence_diff", &json).into()
            });
            member.outbox.offer(frame.clone(), None) == Offer::Queued
        });
    }

    fn push_state(&self, member: &Subscriber) {
        let state = self.set.state().to_json();
        let frame = server::channel_push(
            member.vsn,
            member.join_ref.as_deref(),
            &self.topic,
            "presence_state",
            &state,
        );
        member.outbox.offer(frame.into(), None);
    }
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
        if msg.send_state {
            self.push_state(&msg.member);
        }
        self.subscribers.insert(msg.member.conn, msg.member);
    }
}

impl Handler<Track> for PresenceActor {
    type Result = ();

    fn handle(&mut self, msg: Track, _: &mut Context<Self>) {
        let origin = (msg.member.conn & 0xffff) as u16;
        let key = msg.member.presence_key.clone();
        let conn = msg.member.conn;
        self.subscribers.entry(conn).or_insert(msg.member);
        if let Some(diff) = self.set.track(conn, &key, msg.meta, || new_ref(origin)) {
            if let (Some(cluster), Some(entry)) = (&self.cluster, self.set.local_entry(conn)) {
                cluster.presence_put(&self.cluster_topic, conn, entry);
            }
            self.publish(diff);
        }
    }
}

impl Handler<Untrack> for PresenceActor {
    type Result = ();

    fn handle(&mut self, msg: Untrack, _: &mut Context<Self>) {
        self.untrack(msg.conn);
    }
}

impl Handler<MemberGone> for PresenceActor {
    type Result = ();

    fn handle(&mut self, msg: MemberGone, _: &mut Context<Self>) {
        self.subscribers.remove(&msg.conn);
        self.untrack(msg.conn);
    }
}

impl Handler<RemoteChanges> for PresenceActor {
    type Result = ();

    fn handle(&mut self, msg: RemoteChanges, _: &mut Context<Self>) {
        if let Some(diff) = self.set.apply_remote(&msg.change.joins, &msg.change.leaves) {
            self.publish(diff);
        }
    }
}

impl Handler<Stop> for PresenceActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
