//! ChannelActor: the members of one topic on this node, join admission and broadcast fan-out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use realtime_cluster::ClusterHandle;
use realtime_proto::{server, system, topic};

use super::fanout::EncodedOnce;
use super::messages::{
    Broadcast, Held, Join, JoinOutcome, JoinRefused, Leave, Member, Released, RemotePresence, Replied,
    Resuming, StopChannel, Track, Untrack,
};
use super::ordering::{plan_reply, route, Live, Out, Receiver, Route};
use super::registry::Registry;
use crate::delivery::{Offer, WireFrame};
use crate::metrics::{metrics, Refusal};
use crate::presence::messages as presence;
use crate::presence::PresenceActor;
use crate::resume::Resume;
use crate::vocab::{ConnId, TopicKey};

/// Live frames held at most for a member waiting for its join reply (a few milliseconds' worth);
/// beyond, they go out at once: late order rather than loss.
const MAX_HELD: usize = 4096;

/// What every channel of the node is set up with.
#[derive(Debug, Clone, Copy)]
pub struct ChannelSettings {
    /// Members on every node (`REALTIME_MAX_CHANNEL_MEMBERS`).
    pub max_members: usize,
    /// Least time between two presence diffs (`REALTIME_PRESENCE_BATCH_MS`).
    pub presence_batch: Duration,
}

/// One topic's local members.
pub struct ChannelActor {
    key: TopicKey,
    /// `realtime:<sub_topic>`, as subscribers see it.
    topic: Arc<str>,
    members: HashMap<ConnId, Member>,
    settings: ChannelSettings,
    registry: Addr<Registry>,
    /// Started on the first presence subscriber or track.
    presence: Option<Addr<PresenceActor>>,
    /// The cluster (member counts, remote presence); `None` on a single node.
    cluster: Option<ClusterHandle>,
    /// This channel's name in the cluster.
    cluster_topic: String,
    /// Resumable channels' logs; `None` when no channel is resumable.
    resume: Option<Arc<Resume>>,
}

impl ChannelActor {
    pub fn new(
        key: TopicKey,
        registry: Addr<Registry>,
        settings: ChannelSettings,
        cluster: Option<ClusterHandle>,
        resume: Option<Arc<Resume>>,
    ) -> ChannelActor {
        let topic: Arc<str> = topic::full_topic(&key.sub_topic).into();
        let cluster_topic = key.cluster_topic();
        ChannelActor {
            key,
            topic,
            members: HashMap::new(),
            settings,
            registry,
            presence: None,
            cluster,
            cluster_topic,
            resume,
        }
    }

    fn presence(&mut self) -> &Addr<PresenceActor> {
        let (topic, cluster_topic, cluster) =
            (self.topic.clone(), self.cluster_topic.clone(), self.cluster.clone());
        let batch = self.settings.presence_batch;
        self.presence.get_or_insert_with(|| PresenceActor::new(topic, cluster_topic, cluster, batch).start())
    }

    /// Tells the cluster how many members this channel has here.
    fn publish_count(&self) {
        if let Some(cluster) = &self.cluster {
            cluster.set_members(&self.cluster_topic, self.members.len());
        }
    }

    /// Members on every node, as far as this node knows.
    fn cluster_members(&self) -> usize {
        let remote = self.cluster.as_ref().map_or(0, |c| c.remote_members(&self.cluster_topic));
        self.members.len() + remote
    }

    /// Removes a member and everything it held; the registry hears that one membership ended.
    fn remove(&mut self, conn: ConnId) {
        if self.members.remove(&conn).is_some() {
            metrics().channel_members.decrement(1.0);
            if let Some(presence) = &self.presence {
                presence.do_send(presence::MemberGone { conn });
            }
            self.registry.do_send(Released { key: self.key.clone() });
            self.publish_count();
        }
    }
}

impl Actor for ChannelActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(presence) = self.presence.take() {
            presence.do_send(presence::Stop);
        }
    }
}

impl Handler<Join> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) {
        let Join { mut member, joined, .. } = msg;
        if let Resuming::Requested(after) = member.resume {
            // Skipped from now: what arrives before `Replied` is in the log by then.
            let baseline = self.resume.as_ref().and_then(|r| r.last(&self.key));
            member.resume = Resuming::Pending { after, baseline };
        }
        let topic = topic::full_topic(&self.key.sub_topic);
        if self.cluster_members() >= self.settings.max_members && !self.members.contains_key(&member.conn) {
            metrics().refused(Refusal::ChannelFull);
            joined.do_send(JoinOutcome {
                topic,
                join_ref: member.join_ref.clone(),
                result: Err(JoinRefused::Full),
            });
            self.registry.do_send(Released { key: self.key.clone() });
            return;
        }
        joined.do_send(JoinOutcome { topic, join_ref: member.join_ref.clone(), result: Ok(ctx.address()) });
        if member.presence_enabled || member.presence_counts_only {
            self.presence()
                .do_send(presence::Subscribe { member: member.presence_subscriber(), send_state: true });
        }
        if self.members.insert(member.conn, member).is_some() {
            // The same socket joined again without leaving: the old membership ends here.
            self.registry.do_send(Released { key: self.key.clone() });
        } else {
            metrics().channel_members.increment(1.0);
            self.publish_count();
        }
    }
}

