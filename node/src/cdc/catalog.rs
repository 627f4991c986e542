//! What the CDC pipeline reads from PostgreSQL's catalog: the publication's tables, a table's columns
//! (name, type, primary key), whether it has Row Level Security, and which columns a role may SELECT.
//! Plus the one-time setup: the publication and the permanent pgoutput slot.

use std::sync::Arc;
use std::time::Duration;

use realtime_proto::postgres::table::{quote_ident, ColumnMeta, TableMeta};
use tokio_postgres::Client;

use super::error::{CdcError, SlotConflict};

/// Connects a regular (non-replication) client for the CDC pipeline: [`crate::db::connect`], its error
/// as a [`CdcError`].
pub async fn connect(database_url: &str) -> Result<Client, CdcError> {
    Ok(crate::db::connect(database_url).await?)
}

/// Creates the publication (empty: users add their tables, as on Supabase) and the permanent slot if
/// they are missing.
pub async fn ensure_publication_and_slot(
    client: &Client,
    publication: &str,
    slot: &str,
) -> Result<(), CdcError> {
    let exists = client.query_opt("select 1 from pg_publication where pubname = $1", &[&publication]).await?;
    if exists.is_none() {
        client.batch_execute(&format!("create publication {}", quote_ident(publication))).await?;
        tracing::info!(publication, "created publication");
    }
    // Broadcast from the database: `realtime.messages` (the node's schema created it) in a publication
    // of its own, so the user's publication stays as they made it.
    let exists = client
        .query_opt(
            "select 1 from pg_publication where pubname = $1",
            &[&super::db_broadcast::MESSAGES_PUBLICATION],
        )
        .await?;
    if exists.is_none() {
        client.batch_execute(super::db_broadcast::CREATE_MESSAGES_PUBLICATION).await?;
        tracing::info!(publication = super::db_broadcast::MESSAGES_PUBLICATION, "created publication");
    } else {
        client.batch_execute(super::db_broadcast::ADD_NOTIFICATIONS).await?;
    }
    let exists =
        client.query_opt("select 1 from pg_replication_slots where slot_name = $1", &[&slot]).await?;
    if exists.is_none() {
        client.query("select pg_create_logical_replication_slot($1, 'pgoutput')", &[&slot]).await?;
        tracing::info!(slot, "created permanent replication slot");
    }
    Ok(())
}

/// What PostgreSQL says about a replication slot and the session that holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotState {
    /// The slot's database (`None`: a physical slot).
    pub database: Option<String>,
    /// This connection's database.
    pub current: String,
    pub slot_type: String,
    pub plugin: Option<String>,
    /// The backend streaming it, if any.
    pub active_pid: Option<i32>,
    pub holder_application: Option<String>,
    pub holder_address: Option<String>,
}

/// The `application_name` of this project's replication connections.
pub const APPLICATION_NAME: &str = "realtime_cdc";

/// Whether the slot is usable by this node. `takes_over`: in a cluster, a holder that is one of
/// this project's replication connections is a deposed CDC leader that has not noticed yet, which
/// [`take_slot`] ends; any other holder is a conflict.
pub fn slot_conflict(slot: &str, state: &SlotState, takes_over: bool) -> Option<SlotConflict> {
    if state.slot_type != "logical" || state.plugin.as_deref() != Some("pgoutput") {
        let kind = match &state.plugin {
            Some(plugin) if state.slot_type == "logical" => format!("logical ({plugin})"),
            _ => state.slot_type.clone(),
        };
        return Some(SlotConflict::WrongKind { slot: slot.to_owned(), kind });
    }
    if state.database.as_deref() != Some(state.current.as_str()) {
        return Some(SlotConflict::OtherDatabase {
            slot: slot.to_owned(),
            database: state.database.clone().unwrap_or_default(),
            current: state.current.clone(),
        });
    }
    let pid = state.active_pid?;
    let ours = state.holder_application.as_deref() == Some(APPLICATION_NAME);
    if takes_over && ours {
        return None;
    }
    let holder = format!(
        "pid {pid}, application \"{}\", address {}",
        state.holder_application.as_deref().unwrap_or(""),
        state.holder_address.as_deref().unwrap_or("local socket")
    );
    Some(SlotConflict::InUse { slot: slot.to_owned(), holder })
}

/// The slot's state (`None`: there is no such slot).
pub async fn slot_state(client: &Client, slot: &str) -> Result<Option<SlotState>, CdcError> {
    let row = client
        .query_opt(
            "select s.database::text, current_database()::text, s.slot_type::text, s.plugin::text, \
             s.active_pid, a.application_name::text, host(a.client_addr) \
             from pg_replication_slots s left join pg_stat_activity a on a.pid = s.active_pid \
             where s.slot_name = $1",
            &[&slot],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(SlotState {
        database: row.try_get(0)?,
        current: row.try_get(1)?,
        slot_type: row.try_get(2)?,
        plugin: row.try_get(3)?,
        active_pid: row.try_get(4)?,
        holder_application: row.try_get(5)?,
        holder_address: row.try_get(6)?,
    }))
}

