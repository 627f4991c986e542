//! State shared by every HTTP worker and socket: configuration, the token verifier, the registry,
//! node-wide and per-token rate limits, the connection table (with each socket's outbox, which the
//! delivery watchdog checks), REST concurrency, the notifications inbox and the drain flag.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use realtime_cluster::ClusterHandle;

use crate::auth::Verifier;
use crate::authz::Authorizer;
use crate::cdc::CdcHandle;
use crate::channel::Registry;
use crate::config::Config;
use crate::delivery::watchdog::Closing;
use crate::delivery::{Link, Outbox, OutboxLimits};
use crate::inbox::graphql::InboxSchema;
use crate::inbox::Inbox;
use crate::limits::{KeyedRate, SharedRate};
use crate::metrics::metrics;
use crate::resume::Resume;
use crate::vocab::{ConnId, Drain};

/// Everything a request handler or socket needs from the node.
pub struct Shared {
    pub config: Config,
    pub verifier: Verifier,
    pub registry: Addr<Registry>,
    /// Channel joins per node per second.
    pub joins: SharedRate,
    /// Channel joins per token per second, across sockets.
    pub token_joins: KeyedRate,
    /// REST broadcast messages per node per second.
    pub rest: SharedRate,
    /// REST broadcast messages per sender (token `sub`, or the token) per second, so one sender's
    /// flood does not spend the whole node's budget. At most [`KeyedRate`]'s key bound is remembered.
    pub token_rest: KeyedRate,
    /// REST broadcast requests being processed.
    pub rest_in_flight: AtomicUsize,
    /// Outboxes that are closing, watched until their connection is gone.
    pub closing: Arc<Closing>,
    pub connections: ConnectionTable,
    /// Postgres Changes; `None` when `DATABASE_URL` is not set.
    pub cdc: Option<CdcHandle>,
    /// The cluster; `None` on a single node (no `REALTIME_SEEDS`).
    pub cluster: Option<ClusterHandle>,
    /// Private channels' RLS checks; `None` when `DATABASE_URL` is not set.
    pub authz: Option<Authorizer>,
    /// Resumable channels; `None` when no topic is resumable.
    pub resume: Option<Arc<Resume>>,
    /// Lifecycle webhooks; `None` when `REALTIME_WEBHOOK_URL` is not set (set after [`Shared::new`]).
    pub webhooks: Option<crate::webhooks::Webhooks>,
    /// The notifications inbox (REST insert); `None` when `DATABASE_URL` is not set.
    pub inbox: Option<Inbox>,
    /// The inbox's GraphQL schema, over the same [`Inbox`].
    pub graphql: Option<InboxSchema>,
    draining: AtomicBool,
}

/// What the node does with its database besides Postgres Changes (all `None` without
/// `DATABASE_URL`; `resume` also without resumable topics).
pub struct DatabaseServices {
    pub authz: Option<Authorizer>,
    pub resume: Option<Arc<Resume>>,
    pub inbox: Option<Inbox>,
}

impl Shared {
    pub fn new(
        config: Config,
        verifier: Verifier,
        registry: Addr<Registry>,
        cdc: Option<CdcHandle>,
        cluster: Option<ClusterHandle>,
        database: DatabaseServices,
    ) -> Shared {
        let DatabaseServices { authz, resume, inbox } = database;
        Shared {
            graphql: inbox.clone().map(|inbox| crate::inbox::graphql::schema(inbox, &config.inbox)),
            inbox,
            cdc,
            cluster,
            authz,
            resume,
            webhooks: None,
            joins: SharedRate::per_second(config.limits.max_joins_per_second),
            token_joins: KeyedRate::per_second(config.limits.max_token_joins_per_second),
            rest_in_flight: AtomicUsize::new(0),
            closing: Arc::default(),
            rest: SharedRate::per_second(config.limits.max_rest_events_per_second),
            token_rest: KeyedRate::per_second(config.limits.max_token_rest_events_per_second),
            connections: ConnectionTable::new(config.limits.max_connections, config.limits.sockets_by_files),
            config,
            verifier,
            registry,
            draining: AtomicBool::new(false),
        }
    }

    /// A new socket's outbox, on its connection's `link`.
    pub fn new_outbox(&self, link: Link) -> Outbox {
        let limits = &self.config.limits;
        let bounds = OutboxLimits {
            max_bytes: limits.max_outbox_bytes,
            max_frames: limits.max_outbox_frames,
            close_grace: limits.write_timeout,
        };
        Outbox::new(bounds, link, self.closing.clone())
    }

    /// True once SIGTERM arrived: no new sockets or joins.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts the drain: refuse new work and ask every socket to close with "reconnect now".
    pub fn start_drain(&self) {
        self.refuse_new_work();
        self.connections.drain_all();
    }

    /// The drain's first step: no new sockets or joins, `/readyz` 503.
    pub fn refuse_new_work(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Ready for sockets: not draining, and joined the cluster if there is one.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.cluster.as_ref().is_none_or(ClusterHandle::is_ready)
    }
}

/// Why [`ConnectionTable::reserve`] had no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `REALTIME_MAX_CONNECTIONS` sockets are open.
    Connections,
    /// As many sockets are open as the open-files limit holds.
    Files,
}

/// Live sockets: the count that enforces `max_connections` (and the open-files limit) and the
/// addresses the drain reaches.
pub struct ConnectionTable {
    max: usize,
    /// Sockets the open-files limit holds.
    files: usize,
    count: AtomicUsize,
    next_id: AtomicU64,
    sockets: Mutex<HashMap<ConnId, (Recipient<Drain>, Outbox)>>,
}

impl ConnectionTable {
    fn new(max: usize, files: usize) -> ConnectionTable {
        ConnectionTable {
            max,
            files,
            count: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            sockets: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves a slot for a new socket, or says why the node is full.
    pub fn reserve(&self) -> Result<ConnId, Full> {
        let previous = self.count.fetch_add(1, Ordering::AcqRel);
        let full = if previous >= self.max {
            Some(Full::Connections)
        } else if previous >= self.files {
            Some(Full::Files)
        } else {
            None
        };
        if let Some(full) = full {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return Err(full);
        }
        metrics().connections.increment(1.0);
        Ok(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Gives back a slot reserved by [`ConnectionTable::reserve`] (socket gone or never started).
    pub fn release(&self, id: ConnId) {
        self.sockets.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        self.count.fetch_sub(1, Ordering::AcqRel);
        metrics().connections.decrement(1.0);
    }

    /// Makes a started socket reachable by the drain.
    pub fn register(&self, id: ConnId, socket: Recipient<Drain>, outbox: Outbox) {
        self.sockets.lock().unwrap_or_else(|e| e.into_inner()).insert(id, (socket, outbox));
    }

    /// Every live socket's outbox (for the watchdog).
    pub fn outboxes(&self) -> Vec<Outbox> {
        self.sockets.lock().unwrap_or_else(|e| e.into_inner()).values().map(|(_, o)| o.clone()).collect()
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    fn drain_all(&self) {
        let sockets: Vec<Recipient<Drain>> =
            self.sockets.lock().unwrap_or_else(|e| e.into_inner()).values().map(|(s, _)| s.clone()).collect();
        for socket in sockets {
            socket.do_send(Drain);
        }
    }
}
