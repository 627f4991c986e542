//! The CDC hub: every `postgres_changes` subscription on this node, matched against each committed
//! transaction, checked against RLS per distinct claims, and delivered to the subscribing sockets.
//!
//! One task owns all of it, so a transaction is dispatched against a consistent set of subscriptions
//! and a subscription registered before a change is processed always sees it. After a transaction is
//! handed to the sockets, its end LSN is published on `delivered`; only then may the consumer
//! acknowledge it to PostgreSQL.
//!
//! # Telling subscribers about a stalled stream
//! When the stream stops (this node's consumer lost it, or, in a cluster, the leader says so or
//! leadership moves), subscribers would otherwise see nothing but silence. If no change arrives and the
//! stream is not back within [`DELAY_NOTICE`], every confirmed channel gets a `system` message
//! (extension `postgres_changes`, status `error`, [`postgres_changes::DELAYED`]); once changes flow
//! again (the stream is live, or a transaction arrives) the same channels get status `ok`
//! ([`postgres_changes::RESUMED`]) before any change. Channels stay joined: nothing is lost, the
//! changes committed meanwhile follow.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Recipient;
use realtime_proto::postgres::change::{Change, ChangeKind, Projection, Transaction};
use realtime_proto::postgres::matching;
use realtime_proto::postgres::table::TableMeta;
use realtime_proto::postgres::{parse_params, SubscriptionParams};
use realtime_proto::server;
use realtime_proto::system::{self, postgres_changes, Extension};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::Client;

use super::catalog;
use super::db_broadcast;
use super::error::CdcError;
use super::gap::{Gap, StreamStart, Taken};
use super::handle::{SubscribeError, SubscribeErrorKind, SubscribeOutcome, SubscribeRequest};
use super::notifications;
use super::recorder::Record;
use super::rls::{self, Ask, RlsPool, Viewer};
use super::subscriptions::{ChannelKey, GroupKey, NewEntry, SubscriptionIndex, ViewerId};
use crate::channel::messages::{RemoteBroadcast, Stored};
use crate::close::SlowCause;
use crate::config::CdcConfig;
use crate::db::pg_error_text;
use crate::delivery::{Outbox, WireFrame};
use crate::message_row::SkipReason;
use crate::metrics::metrics;
use crate::resume::{Position, Resume};
use crate::vocab::{BroadcastBody, ConnId, TopicKey};

/// The `system` message of a live subscription.
pub const SUBSCRIBED: &str = "Subscribed to PostgreSQL";

/// What reaches the hub in stream order: the consumer's (or the leader's shipped) transactions, and
/// the start of each leader stream, after which the hub knows whether it missed some for good.
#[derive(Debug)]
pub enum Feed {
    Transaction(Transaction),
    Stream(StreamStart),
    /// On the leader: a peer took a transaction ending here that this hub did not have when the
    /// current stream started, and the stream starts after it: this hub missed it before it led,
    /// and will never get it (see [`Taken::lost_before_stream`]).
    PeerTook(u64),
}

