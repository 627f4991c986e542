//! SocketActor: lifecycle, inbound frames, outbound writes through the socket's own outbox.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::{CloseCode, Frame, Item, ProtocolError};
use bytes::{Bytes, BytesMut};
use realtime_proto::client::{ClientEvent, ClientMessage};
use realtime_proto::envelope::{decode_binary, decode_text};
use realtime_proto::server::{self, ReplyStatus};
use realtime_proto::system::{self, reason, shutdown, Extension};
use realtime_proto::{OutFrame, Vsn};

use crate::auth::Claims;
use crate::budget::BudgetError;
use crate::channel::messages::{Join, Leave};
use crate::channel::ChannelActor;
use crate::close::Close;
use crate::delivery::{Offer, Outbox, WireFrame};
use crate::limits::RateWindow;
use crate::metrics::{metrics, Refusal};
use crate::state::Shared;
use crate::vocab::{ConnId, Drain, TopicKey};
use crate::webhooks::SocketHook;

/// Pushes a client may send for a channel whose join is still being decided; they are processed in
/// order once it is. More are refused.
pub const MAX_PENDING_PUSHES: usize = 64;

/// A joined (or joining) channel, from the socket's side.
///
/// One is kept per joined channel for the life of the membership, so what only some channels use
/// (wait mode's held join, a private channel's permissions, the claims) is boxed or left out, and
/// the join reply's response is rebuilt from `postgres_changes` when it is sent rather than kept.
pub struct ChannelState {
    pub key: TopicKey,
    pub join_ref: Option<String>,
    /// `None` until the channel accepted the join.
    pub channel: Option<Addr<ChannelActor>>,
    pub ack: bool,
    /// The token this channel runs under (its `access_token`, or the socket's: then the same
    /// allocation as [`SocketActor::token`]).
    pub token: Arc<str>,
    pub expiry_timer: Option<SpawnHandle>,
    /// `(id, entry)` of each `postgres_changes` subscription, in join order.
    pub postgres_changes: Vec<(u32, serde_json::Map<String, serde_json::Value>)>,
    /// The claims of `token`, for RLS: kept only by the channels that ask under them (private
    /// channels' checks, Postgres Changes), `None` for the others, which never read them after the
    /// join (see [`ChannelState::keeps_claims`]).
    pub claims: Option<Box<Claims>>,
    /// `postgres_changes_options.wait`: the join waits (this timer) for the subscription first.
    pub postgres_wait: Option<SpawnHandle>,
    /// The join, held back until the postgres subscription is live (wait mode).
    pub held_join: Option<Box<Join>>,
    /// Wait mode: the subscription was confirmed before the join.
    pub postgres_confirmed: bool,
    /// `broadcast.replication_ready`: tell the client when the replication stream is up.
    pub replication_ready: bool,
    /// The `ref` of the join push, answered when the channel's outcome arrives.
    pub join_msg_ref: Option<String>,
    /// Pushes that arrived while the join was being decided, in order.
    pub pending: Vec<ClientMessage>,
    /// A private channel's permissions (`None`: a public channel, or not decided yet).
    pub private: Option<Box<super::private::PrivateAccess>>,
    /// The replay asked for (`broadcast.replay`), read once the member holds its live messages.
    pub replay: Option<crate::replay::ReplayRequest>,
    /// The member holds its live messages until the join reply is out (a replay or a resume comes
    /// first): the channel is told [`crate::channel::messages::Replied`] then.
    pub holds_live: bool,
}

impl ChannelState {
    /// Whether a channel reads its claims after the join: a private channel (its read and write
    /// checks) or one with `postgres_changes` (its subscriptions run under them).
    pub fn keeps_claims(private: bool, postgres_changes: bool) -> bool {
        private || postgres_changes
    }