impl Handler<Leave> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) {
        self.remove(msg.conn);
    }
}

impl Handler<Broadcast> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: Broadcast, _: &mut Context<Self>) {
        let mut frames = EncodedOnce::new(&self.topic, &msg.body);
        let (id, position) = msg.stored.as_ref().map_or((None, None), |s| (Some(&s.id), s.position));
        let live = Live { from: msg.from, id, position };
        let mut dead = Vec::new();
        for member in self.members.values_mut() {
            let receiver = Receiver {
                conn: member.conn,
                receives_broadcasts: member.receives_broadcasts,
                self_broadcast: member.self_broadcast,
                skip_live: member.skip_live.as_deref(),
                resume: &mut member.resume,
                holding: member.held.as_ref().is_some_and(|held| held.len() < MAX_HELD),
            };
            let routed = route(receiver, live);
            if routed == Route::Skip {
                continue;
            }
            let Some(frame) = frames.frame(member.vsn) else { continue };
            if let (Route::Hold, Some(held)) = (routed, member.held.as_mut()) {
                held.push(Held { frame: frame.clone(), received_at: msg.received_at, id: id.cloned() });
                continue;
            }
            if member.outbox.offer(frame.clone(), Some(msg.received_at)) == Offer::Closed {
                dead.push(member.conn);
            }
        }
        for conn in dead {
            self.remove(conn);
        }
    }
}

impl Handler<Replied> for ChannelActor {
    type Result = ();

    /// The member's join reply is out: its replay, then what its resume owes it (or the gap notice
    /// and what came since it joined), then the live messages held meanwhile, in that order.
    fn handle(&mut self, msg: Replied, _: &mut Context<Self>) {
        let Some(member) = self.members.get_mut(&msg.conn) else { return };
        let owed = match (&self.resume, member.resume) {
            (Some(resume), Resuming::Pending { after, baseline }) => {
                Some((after, baseline, resume.owed(&self.key, after, baseline)))
            }
            _ => None,
        };
        let plan = plan_reply(msg.replay, owed, member.held.take().unwrap_or_default());
        if let Some(resume) = plan.resume {
            member.resume = resume;
        }
        if plan.skip_live.is_some() {
            member.skip_live = plan.skip_live;
        }
        let (topic, vsn) = (&self.topic, member.vsn);
        let frames = plan.out.into_iter().filter_map(|out| match out {
            Out::Body(body) => EncodedOnce::new(topic, &body).frame(vsn).map(|frame| (frame.clone(), None)),
            Out::ResumeGap { after } => {
                let payload = system::payload(
                    system::Extension::Broadcast,
                    false,
                    &system::resume_gap(&after.to_string()),
                    Some(&self.key.sub_topic),
                );
                let frame = server::channel_push(vsn, member.join_ref.as_deref(), topic, "system", &payload);
                Some((WireFrame::from(frame), None))
            }
            Out::Held(held) => Some((held.frame, Some(held.received_at))),
        });
        let frames: Vec<(WireFrame, Option<Instant>)> = frames.collect();
        let closed = frames.into_iter().any(|(frame, at)| member.outbox.offer(frame, at) == Offer::Closed);
        if closed {
            self.remove(msg.conn);
        }
    }
}

impl Handler<Track> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: Track, _: &mut Context<Self>) {
        let Some(member) = self.members.get(&msg.conn).map(Member::presence_subscriber) else { return };
        self.presence().do_send(presence::Track { member, meta: msg.meta });
    }
}

impl Handler<Untrack> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: Untrack, _: &mut Context<Self>) {
        if let Some(presence) = &self.presence {
            presence.do_send(presence::Untrack { conn: msg.conn });
        }
    }
}

impl Handler<RemotePresence> for ChannelActor {
    type Result = ();

    /// Without a presence actor nothing is lost: one started later reads the current remote state.
    fn handle(&mut self, msg: RemotePresence, _: &mut Context<Self>) {
        if let Some(presence) = &self.presence {
            presence.do_send(presence::RemoteChanges { change: msg.change });
        }
    }
}

impl Handler<StopChannel> for ChannelActor {
    type Result = ();

    fn handle(&mut self, _: StopChannel, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
