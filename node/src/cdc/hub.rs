//! The CDC hub: every `postgres_changes` subscription on this node, matched against each committed
//! transaction, checked against RLS per distinct claims, and delivered to the subscribing sockets.
//!
//! One task owns all of it, so a transaction is dispatched against a consistent set of subscriptions
//! and a subscription registered before a change is processed always sees it. After a transaction is
//! handed to the sockets, its end LSN is published on `delivered`; only then may the consumer
//! acknowledge it to PostgreSQL.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use realtime_proto::postgres::{parse_params, SubscriptionParams};
use realtime_proto::server;
use realtime_proto::system::{self, Extension};
use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;

use super::catalog::{self, TableMeta};
use super::change::{Change, ChangeKind, Projection, Transaction};
use super::error::CdcError;
use super::handle::{SubscribeError, SubscribeErrorKind, SubscribeOutcome, SubscribeRequest};
use super::matching;
use super::position::DeliveredPosition;
use super::rls::{self, RlsStatements, Viewer};
use crate::channel::ConnId;
use crate::config::CdcConfig;
use crate::socket::messages::{Deliver, WireFrame};

/// What the hub is asked to do.
#[derive(Debug)]
pub enum HubCommand {
    Subscribe(Box<SubscribeRequest>),
    Unsubscribe {
        conn: ConnId,
        topic: Arc<str>,
    },
    /// A relation's definition changed: drop what was cached about it.
    RelationChanged {
        oid: u32,
    },
}

type ChannelKey = (ConnId, Arc<str>);
/// `(schema, table)`.
type TableName = (String, String);
/// A value read from the catalog, and when.
type Cached<T> = (Instant, T);
/// The primary keys of a batch one viewer must be asked about, per table.
type RlsAsks = HashMap<(u32, Viewer), (Arc<TableMeta>, Vec<Vec<String>>)>;
/// Per table and viewer: the visible primary keys, or why the check failed.
type RlsAnswers = HashMap<(u32, Viewer), Result<HashSet<Vec<String>>, String>>;

/// A channel's matching subscription ids, grouped by their `select` (one message per group).
type SelectGroups = Vec<(Option<Vec<String>>, Vec<u32>)>;

struct Entry {
    id: u32,
    params: SubscriptionParams,
}

/// One channel's subscriptions.
struct ChannelSubs {
    request: SubscribeRequest,
    entries: Vec<Entry>,
    viewer: Viewer,
    /// Told once about an RLS failure, until a check succeeds again.
    rls_error_reported: bool,
}

fn name_matches(pattern: &str, name: &str) -> bool {
    pattern == "*" || pattern == name
}

/// The hub's state and its database connection.
pub struct Hub {
    config: CdcConfig,
    client: Option<Arc<Client>>,
    channels: HashMap<ChannelKey, ChannelSubs>,
    /// `(schema, table)` → channels with an exact subscription to it.
    by_table: HashMap<(String, String), HashSet<ChannelKey>>,
    /// Channels with a wildcard schema or table.
    wildcard: HashSet<ChannelKey>,
    /// Validated subscriptions waiting for the stream to go live before they are confirmed.
    unconfirmed: Vec<ChannelKey>,
    selectable: HashMap<(String, u32), Arc<Vec<bool>>>,
    statements: RlsStatements,
    position: DeliveredPosition,
    published: Option<Cached<Arc<Vec<TableName>>>>,
    tables: HashMap<TableName, Cached<Option<Arc<TableMeta>>>>,
}

/// Most transactions dispatched (and RLS-checked) together.
const MAX_BATCH: usize = 256;

/// How long catalog answers used to validate subscriptions are reused.
const CATALOG_TTL: Duration = Duration::from_secs(1);

impl Hub {
    pub fn new(config: CdcConfig, position: DeliveredPosition) -> Hub {
        Hub {
            position,
            published: None,
            tables: HashMap::new(),
            config,
            client: None,
            channels: HashMap::new(),
            by_table: HashMap::new(),
            wildcard: HashSet::new(),
            unconfirmed: Vec::new(),
            selectable: HashMap::new(),
            statements: RlsStatements::default(),
        }
    }

