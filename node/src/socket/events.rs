//! `broadcast` and `presence` pushes from the client (PROTOCOL.md §3.1–3.4, §4.1).
//!
//! Both count against the socket's events per second; presence also against the channel's presence
//! window. Over a limit, the channel is ended with the reference's `system` message.

use std::time::Instant;

use actix::prelude::*;
use realtime_proto::binary::BinaryEncoding;
use realtime_proto::client::{BroadcastPush, ClientEvent, ClientMessage};
use realtime_proto::server::ReplyStatus;
use realtime_proto::system::{reason, shutdown};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::actor::SocketActor;
use super::private::{is_track, Gate};
use crate::authz::Extension;
use crate::channel::messages::{Broadcast, Track, Untrack};
use crate::channel::ChannelActor;
use crate::limits::RateWindow;
use crate::metrics::{metrics, Refusal};
use crate::resume::{self, Resume, Write, WriteError};
use crate::vocab::{BroadcastBody, TopicKey};

/// The reply to a broadcast over the size limit when the sender asked for acks.
const PAYLOAD_SIZE_EXCEEDED: &str = "\"payload_size_exceeded\"";

/// Whether `data` is one JSON value in valid UTF-8 (serde_json does not check the UTF-8 of strings it
/// skips, and 1.0.0 subscribers need the payload as text).
fn is_json(data: &[u8]) -> bool {
    std::str::from_utf8(data).is_ok_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok())
}

impl SocketActor {
    /// The channel of a joined topic; replies `unmatched topic` when there is none.
    fn joined_channel(
        &self,
        ctx: &mut Context<Self>,
        msg: &ClientMessage,
    ) -> Option<actix::Addr<ChannelActor>> {
        let channel = self.channels.get(&msg.topic).and_then(|s| s.channel.clone());
        if channel.is_none() {
            self.reply_error(ctx, msg, reason::UNMATCHED_TOPIC);
        }
        channel
    }

    /// Counts one event; over the limit the channel is closed and `false` returned.
    fn allow_event(&mut self, ctx: &mut Context<Self>, topic: &str) -> bool {
        if self.events.allow(Instant::now()) {
            return true;
        }
        metrics().refused(Refusal::EventRate);
        self.shutdown_channel(ctx, topic, shutdown::TOO_MANY_MESSAGES);
        false
    }

    pub(super) fn on_broadcast(&mut self, ctx: &mut Context<Self>, msg: ClientMessage) {
        let Some(channel) = self.joined_channel(ctx, &msg) else { return };
        let ack = self.channels.get(&msg.topic).is_some_and(|s| s.ack);
        match self.write_gate(ctx, &msg, Extension::Broadcast) {
            Gate::Open => {}
            Gate::Held => return,
            Gate::Denied => return self.deny_write(ctx, &msg, ack),
        }
        if !self.allow_event(ctx, &msg.topic) {
            return;
        }
        let ClientEvent::Broadcast(push) = &msg.event else { return };
        if push.payload_len() > self.shared.config.limits.max_payload_bytes {
            metrics().refused(Refusal::PayloadTooLarge);
            if ack {
                self.reply(ctx, &msg, ReplyStatus::Error, PAYLOAD_SIZE_EXCEEDED);
            }
            return;
        }
        let body = match push {
            BroadcastPush::Json(raw) => BroadcastBody::Json(raw.get().into()),
            BroadcastPush::User(ub) => {
                let json_ok = ub.encoding == BinaryEncoding::Raw || is_json(&ub.data);
                if !json_ok {
                    metrics().malformed_frames.increment(1);
                    return self.reply_error(ctx, &msg, "broadcast payload is not valid JSON");
                }
                BroadcastBody::User {
                    event: ub.event.as_str().into(),
                    encoding: ub.encoding,
                    data: ub.data.clone(),
                    meta: None,
                }
            }
        };
        if let Some(state) = self.channels.get(&msg.topic) {
            let resume = self.shared.resume.as_ref().filter(|r| r.is_resumable(&state.key));
            if let Some(resume) = resume.cloned() {
                let key = state.key.clone();
                return self.store_broadcast(ctx, msg, &resume, key, &body, ack);
            }
            crate::peers::relay(self.shared.cluster.as_ref(), &state.key, &body);
        }
        channel.do_send(Broadcast { from: Some(self.id), body, received_at: Instant::now(), stored: None });
        if ack {
            self.reply(ctx, &msg, ReplyStatus::Ok, "{}");
        }
    }

