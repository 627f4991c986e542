//! Lifecycle webhooks: `socket.connect`, `socket.disconnect`, `user.online` and `user.offline`, POSTed
//! in signed batches to `REALTIME_WEBHOOK_URL` (off when unset).
//!
//! Why this shape: a webhook receiver can be slow or down, and that must never reach a socket. So a
//! socket only records its own connect/disconnect ([`SocketHook`]): a non-blocking `try_send` into a
//! bounded queue (full: the event is dropped and counted) and a counter update in the [`Roster`]. One
//! task ([`sender`]) batches, signs and delivers with bounded retries; another ([`users`]) turns the
//! cluster-wide socket counts into online/offline edges. Cluster-wide liveness rides on the presence
//! CRDT the cluster already replicates (an internal topic no client can join), and exactly one node,
//! chosen by rendezvous hashing over the live nodes, reports each user.
//!
//! - [`event`]: the events, disconnect reasons and the body (pure).
//! - [`sign`]: the HMAC-SHA256 signature header (pure).
//! - [`liveness`]: the online/offline state machine with its grace, and the designated node (pure).
//! - [`users`]: socket counts per user (local + replicated) and the task that emits user events.
//! - [`sender`]: batching, delivery, retry and backoff.

pub mod event;
pub mod liveness;
pub mod sender;
pub mod sign;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use realtime_cluster::presence::{ConnId, Entry, TopicChange};
use realtime_cluster::ClusterHandle;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use self::event::{Disconnect, Event};
use self::users::{Roster, USERS_TOPIC};
use crate::close::Close;
use crate::config::WebhookConfig;
use crate::metrics::metrics;

/// The producers' end of the bounded event queue.
#[derive(Clone)]
pub(crate) struct Queue {
    tx: mpsc::Sender<Event>,
    node: Arc<str>,
}

impl Queue {
    /// Queues an event without waiting; a full (or closed) queue drops it and counts the drop.
    fn push(&self, event: Event) {
        if self.tx.try_send(event).is_err() {
            metrics().webhooks.dropped.increment(1);
        }
    }

    fn node(&self) -> &str {
        &self.node
    }
}

struct Inner {
    queue: Queue,
    roster: Arc<Roster>,
    cluster: Option<ClusterHandle>,
    /// The users task, then the sender (so it flushes the users' last edges), each with what stops
    /// it: stopped and awaited in this order.
    tasks: std::sync::Mutex<Vec<(watch::Sender<bool>, JoinHandle<()>)>>,
}

/// The running webhooks; cheap to clone. `None` in [`crate::state::Shared`] when no URL is set.
#[derive(Clone)]
pub struct Webhooks(Arc<Inner>);

impl Webhooks {
    /// Starts the sender and the user-liveness task on the current runtime.
    pub fn start(config: &WebhookConfig, node_id: &str, cluster: Option<ClusterHandle>) -> Webhooks {
        let (tx, rx) = mpsc::channel(config.queue);
        let (stop, stop_rx) = watch::channel(false);
        let (stop_users, stop_users_rx) = watch::channel(false);
        let queue = Queue { tx, node: Arc::from(node_id) };
        let roster = Arc::new(Roster::default());
        let sender = tokio::spawn(sender::run(config.clone(), rx, stop_rx));
        let users = tokio::spawn(users::run(
            roster.clone(),
            config.offline_grace,
            queue.clone(),
            cluster.clone(),
            stop_users_rx,
        ));
        tracing::info!(url = %config.url, "webhooks on");
        Webhooks(Arc::new(Inner {
            queue,
            roster,
            cluster,
            tasks: std::sync::Mutex::new(vec![(stop_users, users), (stop, sender)]),
        }))
    }

    /// What a new socket (of `user`, its JWT `sub`) keeps to report its lifecycle.
    pub fn socket(&self, user: &str) -> SocketHook {
        let user = (!user.is_empty()).then(|| Box::from(user));
        SocketHook { webhooks: self.clone(), user, client_close: None }
    }

    /// Other nodes' entries in the internal users topic changed (from the cluster bridge); a change
    /// of any other topic is handed back.
    pub fn remote_presence(&self, change: TopicChange) -> Result<(), TopicChange> {
        if change.topic != USERS_TOPIC {
            return Err(change);
        }
        self.0.roster.remote(change);
        Ok(())
    }

    /// The drain: stop taking user edges (a node with no live peer queues `user.offline` for its
    /// users first, see [`users::run`]), then send what is queued; each for at most `bound`.
    pub async fn shutdown(&self, bound: Duration) {
        let tasks = std::mem::take(&mut *self.0.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for (stop, task) in tasks {
            let _ = stop.send(true);
            let abort = task.abort_handle();
            if tokio::time::timeout(bound, task).await.is_err() {
                tracing::warn!(?bound, "webhooks: pending events not sent within the drain bound");
                abort.abort();
            }
        }
    }
}

/// Held by a socket whose node has webhooks on.
pub struct SocketHook {
    webhooks: Webhooks,
    /// The JWT `sub`, if any: sockets without one have no user events.
    user: Option<Box<str>>,
    /// The close code the client sent, if it closed first.
    client_close: Option<u16>,
}

impl SocketHook {
    /// The socket started: `socket.connect`, and one more socket for its user, here and in the
    /// cluster's users topic.
    pub fn connected(&self, socket: ConnId) {
        let inner = &self.webhooks.0;
        inner.queue.push(Event::connect(inner.queue.node(), self.user.as_deref(), socket));
        if let Some(user) = &self.user {
            inner.roster.local(user, true);
            if let Some(cluster) = &inner.cluster {
                let entry = Entry { key: user.to_string(), phx_ref: String::new(), meta: "{}".into() };
                cluster.presence_put(USERS_TOPIC, socket, entry);
            }
        }
    }

    /// The client sent a close frame with `code`.
    pub fn client_closed(&mut self, code: u16) {
        self.client_close.get_or_insert(code);
    }

    /// The socket stopped; `server_close` is the close the server queued, if any.
    pub fn disconnected(self, socket: ConnId, server_close: Option<Close>) {
        let inner = &self.webhooks.0;
        let close = Disconnect::classify(self.client_close, server_close);
        inner.queue.push(Event::disconnect(inner.queue.node(), self.user.as_deref(), socket, close));
        if let Some(user) = &self.user {
            inner.roster.local(user, false);
            if let Some(cluster) = &inner.cluster {
                cluster.presence_remove(USERS_TOPIC, socket);
            }
        }
    }
}
