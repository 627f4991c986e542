//! Private channels on the socket (PROTOCOL.md §6.2): the read check that admits a join (and the
//! replay it may ask for, §3.8, sent right after the join reply), the write
//! checks held in front of the first broadcast and the first track, and the re-check when the token
//! is refreshed. The questions themselves are [`crate::authz`]'s.
//!
//! A check is asynchronous, so whatever the client sends meanwhile waits, in order, behind it: pushes
//! during the join wait in the channel's `pending` list (as for any join), broadcasts and tracks in
//! their [`WriteGate`] until the write decision is known.

use actix::prelude::*;
use realtime_proto::client::{ClientEvent, ClientMessage};
use realtime_proto::server::ReplyStatus;
use realtime_proto::system::{reason, shutdown};

use super::actor::{SocketActor, MAX_PENDING_PUSHES};
use crate::authz::{Caller, Extension, ReadAccess};
use crate::channel::messages::{Join, Replied};
use crate::channel::ChannelActor;
use crate::metrics::{metrics, Refusal};
use crate::replay::{Replay, ReplayRequest};

/// What a private channel's caller may do, as decided so far.
#[derive(Debug, Default)]
pub struct PrivateAccess {
    pub read: ReadAccess,
    pub broadcast_write: WriteGate,
    pub presence_write: WriteGate,
}

impl PrivateAccess {
    fn gate(&mut self, extension: Extension) -> &mut WriteGate {
        match extension {
            Extension::Broadcast => &mut self.broadcast_write,
            Extension::Presence => &mut self.presence_write,
        }
    }
}

/// A write permission: not asked yet, being asked (with the pushes waiting for it), or decided.
#[derive(Debug, Default)]
pub enum WriteGate {
    #[default]
    Unknown,
    Checking(Vec<ClientMessage>),
    Decided(bool),
}

/// What to do with a broadcast or track now.
pub enum Gate {
    /// Go on: a public channel, or the caller may write.
    Open,
    /// Held until the check answers; it is dispatched again then.
    Held,
    /// The caller may not write: drop it (and say so if a reply is due).
    Denied,
}

impl SocketActor {
    /// The read check of a private join; on success the join goes on with `continue_join`. A replay
    /// it asks for is read once the member is registered and holds its live messages
    /// ([`SocketActor::replay_then_release`]), so no row falls between the replay and live delivery.
    pub(super) fn authorize_join(
        &mut self,
        ctx: &mut Context<Self>,
        topic: &str,
        mut join: Join,
        replay: Option<ReplayRequest>,
        continue_join: impl FnOnce(&mut SocketActor, &mut Context<SocketActor>, Join) + 'static,
    ) {
        let owned = topic.to_owned();
        self.read_check(ctx, topic, move |act, ctx, access| {
            let topic = owned;
            let Some(state) = act.channels.get_mut(&topic) else { return };
            if state.channel.is_some() {
                return; // joined again meanwhile
            }
            let sub_topic = state.key.sub_topic.to_string();
            if !access.any() {
                metrics().refused(Refusal::PrivateChannel);
                let state = act.remove_channel(ctx, &topic).expect("present above");
                let (join_ref, msg_ref) = (state.join_ref.as_deref(), state.join_msg_ref.as_deref());
                act.refuse_join(ctx, &topic, join_ref, msg_ref, &reason::unauthorized_read(&sub_topic));
                act.refuse_pending(ctx, &state.pending);
                return;
            }
            state.private = Some(Box::new(PrivateAccess { read: access, ..PrivateAccess::default() }));
            join.member.receives_broadcasts = access.broadcast;
            join.member.presence_enabled &= access.presence;
            join.member.presence_counts_only &= access.presence;
            if let Some(request) = replay.filter(|_| access.broadcast) {
                join.member.held.get_or_insert_with(Vec::new);
                state.holds_live = true;
                state.replay = Some(request);
            }
            continue_join(act, ctx, join);
        });
    }

    /// The RLS read check of `topic`'s channel under its current claims, off the actor; `then` gets
    /// the answer (a check that failed is logged and allows nothing) if the socket still has that
    /// join.
    fn read_check(
        &self,
        ctx: &mut Context<Self>,
        topic: &str,
        then: impl FnOnce(&mut SocketActor, &mut Context<SocketActor>, ReadAccess) + 'static,
    ) {
        let (Some(authz), Some(state)) = (self.shared.authz.clone(), self.channels.get(topic)) else {
            return;
        };
        // A private channel keeps its claims (`ChannelState::keeps_claims`).
        let Some(claims) = state.claims.as_deref() else { return };
        let caller = Caller::new(&state.key.sub_topic, claims);
        let (exp, join_ref, topic) = (claims.exp, state.join_ref.clone(), topic.to_owned());
        let check = async move { authz.read(caller, exp).await };
        ctx.spawn(check.into_actor(self).map(move |result, act, ctx| {
            let access = result.unwrap_or_else(|error| {
                tracing::warn!(parent: &act.span, conn = act.id, topic, %error, "private channel read check failed");
                ReadAccess::default()
            });
            if act.channels.get(&topic).is_some_and(|s| s.join_ref == join_ref) {
                then(act, ctx, access);
            }
        }));
    }

