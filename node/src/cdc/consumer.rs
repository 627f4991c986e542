//! The replication consumer: streams the permanent slot with pgoutput, decodes it, assembles committed
//! transactions and hands them to the hub. It acknowledges a position to PostgreSQL (and records it in
//! `REALTIME_DATA_DIR`) only after the hub delivered everything up to it, so nothing acknowledged is
//! ever lost; after a restart, transactions at or below the recorded position are skipped, so nothing
//! is delivered twice. Errors end the session; it reconnects with backoff.
//!
//! # Noticing a lost stream
//! A replication connection can die without closing: the network to the database is cut, or the
//! server is paused. Nothing then arrives, and an idle stream looks exactly the same, so the
//! consumer makes the stream speak: every third of `REALTIME_REPLICATION_TIMEOUT_MS` it writes a
//! non-transactional logical message (`pg_logical_emit_message`, prefix [`HEARTBEAT_PREFIX`]) on its
//! SQL connection, which the walsender decodes and sends like any change. When nothing at all (no
//! change, no heartbeat, no keepalive) arrives for the whole timeout, the connection is taken as dead
//! (also when the heartbeats themselves could not be written: a consumer that can neither hear the
//! stream nor reach the database on SQL cannot tell a quiet stream from a dead one, and a new session
//! costs nothing that a dead one would not):
//! the session is aborted and opened again, and the walsender PostgreSQL may still keep for it is
//! ended ([`catalog::release_slot`]) so the new session can have the slot at once. pgwire-replication
//! 0.5 opens the replication socket itself and offers no socket options (no keepalive, no read
//! timeout), only `status_interval` and `idle_wakeup_interval`: both are short here, so standby
//! status updates go at least every [`STATUS_EVERY`] busy or idle. Every other wait of a session
//! (connects, catalog queries, the start of the stream) is bounded too.
//!
//! A lost stream is logged once at WARN (and counted in `realtime_cdc_stream_lost_total`); its
//! return once at INFO with how long it was down. The hub tells subscribers when their changes are
//! delayed ([`super::hub`]).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig};
use realtime_proto::postgres::change::{Cell, Change, ChangeKind, OldRow, Transaction};
use realtime_proto::postgres::pgoutput::{self, Message, OldTuple, Relation, Tuple, TupleValue};
use realtime_proto::postgres::table::{ColumnMeta, TableMeta};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::catalog;
use super::cluster::Shipper;
use super::db_broadcast;
use super::error::{CdcError, SlotConflict};
use super::gap::{StreamStart, Taken};
use super::health::CdcHealth;
use super::hub::{Feed, HubCommand};
use crate::config::CdcConfig;
use crate::metrics::metrics;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Owns the replication session.
pub struct Consumer {
    pub config: CdcConfig,
    /// Wait this long before the first stream after a restart, so reconnecting clients resubscribe
    /// first and receive what was committed while the node was down.
    pub resume_grace: Option<Duration>,
    pub hub: mpsc::UnboundedSender<HubCommand>,
    pub transactions: mpsc::Sender<Feed>,
    pub live: Arc<watch::Sender<bool>>,
    /// What may be acknowledged: delivered by this node (and, in a cluster, by every live node).
    pub delivered: watch::Receiver<u64>,
    /// In a cluster: the other nodes, which get every transaction too. The consumer then also takes
    /// the slot from a stale holder (a deposed leader that has not noticed yet).
    pub ship: Option<Shipper>,
    /// Where a slot this node cannot stream is reported (`/readyz`).
    pub health: Arc<CdcHealth>,
    /// What this node's hub took: in a cluster, where a new stream's anchor is found.
    pub taken: Arc<Taken>,
}

/// How often a slot conflict is looked at again.
const CONFLICT_RETRY: Duration = BACKOFF_MAX;

/// While the stream runs without `realtime.messages` (see [`catalog::slot_can_stream`]), how often it
/// reconnects to try again.
const ADD_MESSAGES_RETRY: Duration = Duration::from_secs(60);

/// The prefix of the heartbeat messages the consumer writes into the WAL (see the module docs).
pub const HEARTBEAT_PREFIX: &str = "realtime_heartbeat";

/// Standby status updates are sent at least this often, whether the stream is busy or idle.
const STATUS_EVERY: Duration = Duration::from_millis(500);