    /// The claims of a refreshed token, kept if this channel keeps claims at all.
    pub fn refresh_claims(&mut self, claims: Claims) {
        if self.claims.is_some() {
            self.claims = Some(Box::new(claims));
        }
    }
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
    /// Where every frame to this client goes; shared with the channels it joined.
    pub(super) outbox: Outbox,
    /// The handshake token (`apikey`), used by channels that send no `access_token` (shared with
    /// them, not copied).
    pub(super) token: Arc<str>,
    /// By full topic (`realtime:room1`). Boxed: the table keeps spare slots (three of four with one
    /// channel joined), and a slot is then a pointer rather than a whole `ChannelState`.
    pub(super) channels: HashMap<String, Box<ChannelState>>,
    /// Broadcast and presence pushes per second.
    pub(super) events: RateWindow,
    /// Joins per second on this socket, refused ones included.
    pub(super) joins: RateWindow,
    /// Went over `joins`: the socket is closing and its frames are no longer read.
    pub(super) join_flood: bool,
    /// Presence pushes per topic; kept after a leave until the window is over, so a rejoin does not
    /// reset it.
    pub(super) presence_windows: HashMap<String, RateWindow>,
    /// Logs of this socket carry its id and user.
    pub(super) span: tracing::Span,
    /// Lifecycle webhooks of this socket (`None` when they are off).
    hook: Option<SocketHook>,
    last_seen: Instant,
    fragments: Option<Fragments>,
}

impl SocketActor {
    pub fn new(
        id: ConnId,
        vsn: Vsn,
        shared: Arc<Shared>,
        token: Arc<str>,
        user: &str,
        outbox: Outbox,
    ) -> SocketActor {
        let limits = &shared.config.limits;
        let events = RateWindow::new(limits.max_events_per_second, Duration::from_secs(1));
        let joins = RateWindow::new(limits.max_client_joins_per_second, Duration::from_secs(1));
        // At DEBUG: an enabled span is kept per connection by the log subscriber (about 0.5 KiB, measured
        // in docs/benchmarks.md), so only `RUST_LOG=realtime_node::socket=debug` pays for it; then every
        // line the socket logs carries `conn` and `user` (JSON: in `span`).
        let span = tracing::debug_span!("socket", conn = id, user = %user, vsn = %vsn);
        let hook = shared.webhooks.as_ref().map(|webhooks| webhooks.socket(user));
        SocketActor {
            hook,
            id,
            vsn,
            shared,
            outbox,
            token,
            channels: HashMap::new(),
            events,
            joins,
            join_flood: false,
            presence_windows: HashMap::new(),
            span,
            last_seen: Instant::now(),
            fragments: None,
        }
    }

    /// Queues one frame for the client; a client too slow to take its own replies is closed.
    pub(super) fn write(&self, ctx: &mut Context<Self>, frame: WireFrame) {
        if self.outbox.offer(frame, None) == Offer::Closed {
            ctx.stop();
        }
    }

    pub(super) fn send(&self, ctx: &mut Context<Self>, frame: OutFrame) {
        self.write(ctx, frame.into());
    }

