//! The CDC hub: every `postgres_changes` subscription on this node, matched against each committed
//! transaction, checked against RLS per distinct claims, and delivered to the subscribing sockets.
//!
//! One task owns all of it, so a transaction is dispatched against a consistent set of subscriptions
//! and a subscription registered before a change is processed always sees it. After a transaction is
//! handed to the sockets, its end LSN is published on `delivered`; only then may the consumer
//! acknowledge it to PostgreSQL.
//!
//! The hub's parts:
//! - this file: the task, its commands and state, taking batches in order, and dispatching them: the
//!   questions to PostgreSQL (RLS, column privileges) and the sending; what goes where is decided in
//!   [`super::plan`], without I/O.
//! - `subscribe`: subscribing: the checks against the catalog, and confirming once the stream is live.
//! - `flow`: telling subscribers when changes stall and when they flow again.

mod flow;
mod subscribe;

pub use flow::DELAY_NOTICE;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use actix::Recipient;
use realtime_proto::postgres::change::{Change, Transaction};
use realtime_proto::postgres::table::TableMeta;
use realtime_proto::server;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::Client;

use self::flow::Flow;
use super::catalog;
use super::db_broadcast;
use super::error::CdcError;
use super::gap::{Gap, StreamStart, Taken};
use super::handle::{SubscribeError, SubscribeErrorKind, SubscribeOutcome, SubscribeRequest};
use super::notifications;
use super::plan::{self, Checked, Delivery, Planner, Privileges, RlsAnswers, RlsAsks, Stamped, Verdicts};
use super::recorder::Record;
use super::rls::{self, Ask, RlsPool};
use super::subscriptions::{ChannelKey, SubscriptionIndex};
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

/// `(schema, table)`.
type TableName = (String, String);
/// A value read from the catalog, and when.
type Cached<T> = (Instant, T);

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

/// The hub's state and its database connection.
pub struct Hub {
    config: CdcConfig,
    client: Option<Arc<Client>>,
    /// Looked up once per delivery: foldhash, not SipHash.
    channels: foldhash::HashMap<ChannelKey, ChannelSubs>,
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
    touched: foldhash::HashMap<ConnId, Outbox>,
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
            touched: foldhash::HashMap::default(),
            stopped: false,
            rls: RlsPool::new(&config.database_url, RLS_CONNECTIONS),
            published: None,
            dispatching: None,
            tables: HashMap::new(),
            config,
            client: None,
            channels: foldhash::HashMap::default(),
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
    /// grows with distinct subscriptions and claim sets; only deliveries cost per channel. What goes
    /// where is decided in [`plan`]; here are the questions to PostgreSQL and the sending.
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
        let matches = plan::match_changes(&changes, &self.index);
        if matches.is_empty() {
            return;
        }
        let visible = self.check_rls(txns, matches.rls_asks(&changes)).await;
        let mut selectable = Privileges::new();
        for (viewer_id, table) in matches.privileges_needed(&changes) {
            let Some(viewer) = self.index.viewer(viewer_id).cloned() else { continue };
            let flags = self.selectable(&viewer.role, table).await;
            selectable.insert((viewer_id, table.oid), flags);
        }
        let checked = Checked {
            visible: &visible,
            selectable: &selectable,
            failing: &self.failing,
            max_record_bytes: self.config.max_record_bytes,
        };
        let mut planner = Planner::new(&changes, &matches, &self.index, &checked);
        // Change by change: the sockets write one change while the next one's `data` is built.
        for deliveries in planner.by_ref() {
            for Delivery { channel, ids, data } in deliveries {
                let Some(subs) = self.channels.get_mut(&channel) else { continue };
                self.touched.entry(channel.0).or_insert_with(|| subs.request.outbox.clone());
                deliver(subs, &ids, &data);
            }
        }
        let Verdicts { failed, passed } = planner.verdicts();
        for channel in passed {
            self.failing.remove(&channel);
        }
        for (channel, error) in failed {
            self.rls_failed(&channel, &error);
        }
    }

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

    /// Waits for the batch to be visible, then asks each (table, viewer) which of its rows it may see.
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

fn deliver(subs: &mut ChannelSubs, ids: &[u32], data_json: &str) {
    let request = &subs.request;
    subs.send(server::postgres_changes(request.vsn, &request.topic, ids, data_json).into());
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
