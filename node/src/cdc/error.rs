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
    #[error("state file {path}: {source}")]
    State { path: std::path::PathBuf, source: std::io::Error },
}
