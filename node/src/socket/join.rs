//! `phx_join` admission and `phx_leave` (PROTOCOL.md §2.4–2.7).
//!
//! Every join counts toward the socket's joins per second as it arrives, refused or not
//! ([`SocketActor::count_join`]). The other checks are the pure pipeline of [`super::admission`]
//! (draining, topic, channels per socket, token, private channel, …, in the reference's order); this
//! file gathers its facts, answers its refusal and does the I/O. The channel itself checks capacity
//! and answers with a [`JoinOutcome`], so the join reply is written before any push of that channel. With
//! `postgres_changes_options.wait`, the join is held until the postgres subscription is live (see
//! [`super::postgres`]).

use std::time::{Duration, Instant};

use actix::prelude::*;
use realtime_proto::client::{ClientEvent, ClientMessage};
use realtime_proto::join::JoinConfig;
use realtime_proto::server::{self, ReplyStatus};
use realtime_proto::system::reason;
use realtime_proto::OutFrame;
use serde_json::{Map, Value};

use super::actor::{ChannelState, SocketActor};
use super::admission;
use crate::auth::jwt::{Claims, TokenError};
use crate::channel::messages::{Join, JoinOutcome, JoinRefused, Member, Resuming};
use crate::close::Close;
use crate::metrics::{metrics, Refusal};
use crate::state::Shared;
use crate::vocab::TopicKey;

/// How long a waiting join holds for its postgres subscription by default, and at most.
const POSTGRES_WAIT_DEFAULT: Duration = Duration::from_millis(15_000);
const POSTGRES_WAIT_MAX: Duration = Duration::from_millis(20_000);

/// A stable id for a `postgres_changes` entry: FNV-1a of its JSON, so the same entry gets the same id.
pub fn postgres_change_id(entry: &Map<String, Value>) -> u32 {
    let json = serde_json::to_string(entry).expect("JSON map serialisation");
    json.bytes().fold(0x811c_9dc5u32, |hash, b| (hash ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// `{"postgres_changes":[entry + id, …]}` echoing the client's entries in order.
fn join_response(entries: &[(u32, Map<String, Value>)]) -> String {
    let entries: Vec<Value> = entries
        .iter()
        .map(|(id, entry)| {
            let mut with_id = entry.clone();
            with_id.insert("id".into(), Value::from(*id));
            Value::Object(with_id)
        })
        .collect();
    serde_json::json!({ "postgres_changes": entries }).to_string()
}

fn postgres_entries(config: &JoinConfig) -> Vec<(u32, Map<String, Value>)> {
    config.postgres_changes.iter().map(|e| (postgres_change_id(e), e.clone())).collect()
}

/// [`admission::Gates`] over the node's verifier, resumable topics and join rates, at one instant.
struct NodeGates<'a> {
    shared: &'a Shared,
    now: Instant,
}

impl admission::Gates for NodeGates<'_> {
    fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.shared.verifier.verify(token)
    }

    fn is_resumable(&self, key: &TopicKey) -> bool {
        self.shared.resume.as_ref().is_some_and(|r| r.is_resumable(key))
    }

    fn allow_token_join(&mut self, key: &str) -> bool {
        self.shared.token_joins.allow(key, self.now)
    }

    fn allow_node_join(&mut self) -> bool {
        // The node as a whole is over its rate: this join is refused, the socket kept.
        self.shared.joins.allow(1)
    }
}

impl SocketActor {
    /// Answers a refused join after the configured delay (clients retry joins on a backoff).
    pub(super) fn refuse_join(
        &self,
        ctx: &mut Context<Self>,
        topic: &str,
        join_ref: Option<&str>,
        msg_ref: Option<&str>,
        reason: &str,
    ) {
        tracing::debug!(parent: &self.span, topic, reason, "join refused");
        let frame = server::error_reply(self.vsn, join_ref, msg_ref, topic, reason);
        self.send_join_error(ctx, frame);
    }

    fn refuse(&self, ctx: &mut Context<Self>, msg: &ClientMessage, reason: &str) {
        self.refuse_join(ctx, &msg.topic, msg.join_ref.as_deref(), msg.msg_ref.as_deref(), reason);
    }

