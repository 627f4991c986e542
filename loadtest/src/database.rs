//! The `cdc` scenario's database side, over tokio-postgres: the idempotent setup of the load table and
//! the inserter.
//!
//! Setup (as a superuser): `public.lt_cdc (id bigserial primary key, owner uuid, sent_ns bigint, body
//! text)` in the publication, roles `anon`/`authenticated` with SELECT on it, `auth.uid()` as Supabase
//! defines it (created only when missing), the policy `owner = auth.uid()` for `authenticated`, and
//! Row Level Security switched on or off for the run.
//!
//! The inserter sends one statement per transaction (`--batch` rows) on a fixed schedule, stamping each
//! row with the client clock (`sent_ns`), the run tag (`body`) and an owner taken round-robin from the
//! users.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use tokio::time::{timeout, Instant};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use crate::payload::now_unix_nanos;
use crate::report::{latency_histogram, ErrorCounts};
use crate::schedule::Pacer;

/// The load table, `public.lt_cdc`.
pub const TABLE: &str = "lt_cdc";

/// A statement that takes longer than this is abandoned and inserting stops (its outcome is unknown).
const INSERT_TIMEOUT: Duration = Duration::from_secs(10);

/// User `i`'s id: a fixed UUID, the same in every run (`00000000-0000-4000-8000-000000000001`, …).
pub fn user_id(i: usize) -> String {
    format!("00000000-0000-4000-8000-{:012x}", i + 1)
}

/// `config.postgres_changes` of every subscriber: INSERTs into the load table.
pub fn bindings_json() -> String {
    format!(r#"[{{"event":"INSERT","schema":"public","table":"{TABLE}"}}]"#)
}

/// Connects within `deadline`; the connection runs on its own task.
pub async fn connect(url: &str, deadline: Duration) -> anyhow::Result<Client> {
    let (client, connection) = timeout(deadline, tokio_postgres::connect(url, NoTls))
        .await
        .context("timed out connecting to --database-url")?
        .context("connecting to --database-url")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("database connection ended: {e}");
        }
    });
    Ok(client)
}

/// Roles `anon` and `authenticated` (created only when missing) and `auth.uid()` as Supabase defines
/// it (created only when missing, so a Supabase project's own is kept): what policies written for
/// Supabase need on a bare PostgreSQL. Idempotent; run as a superuser.
pub const AUTH_SQL: &str = r#"
do $auth$ begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then create role anon nologin noinherit; end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
end $auth$;
create schema if not exists auth;
grant usage on schema auth to anon, authenticated;
do $auth$ begin
  if to_regprocedure('auth.uid()') is null then
    create function auth.uid() returns uuid language sql stable as $uid$
      select nullif(coalesce(current_setting('request.jwt.claim.sub', true),
                             (current_setting('request.jwt.claims', true)::jsonb ->> 'sub')), '')::uuid
    $uid$;
  end if;
end $auth$;
grant execute on function auth.uid() to anon, authenticated;
"#;

/// The setup script for `publication` with RLS on or off. The publication name must be a plain
/// identifier (letters, digits, `_`), as it is spliced into the SQL.
pub fn setup_sql(publication: &str, rls: bool) -> anyhow::Result<String> {
    if publication.is_empty()
        || publication.len() > 63
        || !publication.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        bail!("--publication must be a plain identifier (letters, digits, _)");
    }
    let switch = if rls { "enable" } else { "disable" };
    Ok(format!(
        r#"
create table if not exists public.{TABLE} (
  id bigserial primary key, owner uuid not null, sent_ns bigint not null, body text);
do $setup$ begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then create role anon nologin noinherit; end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_publication where pubname = '{publication}') then
    create publication "{publication}";
  end if;
  if not exists (select 1 from pg_publication_tables
                 where pubname = '{publication}' and schemaname = 'public' and tablename = '{TABLE}') then
    alter publication "{publication}" add table public.{TABLE};
  end if;
end $setup$;
grant usage on schema public to anon, authenticated;
grant select on public.{TABLE} to anon, authenticated;
{AUTH_SQL}
drop policy if exists {TABLE}_owner on public.{TABLE};
create policy {TABLE}_owner on public.{TABLE} for select to authenticated using (owner = auth.uid());
alter table public.{TABLE} {switch} row level security;
"#
    ))
}

/// Runs the setup script.
pub async fn setup(client: &Client, publication: &str, rls: bool) -> anyhow::Result<()> {
    client.batch_execute(&setup_sql(publication, rls)?).await.context("setting up the load table")
}

/// `insert … values (…), (…) returning id, owner` for `batch` rows: parameters are (owner, sent_ns,
/// body) per row.
pub fn insert_sql(batch: usize) -> String {
    let rows: Vec<String> = (0..batch)
        .map(|i| format!("(${}::text::uuid, ${}::int8, ${}::text)", 3 * i + 1, 3 * i + 2, 3 * i + 3))
        .collect();
    format!(
        "insert into public.{TABLE} (owner, sent_ns, body) values {} returning id, owner::text",
        rows.join(", ")
    )
}

/// What the inserter does.
#[derive(Debug, Clone)]
pub struct InsertPlan {
    /// Rows per second.
    pub rate: f64,
    /// Rows per transaction (one statement each).
    pub batch: usize,
    pub duration: Duration,
    /// Owners, round-robin.
    pub users: Vec<String>,
    pub run_tag: String,
}

