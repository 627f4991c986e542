//! The versioned migrations that give a database the `realtime` schema Supabase projects have, and
//! the bookkeeping that runs each of them once.
//!
//! Our own table, `realtime.node_schema_migrations`, records which of *our* versions ran; it is kept
//! apart from Supabase's `realtime.schema_migrations` (Ecto's), whose versions mean something else.
//! Every migration runs in its own transaction holding [`super::LOCK_KEY`] as a transaction-level
//! advisory lock and checks its version again under it, so nodes that start together run each one
//! exactly once. The SQL itself is idempotent too, and only ever creates what is missing: a
//! database that already has the objects (a Supabase project) keeps them, rows included.

use tokio_postgres::Client;

use super::{SchemaError, LOCK_KEY};

/// One versioned step. Versions only grow; a released migration's SQL is never edited (a change is a
/// new version), because databases that ran it will not run it again.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in the order they run.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "roles_and_schema", sql: include_str!("sql/0001_roles_and_schema.sql") },
    Migration { version: 2, name: "messages", sql: include_str!("sql/0002_messages.sql") },
    Migration { version: 3, name: "functions", sql: include_str!("sql/0003_functions.sql") },
    Migration { version: 4, name: "notifications", sql: include_str!("sql/0004_notifications.sql") },
];

/// Where our bookkeeping lives.
pub const MIGRATIONS_TABLE: &str = "realtime.node_schema_migrations";

/// What the database had before this node touched it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Found {
    /// `realtime.schema_migrations` exists: the reference server (a Supabase project) manages this
    /// database's `realtime` schema too.
    pub supabase: bool,
    /// `realtime.messages` existed before our first migration.
    pub messages: bool,
}

/// The outcome of [`apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub found: Found,
    /// Versions this call ran (empty when the database was up to date).
    pub ran: Vec<i64>,
}

const BOOTSTRAP: &str = "
do $bootstrap$
begin
  if to_regnamespace('realtime') is null then
    create schema realtime;
  end if;
  if to_regclass('realtime.node_schema_migrations') is null then
    create table realtime.node_schema_migrations (
      version bigint primary key,
      name text not null,
      applied_at timestamptz not null default now()
    );
    comment on table realtime.node_schema_migrations is
      'realtime-node: the versions of its migrations that ran on this database';
  end if;
end
$bootstrap$";

/// Runs every migration this database has not run yet. Safe to call from several nodes at once.
pub async fn apply(client: &mut Client) -> Result<Applied, SchemaError> {
    let setup = |step| move |source| SchemaError::Setup { step, source };
    let tx = client.transaction().await.map_err(setup("begin"))?;
    tx.execute("select pg_advisory_xact_lock($1)", &[&LOCK_KEY]).await.map_err(setup("advisory lock"))?;
    let row = tx
        .query_one(
            "select to_regclass('realtime.schema_migrations') is not null, \
                    to_regclass('realtime.messages') is not null",
            &[],
        )
        .await
        .map_err(setup("look for an existing realtime schema"))?;
    tx.batch_execute(BOOTSTRAP).await.map_err(setup("create realtime.node_schema_migrations"))?;
    let done = applied_versions(&tx).await?;
    tx.commit().await.map_err(setup("commit"))?;
    // Our table was just created if nothing is recorded: what was there came from elsewhere.
    let found = Found { supabase: row.get(0), messages: row.get(1) && done.is_empty() };
    if found.supabase || found.messages {
        tracing::info!(
            supabase = found.supabase,
            messages = found.messages,
            "existing realtime schema found: reusing it, adding only what is missing"
        );
    }

    let mut ran = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
        if run_once(client, migration).await? {
            tracing::info!(version = migration.version, name = migration.name, "applied schema migration");
            ran.push(migration.version);
        }
    }
    Ok(Applied { found, ran })
}

/// The versions recorded as applied.
pub async fn applied_versions(client: &impl tokio_postgres::GenericClient) -> Result<Vec<i64>, SchemaError> {
    let rows = client
        .query("select version from realtime.node_schema_migrations order by version", &[])
        .await
        .map_err(|source| SchemaError::Setup { step: "read realtime.node_schema_migrations", source })?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Runs `migration` unless another node ran it meanwhile; `true` if this call ran it.
async fn run_once(client: &mut Client, migration: &Migration) -> Result<bool, SchemaError> {
    let Migration { version, name, sql } = *migration;
    let failed = |source| SchemaError::Migration { version, name, source };
    let tx = client.transaction().await.map_err(failed)?;
    tx.execute("select pg_advisory_xact_lock($1)", &[&LOCK_KEY]).await.map_err(failed)?;
    let recorded = tx
        .query_opt("select 1 from realtime.node_schema_migrations where version = $1", &[&version])
        .await
        .map_err(failed)?;
    if recorded.is_some() {
        return Ok(false);
    }
    tx.batch_execute(sql).await.map_err(failed)?;
    tx.execute(
        "insert into realtime.node_schema_migrations (version, name) values ($1, $2)",
        &[&version, &name],
    )
    .await
    .map_err(failed)?;
    tx.commit().await.map_err(failed)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_grow_and_names_are_unique() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        let mut names: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), MIGRATIONS.len());
    }

    #[test]
    fn migrations_never_drop_anything() {
        for m in MIGRATIONS {
            let sql = m.sql.to_lowercase();
            for forbidden in ["drop ", "truncate ", "delete from", "create or replace"] {
                assert!(!sql.contains(forbidden), "migration {} contains `{forbidden}`", m.version);
            }
        }
    }
}