    pub(super) fn send_join_error(&self, ctx: &mut Context<Self>, frame: OutFrame) {
        let delay = self.shared.config.join_error_delay;
        if delay.is_zero() {
            self.send(ctx, frame);
        } else {
            ctx.run_later(delay, move |act, ctx| act.send(ctx, frame));
        }
    }

    /// Counts one join attempt against this socket's joins per second, whatever becomes of it (a
    /// refused join costs the node as much as an admitted one: a socket sending a million joins with
    /// an empty topic must be stopped too). Past the limit that join is refused, the socket is closed
    /// (1001) once the refusal is out, and nothing more it sends is read. `false` when over.
    pub(super) fn count_join(&mut self, ctx: &mut Context<Self>, msg: &ClientMessage) -> bool {
        if self.joins.allow(Instant::now()) {
            return true;
        }
        metrics().refused(Refusal::ClientJoinRate);
        self.refuse(ctx, msg, reason::TOO_MANY_JOINS);
        self.join_flood = true;
        let delay = self.shared.config.join_error_delay;
        ctx.run_later(delay, |act, ctx| act.close(ctx, Close::JoinFlood));
        false
    }

    pub(super) fn on_join(&mut self, ctx: &mut Context<Self>, msg: ClientMessage) {
        let ClientEvent::Join(join) = &msg.event else { return };
        let sub_topic = match admission::sub_topic(&msg.topic) {
            Ok(sub_topic) => sub_topic.to_owned(),
            Err(unmatched) => return self.reply_error(ctx, &msg, &unmatched.to_string()),
        };
        // A second join of a joined topic closes the old channel first (with its join_ref).
        if let Some(old) = self.remove_channel(ctx, &msg.topic) {
            self.send(ctx, server::close(self.vsn, old.join_ref.as_deref(), &msg.topic));
        }
        let config = join.config.clone().unwrap_or_default();
        let now = Instant::now();
        let shared = &*self.shared;
        let facts = admission::Facts {
            draining: shared.is_draining(),
            channels: self.channels.len(),
            max_channels: shared.config.limits.max_channels_per_client,
            budget: &shared.config.limits.budget,
            socket_token: &self.token,
            private_available: shared.authz.is_some(),
            private_only: shared.config.private_only,
        };
        let request = admission::Request {
            sub_topic: &sub_topic,
            access_token: join.access_token.as_deref(),
            config: &config,
        };
        let admitted = match admission::admit(&request, &facts, &mut NodeGates { shared, now }) {
            Ok(admitted) => admitted,
            Err(refused) => {
                if let Some(refusal) = refused.metric() {
                    metrics().refused(refusal);
                }
                return self.refuse(ctx, &msg, &refused.to_string());
            }
        };
        let admission::Admitted { token, claims, replay, resume } = admitted;
        self.presence_windows.retain(|_, w| !w.is_idle(now));
        let key = TopicKey { sub_topic: sub_topic.into(), private: config.private };
        let presence_key = config.presence.key.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let member = Member {
            conn: self.id,
            join_ref: msg.join_ref.clone(),
            vsn: self.vsn,
            self_broadcast: config.broadcast.self_broadcast,
            receives_broadcasts: true,
            skip_live: None,
            resume: resume.map_or(Resuming::Live, Resuming::Requested),
            held: resume.map(|_| Vec::new()),
            presence_enabled: config.presence.enabled,
            presence_counts_only: config.presence.counts_only,
            presence_key,
            outbox: self.outbox.clone(),
        };
        let postgres_changes = postgres_entries(&config);
        let wait = config.postgres_changes_options.filter(|o| o.wait && !postgres_changes.is_empty());
        let join_msg = Join { key: key.clone(), member, joined: ctx.address().recipient() };
        let keeps_claims = ChannelState::keeps_claims(config.private, !postgres_changes.is_empty());
        self.channels.insert(
            msg.topic.clone(),
            Box::new(ChannelState {
                key,
                join_ref: msg.join_ref.clone(),
                channel: None,
                ack: config.broadcast.ack,
                token,
                expiry_timer: None,
                postgres_changes,
                claims: keeps_claims.then(|| Box::new(claims)),
                postgres_wait: None,
                held_join: None,
                postgres_confirmed: false,
                replication_ready: config.broadcast.replication_ready,
                join_msg_ref: msg.msg_ref.clone(),
                pending: Vec::new(),
                private: None,
                replay: None,
                holds_live: resume.is_some(),
            }),
        );
        tracing::debug!(parent: &self.span, topic = %msg.topic, "join requested");
        let wait = wait.map(|options| {
            options.timeout_ms.map_or(POSTGRES_WAIT_DEFAULT, Duration::from_millis).min(POSTGRES_WAIT_MAX)
        });
        let topic = msg.topic.clone();
        let admit = move |act: &mut SocketActor, ctx: &mut Context<SocketActor>, join: Join| match wait {
            None => act.shared.registry.do_send(join),
            Some(wait) => act.hold_join_for_postgres(ctx, &topic, join, wait),
        };
        if config.private {
            self.authorize_join(ctx, &msg.topic, join_msg, replay, admit);
        } else {
            admit(self, ctx, join_msg);
        }
    }