impl InsertPlan {
    /// Time between transactions.
    pub fn period(&self) -> Duration {
        Duration::from_secs_f64(self.batch as f64 / self.rate)
    }
}

/// What the inserter did.
#[derive(Debug, Clone)]
pub struct InsertResult {
    /// Committed rows per owner (user index).
    pub inserted_per_user: Vec<u64>,
    /// `(id, owner)` of every committed row.
    pub rows: Vec<(i64, usize)>,
    pub transactions: u64,
    /// The insert window: the duration, or longer when the database fell behind.
    pub elapsed: Duration,
    /// Statement round trip (send → commit acknowledged), µs.
    pub round_trip_us: Histogram<u64>,
    pub errors: ErrorCounts,
}

fn insert_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("insert error: {}", db.message()),
        None if e.is_closed() => "insert error: connection closed".into(),
        None => format!("insert error: {e}"),
    }
}

/// Inserts at `plan.rate` for `plan.duration` on `client` (transactions at fixed instants; a late one is
/// sent at once, so the schedule catches up after a stall).
pub async fn insert(client: &Client, plan: &InsertPlan) -> InsertResult {
    let mut result = InsertResult {
        inserted_per_user: vec![0; plan.users.len()],
        rows: Vec::new(),
        transactions: 0,
        elapsed: Duration::ZERO,
        round_trip_us: latency_histogram(),
        errors: ErrorCounts::new(),
    };
    let statement = match client.prepare(&insert_sql(plan.batch)).await {
        Ok(statement) => statement,
        Err(e) => {
            *result.errors.entry(insert_error(&e)).or_default() += 1;
            return result;
        }
    };
    let user_index: HashMap<&str, usize> =
        plan.users.iter().enumerate().map(|(i, u)| (u.as_str(), i)).collect();
    let mut pacer = Pacer::new(plan.period(), plan.duration);
    let mut row = 0usize;
    while pacer.next().await.is_some() {
        let first = row;
        row += plan.batch;
        let sent_ns = i64::try_from(now_unix_nanos()).unwrap_or(i64::MAX);
        let params: Vec<&(dyn ToSql + Sync)> = (first..first + plan.batch)
            .flat_map(|r| [&plan.users[r % plan.users.len()] as &(dyn ToSql + Sync), &sent_ns, &plan.run_tag])
            .collect();
        let sent = Instant::now();
        match timeout(INSERT_TIMEOUT, client.query(&statement, &params)).await {
            Ok(Ok(rows)) => {
                result
                    .round_trip_us
                    .saturating_record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
                result.transactions += 1;
                for row in rows {
                    let (id, owner): (i64, String) = (row.get(0), row.get(1));
                    match user_index.get(owner.as_str()) {
                        Some(&u) => {
                            result.inserted_per_user[u] += 1;
                            result.rows.push((id, u));
                        }
                        None => {
                            *result.errors.entry("insert returned an unknown owner".into()).or_default() += 1
                        }
                    }
                }
            }
            Ok(Err(e)) => {
                *result.errors.entry(insert_error(&e)).or_default() += 1;
                if client.is_closed() {
                    break;
                }
            }
            Err(_) => {
                *result
                    .errors
                    .entry("insert timeout (outcome unknown); inserting stopped".into())
                    .or_default() += 1;
                break;
            }
        }
    }
    result.elapsed = pacer.elapsed();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_fixed_uuids() {
        assert_eq!(user_id(0), "00000000-0000-4000-8000-000000000001");
        assert_eq!(user_id(254), "00000000-0000-4000-8000-0000000000ff");
        assert_eq!(user_id(9).len(), 36);
    }

    #[test]
    fn bindings_name_the_table() {
        let v: serde_json::Value = serde_json::from_str(&bindings_json()).unwrap();
        assert_eq!(v, serde_json::json!([{"event": "INSERT", "schema": "public", "table": "lt_cdc"}]));
    }

    #[test]
    fn insert_statement_numbers_its_parameters() {
        assert_eq!(
            insert_sql(1),
            "insert into public.lt_cdc (owner, sent_ns, body) values ($1::text::uuid, $2::int8, $3::text) \
             returning id, owner::text"
        );
        assert!(insert_sql(3).contains(", ($7::text::uuid, $8::int8, $9::text) returning"));
    }

    #[test]
    fn setup_switches_rls_and_checks_the_publication() {
        let on = setup_sql("supabase_realtime", true).unwrap();
        assert!(on.contains("alter table public.lt_cdc enable row level security"));
        assert!(on.contains(r#"alter publication "supabase_realtime" add table public.lt_cdc"#));
        assert!(on.contains("using (owner = auth.uid())"));
        let off = setup_sql("supabase_realtime", false).unwrap();
        assert!(off.contains("alter table public.lt_cdc disable row level security"));
        assert!(setup_sql("x'; drop table y; --", true).is_err());
        assert!(setup_sql("", true).is_err());
    }

    #[test]
    fn period_follows_rate_and_batch() {
        let plan = InsertPlan {
            rate: 1_000.0,
            batch: 10,
            duration: Duration::from_secs(1),
            users: vec![user_id(0)],
            run_tag: "t".into(),
        };
        assert_eq!(plan.period(), Duration::from_millis(10));
    }
}
