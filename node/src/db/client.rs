//! Opening a regular (non-replication) PostgreSQL connection, bounded in every wait, and database errors as
//! a person reads them. The pools here, the CDC pipeline and the resumable writer all connect this way.

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::Client;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("DATABASE_URL is not usable: {0}")]
    Url(String),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("connecting to the database took longer than {0:?}")]
    Timeout(Duration),
}

/// How long opening a database connection may take, start-up and authentication included (a paused
/// server completes the TCP handshake and then never answers).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one TCP connect may take (a SYN nobody answers is resent after 1 s, 3 s, 7 s…).
const SOCKET_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// About how long a connection whose peer stopped answering (its packets are not acknowledged, or
/// keepalive probes get no answer) stays open.
pub const DEAD_PEER: Duration = Duration::from_secs(15);

/// Connects a regular (non-replication) client; the connection runs on its own task.
///
/// Every wait on it is bounded, so a database that vanished (a cut network, a paused server) fails
/// the caller instead of hanging it: the connect is bounded by [`CONNECT_TIMEOUT`], and TCP
/// keepalives plus `TCP_USER_TIMEOUT` end a connection whose peer stopped answering within about
/// [`DEAD_PEER`] (a `DATABASE_URL` that sets its own values keeps them).
pub async fn connect(database_url: &str) -> Result<Client, ConnectError> {
    let mut config =
        tokio_postgres::Config::from_str(database_url).map_err(|e| ConnectError::Url(e.to_string()))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(SOCKET_CONNECT_TIMEOUT);
    }
    if config.get_keepalives_idle() == tokio_postgres::Config::new().get_keepalives_idle() {
        config
            .keepalives(true)
            .keepalives_idle(DEAD_PEER / 3)
            .keepalives_interval(DEAD_PEER / 6)
            .keepalives_retries(3);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(DEAD_PEER);
    }
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(tokio_postgres::NoTls))
        .await
        .map_err(|_| ConnectError::Timeout(CONNECT_TIMEOUT))??;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "postgres connection ended");
        }
    });
    Ok(client)
}

/// A database error as a person reads it (`tokio_postgres` alone only says "db error").
pub fn pg_error_text(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => error.to_string(),
    }
}
