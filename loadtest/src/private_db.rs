//! The `private` scenario's database side, over tokio-postgres: the policies that authorise its
//! private channels, the database-broadcast inserter, and the figures only PostgreSQL knows (rows
//! that really landed in `realtime.messages`, how far the node's replication slot is behind, the pids
//! of the backends whose CPU time tells where a limit is).
//!
//! Policies (as a superuser, idempotent): `auth.uid()` and the roles from [`crate::database::AUTH_SQL`],
//! then `lt_private_read`: `authenticated` may read topics `load-%` when the token has a `sub`, for
//! broadcast and presence. That is the shape of a Supabase room policy (a topic pattern and a claim),
//! so the join check costs what a real one does: a probe insert, a select under the caller's role
//! with its claims set, a rollback.
//!
//! The inserter sends `select realtime.send(…)` from `--inserters` connections, each on its own
//! fixed-rate schedule ([`Pacer`]), `--batch` sends per statement (one transaction). Each send's
//! payload carries `clock_timestamp()` in milliseconds (µs precision) taken by PostgreSQL as the row
//! is built, the inserter's index, a sequence number per (inserter, topic), and the run tag; the
//! node adds the row id. Inserter `i`'s `g`-th send goes to channel `g mod M` with sequence number
//! `g div M` ([`assignment`]), so every (inserter, topic) stream is numbered 0, 1, 2, … in the order
//! its transactions commit (one connection commits in order), which subscribers check for losses,
//! repeats and reordering.

use std::time::Duration;

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use tokio::time::{timeout, Instant};
use tokio_postgres::Client;

use crate::database::AUTH_SQL;
use crate::report::{latency_histogram, ErrorCounts};
use crate::schedule::Pacer;

/// The event every database broadcast carries.
pub const EVENT: &str = "load";

/// A statement that takes longer than this is abandoned and that inserter stops (outcome unknown).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Most sends per statement.
pub const MAX_BATCH: usize = 1_000;

/// The policy script: what authorises the scenario's private channels.
pub fn policies_sql() -> String {
    format!(
        r#"{AUTH_SQL}
drop policy if exists lt_private_read on realtime.messages;
create policy lt_private_read on realtime.messages for select to authenticated
  using (realtime.topic() like 'load-%' and auth.uid() is not null
         and extension in ('broadcast', 'presence'));
"#
    )
}

/// Waits (bounded) until the node has applied its `realtime` schema, then installs the policies.
pub async fn setup(client: &Client, deadline: Instant) -> anyhow::Result<()> {
    loop {
        let row = client
            .query_one("select to_regclass('realtime.messages') is not null", &[])
            .await
            .context("looking for realtime.messages")?;
        if row.get::<_, bool>(0) {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "realtime.messages does not exist: is the node running with --database-url on this database?"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    client.batch_execute(&policies_sql()).await.context("creating the policies on realtime.messages")
}

/// One statement of `batch` sends: parameters are the inserter index (`$1`), the run tag (`$2`) and
/// arrays of topics (`$3`), sequence numbers (`$4`) and private flags (`$5`). `clock_timestamp()` is
/// evaluated per row, as each send is made.
pub fn send_sql() -> String {
    format!(
        "select realtime.send(\
           jsonb_build_object('ms', extract(epoch from clock_timestamp()) * 1000, 'p', $1::int4, \
                              's', m.seq, 'r', $2::text), \
           '{EVENT}', m.topic, m.private) \
         from unnest($3::text[], $4::int8[], $5::bool[]) as m(topic, seq, private)"
    )
}

/// Channel and sequence number of an inserter's `g`-th send over `channels` channels.
pub fn assignment(g: u64, channels: usize) -> (usize, u64) {
    let m = channels.max(1) as u64;
    ((g % m) as usize, g / m)
}

/// What one inserter does.
#[derive(Debug, Clone)]
pub struct SendPlan {
    /// This inserter's index (the `p` of its payloads).
    pub inserter: u32,
    /// Sends per second from this inserter.
    pub rate: f64,
    /// Sends per statement (transaction).
    pub batch: usize,
    pub duration: Duration,
    /// Sub-topics (`load-…`) of the channels, by channel index.
    pub topics: Vec<String>,
    /// Whether each channel is private.
    pub private: Vec<bool>,
    pub run_tag: String,
}

impl SendPlan {
    /// Time between statements.
    pub fn period(&self) -> Duration {
        Duration::from_secs_f64(self.batch as f64 / self.rate)
    }
}

/// What one inserter did.
#[derive(Debug, Clone)]
pub struct SendResult {
    /// Sends committed per channel.
    pub sent_per_channel: Vec<u64>,
    pub transactions: u64,
    /// Statements due by the schedule in the window (sent or not).
    pub due: u64,
    pub elapsed: Duration,
    /// Statement round trip (send → commit acknowledged), µs.
    pub round_trip_us: Histogram<u64>,
    /// How late each statement went out relative to its schedule, µs.
    pub lag_us: Histogram<u64>,
    pub errors: ErrorCounts,
}

fn send_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("send error: {}", db.message()),
        None if e.is_closed() => "send error: connection closed".into(),
        None => format!("send error: {e}"),
    }
}

