//! The janitor of `realtime.messages`: keeps a partition ready for today and the next days (an insert
//! with no partition for its day fails, and `realtime.send` turns that into a mere WARNING, so the
//! message would be lost), and drops the partitions whose whole day is older than the retention
//! (`REALTIME_MESSAGES_RETENTION_HOURS`, 72 h by default, as Supabase keeps them).
//!
//! Dropping a day's partition is how Supabase expires messages too: instant, and no dead rows to
//! vacuum. Only partitions named `messages_YYYY_MM_DD` are ever dropped; a default partition or one
//! named otherwise is left alone. A pass runs at start-up (before the node serves) and then every
//! [`SWEEP_INTERVAL`]; it holds [`super::LOCK_KEY`], so the nodes of a cluster take turns and the
//! later ones find nothing to do.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::partitions::{self, Day};
use super::SchemaError;

/// How often a pass runs. Partitions exist days ahead, so an hourly pass has ample slack.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);
/// How soon a pass that failed (database unreachable) is tried again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(60);

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Partitions created (unqualified names).
    pub created: Vec<String>,
    /// Partitions dropped.
    pub dropped: Vec<String>,
    /// Partitions that could not be created or dropped, with PostgreSQL's reason; the rest of the
    /// pass went on.
    pub failed: Vec<(String, String)>,
}

const PARTITIONS: &str = "select c.relname::text from pg_catalog.pg_inherits i \
    join pg_catalog.pg_class c on c.oid = i.inhrelid \
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
    where i.inhparent = 'realtime.messages'::regclass and n.nspname = 'realtime'";

/// One pass at the database's current time.
pub async fn sweep(client: &mut Client, retention: Duration) -> Result<Sweep, SchemaError> {
    let row = client
        .query_one("select floor(extract(epoch from now()))::bigint", &[])
        .await
        .map_err(|source| SchemaError::Janitor { step: "read the clock", source })?;
    sweep_at(client, row.get(0), retention).await
}

/// One pass as if it were `now_unix_seconds` (UTC): creates the missing partitions from yesterday to
/// [`partitions::DAYS_AHEAD`] days ahead, drops the expired ones.
pub async fn sweep_at(
    client: &mut Client,
    now_unix_seconds: i64,
    retention: Duration,
) -> Result<Sweep, SchemaError> {
    let failed = |step| move |source| SchemaError::Janitor { step, source };
    let mut tx = client.transaction().await.map_err(failed("begin"))?;
    tx.execute("select pg_advisory_xact_lock($1)", &[&super::LOCK_KEY])
        .await
        .map_err(failed("advisory lock"))?;
    let existing: Vec<String> = tx
        .query(PARTITIONS, &[])
        .await
        .map_err(failed("list partitions"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = partitions::plan(now_unix_seconds, retention, &existing);
    let mut sweep = Sweep::default();
    let steps = plan
        .create
        .iter()
        .map(|day| (day.partition_name(), day.create_sql(), true))
        .chain(plan.drop.iter().map(|name| (name.clone(), drop_sql(name), false)));
    for (name, sql, create) in steps {
        // A savepoint each, so one refusal (say, a default partition already holding rows of that
        // day) does not undo the rest.
        let savepoint = tx.savepoint("partition").await.map_err(failed("savepoint"))?;
        match savepoint.batch_execute(&sql).await {
            Ok(()) => {
                savepoint.commit().await.map_err(failed("release savepoint"))?;
                let done = if create { &mut sweep.created } else { &mut sweep.dropped };
                done.push(name);
            }
            Err(error) => {
                let reason =
                    error.as_db_error().map_or_else(|| error.to_string(), |db| db.message().to_owned());
                tracing::warn!(partition = %name, create, %reason, "messages partition not changed");
                sweep.failed.push((name, reason));
                savepoint.rollback().await.map_err(failed("roll back to savepoint"))?;
            }
        }
    }
    tx.commit().await.map_err(failed("commit"))?;
    if !sweep.created.is_empty() || !sweep.dropped.is_empty() {
        tracing::info!(created = ?sweep.created, dropped = ?sweep.dropped, "realtime.messages partitions");
    }
    Ok(sweep)
}

/// `drop table` for a partition whose name [`Day::from_partition_name`] accepted (so it needs no
/// quoting; quoted anyway).
fn drop_sql(name: &str) -> String {
    debug_assert!(Day::from_partition_name(name).is_some());
    format!("drop table if exists realtime.\"{}\"", name.replace('"', "\"\""))
}

/// The running janitor; [`JanitorHandle::shutdown`] stops it.
#[derive(Debug)]
pub struct JanitorHandle {
    stop_tx: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl JanitorHandle {
    /// Stops the janitor (a pass in progress is abandoned; its transaction rolls back) and waits for
    /// it to end.
    pub async fn shutdown(self) {
        let _ = self.stop_tx.send(true);
        let _ = self.task.await;
    }
}

/// Starts the janitor: a pass every `interval` (the first one after `interval`: start-up runs its own
/// pass first), each on a fresh connection, so a database restart costs at most one pass.
pub fn spawn(database_url: String, retention: Duration, interval: Duration) -> JanitorHandle {
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut wait = interval;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop_rx.changed() => return,
            }
            let pass = async {
                let mut client = super::connect(&database_url).await?;
                sweep(&mut client, retention).await
            };
            let outcome = tokio::select! {
                outcome = pass => outcome,
                _ = stop_rx.changed() => return,
            };
            wait = match outcome {
                Ok(_) => interval,
                Err(error) => {
                    tracing::warn!(%error, "realtime.messages janitor pass failed; retrying");
                    RETRY_INTERVAL.min(interval)
                }
            };
        }
    });
    JanitorHandle { stop_tx, task }
}