    /// `phx_reply` to a push.
    pub(super) fn reply(
        &self,
        ctx: &mut Context<Self>,
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

    pub(super) fn reply_error(&self, ctx: &mut Context<Self>, msg: &ClientMessage, reason: &str) {
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
    pub(super) fn shutdown_channel(&mut self, ctx: &mut Context<Self>, topic: &str, message: &str) {
        self.shutdown_channel_with(ctx, topic, Extension::System, message);
    }

    /// [`SocketActor::shutdown_channel`] with the `system` message's extension (`postgres_changes` when
    /// it is that subscription that failed).
    pub(super) fn shutdown_channel_with(
        &mut self,
        ctx: &mut Context<Self>,
        topic: &str,
        extension: Extension,
        message: &str,
    ) {
        let Some(state) = self.remove_channel(ctx, topic) else { return };
        tracing::debug!(parent: &self.span, topic, reason = message, "channel closed by the server");
        let payload = system::payload(extension, false, message, Some(&state.key.sub_topic));
        let join_ref = state.join_ref.as_deref();
        self.send(ctx, server::channel_push(self.vsn, join_ref, topic, "system", &payload));
        self.send(ctx, server::close(self.vsn, join_ref, topic));
    }

    /// Forgets a channel and tells the registry; returns its state.
    pub(super) fn remove_channel(
        &mut self,
        ctx: &mut Context<Self>,
        topic: &str,
    ) -> Option<Box<ChannelState>> {
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

    /// Answers the pushes that waited for a join that was refused: there is no such channel. They
    /// follow the join's error reply (after the same delay).
    pub(super) fn refuse_pending(&self, ctx: &mut Context<Self>, pending: &[ClientMessage]) {
        for push in pending {
            let (join_ref, msg_ref) = (push.join_ref.as_deref(), push.msg_ref.as_deref());
            let frame =
                server::error_reply(self.vsn, join_ref, msg_ref, &push.topic, reason::UNMATCHED_TOPIC);
            self.send_join_error(ctx, frame);
        }
    }

    /// Closes the WebSocket (once what is queued is written) and stops.
    pub(super) fn close(&self, ctx: &mut Context<Self>, close: Close) {
        let (code, reason) = (close.code(), close.reason());
        tracing::debug!(parent: &self.span, code, reason = %reason, "socket closed by the server");
        self.outbox.close(close);
        ctx.stop();
    }

    fn on_frame(&mut self, ctx: &mut Context<Self>, data: Bytes, binary: bool) {
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
            Ok(frame) => {
                let msg = ClientMessage::from_frame(frame);
                if matches!(msg.event, ClientEvent::Join(_)) && !self.count_join(ctx, &msg) {
                    return;
                }
                let budget = &self.shared.config.limits.budget;
                if let Err(BudgetError::RefTooLong { max }) = budget.check_refs(&msg) {
                    metrics().refused(Refusal::Budget);
                    // A ref over budget cannot be echoed back usefully: the socket is closed instead.
                    return self.close(ctx, Close::RefTooLong { max });
                }
                if let Err(error) = budget.check_topic(&msg) {
                    metrics().refused(Refusal::Budget);
                    let (join_ref, msg_ref) = (msg.join_ref.as_deref(), msg.msg_ref.as_deref());
                    return match msg.event {
                        ClientEvent::Join(_) => {
                            self.refuse_join(ctx, &msg.topic, join_ref, msg_ref, &error.to_string())
                        }
                        // No channel can have this topic.
                        _ => self.reply_error(ctx, &msg, reason::UNMATCHED_TOPIC),
                    };
                }
                self.dispatch(ctx, msg);
            }
            Err(error) => {
                m.malformed_frames.increment(1);
                tracing::debug!(parent: &self.span, %error, "malformed frame ignored");
            }
        }
    }

    pub(super) fn dispatch(&mut self, ctx: &mut Context<Self>, msg: ClientMessage) {
        if !matches!(msg.event, ClientEvent::Heartbeat | ClientEvent::Join(_) | ClientEvent::Leave) {
            if let Some(state) = self.channels.get_mut(&msg.topic) {
                if state.channel.is_none() {
                    // Joining: this push is processed in order once the join is decided.
                    if state.pending.len() < MAX_PENDING_PUSHES {
                        state.pending.push(msg);
                    } else {
                        metrics().refused(Refusal::PendingPushes);
                        self.reply_error(ctx, &msg, "too many pushes before the join was answered");
                    }
                    return;
                }
            }
        }
        match &msg.event {
            ClientEvent::Heartbeat => self.reply(ctx, &msg, ReplyStatus::Ok, "{}"),
            ClientEvent::Join(_) => self.on_join(ctx, msg),
            ClientEvent::Leave => self.on_leave(ctx, &msg),
            ClientEvent::Broadcast(_) => self.on_broadcast(ctx, msg),
            ClientEvent::Presence(_) => self.on_presence(ctx, msg),
            ClientEvent::AccessToken(_) => self.on_access_token(ctx, msg),
            ClientEvent::Unreadable { .. } => {
                metrics().malformed_frames.increment(1);
                self.reply_error(ctx, &msg, "unreadable payload: not valid JSON or nested too deeply");
            }
            ClientEvent::Other { .. } => {
                if self.channels.contains_key(&msg.topic) {
                    self.reply_error(ctx, &msg, "unknown event");
                } else {
                    self.reply_error(ctx, &msg, reason::UNMATCHED_TOPIC);
                }
            }
        }
    }

    fn on_fragment(&mut self, ctx: &mut Context<Self>, item: Item) {
        let max = self.shared.config.limits.max_frame_bytes;
        let (start, chunk, last) = match item {
            Item::FirstText(b) => (Some(false), b, false),
            Item::FirstBinary(b) => (Some(true), b, false),
            Item::Continue(b) => (None, b, false),
            Item::Last(b) => (None, b, true),
        };
        if let Some(binary) = start {
            self.fragments = Some(Fragments { binary, buf: BytesMut::new() });
        }
        let Some(fragments) = self.fragments.as_mut() else {
            return self.close(ctx, Close::OrphanContinuation);
        };
        if fragments.buf.len() + chunk.len() > max {
            self.fragments = None;
            metrics().refused(Refusal::FrameTooLarge);
            return self.close(ctx, Close::MessageTooLarge);
        }
        fragments.buf.extend_from_slice(&chunk);
        if last {
            let done = self.fragments.take().expect("fragments present");
            self.on_frame(ctx, done.buf.freeze(), done.binary);
        }
    }

    fn check_idle(&mut self, ctx: &mut Context<Self>) {
        if !self.outbox.is_open() {
            // Closed from outside (slow consumer): the connection is going away.
            return ctx.stop();
        }
        if self.last_seen.elapsed() > self.shared.config.idle_timeout {
            self.close(ctx, Close::IdleTimeout);
        }
    }
}

impl Actor for SocketActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.shared.connections.register(self.id, ctx.address().recipient(), self.outbox.clone());
        tracing::debug!(parent: &self.span, "socket connected");
        if let Some(hook) = &self.hook {
            hook.connected(self.id);
        }
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
        if let Some(hook) = self.hook.take() {
            hook.disconnected(self.id, self.outbox.closed_with());
        }
        // Normally already closing (or gone); otherwise end the connection too.
        self.outbox.close(Close::Ended);
        self.shared.connections.release(self.id);
        tracing::debug!(parent: &self.span, "socket gone");
    }
}

