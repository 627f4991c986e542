//! What a node checks before it takes a Postgres Changes message another node shipped.
//!
//! Whatever a follower takes from a peer ends up in its hub, its subscribers' sockets and its recorded
//! position (`REALTIME_DATA_DIR/cdc-<slot>.lsn`). Peer links may be authenticated, but a peer can still
//! be buggy, stale (a deposed leader still shipping) or compromised, so a shipped message is taken only
//! when:
//! - it comes from the node raft names as the current leader ([`check_sender`]); a deposed leader's
//!   late transactions are not needed: the new leader resumes from the slot's confirmed position;
//! - a transaction's position moves forward within the sender's stream (`end_lsn > prev`) and is not
//!   past what PostgreSQL has written ([`check_position`]): no leader could have decoded a commit
//!   beyond it, and a position past it, once recorded, would make the node drop every real change up
//!   to it, even after a restart;
//! - each change names a relation the catalog resolves, with that schema and name, columns it has,
//!   and one cell per column ([`reconcile`]). The change then carries the catalog's view of the table
//!   (primary key, RLS), not the sender's, so a peer cannot turn RLS off. Changes that fail are dropped
//!   from their transaction, which is kept with its position: a table dropped right after its change
//!   is legitimate, and dropping the whole transaction would make the node ask for the same replay
//!   forever.
//!
//! Every rejection is a [`Rejection`], logged with the peer (at most once per peer and reason per
//! [`LOG_EVERY`]; the rest at debug) and counted in `realtime_cdc_rejected_total{reason}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use realtime_cluster::{Leadership, NodeId};
use realtime_proto::postgres::change::{Change, Transaction};
use realtime_proto::postgres::table::{ColumnMeta, TableMeta};
use thiserror::Error;
use tokio_postgres::Client;

use super::catalog;
use super::error::CdcError;
use crate::metrics::{metrics, CdcRejected};

/// Rejections of one kind from one peer are logged at warn at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a shipped message (or one change of it) was not taken.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejection {
    #[error("sent by a node that is not the raft leader (the leader is {leader:?})")]
    NotLeader { leader: Option<String> },
    #[error("transaction position {end_lsn} is not after its predecessor {prev}")]
    Backwards { prev: u64, end_lsn: u64 },
    #[error("transaction position {end_lsn} is past PostgreSQL's WAL position {wal}")]
    BeyondWal { end_lsn: u64, wal: u64 },
    #[error("relation {oid} ({schema}.{table}) is not a table the catalog knows by that oid and name")]
    UnknownRelation { oid: u32, schema: String, table: String },
    #[error("relation {oid} has no column {column:?} (or not of type {typname})")]
    UnknownColumn { oid: u32, column: String, typname: String },
    #[error("a row of relation {oid} has {cells} cells for {columns} columns")]
    MalformedRow { oid: u32, cells: usize, columns: usize },
    #[error("the catalog could not be asked: {0}")]
    Unverifiable(String),
    #[error("undecodable: {0}")]
    Undecodable(String),
    #[error("delivered position {lsn} is past this node's stream ({taken})")]
    DeliveredAhead { lsn: u64, taken: u64 },
}

impl Rejection {
    pub fn reason(&self) -> CdcRejected {
        match self {
            Rejection::NotLeader { .. } => CdcRejected::NotLeader,
            Rejection::Backwards { .. } => CdcRejected::Backwards,
            Rejection::BeyondWal { .. } => CdcRejected::BeyondWal,
            Rejection::UnknownRelation { .. } => CdcRejected::UnknownRelation,
            Rejection::UnknownColumn { .. } => CdcRejected::UnknownColumn,
            Rejection::MalformedRow { .. } => CdcRejected::MalformedRow,
            Rejection::Unverifiable(_) => CdcRejected::Unverifiable,
            Rejection::Undecodable(_) => CdcRejected::Undecodable,
            Rejection::DeliveredAhead { .. } => CdcRejected::DeliveredAhead,
        }
    }
}

