//! # realtime-node: a Supabase Realtime compatible server
//!
//! One binary, `realtime`, that speaks the Supabase Realtime wire protocol (PROTOCOL.md) to unmodified
//! clients: Phoenix channels over WebSocket, Broadcast, Presence, and the REST broadcast API.
//!
//! ## Actor topology
//! ```text
//!  WebSocket ──▶ SocketActor ──join/leave──▶ Registry ──▶ ChannelActor (one per topic, on an arbiter pool)
//!      ▲             │                                      │    │
//!      │             └──broadcast / track──▶ ChannelActor   │    └──▶ PresenceActor (one per topic)
//!      │                                          ▲         │              │
//!  Outbox (per socket, bounded) ◀── frames ───────┼─────────┴──────────────┘  (and the CDC hub)
//!                                                 │
//!  REST POST /api/broadcast ──Lookup──▶ Registry ─┘
//! ```
//! Every producer writes to a socket's [`delivery::Outbox`]; the socket's writer task drains it.
//!
//! ## Layout
//! - [`config`]: the typed configuration (flags, env, file): each setting declared once, decided without
//!   I/O, the files it names read at start-up.
//! - [`auth`]: JWT verification and dev tokens.
//! - [`http`]: routes: WebSocket upgrade, REST broadcast, health, metrics.
//! - [`socket`]: one actor per WebSocket.
//! - [`delivery`]: the outbox every producer writes to, slow-consumer policy, the watchdog.
//! - [`close`]: every WebSocket close the server sends (code, reason, whether the client reconnects).
//! - [`budget`]: sizes of what a client chooses.
//! - [`channel`]: one actor per topic, the registry, encode-once fan-out.
//! - [`presence`]: presence sets and their actor.
//! - [`peers`]: the bridge to the cluster (`realtime-cluster`): relays, cluster topics, events.
//! - [`webhooks`]: signed lifecycle webhooks (socket connect/disconnect, user online/offline).
//! - [`cdc`]: Postgres Changes; [`schema`]: the `realtime` schema (migrations, partition janitor).
//! - [`db`]: pooled PostgreSQL work on the DB arbiter, for [`authz`] (private channels) and [`inbox`]
//!   (the notifications REST and GraphQL API).
//! - [`message_row`]: a `realtime.messages` row as a broadcast, live or replayed.
//! - [`vocab`]: ids, topic keys, broadcast bodies and the drain signal; it refers to no other module.
//! - [`limits`], [`metrics`], [`state`], [`shutdown`], [`telemetry`].

pub mod auth;
pub mod authz;
pub mod budget;
pub mod cdc;
pub mod channel;
pub mod close;
pub mod config;
pub mod db;
pub mod delivery;
pub mod http;
pub mod inbox;
#[cfg(test)]
mod layers;
pub mod limits;
pub mod listener;
pub mod message_row;
pub mod metrics;
pub mod open_files;
pub mod peer_message;
pub mod peers;
pub mod presence;
pub mod replay;
pub mod resume;
pub mod schema;
pub mod shutdown;
pub mod socket;
pub mod state;
mod sync;
pub mod telemetry;
pub mod vocab;
pub mod webhooks;

use std::future::Future;
use std::net::TcpListener;

use actix::prelude::*;
use actix_web::web;
use metrics_exporter_prometheus::PrometheusHandle;
use thiserror::Error;

use crate::auth::Verifier;
use crate::channel::{ChannelSettings, Registry};
use crate::config::Config;
use crate::state::Shared;

