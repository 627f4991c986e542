//! Named load scenarios. Each one is a clap subcommand with its own arguments and prints a table.
//!
//! - [`fanout`]: N receivers on M channels, publishers broadcasting at a fixed total rate; measures
//!   connect+join latency, delivery latency and completeness, and server memory per connection.
//! - [`cdc`]: K Postgres Changes subscribers (with or without RLS), rows inserted at a fixed rate;
//!   measures insert/commit → client latency, changes decoded, authorised deliveries, leaks.
//! - [`presence`]: presence clients on every node of a cluster churning; measures how soon a change
//!   shows on the other nodes, whether every view ends identical, and a killed node's eviction time.
//! - [`failover`]: its own cluster, rows inserted steadily, the raft leader killed and restarted N
//!   times; measures the time to resume delivery and checks every row arrived exactly once, in order.
//! - [`private`]: private-channel joins (public baseline, RLS check uncached, cached) and database
//!   broadcast (`realtime.send` at a fixed rate); measures join and commit → client latency, losses.
//! - [`inbox`]: the notifications inbox API: REST insert → `notification.new` latency, one at a time,
//!   and GraphQL list latency for a user with many notifications.
//! - [`room`]: one presence room of 10,000 members: the cost of a late join (reply and
//!   `presence_state` time and bytes) in a quiet room and under a churn of joins, the presence frames
//!   and bytes every idle member receives per second during the churn, and broadcast latency.
//! - [`compare`]: this server, a FastAPI and a Socket.IO server through the same broadcast scenario,
//!   each pinned to one core; prints the side-by-side and ratio tables, writes a CSV and an SVG plot.

pub mod cdc;
pub mod compare;
pub mod failover;
pub mod fanout;
pub mod inbox;
pub mod presence;
pub mod private;
pub mod room;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use realtime_proto::Vsn;

use crate::client::Endpoint;

use crate::ipc::JoinedReport;
use crate::pool::WorkerSlice;

/// Parses flattened clap arguments (a scenario's, a worker's) from `argv` without the program name,
/// as the command line would: for the tests of each scenario.
#[cfg(test)]
pub fn parse_args<A: clap::Args>(argv: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>) -> A {
    let argv: Vec<std::ffi::OsString> =
        std::iter::once("test".into()).chain(argv.into_iter().map(Into::into)).collect();
    let matches = A::augment_args(clap::Command::new("test")).get_matches_from(argv);
    A::from_arg_matches(&matches).expect("arguments parse")
}

/// [`parse_args`] for a scenario that talks to the database: a secret and a database URL, then `extra`.
#[cfg(test)]
pub fn parse_db_args<A: clap::Args>(extra: &[&str]) -> A {
    parse_args(["--jwt-secret=s", "--database-url=postgres://x@h/db"].iter().chain(extra))
}
use crate::report::{merge_errors, ErrorCounts};

/// Totals of the workers' connect (or subscribe) phase.
pub struct JoinTotals<'a> {
    pub ok: &'a mut u64,
    pub failed: &'a mut u64,
    pub errors: &'a mut ErrorCounts,
    pub latency: &'a mut Histogram<u64>,
}

/// Folds the workers' connect-phase reports into `totals`; returns joined connections per bucket (a
/// channel for `fanout`, a user for `cdc`). A worker that failed counts all its connections as failed.
pub fn fold_joined(
    totals: JoinTotals<'_>,
    slices: &[WorkerSlice],
    joined: Vec<Result<JoinedReport, String>>,
    buckets: usize,
) -> Vec<u64> {
    let mut per_bucket = vec![0; buckets];
    for (slice, outcome) in slices.iter().zip(joined) {
        match outcome {
            Ok(worker) => {
                *totals.ok += worker.ok;
                *totals.failed += worker.failed;
                worker.connect_join_us.add_to(totals.latency);
                merge_errors(totals.errors, &worker.errors);
                for (total, n) in per_bucket.iter_mut().zip(&worker.joined_per_channel) {
                    *total += n;
                }
            }
            Err(e) => {
                eprintln!("{e}");
                *totals.failed += slice.connections as u64;
                *totals.errors.entry(format!("worker failed: {e}")).or_default() += slice.connections as u64;
            }
        }
    }
    per_bucket
}

/// Resolves every `--target` (one per node of a cluster), naming the one that fails.
pub async fn endpoints(targets: &[String], token: &str, vsn: Vsn) -> anyhow::Result<Vec<Endpoint>> {
    let mut endpoints = Vec::with_capacity(targets.len());
    for target in targets {
        endpoints
            .push(Endpoint::resolve(target, token, vsn).await.with_context(|| format!("--target {target}"))?);
    }
    Ok(endpoints)
}