/// What the hub is asked to do.
#[derive(Debug)]
pub enum HubCommand {
    Subscribe(Box<SubscribeRequest>),
    Unsubscribe {
        conn: ConnId,
        topic: Arc<str>,
    },
    /// Wait mode: the socket wrote the join reply; deliver what was held and go live.
    Activate {
        conn: ConnId,
        topic: Arc<str>,
    },
    /// A relation's definition changed: drop what was cached about it.
    RelationChanged {
        oid: u32,
    },
    /// Stop dispatching; answer once everything dispatched is written and recorded.
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// How long changes may stall (stream down, nothing arriving) before subscribers are told.
pub const DELAY_NOTICE: Duration = Duration::from_secs(3);

/// Whether changes flow, as this hub sees it (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
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

/// `(schema, table)`.
type TableName = (String, String);
/// A change with its transaction's commit timestamp.
type Stamped<'t> = (&'t Change, &'t str);
/// A value read from the catalog, and when.
type Cached<T> = (Instant, T);
/// The primary keys of a batch one viewer must be asked about, per table.
type RlsAsks = HashMap<(u32, ViewerId), (Arc<TableMeta>, Vec<Vec<String>>)>;
/// Per table and viewer: the visible primary keys, or why the check failed.
type RlsAnswers = HashMap<(u32, ViewerId), Result<HashSet<Vec<String>>, String>>;

/// Per (viewer, table oid): the columns its role may SELECT, or why that could not be read.
type Privileges = HashMap<(ViewerId, u32), Result<Arc<Vec<bool>>, String>>;
/// `data` JSON per (change index, column set, `select`), shared by every channel that sees it alike.
type DataCache = HashMap<(usize, usize, Option<Vec<String>>), Arc<str>>;

/// A channel's matching subscription ids, grouped by the data they receive (one message per group).
type SelectGroups = Vec<(Arc<str>, Vec<u32>)>;

/// Most bytes of changes held for a subscription in wait mode before its socket is closed as too slow.
const HELD_MAX_BYTES: usize = 4 * 1024 * 1024;

/// One channel's subscription request (where and how to deliver).
struct ChannelSubs {
    request: SubscribeRequest,
    /// Wait mode (`announce: false`): the socket writes the join reply only after this subscription is
    /// confirmed, so its frames are held here until the socket says the reply is written
    /// ([`HubCommand::Activate`]); none reaches the client before the reply.
    held: Option<(Vec<WireFrame>, usize)>,
}

impl ChannelSubs {
    fn send(&mut self, frame: WireFrame) {
        match &mut self.held {
            None => {
                self.request.outbox.offer(frame, None);
            }
            Some((frames, bytes)) if *bytes + frame.len() <= HELD_MAX_BYTES => {
                *bytes += frame.len();
                frames.push(frame);
            }
            Some(_) => {
                self.held = Some((Vec::new(), 0));
                self.request.outbox.close_slow(SlowCause::Overflow);
            }
        }
    }

    /// Releases what was held, in order; later frames go straight to the outbox.
    fn activate(&mut self) {
        if let Some((frames, _)) = self.held.take() {
            for frame in frames {
                self.request.outbox.offer(frame, None);
            }
        }
    }
}

fn name_matches(pattern: &str, name: &str) -> bool {
    pattern == "*" || pattern == name
}

/// The hub's state and its database connection.
pub struct Hub {
    config: CdcConfig,
    client: Option<Arc<Client>>,
    channels: HashMap<ChannelKey, ChannelSubs>,
    index: SubscriptionIndex,
    /// Channels told about an RLS failure: told once, until a check succeeds again.
    failing: HashSet<ChannelKey>,
    /// Validated subscriptions waiting for the stream to go live before they are confirmed.
    unconfirmed: Vec<ChannelKey>,
    /// Per table oid, per role: which columns the role may SELECT.
    selectable: HashMap<u32, HashMap<String, Arc<Vec<bool>>>>,
    /// Connections that answer RLS questions in parallel.
    rls: RlsPool,
    /// Records positions once the sockets wrote them.
    recorder: mpsc::UnboundedSender<Record>,
    /// Sockets that received something in the batch being dispatched.
    touched: HashMap<ConnId, Outbox>,
    /// Set by `Shutdown`: further transactions are left for the next run (they are not recorded).
    stopped: bool,
    /// End of the last transaction dispatched (or recorded before a restart): a transaction at or
    /// below it is a repeat (a reconnect, or a new CDC leader resuming from the slot) and is dropped.
    skip_through: u64,
    /// `skip_through` and the recent positions taken, shared with the cluster router (which tells
    /// from it when shipments were missed) and the consumer (which finds a stream's anchor in it).
    taken: Arc<Taken>,
    published: Option<Cached<Arc<Vec<TableName>>>>,
    /// The end positions of the first and last transaction of the batch being dispatched.
    dispatching: Option<(u64, u64)>,
    tables: HashMap<TableName, Cached<Option<Arc<TableMeta>>>>,
    /// Where rows of `realtime.messages` go as broadcasts: this node's channels.
    broadcasts: DbBroadcasts,
    flow: Flow,
    /// Channels told their changes are delayed, to be told when they flow again.
    told_delayed: Vec<ChannelKey>,
}

/// What the hub reads: sockets' commands, transactions (from the consumer or the leader's
/// shipments) and whether the stream is live.
pub struct HubInputs {
    pub commands: mpsc::UnboundedReceiver<HubCommand>,
    pub transactions: mpsc::Receiver<Feed>,
    pub live: watch::Receiver<bool>,
}

/// Rows of `realtime.messages` turned into broadcasts ([`db_broadcast`]) for this node's channels.
pub struct DbBroadcasts {
    pub channels: Recipient<RemoteBroadcast>,
    pub max_payload: usize,
    /// Resumable channels: their rows get positions and are kept for resuming clients.
    pub resume: Option<Arc<Resume>>,
}

/// Connections answering RLS questions in parallel.
const RLS_CONNECTIONS: usize = 4;

/// Most transactions, and changes, dispatched (and RLS-checked) together.
const MAX_BATCH: usize = 256;
const MAX_BATCH_CHANGES: usize = 1024;

/// How long catalog answers used to validate subscriptions are reused.
const CATALOG_TTL: Duration = Duration::from_secs(1);

impl Hub {
    pub fn new(
        config: CdcConfig,
        recorder: mpsc::UnboundedSender<Record>,
        skip_through: u64,
        taken: Arc<Taken>,
        broadcasts: DbBroadcasts,
    ) -> Hub {
        taken.restart_at(skip_through);
        Hub {
            recorder,
            skip_through,
            taken,
            touched: HashMap::new(),
            stopped: false,
            rls: RlsPool::new(&config.database_url, RLS_CONNECTIONS),
            published: None,
            dispatching: None,
            tables: HashMap::new(),
            config,
            client: None,
            channels: HashMap::new(),
            index: SubscriptionIndex::default(),
            failing: HashSet::new(),
            unconfirmed: Vec::new(),
            selectable: HashMap::new(),
            broadcasts,
            flow: Flow::NeverLive,
            told_delayed: Vec::new(),
        }
    }