    /// A broadcast on a resumable channel is stored, and reaches the members (this one too, with
    /// `self`) through the stream with its position; its ack waits for the commit.
    fn store_broadcast(
        &mut self,
        ctx: &mut Context<Self>,
        msg: ClientMessage,
        resume: &Resume,
        key: TopicKey,
        body: &BroadcastBody,
        ack: bool,
    ) {
        let (event, payload) = match resume::stored_form(body) {
            Ok(form) => form,
            Err(reason) => return self.reply_error(ctx, &msg, reason),
        };
        let (done, committed) = oneshot::channel();
        let write = Write { key, event, payload, from: Some(self.id), done: ack.then_some(done) };
        if let Err(error) = resume.writer().submit(write) {
            metrics().resume.store_failures.increment(1);
            if ack {
                let reason = serde_json::json!({ "reason": error.to_string() }).to_string();
                self.reply(ctx, &msg, ReplyStatus::Error, &reason);
            }
            return;
        }
        if ack {
            let reply = async move { committed.await.unwrap_or(Err(WriteError::Stopped)) };
            ctx.spawn(reply.into_actor(self).map(move |result, act, ctx| match result {
                Ok(()) => act.reply(ctx, &msg, ReplyStatus::Ok, "{}"),
                Err(error) => {
                    let reason = serde_json::json!({ "reason": error.to_string() }).to_string();
                    act.reply(ctx, &msg, ReplyStatus::Error, &reason);
                }
            }));
        }
    }

    pub(super) fn on_presence(&mut self, ctx: &mut Context<Self>, msg: ClientMessage) {
        let Some(channel) = self.joined_channel(ctx, &msg) else { return };
        if is_track(&msg) {
            match self.write_gate(ctx, &msg, Extension::Presence) {
                Gate::Open => {}
                Gate::Held => return,
                Gate::Denied => return self.deny_write(ctx, &msg, true),
            }
        }
        if !self.allow_event(ctx, &msg.topic) {
            return;
        }
        let limits = &self.shared.config.limits;
        let (max_calls, window) = (limits.presence_max_calls, limits.presence_window);
        let allowed = self
            .presence_windows
            .entry(msg.topic.clone())
            .or_insert_with(|| RateWindow::new(max_calls, window))
            .allow(Instant::now());
        if !allowed {
            metrics().refused(Refusal::PresenceRate);
            return self.shutdown_channel(ctx, &msg.topic, shutdown::PRESENCE_RATE);
        }
        let ClientEvent::Presence(push) = &msg.event else { return };
        match push.event.as_deref() {
            None => self.reply(ctx, &msg, ReplyStatus::Ok, "{}"),
            Some("track") => {
                let meta = match &push.payload {
                    None | Some(Value::Null) => Map::new(),
                    Some(Value::Object(map)) => map.clone(),
                    Some(_) => return self.reply_error(ctx, &msg, reason::PRESENCE_PAYLOAD_NOT_MAP),
                };
                if let Err(error) = self.shared.config.limits.budget.check_presence(&meta) {
                    metrics().refused(Refusal::Budget);
                    return self.reply_error(ctx, &msg, &error.to_string());
                }
                let size = serde_json::to_string(&meta).map_or(usize::MAX, |s| s.len());
                if size > self.shared.config.limits.max_payload_bytes {
                    metrics().refused(Refusal::TrackTooLarge);
                    return self.shutdown_channel(ctx, &msg.topic, shutdown::TRACK_TOO_LARGE);
                }
                channel.do_send(Track { conn: self.id, meta });
                self.reply(ctx, &msg, ReplyStatus::Ok, "{}");
            }
            Some("untrack") => {
                channel.do_send(Untrack { conn: self.id });
                self.reply(ctx, &msg, ReplyStatus::Ok, "{}");
            }
            Some(_) => self.reply(ctx, &msg, ReplyStatus::Error, "{}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_payloads_must_be_utf8() {
        assert!(is_json(br#"{"a": "b"}"#));
        assert!(!is_json(b"{\"a\": \"\xff\"}"), "invalid UTF-8 inside a string");
        assert!(!is_json(b"{"));
    }
}