    /// After the join reply of a member that holds its live messages: reads its replay (if it asked
    /// for one), then tells the channel to send it and release what was held. A replay that cannot
    /// be read ends the channel with the reason.
    pub(super) fn replay_then_release(
        &mut self,
        ctx: &mut Context<Self>,
        topic: &str,
        channel: Addr<ChannelActor>,
    ) {
        let Some(state) = self.channels.get_mut(topic) else { return };
        let conn = self.id;
        let (Some(request), Some(authz)) = (state.replay.take(), self.shared.authz.clone()) else {
            channel.do_send(Replied { conn, replay: Replay::default() });
            return;
        };
        let (sub_topic, join_ref, topic) =
            (state.key.sub_topic.to_string(), state.join_ref.clone(), topic.to_owned());
        let max_payload = self.shared.config.limits.max_payload_bytes;
        let fetch = async move { authz.replay(sub_topic, request, max_payload).await };
        ctx.spawn(fetch.into_actor(self).map(move |result, act, ctx| {
            if act.channels.get(&topic).is_none_or(|s| s.join_ref != join_ref) {
                return; // left meanwhile
            }
            match result {
                Ok(replay) => channel.do_send(Replied { conn, replay }),
                Err(error) => {
                    tracing::warn!(parent: &act.span, conn = act.id, topic, %error, "replay failed");
                    act.shutdown_channel(ctx, &topic, &format!("UnableToReplayMessages: {error}"));
                }
            }
        }));
    }

    /// Whether a broadcast or track on `msg.topic` may go on now; asks the write check the first time.
    pub(super) fn write_gate(
        &mut self,
        ctx: &mut Context<Self>,
        msg: &ClientMessage,
        extension: Extension,
    ) -> Gate {
        let Some(state) = self.channels.get_mut(&msg.topic) else { return Gate::Open };
        let Some(private) = state.private.as_mut() else { return Gate::Open };
        // A private channel keeps its claims (`ChannelState::keeps_claims`).
        let Some(claims) = state.claims.as_deref() else { return Gate::Denied };
        match private.gate(extension) {
            WriteGate::Decided(true) => return Gate::Open,
            WriteGate::Decided(false) => return Gate::Denied,
            WriteGate::Checking(held) => {
                if held.len() < MAX_PENDING_PUSHES {
                    held.push(msg.clone());
                    return Gate::Held;
                }
                metrics().refused(Refusal::PendingPushes);
                return Gate::Denied;
            }
            gate @ WriteGate::Unknown => *gate = WriteGate::Checking(vec![msg.clone()]),
        }
        let Some(authz) = self.shared.authz.clone() else { return Gate::Denied };
        let caller = Caller::new(&state.key.sub_topic, claims);
        let (exp, join_ref, topic) = (claims.exp, state.join_ref.clone(), msg.topic.clone());
        let check = async move { authz.write(caller, extension, exp).await };
        ctx.spawn(check.into_actor(self).map(move |result, act, ctx| {
            let allowed = result.unwrap_or_else(|error| {
                tracing::warn!(parent: &act.span, conn = act.id, topic, %error, "private channel write check failed");
                false
            });
            let Some(state) = act.channels.get_mut(&topic) else { return };
            if state.join_ref != join_ref {
                return;
            }
            let Some(private) = state.private.as_mut() else { return };
            let held = match std::mem::replace(private.gate(extension), WriteGate::Decided(allowed)) {
                WriteGate::Checking(held) => held,
                _ => Vec::new(),
            };
            for push in held {
                act.dispatch(ctx, push);
            }
        }));
        Gate::Held
    }

    /// Answers a push the write check denied: broadcasts with an ack and tracks get an error reply.
    pub(super) fn deny_write(&self, ctx: &mut Context<Self>, msg: &ClientMessage, reply: bool) {
        metrics().refused(Refusal::PrivateChannel);
        if reply {
            let sub_topic =
                self.channels.get(&msg.topic).map(|s| s.key.sub_topic.to_string()).unwrap_or_default();
            let reason = serde_json::json!({ "reason": reason::unauthorized_write(&sub_topic) }).to_string();
            self.reply(ctx, msg, ReplyStatus::Error, &reason);
        }
    }

    /// After a token refresh on a private channel: read again under the new claims; a read permission
    /// that was granted and is no longer ends the channel. Write decisions are asked again.
    pub(super) fn recheck_private(&mut self, ctx: &mut Context<Self>, topic: &str) {
        if self.shared.authz.is_none() {
            return;
        }
        let Some(private) = self.channels.get_mut(topic).and_then(|s| s.private.as_mut()) else { return };
        private.broadcast_write = WriteGate::Unknown;
        private.presence_write = WriteGate::Unknown;
        let owned = topic.to_owned();
        self.read_check(ctx, topic, move |act, ctx, now| {
            let topic = owned;
            let Some(state) = act.channels.get_mut(&topic) else { return };
            let Some(private) = state.private.as_mut() else { return };
            let before = std::mem::replace(&mut private.read, now);
            if (before.broadcast && !now.broadcast) || (before.presence && !now.presence) {
                let sub_topic = state.key.sub_topic.to_string();
                metrics().refused(Refusal::PrivateChannel);
                act.shutdown_channel(ctx, &topic, &shutdown::read_revoked(&sub_topic));
            }
        });
    }
}

/// Whether a presence push is a track (the only presence push a write check guards).
pub(super) fn is_track(msg: &ClientMessage) -> bool {
    matches!(&msg.event, ClientEvent::Presence(push) if push.event.as_deref() == Some("track"))
}
