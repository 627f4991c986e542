//! Channel tokens: `access_token` refresh (no reply, PROTOCOL.md §2.10) and expiry while joined
//! (§2.11). A failed check ends that channel with a `system` error and `phx_close`; the socket stays.

use std::time::Duration;

use actix::prelude::*;
use realtime_proto::client::{ClientEvent, ClientMessage};

use super::actor::SocketActor;
use crate::auth::jwt::now_secs;
use crate::cdc::notifications;
use crate::metrics::{metrics, Refusal};

/// Slack after `exp` before the expiry check runs, so the token is surely past it.
const EXPIRY_SLACK: Duration = Duration::from_millis(50);

impl SocketActor {
    /// (Re)arms the expiry check of a joined channel for its token's `exp`.
    pub(super) fn schedule_token_check(&mut self, ctx: &mut Context<Self>, topic: &str) {
        let Some(state) = self.channels.get_mut(topic) else { return };
        if let Some(timer) = state.expiry_timer.take() {
            ctx.cancel_future(timer);
        }
        let exp = match self.shared.verifier.verify(&state.token) {
            Ok(claims) => claims.exp,
            Err(_) => now_secs(),
        };
        let wait = Duration::from_secs(exp.saturating_sub(now_secs()).max(0) as u64) + EXPIRY_SLACK;
        let topic_owned = topic.to_owned();
        state.expiry_timer = Some(ctx.run_later(wait, move |act, ctx| act.check_token(ctx, &topic_owned)));
    }

    fn check_token(&mut self, ctx: &mut Context<Self>, topic: &str) {
        let Some(state) = self.channels.get_mut(topic) else { return };
        state.expiry_timer = None;
        match self.shared.verifier.verify(&state.token) {
            Ok(_) => self.schedule_token_check(ctx, topic),
            Err(error) => {
                metrics().refused(Refusal::InvalidToken);
                self.shutdown_channel(ctx, topic, &error.channel_message());
            }
        }
    }

    pub(super) fn on_access_token(&mut self, ctx: &mut Context<Self>, msg: ClientMessage) {
        let ClientEvent::AccessToken(token) = msg.event else { return };
        let Some(state) = self.channels.get_mut(&msg.topic) else { return };
        let Some(token) = token else { return };
        if token.starts_with("sb_") || *token == *state.token {
            return;
        }
        match self.shared.verifier.verify(&token) {
            Ok(claims)
                if notifications::owner_of(&state.key.sub_topic)
                    .is_some_and(|o| claims.sub.as_deref() != Some(o)) =>
            {
                // A notifications inbox under another user's token: it ends.
                let sub_topic = state.key.sub_topic.to_string();
                metrics().refused(Refusal::PrivateChannel);
                self.shutdown_channel(
                    ctx,
                    &msg.topic,
                    &realtime_proto::system::shutdown::read_revoked(&sub_topic),
                );
            }
            Ok(claims) => {
                state.token = token.into();
                state.refresh_claims(claims);
                // Postgres subscriptions run under the new claims (and say so again, as the reference).
                let resubscribe = state.channel.is_some() && !state.postgres_changes.is_empty();
                self.schedule_token_check(ctx, &msg.topic);
                if resubscribe {
                    self.subscribe_postgres(ctx, &msg.topic, true);
                }
                // Private channels: read permissions asked again under the new claims.
                self.recheck_private(ctx, &msg.topic);
            }
            Err(error) => {
                metrics().refused(Refusal::InvalidToken);
                self.shutdown_channel(ctx, &msg.topic, &error.channel_message());
            }
        }
    }
}