    /// Runs until every sender is gone. Under [`super::supervisor`], `self` and `inputs` outlive a
    /// panicking run: the next run starts with [`Hub::recover`].
    pub async fn run(&mut self, inputs: &mut HubInputs) {
        let HubInputs { commands, transactions, live } = inputs;
        loop {
            let notice_at = match self.flow {
                Flow::Stalled { since } => Some(since + DELAY_NOTICE),
                _ => None,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(notice_at.unwrap_or_else(tokio::time::Instant::now)), if notice_at.is_some() => {
                    self.tell_delayed();
                }
                command = commands.recv() => match command {
                    Some(command) => {
                        let is_live = *live.borrow();
                        self.handle(command, is_live).await;
                    }
                    None => return,
                },
                feed = transactions.recv() => match feed {
                    Some(Feed::Transaction(txn)) => {
                        self.changes_arrived(*live.borrow());
                        // Take what else is waiting, so a busy stream is checked and sent in batches.
                        let mut changes = txn.changes.len();
                        let mut batch = vec![txn];
                        let mut start = None;
                        while batch.len() < MAX_BATCH && changes < MAX_BATCH_CHANGES {
                            match transactions.try_recv() {
                                Ok(Feed::Transaction(more)) => {
                                    changes += more.changes.len();
                                    batch.push(more);
                                }
                                Ok(other) => {
                                    start = Some(other);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        self.take(batch).await;
                        match start {
                            Some(Feed::Stream(start)) => self.stream_started(start),
                            Some(Feed::PeerTook(lsn)) => self.peer_took(lsn),
                            _ => {}
                        }
                    }
                    Some(Feed::Stream(start)) => self.stream_started(start),
                    Some(Feed::PeerTook(lsn)) => self.peer_took(lsn),
                    None => return,
                },
                changed = live.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let is_live = *live.borrow();
                    self.live_changed(is_live);
                    if is_live {
                        self.confirm_unconfirmed();
                    }
                }
            }
        }
    }

    fn live_changed(&mut self, live: bool) {
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
    fn changes_arrived(&mut self, live: bool) {
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
    fn tell_delayed(&mut self) {
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
    fn tell(&mut self, key: &ChannelKey, ok: bool, message: &str) {
        let Some(subs) = self.channels.get_mut(key) else { return };
        let r = &subs.request;
        let payload = system::payload(Extension::PostgresChanges, ok, message, Some(&r.sub_topic));
        let frame = server::channel_push(r.vsn, r.join_ref.as_deref(), &r.topic, "system", &payload);
        subs.send(frame.into());
    }

    /// Dispatches a batch and hands it to the recorder.
    async fn take(&mut self, mut batch: Vec<Transaction>) {
        // Strictly increasing commit positions only: two streams may feed this hub for a moment (a
        // deposed leader's last transactions and the new leader's, which resumes from the slot), both
        // in commit order; anything not past what was already taken is a repeat.
        let mut through = self.skip_through;
        batch.retain(|txn| {
            let newer = txn.end_lsn > through;
            through = through.max(txn.end_lsn);
            newer
        });
        if self.stopped || batch.is_empty() {
            return;
        }
        let end_lsn = through;
        let first = batch.first().map_or(through, |txn| txn.end_lsn);
        self.skip_through = through;
        self.taken.take(batch.iter().map(|txn| txn.end_lsn));
        self.dispatching = Some((first, end_lsn));
        self.dispatch(&batch).await;
        self.dispatching = None;
        let sockets = self
            .touched
            .drain()
            .map(|(_, outbox)| {
                let mark = outbox.mark();
                (outbox, mark)
            })
            .collect();
        let dispatched_at = Instant::now();
        let _ = self.recorder.send(Record::Batch { end_lsn, sockets, dispatched_at });
    }

    /// A leader's stream starts (see [`super::gap`]). When this hub has not taken its anchor, what
    /// it missed will never come: every confirmed subscription is told and its channel closed (the
    /// socket does it, after what was already sent to it); subscriptions still waiting to be
    /// confirmed were promised nothing and stay. The hub then goes on from the stream's start.
    fn stream_started(&mut self, start: StreamStart) {
        if let Some(gap) = Gap::between(self.skip_through, start) {
            self.lost(gap);
        }
        self.taken.set_stream(start.from, self.skip_through);
    }

    /// See [`Feed::PeerTook`]: a gap when the peer's position is past what this hub had when the
    /// current stream started, and not past that stream's start.
    fn peer_took(&mut self, lsn: u64) {
        let Some((from, base)) = self.taken.stream() else { return };
        if self.taken.lost_before_stream(lsn) {
            self.lost(Gap { after: base, until: lsn, resumes_after: from });
            self.taken.set_stream(from, self.skip_through);
        }
    }

    /// Tells every confirmed subscription what it lost, and goes on after the gap.
    fn lost(&mut self, gap: Gap) {
        metrics().cdc_gaps.increment(1);
        let message = gap.message();
        let told: Vec<ChannelKey> =
            self.channels.keys().filter(|key| !self.unconfirmed.contains(key)).cloned().collect();
        for key in &told {
            if let Some(subs) = self.channels.get(key) {
                subs.request.notify.do_send(SubscribeOutcome {
                    topic: subs.request.topic.clone(),
                    join_ref: subs.request.join_ref.clone(),
                    result: Err(SubscribeError { kind: SubscribeErrorKind::Gap, message: message.clone() }),
                });
            }
            self.remove(key);
        }
        tracing::error!(
            missed_after = %super::gap::Lsn(gap.after),
            missed_through = %super::gap::Lsn(gap.until),
            resumes_after = %super::gap::Lsn(gap.resumes_after),
            subscriptions_closed = told.len(),
            "committed changes missed by this node can no longer be replayed: its subscribers were told and their channels closed"
        );
        self.skip_through = self.skip_through.max(gap.resumes_after);
        self.taken.restart_at(self.skip_through);
    }

    /// Starts a run after one that panicked: what it was dispatching is not delivered on this node
    /// (it is past the hub's position, so it is never repeated either; logged), and what was cached
    /// while it ran is dropped. Subscriptions stay.
    pub fn recover(&mut self) {
        if let Some((first, last)) = self.dispatching.take() {
            tracing::error!(
                first_end_lsn = first,
                last_end_lsn = last,
                "the transactions being dispatched when the hub failed were not delivered on this node"
            );
        }
        self.touched.clear();
        self.selectable.clear();
        self.tables.clear();
        self.published = None;
    }

    /// The hub's database connection, reconnected when it dropped.
    async fn client(&mut self) -> Result<Arc<Client>, String> {
        if let Some(client) = self.client.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        self.client = None;
        let client = Arc::new(catalog::connect(&self.config.database_url).await.map_err(|e| e.to_string())?);
        self.client = Some(client.clone());
        Ok(client)
    }

    async fn handle(&mut self, command: HubCommand, live: bool) {
        match command {
            HubCommand::Subscribe(request) => self.subscribe(*request, live).await,
            HubCommand::Unsubscribe { conn, topic } => self.remove(&(conn, topic)),
            HubCommand::Activate { conn, topic } => {
                if let Some(subs) = self.channels.get_mut(&(conn, topic)) {
                    subs.activate();
                }
            }
            HubCommand::Shutdown { done } => {
                self.stopped = true;
                let _ = self.recorder.send(Record::Barrier(done));
            }
            HubCommand::RelationChanged { oid } => {
                self.selectable.remove(&oid);
                self.tables.clear();
                self.rls.forget(oid);
            }
        }
    }

    fn remove(&mut self, key: &ChannelKey) {
        if self.channels.remove(key).is_some() {
            self.index.remove(key);
            self.failing.remove(key);
            self.unconfirmed.retain(|k| k != key);
        }
    }

    async fn subscribe(&mut self, request: SubscribeRequest, live: bool) {
        let key: ChannelKey = (request.conn, request.topic.clone());
        self.remove(&key);
        let entries = match self.validate(&request).await {
            Ok(entries) => entries,
            Err(error) => {
                request.notify.do_send(SubscribeOutcome {
                    topic: request.topic.clone(),
                    join_ref: request.join_ref.clone(),
                    result: Err(error),
                });
                return;
            }
        };
        let claims = &request.claims;
        let viewer = Viewer {
            role: claims.role.clone(),
            claims_json: serde_json::Value::Object(claims.all.clone()).to_string(),
            sub: claims.sub.clone(),
        };
        self.index.insert(key.clone(), entries, viewer);
        let held = (!request.announce).then(|| (Vec::new(), 0));
        self.channels.insert(key.clone(), ChannelSubs { request, held });
        if live {
            self.confirm(&key);
        } else {
            self.unconfirmed.push(key);
        }
    }

    fn confirm(&self, key: &ChannelKey) {
        if let Some(subs) = self.channels.get(key) {
            let r = &subs.request;
            if r.announce {
                // Written by this task, so it precedes every change this subscription receives.
                let payload =
                    system::payload(Extension::PostgresChanges, true, SUBSCRIBED, Some(&r.sub_topic));
                let frame = server::channel_push(r.vsn, r.join_ref.as_deref(), &r.topic, "system", &payload);
                r.outbox.offer(frame.into(), None);
            }
            subs.request.notify.do_send(SubscribeOutcome {
                topic: subs.request.topic.clone(),
                join_ref: subs.request.join_ref.clone(),
                result: Ok(()),
            });
        }
    }

    fn confirm_unconfirmed(&mut self) {
        for key in std::mem::take(&mut self.unconfirmed) {
            self.confirm(&key);
        }
    }

    /// Checks every entry: parameters, publication membership, filter columns and types.
    async fn validate(&mut self, request: &SubscribeRequest) -> Result<Vec<NewEntry>, SubscribeError> {
        let invalid = |message: String| SubscribeError { kind: SubscribeErrorKind::Invalid, message };
        let unavailable = |e: String| SubscribeError {
            kind: SubscribeErrorKind::Unavailable,
            message: format!("Realtime was unable to connect to the project database: {e}"),
        };
        let client = self.client().await.map_err(unavailable)?;
        let published = self.published_tables(&client).await.map_err(|e| unavailable(e.to_string()))?;
        let mut entries = Vec::new();
        for (id, raw) in &request.entries {
            let params = parse_params(raw).map_err(|e| invalid(e.to_string()))?;
            let matching: Vec<&(String, String)> = published
                .iter()
                .filter(|(s, t)| name_matches(&params.schema, s) && name_matches(&params.table, t))
                .collect();
            if matching.is_empty() {
                return Err(SubscribeError {
                    kind: SubscribeErrorKind::NotPublished,
                    message: format!(
                        "Unable to subscribe to changes with given parameters. Please check Realtime is enabled \
                         for the given connect parameters: {}",
                        params.describe()
                    ),
                });
            }
            if params.schema != "*" && params.table != "*" {
                let table = self
                    .table_by_name(&client, &params.schema, &params.table)
                    .await
                    .map_err(|e| unavailable(e.to_string()))?;
                if let Some(table) = table {
                    check_filters(&params, &table).map_err(|reason| {
                        invalid(format!(
                            "Unable to subscribe to changes with given parameters. An exception happened so please \
                             check your connect parameters: {}. Exception: {reason}",
                            params.describe()
                        ))
                    })?;
                }
            }
            let canonical = serde_json::Value::Object(raw.clone()).to_string().into();
            entries.push(NewEntry { id: *id, canonical, params });
        }
        Ok(entries)
    }

    /// The publication's tables, re-read at most every [`CATALOG_TTL`] (a join storm asks once).
    async fn published_tables(&mut self, client: &Client) -> Result<Arc<Vec<(String, String)>>, CdcError> {
        if let Some((at, tables)) = &self.published {
            if at.elapsed() < CATALOG_TTL {
                return Ok(tables.clone());
            }
        }
        let tables = Arc::new(catalog::publication_tables(client, &self.config.publication).await?);
        self.published = Some((Instant::now(), tables.clone()));
        Ok(tables)
    }

    /// A table's definition by name, cached for [`CATALOG_TTL`] or until its relation changes.
    async fn table_by_name(
        &mut self,
        client: &Client,
        schema: &str,
        table: &str,
    ) -> Result<Option<Arc<TableMeta>>, CdcError> {
        let key = (schema.to_owned(), table.to_owned());
        if let Some((at, meta)) = self.tables.get(&key) {
            if at.elapsed() < CATALOG_TTL {
                return Ok(meta.clone());
            }
        }
        let meta = catalog::table_by_name(client, schema, table).await?;
        self.tables.insert(key, (Instant::now(), meta.clone()));
        Ok(meta)
    }

    async fn selectable(&mut self, role: &str, table: &TableMeta) -> Result<Arc<Vec<bool>>, String> {
        if let Some(cached) = self.selectable.get(&table.oid).and_then(|roles| roles.get(role)) {
            return Ok(cached.clone());
        }
        let client = self.client().await?;
        let flags = catalog::selectable_columns(&client, role, table).await.map_err(|e| match e {
            CdcError::Postgres(e) => pg_error_text(&e),
            other => other.to_string(),
        })?;
        let flags = Arc::new(flags);
        self.selectable.entry(table.oid).or_default().insert(role.to_owned(), flags.clone());
        Ok(flags)
    }

    /// Matches, checks and delivers a batch of transactions, in commit order. A change is matched once
    /// per subscription group and RLS is asked once per (table, viewer) for the whole batch, so the cost
    /// grows with distinct subscriptions and claim sets; only deliveries cost per channel.
    async fn dispatch(&mut self, txns: &[Transaction]) {
        #[cfg(debug_assertions)]
        test_hook::panic_on(txns);
        if let (Some(resume), Some(first)) = (&self.broadcasts.resume, txns.first()) {
            resume.stream_from(first.end_lsn);
        }
        // Rows of `realtime.messages` are broadcasts, never Postgres Changes.
        let is_broadcast = |c: &Change| db_broadcast::is_message(c) || notifications::is_notification(c);
        self.broadcast_messages(txns.iter().flat_map(|t| {
            t.changes.iter().enumerate().filter(|(_, c)| is_broadcast(c)).map(move |(index, c)| {
                (c, Position { commit_lsn: t.end_lsn, index: u32::try_from(index).unwrap_or(u32::MAX) })
            })
        }));
        let changes: Vec<Stamped> = txns
            .iter()
            .flat_map(|t| t.changes.iter().map(move |c| (c, &*t.commit_timestamp)))
            .filter(|(c, _)| !is_broadcast(c))
            .collect();
        // 1. Match: which groups each change goes to.
        let mut matched: Vec<(usize, GroupKey)> = Vec::new();
        for (index, (change, _)) in changes.iter().enumerate() {
            let table = &change.table;
            for (key, group) in self.index.groups_for(&table.schema, &table.name) {
                let p = &group.params;
                if p.event.matches(change.kind.as_str())
                    && name_matches(&p.schema, &table.schema)
                    && name_matches(&p.table, &table.name)
                    && group.filter.matches(|column| change.filter_value(column))
                {
                    matched.push((index, key.clone()));
                }
            }
        }
        if matched.is_empty() {
            return;
        }
        // 2. RLS: one question per (table, viewer) for every key of the batch.
        let needs_rls = |c: &Change| c.table.rls && c.kind != ChangeKind::Delete && c.table.has_primary_key();
        let mut asks: RlsAsks = HashMap::new();
        for (index, key) in &matched {
            let change = changes[*index].0;
            if let (true, Some(pk)) = (needs_rls(change), change.primary_key()) {
                let ask = asks
                    .entry((change.table.oid, key.1))
                    .or_insert_with(|| (change.table.clone(), Vec::new()));
                ask.1.push(pk);
            }
        }
        let visible = self.check_rls(txns, asks).await;
        // 3. Column privileges per (role, table) seen in the batch.
        let mut selectable: Privileges = HashMap::new();
        for (index, key) in &matched {
            let table = &changes[*index].0.table;
            if selectable.contains_key(&(key.1, table.oid)) {
                continue;
            }
            let Some(viewer) = self.index.viewer(key.1).cloned() else { continue };
            let flags = self.selectable(&viewer.role, table).await;
            selectable.insert((key.1, table.oid), flags);
        }
        // 4. Deliver, change by change, one message per channel (and `select`).
        let mut failed: Vec<(ChannelKey, String)> = Vec::new();
        let mut passed: HashSet<ChannelKey> = HashSet::new();
        let mut data: DataCache = HashMap::new();
        let mut start = 0;
        while start < matched.len() {
            let index = matched[start].0;
            let end = start + matched[start..].iter().take_while(|(i, _)| *i == index).count();
            let (change, commit_timestamp) = changes[index];
            let mut per_channel: HashMap<&ChannelKey, SelectGroups> = HashMap::new();
            for (_, key) in &matched[start..end] {
                let Some(group) = self.index.group(key) else { continue };
                let viewer = key.1;
                if needs_rls(change) {
                    match (visible.get(&(change.table.oid, viewer)), change.primary_key()) {
                        (Some(Ok(rows)), Some(pk)) if rows.contains(&pk) => {
                            if !self.failing.is_empty() {
                                passed.extend(
                                    group.members.keys().filter(|k| self.failing.contains(*k)).cloned(),
                                );
                            }
                        }
                        (Some(Err(error)), _) => {
                            failed.extend(group.members.keys().map(|k| (k.clone(), error.clone())));
                            continue;
                        }
                        _ => continue,
                    }
                }
                let flags = match selectable.get(&(viewer, change.table.oid)) {
                    Some(Ok(flags)) => flags.clone(),
                    Some(Err(error)) => {
                        failed.extend(group.members.keys().map(|k| (k.clone(), error.clone())));
                        continue;
                    }
                    None => continue,
                };
                let cache_key = (index, Arc::as_ptr(&flags) as usize, group.params.select.clone());
                let data_json = match data.get(&cache_key) {
                    Some(json) => json.clone(),
                    None => {
                        let projection =
                            Projection { selectable: flags.to_vec(), select: cache_key.2.clone() };
                        let json: Arc<str> = change
                            .data_json(commit_timestamp, &projection, self.config.max_record_bytes)
                            .into();
                        data.insert(cache_key, json.clone());
                        json
                    }
                };
                for (channel, id) in &group.members {
                    let groups = per_channel.entry(channel).or_default();
                    match groups.iter_mut().find(|(json, _)| Arc::ptr_eq(json, &data_json)) {
                        Some((_, ids)) => ids.push(*id),
                        None => groups.push((data_json.clone(), vec![*id])),
                    }
                }
            }
            for (channel, groups) in per_channel {
                let Some(subs) = self.channels.get_mut(channel) else { continue };
                self.touched.entry(channel.0).or_insert_with(|| subs.request.outbox.clone());
                for (data_json, mut ids) in groups {
                    ids.sort_unstable();
                    ids.dedup();
                    deliver(subs, &ids, &data_json);
                }
            }
            start = end;
        }
        for channel in passed {
            self.failing.remove(&channel);
        }
        for (channel, error) in failed {
            self.rls_failed(&channel, &error);
        }
    }

    /// Waits for the batch to be visible, then asks each (table, viewer) which of its rows it may see.
    /// Hands each `realtime.messages` insert to this node's channel of its topic, and each
    /// `realtime.notifications` insert to its user's inbox channels, in commit order.
    ///
    /// On a resumable channel the row gets its position: it is kept for resuming clients before it
    /// is sent, so a member resuming meanwhile finds it in the log or receives it live.
    fn broadcast_messages<'c>(&self, rows: impl Iterator<Item = (&'c Change, Position)>) {
        let received_at = Instant::now();
        let send = |key: TopicKey, body: BroadcastBody, id: Option<&str>, position: Position| {
            let resume = self.broadcasts.resume.as_ref().filter(|r| r.is_resumable(&key));
            let (body, from, stored) = match (resume, id) {
                (Some(resume), Some(id)) => {
                    let (body, from) = resume.arrived(&key, id, position, body);
                    (body, from, Some(Stored { id: id.into(), position: Some(position) }))
                }
                (None, Some(id)) => (body, None, Some(Stored { id: id.into(), position: None })),
                (_, None) => (body, None, None),
            };
            self.broadcasts.channels.do_send(RemoteBroadcast { key, body, received_at, from, stored });
        };
        for (row, position) in rows {
            let id = row.filter_value("id").and_then(|(_, id)| id);
            if notifications::is_notification(row) {
                for (key, body) in notifications::to_pushes(row).into_iter().flatten() {
                    send(key, body, id, position);
                }
                continue;
            }
            match db_broadcast::to_broadcast(row, self.broadcasts.max_payload) {
                Ok(b) => send(b.key, b.body, id, position),
                Err(SkipReason::NotInsert | SkipReason::NotBroadcast) => {}
                Err(reason) => tracing::warn!(%reason, "a realtime.messages row was not broadcast"),
            }
        }
    }

    async fn check_rls(&mut self, txns: &[Transaction], asks: RlsAsks) -> RlsAnswers {
        let mut visible: RlsAnswers = HashMap::new();
        if asks.is_empty() {
            return visible;
        }
        let xids: Vec<u32> = txns.iter().map(|t| t.xid).collect();
        let barrier = match self.client().await {
            Ok(client) => rls::wait_visible(&client, &xids).await.map_err(|e| pg_error_text(&e)),
            Err(error) => Err(error),
        };
        match barrier {
            Ok(true) => {}
            Ok(false) => tracing::warn!(?xids, "transactions not visible in time; checking RLS anyway"),
            Err(error) => tracing::warn!(%error, "visibility check failed; checking RLS anyway"),
        }
        let mut questions = Vec::with_capacity(asks.len());
        for ((oid, viewer_id), (table, mut pks)) in asks {
            let Some(viewer) = self.index.viewer(viewer_id).cloned() else { continue };
            pks.sort();
            pks.dedup();
            questions.push(Ask { key: (oid, viewer_id), table, pks, viewer });
        }
        visible.extend(self.rls.answer(questions).await);
        visible
    }

    /// Tells a subscriber (once) that its checks fail; nobody else is affected.
    fn rls_failed(&mut self, key: &ChannelKey, error: &str) {
        if !self.channels.contains_key(key) {
            return;
        }
        if !self.failing.insert(key.clone()) {
            return;
        }
        tracing::warn!(conn = key.0, topic = %key.1, %error, "rls check failed");
        let message = format!("Row Level Security check failed for this subscription: {error}");
        self.tell(key, false, &message);
    }
}

/// Validates filters against the table's columns, as the reference's subscription trigger does.
fn check_filters(params: &SubscriptionParams, table: &TableMeta) -> Result<(), String> {
    for condition in &params.filters {
        let column = table.column(&condition.column).ok_or_else(|| {
            matching::raise_exception(&format!("invalid column for filter {}", condition.column))
        })?;
        matching::check_condition_types(condition, &column.typname)?;
    }
    for name in params.select.iter().flatten() {
        if table.column(name).is_none() {
            return Err(matching::raise_exception(&format!("invalid column for select {name}")));
        }
    }
    Ok(())
}

fn deliver(subs: &mut ChannelSubs, ids: &[u32], data_json: &str) {
    let ids_json = serde_json::to_string(ids).expect("ids serialise");
    let payload = format!("{{\"ids\":{ids_json},\"data\":{data_json}}}");
    let request = &subs.request;
    let frame: WireFrame = server::fastlane(request.vsn, &request.topic, "postgres_changes", &payload).into();
    subs.send(frame);
}

/// Debug builds only (never in a release binary): `REALTIME_TEST_PANIC_TABLE=<table>` makes the hub
/// panic while dispatching a change of that table, so the tests can check, end to end, what a panic
/// in the CDC path does (`node/tests/cdc/guard.rs`). No known input makes the hub panic any more.
#[cfg(debug_assertions)]
mod test_hook {
    use std::sync::OnceLock;

    use super::Transaction;

    pub fn panic_on(txns: &[Transaction]) {
        static TABLE: OnceLock<Option<String>> = OnceLock::new();
        let table = TABLE.get_or_init(|| std::env::var("REALTIME_TEST_PANIC_TABLE").ok());
        if let Some(table) = table {
            if txns.iter().flat_map(|t| &t.changes).any(|c| &c.table.name == table) {
                panic!("test hook: a change of {table}");
            }
        }
    }
}