impl StreamHandler<Result<Frame, ProtocolError>> for SocketActor {
    fn handle(&mut self, item: Result<Frame, ProtocolError>, ctx: &mut Self::Context) {
        self.last_seen = Instant::now();
        match item {
            // Closing for its joins: what else it sends is not read.
            Ok(Frame::Text(_) | Frame::Binary(_) | Frame::Continuation(_)) if self.join_flood => {}
            Ok(Frame::Text(text)) => self.on_frame(ctx, text, false),
            Ok(Frame::Binary(bytes)) => self.on_frame(ctx, bytes, true),
            Ok(Frame::Continuation(item)) => self.on_fragment(ctx, item),
            Ok(Frame::Ping(bytes)) => {
                if self.outbox.pong(bytes) == Offer::Closed {
                    ctx.stop();
                }
            }
            Ok(Frame::Pong(_)) => {}
            Ok(Frame::Close(reason)) => {
                tracing::debug!(parent: &self.span, ?reason, "client closed");
                let code = reason.map_or(CloseCode::Normal, |r| r.code).into();
                if let Some(hook) = &mut self.hook {
                    hook.client_closed(code);
                }
                self.outbox.close(Close::Echo { code });
                ctx.stop();
            }
            Err(ProtocolError::Overflow) => {
                metrics().refused(Refusal::FrameTooLarge);
                self.close(ctx, Close::FrameTooLarge)
            }
            Err(ProtocolError::Io(error)) => {
                tracing::debug!(parent: &self.span, %error, "connection lost");
                ctx.stop();
            }
            Err(error) => {
                tracing::debug!(parent: &self.span, %error, "websocket protocol error");
                self.close(ctx, Close::ProtocolError);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
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
        self.close(ctx, Close::Shutdown);
    }
}
