//! Subscribing: a channel's `postgres_changes` entries are checked as the reference's subscription
//! trigger checks them (parameters, the publication has the table, filter columns and value types,
//! `select` columns), against catalog answers cached for a moment so a join storm asks once; then
//! confirmed at once when the stream is live, or when it goes live.

use std::sync::Arc;
use std::time::{Duration, Instant};

use realtime_proto::postgres::matching;
use realtime_proto::postgres::table::TableMeta;
use realtime_proto::postgres::{parse_params, SubscriptionParams};
use realtime_proto::server;
use realtime_proto::system::{self, Extension};
use tokio_postgres::Client;

use super::{ChannelSubs, Hub, SUBSCRIBED};
use crate::cdc::catalog;
use crate::cdc::error::CdcError;
use crate::cdc::handle::{SubscribeError, SubscribeErrorKind, SubscribeOutcome, SubscribeRequest};
use crate::cdc::rls::Viewer;
use crate::cdc::subscriptions::{name_matches, ChannelKey, NewEntry};

/// How long catalog answers used to validate subscriptions are reused.
const CATALOG_TTL: Duration = Duration::from_secs(1);

impl Hub {
    pub(super) async fn subscribe(&mut self, request: SubscribeRequest, live: bool) {
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

    pub(super) fn confirm_unconfirmed(&mut self) {
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
