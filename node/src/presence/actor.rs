//! PresenceActor: this node's presence set for one topic and the members that receive its diffs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use realtime_proto::presence::{phx_ref, PresenceDiff};
use realtime_proto::server;

use super::messages::{MemberGone, Stop, Subscribe, Track, Untrack};
use super::set::PresenceSet;
use crate::channel::messages::{ConnId, Member};
use crate::delivery::{Offer, WireFrame};
use crate::metrics::metrics;

/// Presence of one topic on this node.
pub struct PresenceActor {
    topic: Arc<str>,
    set: PresenceSet,
    subscribers: HashMap<ConnId, Member>,
}

/// A process-wide counter for the low 16 bits of `phx_ref`s.
static REF_COUNTER: AtomicU16 = AtomicU16::new(0);

fn new_ref(origin: u16) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    phx_ref(now, origin, REF_COUNTER.fetch_add(1, Ordering::Relaxed))
}

impl PresenceActor {
    pub fn new(topic: Arc<str>) -> PresenceActor {
        PresenceActor { topic, set: PresenceSet::default(), subscribers: HashMap::new() }
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

    fn push_state(&self, member: &Member) {
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
            self.publish(diff);
        }
    }
}

impl Handler<Untrack> for PresenceActor {
    type Result = ();

    fn handle(&mut self, msg: Untrack, _: &mut Context<Self>) {
        if let Some(diff) = self.set.untrack(msg.conn) {
            self.publish(diff);
        }
    }
}

impl Handler<MemberGone> for PresenceActor {
    type Result = ();

    fn handle(&mut self, msg: MemberGone, _: &mut Context<Self>) {
        self.subscribers.remove(&msg.conn);
        if let Some(diff) = self.set.untrack(msg.conn) {
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