/// Shipped messages are taken only from the node raft names as leader (this node included: a node
/// that leads takes no one's stream but its own).
pub fn check_sender(from: &NodeId, leadership: &Leadership) -> Result<(), Rejection> {
    match &leadership.leader {
        Some(leader) if leader == from => Ok(()),
        leader => Err(Rejection::NotLeader { leader: leader.as_ref().map(|l| l.0.clone()) }),
    }
}

/// A shipped transaction's position: after its predecessor in the stream (`prev`, 0 for the first of
/// a stream) and not past `wal`, PostgreSQL's WAL position as last read ([`Verifier`] reads it again
/// before it rejects a position past it).
pub fn check_position(prev: u64, end_lsn: u64, wal: u64) -> Result<(), Rejection> {
    if end_lsn == 0 || (prev != 0 && end_lsn <= prev) {
        return Err(Rejection::Backwards { prev, end_lsn });
    }
    if end_lsn > wal {
        return Err(Rejection::BeyondWal { end_lsn, wal });
    }
    Ok(())
}

/// The change's table as this node's catalog knows it (`catalog`: the table with the change's oid,
/// `None` if there is none), in the column order the change's rows use. The sender's schema, name,
/// columns and types must agree with the catalog; primary keys and RLS are taken from the catalog.
pub fn reconcile(shipped: &TableMeta, catalog: Option<&TableMeta>) -> Result<TableMeta, Rejection> {
    let unknown = || Rejection::UnknownRelation {
        oid: shipped.oid,
        schema: shipped.schema.clone(),
        table: shipped.name.clone(),
    };
    let catalog = catalog.ok_or_else(unknown)?;
    if catalog.oid != shipped.oid || catalog.schema != shipped.schema || catalog.name != shipped.name {
        return Err(unknown());
    }
    let columns = shipped
        .columns
        .iter()
        .map(|column| match catalog.column(&column.name) {
            Some(known) if known.typname == column.typname => Ok(known.clone()),
            _ => Err(Rejection::UnknownColumn {
                oid: shipped.oid,
                column: column.name.clone(),
                typname: column.typname.clone(),
            }),
        })
        .collect::<Result<Vec<ColumnMeta>, Rejection>>()?;
    Ok(TableMeta { columns, rls: catalog.rls, ..shipped.clone() })
}

/// Every row of `change` has one cell per column of its table.
pub fn check_shape(change: &Change) -> Result<(), Rejection> {
    let columns = change.table.columns.len();
    let rows = change.new.iter().map(Vec::len).chain(change.old.iter().map(|old| old.cells.len()));
    for cells in rows {
        if cells != columns {
            return Err(Rejection::MalformedRow { oid: change.table.oid, cells, columns });
        }
    }
    Ok(())
}

/// The change with its table replaced by the catalog's view ([`reconcile`]), or why it is dropped.
pub fn admit(mut change: Change, catalog: Option<&TableMeta>) -> Result<Change, Rejection> {
    check_shape(&change)?;
    change.table = Arc::new(reconcile(&change.table, catalog)?);
    Ok(change)
}

/// How long a catalog answer about a relation is reused (a relation change from the leader drops it
/// at once).
const CATALOG_TTL: Duration = Duration::from_secs(1);

/// The database side of the checks: a connection of its own, the catalog's tables by oid and the
/// last WAL position read (read again only when a position is past it).
pub struct Verifier {
    database_url: String,
    client: Option<Client>,
    tables: HashMap<u32, (Instant, Option<Arc<TableMeta>>)>,
    wal: u64,
}

impl Verifier {
    pub fn new(database_url: &str) -> Verifier {
        Verifier { database_url: database_url.to_owned(), client: None, tables: HashMap::new(), wal: 0 }
    }

    /// A relation's definition changed: ask the catalog again.
    pub fn forget(&mut self, oid: u32) {
        self.tables.remove(&oid);
    }

