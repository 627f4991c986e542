//! # The `realtime` schema, owned by the node
//!
//! Supabase apps talk to Realtime through SQL as much as through the socket: private channels are
//! authorized by RLS policies on `realtime.messages` that call `realtime.topic()` (PROTOCOL.md §6.2),
//! and the database broadcasts with `realtime.send`, `realtime.send_binary` and
//! `realtime.broadcast_changes` (§3.7), whose rows replay reads back (§3.8). On Supabase the reference
//! server installs these objects; here the node does, so a plain PostgreSQL works like a Supabase
//! project and the policies and triggers written for one work unchanged.
//!
//! With `DATABASE_URL` set, start-up calls [`prepare`] before CDC starts: it applies the versioned
//! [`migrations`] (idempotent, one advisory lock, so several nodes may start at once), makes today's
//! and the next days' partitions, then leaves the [`janitor`] running to keep doing that and to drop
//! the partitions older than the retention. A database that already has the schema (a Supabase
//! project) is detected and reused: only what is missing is created, nothing is dropped or replaced.
//!
//! - [`migrations`]: the versioned SQL (`sql/*.sql`) and the bookkeeping that runs each once.
//! - [`partitions`]: pure date arithmetic: partition names, which days to create, which expired.
//! - [`janitor`]: the periodic pass that creates and drops partitions.

pub mod janitor;
pub mod migrations;
pub mod partitions;

use std::time::Duration;

use futures_util::StreamExt;
use thiserror::Error;
use tokio_postgres::{AsyncMessage, Client, NoTls};

pub use janitor::{JanitorHandle, Sweep};
pub use migrations::{Applied, Found, Migration, MIGRATIONS};

/// The advisory lock (per database) that migrations and janitor passes hold, so concurrent nodes
/// take turns. The bytes spell "rt-schem".
pub const LOCK_KEY: i64 = 0x7274_2d73_6368_656d;

/// Why the schema could not be prepared or maintained.
#[derive(Debug, Error)]
pub enum SchemaError {
    #[error("cannot connect to PostgreSQL to prepare the realtime schema: {}", reason(.0))]
    Connect(#[source] tokio_postgres::Error),
    #[error("cannot prepare the realtime schema ({step}): {}", reason(.source))]
    Setup { step: &'static str, source: tokio_postgres::Error },
    #[error("realtime schema migration {version} ({name}) failed: {}", reason(.source))]
    Migration { version: i64, name: &'static str, source: tokio_postgres::Error },
    #[error("realtime.messages partitions ({step}): {}", reason(.source))]
    Janitor { step: &'static str, source: tokio_postgres::Error },
}

/// PostgreSQL's own message when there is one (tokio-postgres displays a server error as just
/// "db error").
fn reason(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => error.to_string(),
    }
}

/// Applies the migrations, runs a first janitor pass (so today's partition exists before any
/// socket is served), and starts the janitor. An error here should stop the start-up: private
/// channels and `realtime.send` would not work.
pub async fn prepare(database_url: &str, retention: Duration) -> Result<JanitorHandle, SchemaError> {
    let mut client = connect(database_url).await?;
    let applied = migrations::apply(&mut client).await?;
    let sweep = janitor::sweep(&mut client, retention).await?;
    tracing::info!(
        migrations_run = ?applied.ran,
        partitions_created = sweep.created.len(),
        partitions_dropped = sweep.dropped.len(),
        "realtime schema ready"
    );
    drop(client);
    Ok(janitor::spawn(database_url.to_owned(), retention, janitor::SWEEP_INTERVAL))
}

/// Connects; the connection runs on its own task, which logs the server's warnings (a migration
/// that could not add something to an existing table says so as a WARNING).
pub async fn connect(database_url: &str) -> Result<Client, SchemaError> {
    let (client, mut connection) =
        tokio_postgres::connect(database_url, NoTls).await.map_err(SchemaError::Connect)?;
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notice(notice)) if notice.severity() == "WARNING" => {
                    tracing::warn!(message = notice.message(), "postgres warning");
                }
                Ok(AsyncMessage::Notice(notice)) => {
                    tracing::debug!(message = notice.message(), "postgres notice");
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "postgres connection ended");
                    break;
                }
            }
        }
    });
    Ok(client)
}
