//! The socket's side of Postgres Changes: subscribe a channel's `postgres_changes` entries with the
//! channel's claims, tell the client `Subscribed to PostgreSQL` (or the reason it failed), hold a
//! `postgres_changes_options.wait` join until the subscription is live, and answer
//! `broadcast.replication_ready` (PROTOCOL.md §2.6, §2.9, §5.7, §11).

use std::time::Duration;

use actix::prelude::*;
use realtime_proto::server;
use realtime_proto::system::{self, Extension};

use super::actor::SocketActor;
use crate::cdc::{SubscribeErrorKind, SubscribeOutcome, SubscribeRequest};
use crate::channel::messages::Join;

pub use crate::cdc::hub::SUBSCRIBED;
/// The `system` message when CDC is not configured.
pub const POSTGRES_CHANGES_DISABLED: &str = "Unable to subscribe to changes with given parameters. \
Postgres changes are disabled on this server (DATABASE_URL is not set)";
const REPLICATION_READY: &str = "Replication connection established";
const REPLICATION_NOT_READY: &str = "Replication connection was not established in time";
/// How long `replication_ready` waits for the stream, and how often it looks.
const REPLICATION_READY_TIMEOUT: Duration = Duration::from_secs(60);
const REPLICATION_READY_POLL: Duration = Duration::from_millis(500);

impl SocketActor {
    fn postgres_system(&self, ctx: &mut Context<Self>, topic: &str, ok: bool, message: &str) {
        let Some(state) = self.channels.get(topic) else { return };
        let payload = system::payload(Extension::PostgresChanges, ok, message, Some(&state.key.sub_topic));
        self.send(ctx, server::channel_push(self.vsn, state.join_ref.as_deref(), topic, "system", &payload));
    }

    /// Asks the hub for this channel's subscriptions; `false` when CDC is not configured. With
    /// `announce`, the hub itself tells the client once the subscription is live.
    pub(super) fn subscribe_postgres(&self, ctx: &mut Context<Self>, topic: &str, announce: bool) -> bool {
        let (Some(cdc), Some(state)) = (&self.shared.cdc, self.channels.get(topic)) else { return false };
        // Every channel with `postgres_changes` keeps its claims (`ChannelState::keeps_claims`).
        let Some(claims) = state.claims.as_deref() else { return false };
        cdc.subscribe(SubscribeRequest {
            conn: self.id,
            topic: topic.into(),
            sub_topic: state.key.sub_topic.clone(),
            join_ref: state.join_ref.clone(),
            vsn: self.vsn,
            outbox: self.outbox.clone(),
            notify: ctx.address().recipient(),
            announce,
            entries: state.postgres_changes.clone(),
            claims: claims.clone(),
        });
        true
    }

    /// Wait mode: subscribe first, join when live, refuse on error or timeout.
    pub(super) fn hold_join_for_postgres(
        &mut self,
        ctx: &mut Context<Self>,
        topic: &str,
        join: Join,
        wait: Duration,
    ) {
        if !self.subscribe_postgres(ctx, topic, false) {
            let state = self.remove_channel(ctx, topic);
            let (join_ref, msg_ref) = state.map(|s| (s.join_ref, s.join_msg_ref)).unwrap_or_default();
            let reason = format!("PostgresChangesDisabled: {POSTGRES_CHANGES_DISABLED}");
            // (Nothing can be pending yet: the join was just received.)
            return self.refuse_join(ctx, topic, join_ref.as_deref(), msg_ref.as_deref(), &reason);
        }
        let owned = topic.to_owned();
        let timer = ctx.run_later(wait, move |act, ctx| {
            let Some(state) = act.remove_channel(ctx, &owned) else { return };
            let reason = format!(
                "PostgresChangesSubscribeTimeout: Postgres changes subscription was not ready within {} ms",
                wait.as_millis()
            );
            act.refuse_join(ctx, &owned, state.join_ref.as_deref(), state.join_msg_ref.as_deref(), &reason);
            act.refuse_pending(ctx, &state.pending);
        });
        if let Some(state) = self.channels.get_mut(topic) {
            state.postgres_wait = Some(timer);
            state.held_join = Some(Box::new(join));
        }
    }