/// Longest the SQL setup of a session (slot checks, publication) may take, and the start of the
/// stream after it.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a catalog query during the stream (a relation's columns) may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a new session waits for the walsender of a session it gave up as dead to exit.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// What survives a session: whether (and since when) the stream is down, and the walsender of a
/// session given up as dead, which PostgreSQL may not have noticed yet.
#[derive(Default)]
struct Outage {
    since: Option<Instant>,
    abandoned: Option<i32>,
}

/// A transaction being assembled.
struct Open {
    xid: u32,
    changes: Vec<Change>,
}

impl Consumer {
    /// Streams forever, reconnecting with backoff.
    pub async fn run(mut self) {
        if let Some(grace) = self.resume_grace.take() {
            tracing::info!(?grace, "resuming the replication stream after the grace period");
            tokio::time::sleep(grace).await;
        }
        let mut backoff = BACKOFF_MIN;
        // A conflict seen once may be this node's own previous session, still being torn down.
        let mut seen: Option<SlotConflict> = None;
        let mut outage = Outage::default();
        loop {
            let result = self.stream_once(&mut backoff, &mut outage).await;
            self.live.send_replace(false);
            if self.transactions.is_closed() {
                return;
            }
            match result {
                // Same kind as last time (the holder's pid may differ: it reconnects too).
                Err(CdcError::SlotConflict(conflict))
                    if seen
                        .as_ref()
                        .is_some_and(|s| std::mem::discriminant(s) == std::mem::discriminant(&conflict)) =>
                {
                    if self.health.slot_conflict(&conflict) {
                        tracing::error!(slot = %self.config.slot, %conflict, retry_every = ?CONFLICT_RETRY, "Postgres Changes cannot run: /readyz reports not ready until the slot is usable");
                    }
                    tokio::time::sleep(CONFLICT_RETRY).await;
                    continue;
                }
                Err(CdcError::SlotConflict(conflict)) => {
                    tracing::debug!(%conflict, "replication slot not usable; looking again");
                    seen = Some(conflict);
                }
                Err(error) => {
                    seen = None;
                    if outage.since.is_none() {
                        outage.since = Some(Instant::now());
                        metrics().cdc_stream_lost.increment(1);
                        tracing::warn!(%error, retry_in = ?backoff, "replication stream lost: Postgres Changes wait until it is back");
                    } else {
                        tracing::debug!(%error, retry_in = ?backoff, "replication stream still down");
                    }
                }
                Ok(()) => seen = None,
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// The SQL side of a session: the publication and slot are there and usable; returns the client
    /// (for heartbeats and catalog queries) and whether the stream can include database broadcast.
    async fn prepare(&self, outage: &mut Outage) -> Result<(Arc<Client>, bool), CdcError> {
        let slot = &self.config.slot;
        let client = catalog::connect(&self.config.database_url).await?;
        catalog::ensure_publication_and_slot(&client, &self.config.publication, slot).await?;
        let mut state = catalog::slot_state(&client, slot).await?;
        if let Some(pid) = outage.abandoned {
            if state.as_ref().and_then(|s| s.active_pid) == Some(pid) {
                if !catalog::release_slot(&client, slot, pid, RELEASE_WAIT).await? {
                    return Err(CdcError::PreviousSession(pid));
                }
                tracing::info!(%slot, pid, "ended the walsender of the replication connection given up as dead");
                state = catalog::slot_state(&client, slot).await?;
            }
            outage.abandoned = None;
        }
        if let Some(conflict) =
            state.and_then(|state| catalog::slot_conflict(slot, &state, self.ship.is_some()))
        {
            return Err(conflict.into());
        }
        if let Some(resolved) = self.health.slot_usable() {
            tracing::info!(%slot, %resolved, "replication slot usable again");
        }
        if self.ship.is_some() && catalog::take_slot(&client, slot).await? {
            tracing::warn!(%slot, "ended a stale holder's replication connection");
            // PostgreSQL releases the slot when that backend has exited.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let both = format!("{},{}", self.config.publication, db_broadcast::MESSAGES_PUBLICATION);
        let with_messages = catalog::slot_can_stream(&client, slot, &both).await;
        Ok((Arc::new(client), with_messages))
    }

    async fn stream_once(&mut self, backoff: &mut Duration, outage: &mut Outage) -> Result<(), CdcError> {
        let setup = |step| move |_| CdcError::Timeout { step, after: SETUP_TIMEOUT };
        let (client, with_messages) = tokio::time::timeout(SETUP_TIMEOUT, self.prepare(outage))
            .await
            .map_err(setup("the session's setup"))??;
        let timeout = self.config.replication_timeout;
        let mut repl =
            ReplicationClient::connect(replication_config(&self.config, with_messages, timeout)?).await?;
        // Live (and `Subscribed to PostgreSQL`) only once the server accepted START_REPLICATION.
        match tokio::time::timeout(SETUP_TIMEOUT, repl.wait_started()).await {
            Ok(started) => started?,
            Err(elapsed) => {
                repl.abort();
                return Err(setup("the start of the replication stream")(elapsed));
            }
        }
        // The walsender of this session: ended by the next one if this one is given up as dead.
        let walsender = tokio::time::timeout(QUERY_TIMEOUT, catalog::slot_holder(&client, &self.config.slot))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        match outage.since.take() {
            Some(since) => tracing::info!(
                slot = %self.config.slot,
                down_for = ?since.elapsed(),
                skip_through = *self.delivered.borrow(),
                "replication stream back"
            ),
            None => {
                tracing::info!(slot = %self.config.slot, skip_through = *self.delivered.borrow(), "replication stream live")
            }
        }
        self.live.send_replace(true);
        *backoff = BACKOFF_MIN;
        let result = self.stream(&mut repl, &client, with_messages, timeout).await;
        if let Err(CdcError::Silent(_)) = result {
            // The worker may be stuck on a socket nobody answers: drop it without a goodbye.
            repl.abort();
            outage.abandoned = walsender;
        }
        result
    }

    async fn stream(
        &mut self,
        repl: &mut ReplicationClient,
        client: &Arc<Client>,
        with_messages: bool,
        timeout: Duration,
    ) -> Result<(), CdcError> {
        let heartbeat = heartbeats(client.clone(), timeout / 3);
        tokio::pin!(heartbeat);
        // Until the first heartbeat is refused, silence for `timeout` means a dead connection.
        let mut heartbeats_on = true;
        // Since the last event was handled (time spent handing it on does not count as silence).
        let mut waiting_since = Instant::now();
        if let Some(ship) = &self.ship {
            self.announce_stream(client, ship).await?;
        }
        let mut relations: HashMap<u32, Arc<TableMeta>> = HashMap::new();
        let mut open: Option<Open> = None;
        // End of the last transaction handed to the hub.
        let mut handed_off = *self.delivered.borrow();
        // End of the last transaction shipped in this session (0: none yet).
        let mut shipped_prev = 0;
        // Streaming without database broadcast (the slot predates its publication): try again later.
        let add_messages = tokio::time::sleep(ADD_MESSAGES_RETRY);
        tokio::pin!(add_messages);
        loop {
            tokio::select! {
                // In this order: acknowledgements are never starved by a busy stream, and a deadline
                // that passed while an event was being handed on loses to the events waiting.
                biased;
                changed = self.delivered.changed() => {
                    changed.map_err(|_| CdcError::HubGone)?;
                    let lsn = *self.delivered.borrow_and_update();
                    repl.update_applied_lsn(Lsn::from_u64(lsn));
                }
                event = repl.recv() => {
                    let Some(event) = event? else { return Ok(()) };
                    // Set again when this event is handled (a `continue` below skips the end).
                    waiting_since = Instant::now();
                    match event {
                        ReplicationEvent::Begin { xid, .. } => open = Some(Open { xid, changes: Vec::new() }),
                        ReplicationEvent::XLogData { data, .. } => {
                            let data = self.on_data(client, data, &mut relations, open.as_mut());
                            tokio::time::timeout(QUERY_TIMEOUT, data)
                                .await
                                .map_err(|_| CdcError::Timeout { step: "a relation's catalog query", after: QUERY_TIMEOUT })??;
                        }
                        ReplicationEvent::Commit { end_lsn, commit_time_micros, .. } => {
                            let Some(txn) = open.take() else { continue };
                            let end_lsn = end_lsn.as_u64();
                            let delivered = *self.delivered.borrow();
                            if end_lsn <= delivered {
                                continue; // delivered before a restart or a reconnect
                            }
                            if txn.changes.is_empty() {
                                // Nothing for subscribers. Acknowledge it only when everything sent to the
                                // hub before it is delivered, or the slot would move past undelivered data.
                                if delivered >= handed_off {
                                    repl.update_applied_lsn(Lsn::from_u64(end_lsn));
                                }
                                continue;
                            }
                            handed_off = end_lsn;
                            metrics().cdc_transactions.increment(1);
                            let txn = Transaction {
                                xid: txn.xid,
                                end_lsn,
                                commit_timestamp: pgoutput::commit_timestamp_string(commit_time_micros).into(),
                                changes: txn.changes,
                            };
                            if let Some(ship) = &self.ship {
                                ship.transaction(shipped_prev, &txn);
                                shipped_prev = end_lsn;
                            }
                            self.transactions.send(Feed::Transaction(txn)).await.map_err(|_| CdcError::HubGone)?;
                            waiting_since = Instant::now();
                        }
                        ReplicationEvent::StoppedAt { .. } => return Ok(()),
                        ReplicationEvent::KeepAlive { .. } | ReplicationEvent::Message { .. } => {}
                    }
                }
                _ = &mut add_messages, if !with_messages => {
                    tracing::info!("reconnecting the replication stream to add database broadcast");
                    return Ok(());
                }
                error = &mut heartbeat, if heartbeats_on => {
                    heartbeats_on = false;
                    tracing::warn!(
                        error = %crate::db::pg_error_text(&error),
                        "cannot write replication heartbeats (pg_logical_emit_message): a dead replication \
                         connection is noticed only when TCP gives up on it"
                    );
                }
                _ = tokio::time::sleep_until(waiting_since + timeout), if heartbeats_on => {
                    return Err(CdcError::Silent(timeout));
                }
            }
        }
    }

    /// In a cluster, before the stream's first transaction: where it starts and its anchor (see
    /// [`super::gap`]), to every node and to this node's own hub (which may have missed shipments
    /// before it led). The slot is read once the stream started: no other session can move it then.
    async fn announce_stream(&self, client: &Client, ship: &Shipper) -> Result<(), CdcError> {
        let confirmed = catalog::slot_confirmed(client, &self.config.slot).await?;
        let from = confirmed.max(*self.delivered.borrow());
        let start = StreamStart { from, anchor: self.taken.anchor(from).max(*self.delivered.borrow()) };
        tracing::debug!(from = %super::gap::Lsn(start.from), anchor = %super::gap::Lsn(start.anchor), "stream starts");
        // Before any node hears of it, so that a peer's answer (its later anchor) is never early.
        self.taken.set_stream(start.from, self.taken.through());
        ship.stream(start);
        self.transactions.send(Feed::Stream(start)).await.map_err(|_| CdcError::HubGone)
    }

    async fn on_data(
        &self,
        client: &Client,
        data: Bytes,
        relations: &mut HashMap<u32, Arc<TableMeta>>,
        open: Option<&mut Open>,
    ) -> Result<(), CdcError> {
        let message = pgoutput::decode(data, false).map_err(|e| CdcError::Decode(e.to_string()))?;
        let table = |oid: u32| relations.get(&oid).cloned().ok_or(CdcError::UnknownRelation(oid));
        let change = match message {
            Message::Relation(relation) => {
                let meta = table_meta(client, &relation).await?;
                relations.insert(relation.oid, Arc::new(meta));
                let _ = self.hub.send(HubCommand::RelationChanged { oid: relation.oid });
                if let Some(ship) = &self.ship {
                    ship.relation(relation.oid);
                }
                return Ok(());
            }
            Message::Insert { relation, new, .. } => {
                Change { kind: ChangeKind::Insert, table: table(relation)?, new: Some(cells(new)), old: None }
            }
            Message::Update { relation, old, new, .. } => Change {
                kind: ChangeKind::Update,
                table: table(relation)?,
                new: Some(cells(new)),
                old: old.map(old_row),
            },
            Message::Delete { relation, old, .. } => Change {
                kind: ChangeKind::Delete,
                table: table(relation)?,
                new: None,
                old: Some(old_row(old)),
            },
            // TRUNCATE is not delivered (as the reference); types, origins and messages carry no rows.
            _ => return Ok(()),
        };
        metrics().cdc_changes.increment(1);
        if let Some(open) = open {
            open.changes.push(change);
        }
        Ok(())
    }
}

fn cells(tuple: Tuple) -> Vec<Cell> {
    tuple
        .0
        .into_iter()
        .map(|value| match value {
            TupleValue::Null => Cell::Null,
            TupleValue::UnchangedToast => Cell::Unchanged,
            TupleValue::Text(bytes) | TupleValue::Binary(bytes) => Cell::Text(bytes),
        })
        .collect()
}

fn old_row(old: OldTuple) -> OldRow {
    match old {
        OldTuple::Key(tuple) => OldRow { full: false, cells: cells(tuple) },
        OldTuple::Full(tuple) => OldRow { full: true, cells: cells(tuple) },
    }
}

/// The table as pgoutput sends its tuples (the relation's columns, in order), typed from the catalog.
async fn table_meta(client: &Client, relation: &Relation) -> Result<TableMeta, CdcError> {
    let catalog = catalog::table_by_oid(client, relation.oid).await?;
    let mut columns = Vec::with_capacity(relation.columns.len());
    for column in &relation.columns {
        let known = catalog.as_ref().and_then(|t| t.column(&column.name)).cloned();
        let meta = match known {
            Some(meta) => meta,
            None => {
                let row = client
                    .query_one(
                        "select typname::text, format_type($1::oid, $2) from pg_type where oid = $1::oid",
                        &[&column.type_oid, &column.type_modifier],
                    )
                    .await?;
                ColumnMeta {
                    name: column.name.clone(),
                    typname: row.get(0),
                    sql_type: row.get(1),
                    primary_key: column.key,
                }
            }
        };
        columns.push(meta);
    }
    Ok(TableMeta {
        oid: relation.oid,
        schema: relation.namespace.clone(),
        name: relation.name.clone(),
        columns,
        rls: catalog.is_some_and(|t| t.rls),
    })
}

/// pgwire-replication's settings from `DATABASE_URL`.
/// The stream's settings; `with_messages` adds `realtime.messages`' publication (database broadcast).
/// `timeout`: the replication timeout; the worker wakes up (and sends a status update) at least every
/// third of it, and every [`STATUS_EVERY`] on a busy stream.
fn replication_config(
    config: &CdcConfig,
    with_messages: bool,
    timeout: Duration,
) -> Result<ReplicationConfig, CdcError> {
    let url =
        tokio_postgres::Config::from_str(&config.database_url).map_err(|e| CdcError::Url(e.to_string()))?;
    let host = match url.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(Host::Unix(path)) => path.to_string_lossy().into_owned(),
        None => "localhost".to_owned(),
    };
    let port = url.get_ports().first().copied().unwrap_or(5432);
    let user = url.get_user().unwrap_or("postgres").to_owned();
    let password = url.get_password().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default();
    let database = url.get_dbname().unwrap_or(&user).to_owned();
    Ok(ReplicationConfig::new(
        host,
        user,
        password,
        database,
        config.slot.clone(),
        if with_messages {
            vec![config.publication.clone(), db_broadcast::MESSAGES_PUBLICATION.to_owned()]
        } else {
            vec![config.publication.clone()]
        },
    )
    .with_port(port)
    .with_tls(TlsConfig::disabled())
    .with_status_interval(STATUS_EVERY)
    .with_wakeup_interval((timeout / 3).min(STATUS_EVERY * 2))
    .with_application_name(catalog::APPLICATION_NAME)
    // Text output of dates and times as `to_jsonb` renders them: ISO, in UTC.
    .with_options("-c TimeZone=UTC -c DateStyle=ISO,MDY -c IntervalStyle=postgres"))
}

/// Writes a heartbeat into the WAL every `every` (see the module docs), each write bounded by
/// `every`. A write that fails or times out is only logged: the silence of the stream is the judge.
/// Returns only when heartbeats cannot be written at all (no privilege, no such function).
async fn heartbeats(client: Arc<Client>, every: Duration) -> tokio_postgres::Error {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let write = client.execute("select pg_logical_emit_message(false, $1, '')", &[&HEARTBEAT_PREFIX]);
        match tokio::time::timeout(every, write).await {
            Ok(Ok(_)) => {}
            Ok(Err(error))
                if matches!(
                    error.code(),
                    Some(&SqlState::INSUFFICIENT_PRIVILEGE | &SqlState::UNDEFINED_FUNCTION)
                ) =>
            {
                return error
            }
            Ok(Err(error)) => tracing::debug!(%error, "replication heartbeat not written"),
            Err(_) => tracing::debug!(after = ?every, "replication heartbeat not written in time"),
        }
    }
}