/// Runs one inserter on `client` for `plan.duration`.
pub async fn send(client: &Client, plan: &SendPlan) -> SendResult {
    let channels = plan.topics.len();
    let mut result = SendResult {
        sent_per_channel: vec![0; channels],
        transactions: 0,
        due: crate::schedule::steps_in(plan.period(), plan.duration),
        elapsed: Duration::ZERO,
        round_trip_us: latency_histogram(),
        lag_us: latency_histogram(),
        errors: ErrorCounts::new(),
    };
    let statement = match client.prepare(&send_sql()).await {
        Ok(statement) => statement,
        Err(e) => {
            *result.errors.entry(send_error(&e)).or_default() += 1;
            return result;
        }
    };
    let inserter = i32::try_from(plan.inserter).unwrap_or(i32::MAX);
    // Sends still due when the window ends are dropped (they show as due, not sent): the run stays
    // bounded in time when the database cannot keep the rate.
    let mut pacer = Pacer::with_cutoff(plan.period(), plan.duration);
    let mut g = 0u64;
    while let Some(k) = pacer.next().await {
        result.lag_us.saturating_record(pacer.lag_us(k));
        let mut topics = Vec::with_capacity(plan.batch);
        let mut seqs = Vec::with_capacity(plan.batch);
        let mut private = Vec::with_capacity(plan.batch);
        let mut channels_of = Vec::with_capacity(plan.batch);
        for _ in 0..plan.batch {
            let (channel, seq) = assignment(g, channels);
            g += 1;
            topics.push(plan.topics[channel].clone());
            seqs.push(i64::try_from(seq).unwrap_or(i64::MAX));
            private.push(plan.private[channel]);
            channels_of.push(channel);
        }
        let sent = Instant::now();
        let outcome = timeout(
            SEND_TIMEOUT,
            client.execute(&statement, &[&inserter, &plan.run_tag, &topics, &seqs, &private]),
        )
        .await;
        match outcome {
            Ok(Ok(_)) => {
                result
                    .round_trip_us
                    .saturating_record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX));
                result.transactions += 1;
                for channel in channels_of {
                    result.sent_per_channel[channel] += 1;
                }
            }
            Ok(Err(e)) => {
                // The sequence numbers of a failed statement are gaps subscribers will see; the sends
                // are not counted as due to them.
                *result.errors.entry(send_error(&e)).or_default() += 1;
                if client.is_closed() {
                    break;
                }
            }
            Err(_) => {
                *result
                    .errors
                    .entry("send timeout (outcome unknown); this inserter stopped".into())
                    .or_default() += 1;
                break;
            }
        }
    }
    result.elapsed = pacer.elapsed();
    result
}

/// Rows of this run in `realtime.messages` per topic (`realtime.send` swallows its own failures
/// into a warning, so a committed call is not proof of a row).
pub async fn rows_per_topic(client: &Client, run_tag: &str) -> anyhow::Result<Vec<(String, u64)>> {
    let rows = client
        .query(
            "select topic, count(*) from realtime.messages \
             where extension = 'broadcast' and payload ->> 'r' = $1 group by topic",
            &[&run_tag],
        )
        .await
        .context("counting this run's rows in realtime.messages")?;
    Ok(rows.iter().map(|r| (r.get::<_, String>(0), u64::try_from(r.get::<_, i64>(1)).unwrap_or(0))).collect())
}

/// This connection's backend pid (its CPU time is the database's share of the inserting).
pub async fn backend_pid(client: &Client) -> Option<u32> {
    let row = client.query_one("select pg_backend_pid()", &[]).await.ok()?;
    u32::try_from(row.get::<_, i32>(0)).ok()
}

/// Pids of the WAL senders (the node's logical decoding runs in them).
pub async fn walsender_pids(client: &Client) -> Vec<u32> {
    match client.query("select pid from pg_stat_replication", &[]).await {
        Ok(rows) => rows.iter().filter_map(|r| u32::try_from(r.get::<_, i32>(0)).ok()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Bytes of WAL each logical slot has not confirmed yet: how far decoding and delivery are behind
/// the inserts.
pub async fn slot_lag_bytes(client: &Client) -> Vec<(String, i64)> {
    let sql = "select slot_name::text, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::int8 \
               from pg_replication_slots where slot_type = 'logical'";
    match client.query(sql, &[]).await {
        Ok(rows) => rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1))).collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_cycle_the_channels_with_a_sequence_per_channel() {
        let got: Vec<(usize, u64)> = (0..7).map(|g| assignment(g, 3)).collect();
        assert_eq!(got, vec![(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (0, 2)]);
        assert_eq!(assignment(5, 1), (0, 5));
        assert_eq!(assignment(5, 0), (0, 5));
    }

    #[test]
    fn policy_reads_load_topics_with_a_sub() {
        let sql = policies_sql();
        assert!(
            sql.contains("create policy lt_private_read on realtime.messages for select to authenticated")
        );
        assert!(sql.contains("realtime.topic() like 'load-%' and auth.uid() is not null"));
        assert!(sql.contains("create function auth.uid()"));
        assert!(sql.find("drop policy if exists lt_private_read") < sql.find("create policy"));
    }

    #[test]
    fn one_statement_sends_a_batch_stamped_per_row() {
        let sql = send_sql();
        assert!(sql.contains("realtime.send("));
        assert!(sql.contains("extract(epoch from clock_timestamp()) * 1000"));
        assert!(sql.contains("unnest($3::text[], $4::int8[], $5::bool[])"));
        assert!(sql.contains("'load', m.topic, m.private"));
    }

    #[test]
    fn period_follows_rate_and_batch() {
        let plan = SendPlan {
            inserter: 0,
            rate: 2_500.0,
            batch: 10,
            duration: Duration::from_secs(1),
            topics: vec!["load-a".into()],
            private: vec![true],
            run_tag: "t".into(),
        };
        assert_eq!(plan.period(), Duration::from_millis(4));
    }
}