/// Whether the slot can stream with `publications` (comma-separated): pgoutput loads publications
/// as of each change it decodes, so a publication created after the slot's restart point fails the
/// whole stream (`publication … does not exist`) until the slot has moved past its creation. That is
/// the case once, when a node that streamed before database broadcast existed creates its
/// publication; asked by decoding one change without consuming it.
pub async fn slot_can_stream(client: &Client, slot: &str, publications: &str) -> bool {
    let peek = "select count(*) from pg_logical_slot_peek_binary_changes($1, null, 1, \
                'proto_version', '1', 'publication_names', $2)";
    let answer = async {
        client.batch_execute("set statement_timeout = '10s'").await?;
        let result = client.query_one(peek, &[&slot, &publications]).await;
        client.batch_execute("reset statement_timeout").await?;
        result
    };
    match answer.await {
        Ok(_) => true,
        Err(error) if error.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT) => {
            tracing::warn!(slot, publications, error = %crate::db::pg_error_text(&error), "the slot predates a publication: streaming without it until it has moved past");
            false
        }
        // Anything else (the slot is busy, slow to decode): START_REPLICATION will tell.
        Err(_) => true,
    }
}

/// `(schema, table)` of every table in the publication.
pub async fn publication_tables(
    client: &Client,
    publication: &str,
) -> Result<Vec<(String, String)>, CdcError> {
    let rows = client
        .query(
            "select schemaname::text, tablename::text from pg_publication_tables where pubname = $1",
            &[&publication],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

const TABLE_BY_OID: &str = "select c.oid, n.nspname::text, c.relname::text, c.relrowsecurity \
    from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = $1 and c.relkind in ('r', 'p')";
const TABLE_BY_NAME: &str = "select c.oid, n.nspname::text, c.relname::text, c.relrowsecurity \
    from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = $1 and c.relname = $2 \
    and c.relkind in ('r', 'p')";
const COLUMNS: &str = "select a.attname::text, t.typname::text, format_type(a.atttypid, a.atttypmod), \
    exists(select 1 from pg_index i where i.indrelid = a.attrelid and i.indisprimary and a.attnum = any(i.indkey)) \
    from pg_attribute a join pg_type t on t.oid = a.atttypid \
    where a.attrelid = $1 and a.attnum > 0 and not a.attisdropped order by a.attnum";

async fn table_from_row(client: &Client, row: &tokio_postgres::Row) -> Result<TableMeta, CdcError> {
    // `try_get`: a value PostgreSQL answers as NULL is an error of this call, never a panic.
    let oid: u32 = row.try_get(0)?;
    let columns = client
        .query(COLUMNS, &[&oid])
        .await?
        .iter()
        .map(|r| {
            Ok(ColumnMeta {
                name: r.try_get(0)?,
                typname: r.try_get(1)?,
                sql_type: r.try_get(2)?,
                primary_key: r.try_get(3)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()?;
    Ok(TableMeta { oid, schema: row.try_get(1)?, name: row.try_get(2)?, columns, rls: row.try_get(3)? })
}

/// A table by its relation oid (as pgoutput names it).
pub async fn table_by_oid(client: &Client, oid: u32) -> Result<Option<Arc<TableMeta>>, CdcError> {
    match client.query_opt(TABLE_BY_OID, &[&oid]).await? {
        Some(row) => Ok(Some(Arc::new(table_from_row(client, &row).await?))),
        None => Ok(None),
    }
}

/// A table by name (as subscriptions name it).
pub async fn table_by_name(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<Option<Arc<TableMeta>>, CdcError> {
    match client.query_opt(TABLE_BY_NAME, &[&schema, &table]).await? {
        Some(row) => Ok(Some(Arc::new(table_from_row(client, &row).await?))),
        None => Ok(None),
    }
}

/// For each column of `table` (in order), whether `role` may SELECT it. `has_column_privilege` is
/// NULL for a relation or column that does not exist (a table dropped since the change was decoded):
/// such a column is not selectable.
pub async fn selectable_columns(
    client: &Client,
    role: &str,
    table: &TableMeta,
) -> Result<Vec<bool>, CdcError> {
    let names: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
    let row = client
        .query_one(
            "select array(select has_column_privilege($1, $2::oid, c, 'SELECT') \
             from unnest($3::text[]) with ordinality as u(c, i) order by i)",
            &[&role, &table.oid, &names],
        )
        .await?;
    let flags: Vec<Option<bool>> = row.try_get(0)?;
    Ok(flags.into_iter().map(|flag| flag.unwrap_or(false)).collect())
}

/// How far PostgreSQL has written its WAL (on a standby: replayed it): no commit that anyone decoded
/// from it can end past this, so a shipped position beyond it is forged or corrupt.
pub async fn wal_position(client: &Client) -> Result<u64, CdcError> {
    let row = client
        .query_one(
            "select (case when pg_is_in_recovery() then pg_last_wal_replay_lsn() else pg_current_wal_lsn() end \
             - '0/0'::pg_lsn)::int8",
            &[],
        )
        .await?;
    let lsn: Option<i64> = row.try_get(0)?;
    Ok(lsn.and_then(|lsn| u64::try_from(lsn).ok()).unwrap_or(0))
}

/// The slot's confirmed position (0 when it has none, or there is no such slot): a stream started
/// on it sends every transaction that ends after it.
pub async fn slot_confirmed(client: &Client, slot: &str) -> Result<u64, CdcError> {
    let row = client
        .query_opt(
            "select (confirmed_flush_lsn - '0/0'::pg_lsn)::int8 from pg_replication_slots where slot_name = $1",
            &[&slot],
        )
        .await?;
    let lsn: Option<i64> = match row {
        Some(row) => row.try_get(0)?,
        None => None,
    };
    Ok(lsn.and_then(|lsn| u64::try_from(lsn).ok()).unwrap_or(0))
}

/// Ends another session's hold on `slot` (a deposed CDC leader that has not noticed yet, e.g. one that
/// was paused); PostgreSQL allows one consumer per slot, so this fences it. `true` if one was ended.
/// The pid of the walsender streaming `slot`, if one does.
pub async fn slot_holder(client: &Client, slot: &str) -> Result<Option<i32>, CdcError> {
    let row = client
        .query_opt("select active_pid from pg_replication_slots where slot_name = $1", &[&slot])
        .await?;
    Ok(row.and_then(|row| row.get(0)))
}

/// Ends `pid` if it still streams `slot` (this node's own session that it gave up as dead, which
/// PostgreSQL has not noticed yet), and waits until the slot is free, polling every 100 ms for at
/// most `wait`; `true` once it is free.
pub async fn release_slot(client: &Client, slot: &str, pid: i32, wait: Duration) -> Result<bool, CdcError> {
    client
        .query(
            "select pg_terminate_backend(active_pid) from pg_replication_slots \
             where slot_name = $1 and active_pid = $2",
            &[&slot, &pid],
        )
        .await?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if slot_holder(client, slot).await? != Some(pid) {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn take_slot(client: &Client, slot: &str) -> Result<bool, CdcError> {
    let rows = client
        .query(
            "select pg_terminate_backend(s.active_pid) from pg_replication_slots s \
             join pg_stat_activity a on a.pid = s.active_pid \
             where s.slot_name = $1 and s.active and s.active_pid <> pg_backend_pid() and a.application_name = $2",
            &[&slot, &APPLICATION_NAME],
        )
        .await?;
    Ok(!rows.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usable() -> SlotState {
        SlotState {
            database: Some("app".into()),
            current: "app".into(),
            slot_type: "logical".into(),
            plugin: Some("pgoutput".into()),
            ..SlotState::default()
        }
    }

    #[test]
    fn a_slot_is_usable_only_in_its_database_of_the_right_kind_and_free() {
        assert_eq!(slot_conflict("s", &usable(), false), None);
        let elsewhere = SlotState { database: Some("other".into()), ..usable() };
        let conflict = slot_conflict("s", &elsewhere, false).unwrap();
        assert!(matches!(&conflict, SlotConflict::OtherDatabase { database, .. } if database == "other"));
        let text = conflict.to_string();
        assert!(text.contains("\"s\"") && text.contains("REALTIME_SLOT"), "{text}");
        let physical = SlotState { slot_type: "physical".into(), plugin: None, database: None, ..usable() };
        assert!(matches!(slot_conflict("s", &physical, false), Some(SlotConflict::WrongKind { .. })));
        let decoder = SlotState { plugin: Some("wal2json".into()), ..usable() };
        assert!(
            matches!(slot_conflict("s", &decoder, false), Some(SlotConflict::WrongKind { kind, .. }) if kind.contains("wal2json"))
        );
    }

    #[test]
    fn a_held_slot_is_taken_over_only_from_our_own_connections_in_a_cluster() {
        let held = |application: &str| SlotState {
            active_pid: Some(42),
            holder_application: Some(application.into()),
            holder_address: Some("10.0.0.7".into()),
            ..usable()
        };
        // A single node never ends another session: another node streams this slot.
        let conflict = slot_conflict("s", &held(APPLICATION_NAME), false).unwrap();
        assert!(conflict.to_string().contains("pid 42"), "{conflict}");
        // A cluster's new leader ends a deposed leader's connection, but no one else's.
        assert_eq!(slot_conflict("s", &held(APPLICATION_NAME), true), None);
        assert!(matches!(
            slot_conflict("s", &held("pg_recvlogical"), true),
            Some(SlotConflict::InUse { .. })
        ));
    }
}
