//! Whether changes flow, as the hub sees it, and telling subscribers when they do not.
//!
//! When the stream stops (this node's consumer lost it, or, in a cluster, the leader says so or
//! leadership moves), subscribers would otherwise see nothing but silence. If no change arrives and the
//! stream is not back within [`DELAY_NOTICE`], every confirmed channel gets a `system` message
//! (extension `postgres_changes`, status `error`, [`postgres_changes::DELAYED`]); once changes flow
//! again (the stream is live, or a transaction arrives) the same channels get status `ok`
//! ([`postgres_changes::RESUMED`]) before any change. Channels stay joined: nothing is lost, the
//! changes committed meanwhile follow.

use std::time::Duration;

use realtime_proto::server;
use realtime_proto::system::{self, postgres_changes, Extension};

use super::Hub;
use crate::cdc::subscriptions::ChannelKey;

/// How long changes may stall (stream down, nothing arriving) before subscribers are told.
pub const DELAY_NOTICE: Duration = Duration::from_secs(3);

/// Whether changes flow, as this hub sees it (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    /// The stream was never live on this node: subscriptions wait unconfirmed.
    NeverLive,
    Live,
    /// Down since then (or since the last change that still arrived).
    Stalled {
        since: tokio::time::Instant,
    },
    /// Subscribers were told their changes are delayed.
    Told,
}

impl Hub {
    pub(super) fn live_changed(&mut self, live: bool) {
        self.flow = match (self.flow, live) {
            (Flow::Told, true) => {
                self.tell_resumed();
                Flow::Live
            }
            (_, true) => Flow::Live,
            (Flow::Live, false) => Flow::Stalled { since: tokio::time::Instant::now() },
            (flow, false) => flow,
        };
    }

    /// A transaction arrived: changes flow, even if the stream is not (yet) said to be live here (a
    /// follower may get a new leader's first shipments before its `live`).
    pub(super) fn changes_arrived(&mut self, live: bool) {
        let stalled = || if live { Flow::Live } else { Flow::Stalled { since: tokio::time::Instant::now() } };
        self.flow = match self.flow {
            Flow::Told => {
                self.tell_resumed();
                stalled()
            }
            Flow::Stalled { .. } => stalled(),
            flow => flow,
        };
    }

    /// Tells every confirmed channel that its changes are delayed (once per stall).
    pub(super) fn tell_delayed(&mut self) {
        self.flow = Flow::Told;
        let keys: Vec<ChannelKey> =
            self.channels.keys().filter(|key| !self.unconfirmed.contains(key)).cloned().collect();
        crate::metrics::metrics().cdc_delay_notices.increment(1);
        for key in &keys {
            self.tell(key, false, postgres_changes::DELAYED);
        }
        tracing::info!(after = ?DELAY_NOTICE, channels = keys.len(), "Postgres Changes stalled: subscribers told they are delayed");
        self.told_delayed = keys;
    }

    fn tell_resumed(&mut self) {
        let keys = std::mem::take(&mut self.told_delayed);
        for key in &keys {
            self.tell(key, true, postgres_changes::RESUMED);
        }
        tracing::info!(channels = keys.len(), "Postgres Changes flow again: subscribers told");
    }

    /// A `system` message (extension `postgres_changes`) on a channel, if it is still subscribed.
    pub(super) fn tell(&mut self, key: &ChannelKey, ok: bool, message: &str) {
        let Some(subs) = self.channels.get_mut(key) else { return };
        let r = &subs.request;
        let payload = system::payload(Extension::PostgresChanges, ok, message, Some(&r.sub_topic));
        let frame = server::channel_push(r.vsn, r.join_ref.as_deref(), &r.topic, "system", &payload);
        subs.send(frame.into());
    }
}