    pub(super) fn on_leave(&mut self, ctx: &mut Context<Self>, msg: &ClientMessage) {
        let state = self.remove_channel(ctx, &msg.topic);
        tracing::debug!(parent: &self.span, topic = %msg.topic, joined = state.is_some(), "left");
        self.reply(ctx, msg, ReplyStatus::Ok, "{}");
        if let Some(state) = state {
            self.send(ctx, server::close(self.vsn, state.join_ref.as_deref(), &msg.topic));
        }
    }
}

impl Handler<JoinOutcome> for SocketActor {
    type Result = ();

    fn handle(&mut self, msg: JoinOutcome, ctx: &mut Self::Context) {
        let Some(state) = self.channels.get_mut(&msg.topic) else { return };
        if state.join_ref != msg.join_ref || state.channel.is_some() {
            return; // an outcome for a join this socket already replaced or left
        }
        let msg_ref = state.join_msg_ref.take();
        let pending = std::mem::take(&mut state.pending);
        match msg.result {
            Ok(channel) => {
                let holds_live = state.holds_live;
                state.channel = Some(channel.clone());
                metrics().joins.increment(1);
                let response = join_response(&state.postgres_changes);
                let join_ref = msg.join_ref.as_deref();
                let reply = server::reply(
                    self.vsn,
                    join_ref,
                    msg_ref.as_deref(),
                    &msg.topic,
                    ReplyStatus::Ok,
                    &response,
                );
                self.send(ctx, reply);
                if holds_live {
                    self.replay_then_release(ctx, &msg.topic, channel);
                }
                tracing::debug!(parent: &self.span, topic = %msg.topic, "joined");
                self.after_join(ctx, &msg.topic);
                self.schedule_token_check(ctx, &msg.topic);
                for push in pending {
                    self.dispatch(ctx, push);
                }
            }
            Err(JoinRefused::Full) => {
                let _ = self.remove_channel(ctx, &msg.topic);
                self.refuse_join(
                    ctx,
                    &msg.topic,
                    msg.join_ref.as_deref(),
                    msg_ref.as_deref(),
                    reason::CHANNEL_FULL,
                );
                self.refuse_pending(ctx, &pending);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ids_are_stable_and_entries_echoed_in_order() {
        let a = json!({"event": "INSERT", "schema": "public", "table": "todos"}).as_object().unwrap().clone();
        let b = json!({"event": "*", "schema": "public"}).as_object().unwrap().clone();
        assert_eq!(postgres_change_id(&a), postgres_change_id(&a.clone()));
        assert_ne!(postgres_change_id(&a), postgres_change_id(&b));
        let config = JoinConfig { postgres_changes: vec![a, b], ..JoinConfig::default() };
        let response: Value = serde_json::from_str(&join_response(&postgres_entries(&config))).unwrap();
        assert_eq!(response["postgres_changes"][0]["table"], "todos");
        assert_eq!(response["postgres_changes"][1]["event"], "*");
        assert!(response["postgres_changes"][1]["id"].is_u64());
        assert_eq!(join_response(&[]), r#"{"postgres_changes":[]}"#);
    }
}