    fn unverifiable(&mut self, error: CdcError) -> Rejection {
        // A failed connection is made again at the next question.
        self.client = None;
        Rejection::Unverifiable(match error {
            CdcError::Postgres(e) => crate::db::pg_error_text(&e),
            other => other.to_string(),
        })
    }

    async fn client(&mut self) -> Result<&Client, Rejection> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            match catalog::connect(&self.database_url).await {
                Ok(client) => self.client = Some(client),
                Err(error) => return Err(self.unverifiable(error)),
            }
        }
        self.client.as_ref().ok_or_else(|| Rejection::Unverifiable("no connection".into()))
    }

    /// [`check_position`], reading PostgreSQL's WAL position again when `end_lsn` is past the last one.
    pub async fn position(&mut self, prev: u64, end_lsn: u64) -> Result<(), Rejection> {
        if let Err(Rejection::BeyondWal { .. }) = check_position(prev, end_lsn, self.wal) {
            let read = catalog::wal_position(self.client().await?).await;
            match read {
                Ok(wal) => self.wal = self.wal.max(wal),
                Err(error) => return Err(self.unverifiable(error)),
            }
        }
        check_position(prev, end_lsn, self.wal)
    }

    async fn table(&mut self, oid: u32) -> Result<Option<Arc<TableMeta>>, Rejection> {
        if let Some((at, table)) = self.tables.get(&oid) {
            if at.elapsed() < CATALOG_TTL {
                return Ok(table.clone());
            }
        }
        let read = catalog::table_by_oid(self.client().await?, oid).await;
        match read {
            Ok(table) => {
                self.tables.insert(oid, (Instant::now(), table.clone()));
                Ok(table)
            }
            Err(error) => Err(self.unverifiable(error)),
        }
    }

    /// Checks a shipped transaction: `Err` rejects all of it (its position, or the catalog could not be
    /// asked); otherwise the changes that pass ([`admit`]) and why the others were dropped.
    pub async fn transaction(
        &mut self,
        prev: u64,
        mut txn: Transaction,
    ) -> Result<(Transaction, Vec<Rejection>), Rejection> {
        self.position(prev, txn.end_lsn).await?;
        let mut admitted = Vec::with_capacity(txn.changes.len());
        let mut dropped = Vec::new();
        for change in std::mem::take(&mut txn.changes) {
            let table = self.table(change.table.oid).await?;
            match admit(change, table.as_deref()) {
                Ok(change) => admitted.push(change),
                Err(rejection) => dropped.push(rejection),
            }
        }
        txn.changes = admitted;
        Ok((txn, dropped))
    }
}

/// Logs and counts rejections; warns at most once per peer and reason per [`LOG_EVERY`].
#[derive(Default)]
pub struct Rejections {
    warned: HashMap<(NodeId, CdcRejected), Instant>,
}

