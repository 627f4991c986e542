//! SocketActor: lifecycle, inbound frames, outbound writes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web_actors::ws::{self, CloseCode, CloseReason};
use bytes::{Bytes, BytesMut};
use realtime_proto::client::{ClientEvent, ClientMessage};
use realtime_proto::envelope::{decode_binary, decode_text};
use realtime_proto::server::{self, ReplyStatus};
use realtime_proto::system::{self, reason, shutdown, Extension};
use realtime_proto::{OutFrame, Vsn};

use super::messages::{Deliver, Drain, Flush, SlowConsumer, WireFrame};
use crate::auth::Claims;
use crate::channel::messages::{Join, Leave};
use crate::channel::{ChannelActor, ConnId, TopicKey};
use crate::limits::RateWindow;
use crate::metrics::metrics;
use crate::state::Shared;

/// Messages a socket may have queued before it is considered too slow (a stuck client costs at most
/// this many queued frames; one catching up on a burst of changes stays under it).
const MAILBOX_CAPACITY: usize = 16_384;
/// Close code telling clients to reconnect now (to another node).
pub const CLOSE_RECONNECT_NOW: u16 = 1012;

/// A joined (or joining) channel, from the socket's side.
pub struct ChannelState {
    pub key: TopicKey,
    pub join_ref: Option<String>,
    /// `None` until the channel accepted the join.
    pub channel: Option<Addr<ChannelActor>>,
    pub ack: bool,
    /// The token this channel runs under (its `access_token`, or the socket's).
    pub token: String,
    pub expiry_timer: Option<SpawnHandle>,
    pub presence_calls: RateWindow,
    /// `{"postgres_changes":[…]}`, the join reply's response.
    pub join_response: String,
    /// `(id, entry)` of each `postgres_changes` subscription, in join order.
    pub postgres_changes: Vec<(u32, serde_json::Map<String, serde_json::Value>)>,
    /// The claims of `token`, for RLS.
    pub claims: Claims,
    /// `postgres_changes_options.wait`: the join waits (this timer) for the subscription first.
    pub postgres_wait: Option<SpawnHandle>,
    /// The join, held back until the postgres subscription is live (wait mode).
    pub held_join: Option<Join>,
    /// Wait mode: the subscription was confirmed before the join.
    pub postgres_confirmed: bool,
    /// `broadcast.replication_ready`: tell the client when the replication stream is up.
    pub replication_ready: bool,
    /// The `ref` of the join push, answered when the channel's outcome arrives.
    pub join_msg_ref: Option<String>,
}

/// Text or binary fragments of a message being reassembled.
struct Fragments {
    binary: bool,
    buf: BytesMut,
}

/// One WebSocket connection.
pub struct SocketActor {
    pub(super) id: ConnId,
    pub(super) vsn: Vsn,
    pub(super) shared: Arc<Shared>,
    /// The handshake token (`apikey`), used by channels that send no `access_token`.
    pub(super) token: String,
    /// By full topic (`realtime:room1`).
    pub(super) channels: HashMap<String, ChannelState>,
    /// Broadcast and presence pushes per second.
    pub(super) events: RateWindow,
    last_seen: Instant,
    fragments: Option<Fragments>,
}

impl SocketActor {
    pub fn new(id: ConnId, vsn: Vsn, shared: Arc<Shared>, token: String) -> SocketActor {
        let events = RateWindow::new(shared.config.limits.max_events_per_second, Duration::from_secs(1));
        SocketActor {
            id,
            vsn,
            shared,
            token,
            channels: HashMap::new(),
            events,
            last_seen: Instant::now(),
            fragments: None,
        }
    }

    /// Writes one frame to the client.
    pub(super) fn write(&self, ctx: &mut ws::WebsocketContext<Self>, frame: WireFrame) {
        let m = metrics();
        m.messages_out.increment(1);
        m.bytes_out.increment(frame.len() as u64);
        match frame {
            WireFrame::Text(text) => ctx.text(text),
            WireFrame::Binary(bytes) => ctx.binary(bytes),
        }
    }