/// Why the node stopped with an error.
#[derive(Debug, Error)]
pub enum NodeError {
    #[error("no JWT secret configured")]
    NoSecret,
    #[error(transparent)]
    Jwks(#[from] auth::jwt::JwksError),
    #[error(transparent)]
    Cdc(#[from] cdc::error::CdcError),
    #[error(transparent)]
    Schema(#[from] schema::SchemaError),
    #[error(transparent)]
    Cluster(#[from] realtime_cluster::ClusterError),
    #[error("HTTP server: {0}")]
    Http(#[from] std::io::Error),
}

/// Serves on `listener` until `shutdown` resolves, then drains. Must run inside an actix system.
pub async fn run(
    config: Config,
    listener: TcpListener,
    metrics_handle: PrometheusHandle,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let secret = config.jwt_secret.clone().ok_or(NodeError::NoSecret)?;
    let verifier = Verifier::new(&secret, config.jwks_json.as_deref())?;
    // The `realtime` schema comes first: CDC, private channels and `realtime.send` rely on it.
    let janitor = match &config.cdc {
        Some(cdc_config) => Some(schema::prepare(&cdc_config.database_url, config.messages_retention).await?),
        None => None,
    };
    let (cluster, cluster_events) = match peers::cluster_config(&config) {
        Some(cluster_config) => {
            if config.admin_token.is_none() {
                tracing::warn!(
                    "REALTIME_ADMIN_TOKEN is not set: /cluster and /metrics answer anyone who reaches this \
                     node, naming every node and its cluster identity; set it (see docs/configuration.md)"
                );
            }
            let (handle, events) = realtime_cluster::ClusterHandle::start(cluster_config).await?;
            (Some(handle), Some(events))
        }
        None => (None, None),
    };
    let arbiters: Vec<Arbiter> = (0..config.workers).map(|_| Arbiter::new()).collect();
    // The database work of joins and HTTP (authorization checks, the inbox, resumable writes).
    let db_arbiter = Arbiter::new();
    let resume = config
        .cdc
        .as_ref()
        .and_then(|cdc| resume::Resume::start(&config.resume, &cdc.database_url, &db_arbiter.handle()));
    let registry = Registry::new(
        arbiters.iter().map(Arbiter::handle).collect(),
        ChannelSettings {
            max_members: config.limits.max_channel_members,
            presence_batch: config.limits.presence_batch,
        },
        cluster.clone(),
        resume.clone(),
    )
    .start();
    let cdc_arbiter = Arbiter::new();
    let cdc = match &config.cdc {
        Some(cdc_config) => {
            let broadcasts = cdc::hub::DbBroadcasts {
                channels: registry.clone().recipient(),
                max_payload: config.limits.max_payload_bytes,
                resume: resume.clone(),
            };
            Some(
                cdc::start(
                    cdc_config.clone(),
                    &config.data_dir,
                    &cdc_arbiter.handle(),
                    cluster.clone(),
                    broadcasts,
                )
                .await?,
            )
        }
        None => None,
    };
    let webhooks =
        config.webhooks.as_ref().map(|c| webhooks::Webhooks::start(c, &config.node_id, cluster.clone()));
    let bridge = cluster_events.map(|events| {
        actix_web::rt::spawn(peers::bridge(events, registry.clone(), cdc.clone(), webhooks.clone()))
    });
    let authz = config.cdc.as_ref().map(|c| authz::Authorizer::new(&c.database_url, db_arbiter.handle()));
    let inbox =
        config.cdc.as_ref().map(|c| inbox::Inbox::new(&c.database_url, &config.inbox, db_arbiter.handle()));
    let database = state::DatabaseServices { authz, resume, inbox };
    let mut shared = Shared::new(config.clone(), verifier, registry, cdc, cluster.clone(), database);
    shared.webhooks = webhooks.clone();
    let shared = web::Data::new(shared);
    let metrics_data = web::Data::new(metrics_handle.clone());
    let server = http::server::serve(listener, config.workers, shared.clone(), metrics_data)?;
    let handle = server.handle();
    let watchdog = {
        let live = shared.clone().into_inner();
        let run = delivery::watchdog::run(config.limits.write_timeout, shared.closing.clone(), move || {
            live.connections.outboxes()
        });
        actix_web::rt::spawn(run)
    };
    tracing::info!(node = %config.node_id, "started");
    let upkeep = actix_web::rt::spawn(async move {
        loop {
            actix_web::rt::time::sleep(std::time::Duration::from_secs(5)).await;
            metrics_handle.run_upkeep();
        }
    });
    let server_task = actix_web::rt::spawn(server);
    shutdown.await;
    if let Some(cluster) = &cluster {
        // Refuse joins (`/readyz` 503); hand raft (CDC) leadership over; peers drop this node's
        // presences now, not after the failure detector's timeout. Then the sockets close (1012, so
        // clients reconnect to another node), and only then does the node leave membership.
        shared.refuse_new_work();
        cluster.depart().await;
    }
    let left = shutdown::drain(&shared, &handle, config.shutdown_grace).await;
    if let Some(webhooks) = &webhooks {
        // The sockets' disconnect events are queued by now: send them, within a bound.
        webhooks.shutdown(shutdown::WEBHOOK_FLUSH_BOUND).await;
    }
    if let Some(cluster) = &cluster {
        cluster.leave().await;
        cluster.shutdown();
    }
    if let Some(bridge) = bridge {
        bridge.abort();
    }
    tracing::info!(sockets_left = left, "stopped");
    upkeep.abort();
    watchdog.abort();
    if let Some(janitor) = janitor {
        janitor.shutdown().await;
    }
    let _ = server_task.await;
    for arbiter in arbiters {
        arbiter.stop();
    }
    cdc_arbiter.stop();
    db_arbiter.stop();
    Ok(())
}
