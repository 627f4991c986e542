//! Errors of the CDC pipeline. Each says which stage failed; the consumer reconnects with backoff on
//! any of them, and none of them reaches a client as anything but a `system` message.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CdcError {
    #[error("DATABASE_URL is not usable: {0}")]
    Url(String),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("replication stream: {0}")]
    Replication(#[from] pgwire_replication::PgWireError),
    #[error("pgoutput: {0}")]
    Decode(String),
    #[error("relation {0} was not announced before its changes")]
    UnknownRelation(u32),
    #[error("the change hub stopped")]
    HubGone,
    #[error(
        "nothing came on the replication stream for {0:?} (a heartbeat is written every third of it): the \
         connection is taken as dead (REALTIME_REPLICATION_TIMEOUT_MS)"
    )]
    Silent(std::time::Duration),
    #[error("{step} took longer than {after:?}")]
    Timeout { step: &'static str, after: std::time::Duration },
    #[error("this node's previous replication connection (walsender pid {0}) still holds the slot")]
    PreviousSession(i32),
    #[error("state file {path}: {source}")]
    State { path: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    SlotConflict(#[from] SlotConflict),
}

/// Why the replication slot (`REALTIME_SLOT`) cannot be streamed by this node. The text is what the
/// operator reads in the log and on `/readyz`: which slot, who has it, what to change.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SlotConflict {
    #[error(
        "replication slot \"{slot}\" belongs to database \"{database}\", not to \"{current}\" (this node's \
         DATABASE_URL); slot names are shared by every database of the server: give this node a slot of its \
         own with REALTIME_SLOT (--slot), or drop the other one"
    )]
    OtherDatabase { slot: String, database: String, current: String },
    #[error(
        "replication slot \"{slot}\" is streamed by another client ({holder}); only one client may stream a \
         slot: give each node (or cluster) a slot of its own with REALTIME_SLOT (--slot)"
    )]
    InUse { slot: String, holder: String },
    #[error(
        "replication slot \"{slot}\" is a {kind} slot, not a logical pgoutput one: set REALTIME_SLOT (--slot) \
         to another name, or drop it"
    )]
    WrongKind { slot: String, kind: String },
}

impl From<crate::db::ConnectError> for CdcError {
    fn from(error: crate::db::ConnectError) -> Self {
        use crate::db::ConnectError;
        match error {
            ConnectError::Url(url) => CdcError::Url(url),
            ConnectError::Postgres(error) => CdcError::Postgres(error),
            ConnectError::Timeout(after) => CdcError::Timeout { step: "connecting to the database", after },
        }
    }
}