    pub(super) fn send(&self, ctx: &mut ws::WebsocketContext<Self>, frame: OutFrame) {
        self.write(ctx, frame.into());
    }

    /// `phx_reply` to a push.
    pub(super) fn reply(
        &self,
        ctx: &mut ws::WebsocketContext<Self>,
        msg: &ClientMessage,
        status: ReplyStatus,
        response_json: &str,
    ) {
        let frame = server::reply(
            self.vsn,
            msg.join_ref.as_deref(),
            msg.msg_ref.as_deref(),
            &msg.topic,
            status,
            response_json,
        );
        self.send(ctx, frame);
    }

    pub(super) fn reply_error(
        &self,
        ctx: &mut ws::WebsocketContext<Self>,
        msg: &ClientMessage,
        reason: &str,
    ) {
        let frame = server::error_reply(
            self.vsn,
            msg.join_ref.as_deref(),
            msg.msg_ref.as_deref(),
            &msg.topic,
            reason,
        );
        self.send(ctx, frame);
    }

    /// Ends a joined channel from the server side: `system` error, then `phx_close`; the socket stays.
    pub(super) fn shutdown_channel(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        topic: &str,
        message: &str,
    ) {
        let Some(state) = self.remove_channel(ctx, topic) else { return };
        let payload = system::payload(Extension::System, false, message, Some(&state.key.sub_topic));
        let join_ref = state.join_ref.as_deref();
        self.send(ctx, server::channel_push(self.vsn, join_ref, topic, "system", &payload));
        self.send(ctx, server::close(self.vsn, join_ref, topic));
    }

    /// Forgets a channel and tells the registry; returns its state.
    pub(super) fn remove_channel(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        topic: &str,
    ) -> Option<ChannelState> {
        let mut state = self.channels.remove(topic)?;
        if let Some(timer) = state.expiry_timer.take() {
            ctx.cancel_future(timer);
        }
        if let Some(timer) = state.postgres_wait.take() {
            ctx.cancel_future(timer);
        }
        self.shared.registry.do_send(Leave { key: state.key.clone(), conn: self.id });
        if let (Some(cdc), false) = (&self.shared.cdc, state.postgres_changes.is_empty()) {
            cdc.unsubscribe(self.id, topic.into());
        }
        Some(state)
    }

    /// Closes the WebSocket with a code and reason and stops the actor.
    pub(super) fn close(&self, ctx: &mut ws::WebsocketContext<Self>, code: u16, description: &str) {
        ctx.close(Some(CloseReason { code: CloseCode::from(code), description: Some(description.into()) }));
        ctx.stop();
    }

    fn on_frame(&mut self, ctx: &mut ws::WebsocketContext<Self>, data: Bytes, binary: bool) {
        let m = metrics();
        m.messages_in.increment(1);
        m.bytes_in.increment(data.len() as u64);
        let decoded = if binary {
            decode_binary(self.vsn, data)
        } else {
            match std::str::from_utf8(&data) {
                Ok(text) => decode_text(self.vsn, text),
                Err(_) => {
                    m.malformed_frames.increment(1);
                    return;
                }
            }
        };
        match decoded {
            Ok(frame) => self.dispatch(ctx, ClientMessage::from_frame(frame)),
            Err(error) => {
                m.malformed_frames.increment(1);
                tracing::debug!(conn = self.id, %error, "malformed frame ignored");
            }
        }
    }

    fn dispatch(&mut self, ctx: &mut ws::WebsocketContext<Self>, msg: ClientMessage) {
        match &msg.event {
            ClientEvent::Heartbeat => self.reply(ctx, &msg, ReplyStatus::Ok, "{}"),
            ClientEvent::Join(_) => self.on_join(ctx, msg),
            ClientEvent::Leave => self.on_leave(ctx, &msg),
            ClientEvent::Broadcast(_) => self.on_broadcast(ctx, msg),
            ClientEvent::Presence(_) => self.on_presence(ctx, msg),
            ClientEvent::AccessToken(_) => self.on_access_token(ctx, msg),
            ClientEvent::Other { .. } => {
                if self.channels.contains_key(&msg.topic) {
                    self.reply_error(ctx, &msg, "unknown event");
                } else {
                    self.reply_error(ctx, &msg, reason::UNMATCHED_TOPIC);
                }
            }
        }
    }