impl Rejections {
    pub fn record(&mut self, from: &NodeId, rejection: &Rejection) {
        let reason = rejection.reason();
        metrics().cdc_rejected(reason);
        let now = Instant::now();
        let due =
            self.warned.get(&(from.clone(), reason)).is_none_or(|at| now.duration_since(*at) >= LOG_EVERY);
        if due {
            self.warned.insert((from.clone(), reason), now);
            tracing::warn!(peer = %from, reason = reason.as_str(), %rejection, "Postgres Changes message from a peer rejected");
        } else {
            tracing::debug!(peer = %from, reason = reason.as_str(), %rejection, "Postgres Changes message from a peer rejected");
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use realtime_proto::postgres::change::{Cell, ChangeKind, OldRow};

    use super::*;

    fn column(name: &str, typname: &str, primary_key: bool) -> ColumnMeta {
        ColumnMeta { name: name.into(), typname: typname.into(), sql_type: typname.into(), primary_key }
    }

    fn table(columns: Vec<ColumnMeta>, rls: bool) -> TableMeta {
        TableMeta { oid: 16384, schema: "public".into(), name: "todos".into(), columns, rls }
    }

    fn change(table: TableMeta, new: Vec<Cell>) -> Change {
        Change { kind: ChangeKind::Insert, table: Arc::new(table), new: Some(new), old: None }
    }

    fn text(value: &'static str) -> Cell {
        Cell::Text(Bytes::from_static(value.as_bytes()))
    }

    #[test]
    fn only_the_raft_leader_is_heard() {
        let leader = NodeId("node-0".into());
        let view = Leadership { leader: Some(leader.clone()), term: 3, is_me: false };
        assert_eq!(check_sender(&leader, &view), Ok(()));
        assert_eq!(
            check_sender(&NodeId("node-1".into()), &view),
            Err(Rejection::NotLeader { leader: Some("node-0".into()) })
        );
        let none = Leadership::default();
        assert_eq!(check_sender(&leader, &none), Err(Rejection::NotLeader { leader: None }));
    }

    #[test]
    fn positions_move_forward_and_stay_within_the_wal() {
        assert_eq!(check_position(0, 100, 100), Ok(()));
        assert_eq!(check_position(50, 100, 200), Ok(()));
        assert_eq!(check_position(100, 100, 200), Err(Rejection::Backwards { prev: 100, end_lsn: 100 }));
        assert_eq!(check_position(150, 100, 200), Err(Rejection::Backwards { prev: 150, end_lsn: 100 }));
        assert_eq!(check_position(0, 0, 200), Err(Rejection::Backwards { prev: 0, end_lsn: 0 }));
        assert_eq!(
            check_position(0, u64::MAX, 200),
            Err(Rejection::BeyondWal { end_lsn: u64::MAX, wal: 200 })
        );
    }

    #[test]
    fn the_catalog_decides_keys_and_rls_and_must_know_every_column() {
        let catalog = table(vec![column("id", "int8", true), column("title", "text", false)], true);
        // The sender claims no primary key and no RLS: the catalog's view wins.
        let shipped = table(vec![column("id", "int8", false), column("title", "text", false)], false);
        let reconciled = reconcile(&shipped, Some(&catalog)).unwrap();
        assert!(reconciled.rls);
        assert!(reconciled.has_primary_key());
        // Unknown oid, another name, an unknown column, another type.
        assert!(matches!(reconcile(&shipped, None), Err(Rejection::UnknownRelation { oid: 16384, .. })));
        let renamed = TableMeta { name: "users".into(), ..catalog.clone() };
        assert!(matches!(reconcile(&shipped, Some(&renamed)), Err(Rejection::UnknownRelation { .. })));
        let extra = table(vec![column("id", "int8", true), column("secret", "text", false)], true);
        assert!(matches!(reconcile(&extra, Some(&catalog)), Err(Rejection::UnknownColumn { .. })));
        let retyped = table(vec![column("id", "text", true)], true);
        assert!(matches!(reconcile(&retyped, Some(&catalog)), Err(Rejection::UnknownColumn { .. })));
        // A subset of the columns, in the sender's order (the rows' layout), is fine.
        let subset = table(vec![column("title", "text", false)], true);
        assert_eq!(reconcile(&subset, Some(&catalog)).unwrap().columns, vec![column("title", "text", false)]);
    }

    #[test]
    fn rows_must_have_one_cell_per_column() {
        let catalog = table(vec![column("id", "int8", true), column("title", "text", false)], false);
        let ok = change(catalog.clone(), vec![text("1"), Cell::Null]);
        assert!(admit(ok, Some(&catalog)).is_ok());
        let short = change(catalog.clone(), vec![text("1")]);
        assert_eq!(
            admit(short, Some(&catalog)).unwrap_err(),
            Rejection::MalformedRow { oid: 16384, cells: 1, columns: 2 }
        );
        let mut bad_old = change(catalog.clone(), vec![text("1"), Cell::Null]);
        bad_old.old = Some(OldRow { full: true, cells: vec![] });
        assert!(matches!(admit(bad_old, Some(&catalog)), Err(Rejection::MalformedRow { cells: 0, .. })));
    }
}