    /// Runs until every sender is gone.
    pub async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<HubCommand>,
        mut transactions: mpsc::Receiver<Transaction>,
        mut live: watch::Receiver<bool>,
        delivered: watch::Sender<u64>,
    ) {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => {
                        let is_live = *live.borrow();
                        self.handle(command, is_live).await;
                    }
                    None => return,
                },
                txn = transactions.recv() => match txn {
                    Some(txn) => {
                        // Take what else is waiting, so a busy stream is checked and sent in batches.
                        let mut batch = vec![txn];
                        while batch.len() < MAX_BATCH {
                            match transactions.try_recv() {
                                Ok(more) => batch.push(more),
                                Err(_) => break,
                            }
                        }
                        let end_lsn = batch.last().map_or(0, |t| t.end_lsn);
                        self.dispatch(&batch).await;
                        if let Err(error) = self.position.store(end_lsn) {
                            tracing::error!(%error, "cannot record the delivered position");
                        }
                        delivered.send_replace(end_lsn);
                    }
                    None => return,
                },
                changed = live.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let is_live = *live.borrow();
                    if is_live {
                        self.confirm_unconfirmed();
                    }
                }
            }
        }
    }

    /// The hub's database connection, reconnected when it dropped.
    async fn client(&mut self) -> Result<Arc<Client>, String> {
        if let Some(client) = self.client.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        self.statements = RlsStatements::default();
        self.client = None;
        let client = Arc::new(catalog::connect(&self.config.database_url).await.map_err(|e| e.to_string())?);
        self.client = Some(client.clone());
        Ok(client)
    }

    async fn handle(&mut self, command: HubCommand, live: bool) {
        match command {
            HubCommand::Subscribe(request) => self.subscribe(*request, live).await,
            HubCommand::Unsubscribe { conn, topic } => self.remove(&(conn, topic)),
            HubCommand::RelationChanged { oid } => {
                self.selectable.retain(|(_, table), _| *table != oid);
                self.tables.clear();
                self.statements.forget(oid);
            }
        }
    }

    fn remove(&mut self, key: &ChannelKey) {
        if self.channels.remove(key).is_some() {
            for set in self.by_table.values_mut() {
                set.remove(key);
            }
            self.by_table.retain(|_, set| !set.is_empty());
            self.wildcard.remove(key);
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
        for entry in &entries {
            let (schema, table) = (&entry.params.schema, &entry.params.table);
            if schema == "*" || table == "*" {
                self.wildcard.insert(key.clone());
            } else {
                self.by_table.entry((schema.clone(), table.clone())).or_default().insert(key.clone());
            }
        }
        let claims = &request.claims;
        let viewer = Viewer {
            role: claims.role.clone(),
            claims_json: serde_json::Value::Object(claims.all.clone()).to_string(),
            sub: claims.sub.clone(),
        };
        self.channels
            .insert(key.clone(), ChannelSubs { request, entries, viewer, rls_error_reported: false });
        if live {
            self.confirm(&key);
        } else {
            self.unconfirmed.push(key);
        }
    }

    fn confirm(&self, key: &ChannelKey) {
        if let Some(subs) = self.channels.get(key) {
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
    async fn validate(&mut self, request: &SubscribeRequest) -> Result<Vec<Entry>, SubscribeError> {
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
            entries.push(Entry { id: *id, params });
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
        let key = (role.to_owned(), table.oid);
        if let Some(cached) = self.selectable.get(&key) {
            return Ok(cached.clone());
        }
        let client = self.client().await?;
        let flags = catalog::selectable_columns(&client, role, table).await.map_err(|e| match e {
            CdcError::Postgres(e) => pg_error_text(&e),
            other => other.to_string(),
        })?;
        let flags = Arc::new(flags);
        self.selectable.insert(key, flags.clone());
        Ok(flags)
    }

    /// The channels (and their matching subscription ids, by `select`) that a change goes to.
    fn match_change(&self, change: &Change) -> Vec<(ChannelKey, SelectGroups)> {
        let table = &change.table;
        let exact = self.by_table.get(&(table.schema.clone(), table.name.clone()));
        let mut matched = Vec::new();
        for key in exact.into_iter().flatten().chain(self.wildcard.iter()) {
            let Some(subs) = self.channels.get(key) else { continue };
            let mut groups: SelectGroups = Vec::new();
            for entry in &subs.entries {
                let p = &entry.params;
                if !p.event.matches(change.kind.as_str())
                    || !name_matches(&p.schema, &table.schema)
                    || !name_matches(&p.table, &table.name)
                    || !matching::matches(&p.filters, |column| change.filter_value(column))
                {
                    continue;
                }
                match groups.iter_mut().find(|(select, _)| *select == p.select) {
                    Some((_, ids)) => ids.push(entry.id),
                    None => groups.push((p.select.clone(), vec![entry.id])),
                }
            }
            if !groups.is_empty() {
                matched.push((key.clone(), groups));
            }
        }
        matched
    }

    /// Matches, checks and delivers a batch of transactions, in commit order. RLS is asked once per
    /// (table, distinct claims) for the whole batch, so its cost grows with claim sets, not subscribers
    /// or changes.
    async fn dispatch(&mut self, txns: &[Transaction]) {
        let changes: Vec<(&Change, &str)> =
            txns.iter().flat_map(|t| t.changes.iter().map(move |c| (c, &*t.commit_timestamp))).collect();
        let mut matched: Vec<(usize, ChannelKey, SelectGroups)> = Vec::new();
        for (index, (change, _)) in changes.iter().enumerate() {
            for (key, groups) in self.match_change(change) {
                matched.push((index, key, groups));
            }
        }
        if matched.is_empty() {
            return;
        }
        let needs_rls = |c: &Change| c.table.rls && c.kind != ChangeKind::Delete && c.table.has_primary_key();
        let mut asks: RlsAsks = HashMap::new();
        for (index, key, _) in &matched {
            let change = changes[*index].0;
            let (Some(subs), true) = (self.channels.get(key), needs_rls(change)) else { continue };
            if let Some(pk) = change.primary_key() {
                let ask = asks
                    .entry((change.table.oid, subs.viewer.clone()))
                    .or_insert_with(|| (change.table.clone(), Vec::new()));
                ask.1.push(pk);
            }
        }
        let mut visible: RlsAnswers = HashMap::new();
        if !asks.is_empty() {
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
        }
        for (ask, (table, mut pks)) in asks {
            pks.sort();
            pks.dedup();
            let answer = match self.client().await {
                Ok(client) => self
                    .statements
                    .visible_rows(&client, &table, &pks, &ask.1)
                    .await
                    .map_err(|e| pg_error_text(&e)),
                Err(error) => Err(error),
            };
            visible.insert(ask, answer);
        }
        let mut data: HashMap<(usize, Projection), Arc<str>> = HashMap::new();
        for (index, key, groups) in matched {
            let (change, commit_timestamp) = changes[index];
            let Some(viewer) = self.channels.get(&key).map(|s| s.viewer.clone()) else { continue };
            if needs_rls(change) {
                let pk = change.primary_key();
                match (visible.get(&(change.table.oid, viewer.clone())), pk) {
                    (Some(Ok(rows)), Some(pk)) if rows.contains(&pk) => self.rls_ok(&key),
                    (Some(Err(error)), _) => {
                        let error = error.clone();
                        self.rls_failed(&key, &error);
                        continue;
                    }
                    _ => continue,
                }
            }
            let selectable = match self.selectable(&viewer.role, &change.table).await {
                Ok(flags) => flags,
                Err(error) => {
                    self.rls_failed(&key, &error);
                    continue;
                }
            };
            let Some(subs) = self.channels.get(&key) else { continue };
            for (select, ids) in groups {
                let projection = Projection { selectable: selectable.to_vec(), select };
                let max_record_bytes = self.config.max_record_bytes;
                let data_json = data
                    .entry((index, projection.clone()))
                    .or_insert_with(|| {
                        change.data_json(commit_timestamp, &projection, max_record_bytes).into()
                    })
                    .clone();
                deliver(&subs.request, &ids, &data_json);
            }
        }
    }

    fn rls_ok(&mut self, key: &ChannelKey) {
        if let Some(subs) = self.channels.get_mut(key) {
            subs.rls_error_reported = false;
        }
    }

    /// Tells a subscriber (once) that its checks fail; nobody else is affected.
    fn rls_failed(&mut self, key: &ChannelKey, error: &str) {
        let Some(subs) = self.channels.get_mut(key) else { return };
        if subs.rls_error_reported {
            return;
        }
        subs.rls_error_reported = true;
        tracing::warn!(conn = key.0, topic = %key.1, %error, "rls check failed");
        let message = format!("Row Level Security check failed for this subscription: {error}");
        let r = &subs.request;
        let payload = system::payload(Extension::PostgresChanges, false, &message, Some(&r.sub_topic));
        let frame = server::channel_push(r.vsn, r.join_ref.as_deref(), &r.topic, "system", &payload);
        r.outbox.do_send(Deliver { frame: frame.into(), received_at: None });
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

/// A database error as a person reads it (`tokio_postgres` only says "db error").
fn pg_error_text(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => error.to_string(),
    }
}

fn deliver(request: &SubscribeRequest, ids: &[u32], data_json: &str) {
    let ids_json = serde_json::to_string(ids).expect("ids serialise");
    let payload = format!("{{\"ids\":{ids_json},\"data\":{data_json}}}");
    let frame: WireFrame = server::fastlane(request.vsn, &request.topic, "postgres_changes", &payload).into();
    request.outbox.do_send(Deliver { frame, received_at: None });
}