    fn on_fragment(&mut self, ctx: &mut ws::WebsocketContext<Self>, item: actix_http::ws::Item) {
        let max = self.shared.config.limits.max_frame_bytes;
        let (start, chunk, last) = match item {
            actix_http::ws::Item::FirstText(b) => (Some(false), b, false),
            actix_http::ws::Item::FirstBinary(b) => (Some(true), b, false),
            actix_http::ws::Item::Continue(b) => (None, b, false),
            actix_http::ws::Item::Last(b) => (None, b, true),
        };
        if let Some(binary) = start {
            self.fragments = Some(Fragments { binary, buf: BytesMut::new() });
        }
        let Some(fragments) = self.fragments.as_mut() else {
            return self.close(ctx, 1002, "continuation without a first fragment");
        };
        if fragments.buf.len() + chunk.len() > max {
            return self.close(ctx, 1009, "message too large");
        }
        fragments.buf.extend_from_slice(&chunk);
        if last {
            let done = self.fragments.take().expect("fragments present");
            self.on_frame(ctx, done.buf.freeze(), done.binary);
        }
    }

    fn check_idle(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if self.last_seen.elapsed() > self.shared.config.idle_timeout {
            self.close(ctx, 1000, "idle timeout");
        }
    }
}

impl Actor for SocketActor {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.shared.connections.register(self.id, ctx.address().recipient());
        let every =
            (self.shared.config.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        ctx.run_interval(every, |act, ctx| act.check_idle(ctx));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        for (topic, state) in self.channels.drain() {
            self.shared.registry.do_send(Leave { key: state.key, conn: self.id });
            if let (Some(cdc), false) = (&self.shared.cdc, state.postgres_changes.is_empty()) {
                cdc.unsubscribe(self.id, topic.into());
            }
        }
        self.shared.connections.release(self.id);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for SocketActor {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_seen = Instant::now();
        match item {
            Ok(ws::Message::Text(text)) => self.on_frame(ctx, text.into_bytes(), false),
            Ok(ws::Message::Binary(bytes)) => self.on_frame(ctx, bytes, true),
            Ok(ws::Message::Continuation(item)) => self.on_fragment(ctx, item),
            Ok(ws::Message::Ping(bytes)) => ctx.pong(&bytes),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Err(ws::ProtocolError::Overflow) => self.close(ctx, 1009, "frame too large"),
            Err(error) => {
                tracing::debug!(conn = self.id, %error, "websocket protocol error");
                self.close(ctx, 1002, "protocol error");
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Deliver> for SocketActor {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        if let Some(received_at) = msg.received_at {
            metrics().delivery_latency.record(received_at.elapsed().as_secs_f64());
        }
        self.write(ctx, msg.frame);
    }
}

impl Handler<Flush> for SocketActor {
    type Result = ();

    fn handle(&mut self, _: Flush, _: &mut Self::Context) {}
}

impl Handler<SlowConsumer> for SocketActor {
    type Result = ();

    fn handle(&mut self, _: SlowConsumer, ctx: &mut Self::Context) {
        self.close(ctx, 1008, "too slow to receive messages");
    }
}

impl Handler<Drain> for SocketActor {
    type Result = ();

    fn handle(&mut self, _: Drain, ctx: &mut Self::Context) {
        let payload = system::payload(Extension::System, true, shutdown::SERVER_DISCONNECT, None);
        let topics: Vec<(String, Option<String>)> =
            self.channels.iter().map(|(t, s)| (t.clone(), s.join_ref.clone())).collect();
        for (topic, join_ref) in topics {
            self.send(ctx, server::channel_push(self.vsn, join_ref.as_deref(), &topic, "system", &payload));
        }
        self.close(ctx, CLOSE_RECONNECT_NOW, "server shutting down, reconnect");
    }
}