    /// After the join reply: postgres subscription (or its status) and replication readiness.
    pub(super) fn after_join(&mut self, ctx: &mut Context<Self>, topic: &str) {
        let Some(state) = self.channels.get(topic) else { return };
        let (has_postgres, confirmed, ready) =
            (!state.postgres_changes.is_empty(), state.postgres_confirmed, state.replication_ready);
        if has_postgres {
            if confirmed {
                // Wait mode: the hub held this subscription's changes until the reply and this are written.
                self.postgres_system(ctx, topic, true, SUBSCRIBED);
                if let Some(cdc) = &self.shared.cdc {
                    cdc.activate(self.id, topic.into());
                }
            } else if !self.subscribe_postgres(ctx, topic, true) {
                self.postgres_system(ctx, topic, false, POSTGRES_CHANGES_DISABLED);
            }
        }
        if ready {
            self.watch_replication_ready(ctx, topic, REPLICATION_READY_TIMEOUT);
        }
    }

    /// `replication_ready`: one `system` ok once the stream is live, or an error and close in time.
    fn watch_replication_ready(&mut self, ctx: &mut Context<Self>, topic: &str, left: Duration) {
        let live = self.shared.cdc.as_ref().map(|c| c.is_live());
        let join_ref = self.channels.get(topic).map(|s| s.join_ref.clone());
        let Some(join_ref) = join_ref else { return };
        match live {
            Some(true) => {
                let sub_topic = topic.trim_start_matches(realtime_proto::topic::PREFIX);
                let payload = system::payload(Extension::System, true, REPLICATION_READY, Some(sub_topic));
                self.send(
                    ctx,
                    server::channel_push(self.vsn, join_ref.as_deref(), topic, "system", &payload),
                );
            }
            Some(false) if !left.is_zero() => {
                let owned = topic.to_owned();
                ctx.run_later(REPLICATION_READY_POLL, move |act, ctx| {
                    act.watch_replication_ready(ctx, &owned, left.saturating_sub(REPLICATION_READY_POLL))
                });
            }
            _ => self.shutdown_channel(ctx, topic, REPLICATION_NOT_READY),
        }
    }
}

impl Handler<SubscribeOutcome> for SocketActor {
    type Result = ();

    fn handle(&mut self, msg: SubscribeOutcome, ctx: &mut Self::Context) {
        let topic: &str = &msg.topic;
        let Some(state) = self.channels.get_mut(topic) else { return };
        if state.join_ref != msg.join_ref {
            return;
        }
        if let Some(join) = state.held_join.take() {
            // Wait mode: the join goes ahead only now.
            match msg.result {
                Ok(()) => {
                    if let Some(timer) = state.postgres_wait.take() {
                        ctx.cancel_future(timer);
                    }
                    state.postgres_confirmed = true;
                    self.shared.registry.do_send(*join);
                }
                Err(error) => {
                    let Some(state) = self.remove_channel(ctx, topic) else { return };
                    let code = match error.kind {
                        SubscribeErrorKind::NotPublished => "RealtimeDisabledForConfiguration",
                        SubscribeErrorKind::Invalid => "PostgresChangesInvalidParams",
                        SubscribeErrorKind::Unavailable => "UnableToConnectToProject",
                        // (The hub tells only confirmed subscriptions of a gap: not reached.)
                        SubscribeErrorKind::Gap => "PostgresChangesGap",
                    };
                    let reason = format!("{code}: {}", error.message);
                    self.refuse_join(
                        ctx,
                        topic,
                        state.join_ref.as_deref(),
                        state.join_msg_ref.as_deref(),
                        &reason,
                    );
                    self.refuse_pending(ctx, &state.pending);
                }
            }
            return;
        }
        if let Err(error) = &msg.result {
            if error.kind == SubscribeErrorKind::Gap {
                // Changes this subscription should have had are lost: the client must rejoin and reload.
                return self.shutdown_channel_with(ctx, topic, Extension::PostgresChanges, &error.message);
            }
        }
        if state.channel.is_none() {
            return;
        }
        // A live subscription was announced by the hub itself (ordered before its changes).
        if let Err(error) = msg.result {
            self.postgres_system(ctx, topic, false, &error.message);
        }
    }
}
