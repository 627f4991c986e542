//! Scenario `cdc`: K Postgres Changes subscribers spread over worker processes, each joined to its own
//! channel `realtime:lt-cdc-<i>` with an INSERT binding on `public.lt_cdc` and the token of user
//! `i mod U` (role `authenticated`); then one database connection in this process inserts rows at a
//! fixed rate for `--duration` seconds, followed by a `--drain`.
//!
//! Measured: connect → `Subscribed to PostgreSQL` latency, rows inserted, changes the server decoded
//! (`realtime_cdc_changes_total` on its `/metrics`, before/after), deliveries expected vs received,
//! insert → client latency (`now - sent_ns`, the inserter's clock, same box) and commit → client
//! latency (`now - commit_timestamp`, millisecond precision), rows leaked to a subscriber that does not
//! own them (with `--rls`; must be 0), repeated or out-of-order rows, the rows that went missing (by
//! id: the inserter reads the ids back, workers count receipts per id), errors by kind, and the
//! server's RSS and CPU time when `--server-pid` is given.
//!
//! Expected deliveries: without RLS every subscriber sees every row (inserts × subscribers); with RLS
//! a row is visible to its owner only (Σ over users of rows owned × that user's subscribers).
//!
//! Phases, each with a deadline: set up the table → spawn workers → wait for every `joined` line →
//! settle, sample → insert → drain → sample → `stop` the workers and collect their `finished` lines.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use hdrhistogram::Histogram;
use realtime_proto::Vsn;
use tokio::time::{sleep, timeout, Instant};

use crate::cdc_worker::SECRET_ENV;
use crate::client::Endpoint;
use crate::database::{self, user_id, InsertPlan};
use crate::ipc::{expand_runs, FinishedReport, JoinedReport};
use crate::payload::now_unix_nanos;
use crate::pgchange::counter_total;
use crate::pool::{split, Pool, WorkerSlice};
use crate::report::{latency_histogram, merge_errors, CdcReport, CpuSample, ErrorCounts, LatencySummary};
use crate::rss::{busy_share, clock_ticks_per_second, read_cpu_ticks, read_machine_ticks, read_rss_kib};
use crate::scenario::fanout::{CONNECTIONS_PER_PROCESS, MAX_CONNECTIONS_PER_PROCESS};
use crate::scenario::{fold_joined, JoinTotals};
use crate::scrape::fetch_metrics;
use crate::token::now_unix_secs;
use crate::worker::ConnectArgs;

/// Pause between the last subscription and the idle samples.
const SETTLE: Duration = Duration::from_secs(1);
/// Extra time the parent gives a worker beyond its own connect-phase timeout.
const JOIN_GRACE: Duration = Duration::from_secs(15);
/// Time workers get to close their sockets and report after `stop`.
const FINISH_BUDGET: Duration = Duration::from_secs(15);
/// Connecting to the database, and running the setup script.
const DB_TIMEOUT: Duration = Duration::from_secs(30);
/// One `/metrics` request.
const METRICS_TIMEOUT: Duration = Duration::from_secs(5);
/// Most rows per statement (PostgreSQL allows 65,535 parameters; a row takes 3).
const MAX_BATCH: usize = 10_000;
/// The server's counter of decoded row changes.
const CHANGES_METRIC: &str = "realtime_cdc_changes_total";
/// Anomalous rows named in the table.
const ROW_EXAMPLES: usize = 10;

/// The topic of subscriber `i`.
pub fn topic(subscriber: usize) -> String {
    format!("realtime:lt-cdc-{subscriber}")
}

/// Arguments of `realtime-loadtest cdc`.
#[derive(Args, Debug, Clone)]
pub struct CdcArgs {
    /// Superuser URL of the database the server streams (the table, roles and policy are set up there).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// WebSocket endpoint (`apikey` and `vsn` are appended); `/metrics` is read from the same host:port.
    #[arg(long, default_value = "ws://127.0.0.1:4000/socket/websocket")]
    pub target: String,
    /// HS256 secret the server verifies tokens with.
    #[arg(long, env = "REALTIME_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// Subscriber connections (K), one channel each.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Rows inserted per second.
    #[arg(long, default_value_t = 1_000.0)]
    pub rate: f64,
    /// Seconds of inserting.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Seconds to keep receiving after the last insert.
    #[arg(long, default_value_t = 3)]
    pub drain: u64,
    /// Enable Row Level Security on the table (policy `owner = auth.uid()`); otherwise it is disabled.
    #[arg(long)]
    pub rls: bool,
    /// Users (U): subscriber i uses user i mod U's token, row n is owned by user n mod U.
    #[arg(long, default_value_t = 10)]
    pub users: usize,
    /// Rows per transaction.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Publication the server streams (the table is added to it).
    #[arg(long, default_value = "supabase_realtime")]
    pub publication: String,
    /// Seconds from the join reply to `system` `Subscribed to PostgreSQL`.
    #[arg(long, default_value_t = 20)]
    pub subscribe_timeout: u64,
    /// Serializer: 2.0.0 or 1.0.0 (changes are JSON text in both).
    #[arg(long, default_value = "2.0.0")]
    pub vsn: Vsn,
    /// Worker processes holding the subscribers; default ceil(subscribers / 5000).
    #[arg(long)]
    pub processes: Option<usize>,
    /// Server pid, to sample its RSS (/proc/<pid>/status) and CPU time (/proc/<pid>/stat).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Append the results as one CSV row to this file.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// The derived numbers of a run, validated.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    processes: usize,
}

impl Plan {
    fn new(args: &CdcArgs) -> anyhow::Result<Plan> {
        if args.subscribers == 0 || args.users == 0 {
            bail!("--subscribers and --users must be at least 1");
        }
        if !(args.rate > 0.0 && args.rate.is_finite()) {
            bail!("--rate must be a positive number");
        }
        if args.batch == 0 || args.batch > MAX_BATCH {
            bail!("--batch must be between 1 and {MAX_BATCH}");
        }
        if args.duration == 0 {
            bail!("--duration must be at least 1 second");
        }
        let processes = args.processes.unwrap_or_else(|| args.subscribers.div_ceil(CONNECTIONS_PER_PROCESS));
        if processes == 0 || processes > args.subscribers {
            bail!("--processes must be between 1 and --subscribers");
        }
        if args.subscribers.div_ceil(processes) > MAX_CONNECTIONS_PER_PROCESS {
            bail!("at most {MAX_CONNECTIONS_PER_PROCESS} subscribers per process (open-files limit): raise --processes");
        }
        Ok(Plan { processes })
    }
}

/// Deliveries a run should see. Without RLS every subscribed subscriber gets every row; with RLS a
/// subscriber gets exactly the rows its user owns.
pub fn expected_deliveries(inserted_per_user: &[u64], subscribed_per_user: &[u64], rls: bool) -> u64 {
    if rls {
        inserted_per_user.iter().zip(subscribed_per_user).map(|(i, s)| i * s).sum()
    } else {
        inserted_per_user.iter().sum::<u64>() * subscribed_per_user.iter().sum::<u64>()
    }
}

/// Rows whose receipts differ from what their subscribers should have got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowCheck {
    /// `(id, owner)` of rows no subscriber received though some should have.
    pub missed: Vec<(i64, usize)>,
    /// Rows some but not all of their subscribers received.
    pub short: Vec<(i64, usize)>,
    /// Rows received more often than they had subscribers (repeats).
    pub extra: Vec<(i64, usize)>,
    /// Ids received that this run did not insert.
    pub unknown: Vec<i64>,
}

/// Compares each inserted row's receipts (summed over workers) with its subscribers: every subscribed
/// subscriber without RLS, its owner's subscribers with RLS.
pub fn check_rows(
    inserted: &[(i64, usize)],
    mut receipts: HashMap<i64, u64>,
    subscribed_per_user: &[u64],
    rls: bool,
) -> RowCheck {
    let total: u64 = subscribed_per_user.iter().sum();
    let mut check = RowCheck::default();
    for &(id, user) in inserted {
        let expected = if rls { subscribed_per_user.get(user).copied().unwrap_or(0) } else { total };
        let got = receipts.remove(&id).unwrap_or(0);
        if got == 0 && expected > 0 {
            check.missed.push((id, user));
        } else if got < expected {
            check.short.push((id, user));
        } else if got > expected {
            check.extra.push((id, user));
        }
    }
    check.unknown = receipts.into_keys().collect();
    check.unknown.sort_unstable();
    check
}

/// The first few anomalous rows, for the table: `21601 missed (user 0)`.
fn row_examples(check: &RowCheck, limit: usize) -> Vec<String> {
    let tagged = |rows: &[(i64, usize)], what: &'static str| {
        rows.iter().map(move |(id, user)| format!("{id} {what} (user {user})")).collect::<Vec<_>>()
    };
    let mut out = tagged(&check.missed, "missed");
    out.extend(tagged(&check.short, "short"));
    out.extend(tagged(&check.extra, "repeated"));
    out.extend(check.unknown.iter().map(|id| format!("{id} not inserted")));
    out.truncate(limit);
    out
}

/// Runs the scenario and prints its table on stdout.
pub async fn run(args: CdcArgs) -> anyhow::Result<()> {
    let plan = Plan::new(&args)?;
    // Validates the target; its address is also where `/metrics` is read.
    let metrics_addr = Endpoint::resolve(&args.target, "-", args.vsn).await.context("--target")?.addr();
    let db = database::connect(&args.database_url, DB_TIMEOUT).await?;
    timeout(DB_TIMEOUT, database::setup(&db, &args.publication, args.rls))
        .await
        .context("setting up the load table timed out")??;
    eprintln!(
        "table public.{} ready in publication {} (RLS {})",
        database::TABLE,
        args.publication,
        on_off(args.rls)
    );
    let title = format!(
        "cdc: {} subscribers in {} processes, {} users, RLS {}, {} rows/s in transactions of {} for {} s (+{} s drain), vsn {}",
        args.subscribers,
        plan.processes,
        args.users,
        on_off(args.rls),
        args.rate,
        args.batch,
        args.duration,
        args.drain,
        args.vsn
    );
    let run_tag = format!("lt-{}-{}", std::process::id(), now_unix_nanos());
    let mut report = CdcReport { title, ..CdcReport::default() };
    report.rss.before = read_rss_kib(args.server_pid);

    eprintln!("spawning {} worker processes for {} subscribers", plan.processes, args.subscribers);
    let slices = split(args.subscribers, plan.processes);
    let common = worker_args(&args, &run_tag, now_unix_secs());
    let mut pool = Pool::spawn_with(
        "cdc-worker",
        &slices,
        &common,
        &args.connect.for_workers(plan.processes),
        &[(SECRET_ENV, args.jwt_secret.as_str())],
    )
    .context("spawning workers")?;
    let connect_started = Instant::now();
    let phase = Duration::from_secs(args.connect.connect_phase_timeout);
    let joined = pool.joined(Instant::now() + phase + JOIN_GRACE).await;
    let mut subscribe = latency_histogram();
    let subscribed_per_user = add_joined(&mut report, &mut subscribe, &slices, joined, args.users);
    report.subscribe = LatencySummary::of(&subscribe);
    eprintln!(
        "subscribe phase: {} ok, {} failed in {:.1} s",
        report.subscribers_ok,
        report.subscribers_failed,
        connect_started.elapsed().as_secs_f64()
    );
    sleep(SETTLE).await;
    report.rss.idle = read_rss_kib(args.server_pid);

    let changes_before = changes_decoded(metrics_addr, &mut report.errors).await;
    let cpu_before = read_cpu_ticks(args.server_pid);
    let machine_before = read_machine_ticks();
    let window_start = Instant::now();
    let insert_plan = InsertPlan {
        rate: args.rate,
        batch: args.batch,
        duration: Duration::from_secs(args.duration),
        users: (0..args.users).map(user_id).collect(),
        run_tag,
    };
    let inserted = database::insert(&db, &insert_plan).await;
    report.rows_inserted = inserted.inserted_per_user.iter().sum();
    report.transactions = inserted.transactions;
    report.insert_secs = inserted.elapsed.as_secs_f64();
    report.insert_round_trip = LatencySummary::of(&inserted.round_trip_us);
    report.deliveries_expected =
        expected_deliveries(&inserted.inserted_per_user, &subscribed_per_user, args.rls);
    merge_errors(&mut report.errors, &inserted.errors);
    eprintln!("inserted {} rows; draining {} s", report.rows_inserted, args.drain);
    sleep(Duration::from_secs(args.drain)).await;

    let changes_after = changes_decoded(metrics_addr, &mut report.errors).await;
    report.changes_decoded = changes_before.zip(changes_after).map(|(b, a)| a.saturating_sub(b));
    let window_secs = window_start.elapsed().as_secs_f64();
    report.cpu = cpu_before.zip(read_cpu_ticks(args.server_pid)).map(|(before, after)| CpuSample {
        secs: after.saturating_sub(before) as f64 / clock_ticks_per_second() as f64,
        window_secs,
    });
    report.machine = machine_before.zip(read_machine_ticks()).and_then(|((before, cores), (after, _))| {
        busy_share(Some(before), Some(after)).map(|share| (share * cores as f64, cores))
    });
    report.rss.end = read_rss_kib(args.server_pid);

    let mut insert_to_client = latency_histogram();
    let mut commit_to_client = latency_histogram();
    let mut receipts = HashMap::new();
    let finished = pool.finish(Instant::now() + FINISH_BUDGET).await;
    let complete =
        add_finished(&mut report, &mut insert_to_client, &mut commit_to_client, &mut receipts, finished);
    report.insert_to_client = LatencySummary::of(&insert_to_client);
    report.commit_to_client = LatencySummary::of(&commit_to_client);
    if complete {
        let check = check_rows(&inserted.rows, receipts, &subscribed_per_user, args.rls);
        report.rows_missed = Some(check.missed.len() as u64);
        report.rows_short = Some(check.short.len() as u64);
        report.rows_repeated = Some((check.extra.len() + check.unknown.len()) as u64);
        report.row_examples = row_examples(&check, ROW_EXAMPLES);
    }

    println!("{}", report.render());
    if let Some(path) = &args.csv {
        report.append_csv(path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn on_off(flag: bool) -> &'static str {
    if flag {
        "on"
    } else {
        "off"
    }
}

/// Arguments every worker gets (the pool adds its index and slice).
fn worker_args(args: &CdcArgs, run_tag: &str, iat: u64) -> Vec<String> {
    let lifetime = args.connect.connect_phase_timeout
        + JOIN_GRACE.as_secs()
        + SETTLE.as_secs()
        + 2 * METRICS_TIMEOUT.as_secs()
        + args.duration
        + 10 // an insert statement that overruns the window
        + args.drain
        + FINISH_BUDGET.as_secs()
        + 30;
    let mut out = vec![
        format!("--target={}", args.target),
        format!("--vsn={}", args.vsn),
        format!("--users={}", args.users),
        format!("--run-tag={run_tag}"),
        format!("--iat={iat}"),
        format!("--subscribe-timeout={}", args.subscribe_timeout),
        format!("--lifetime={lifetime}"),
    ];
    if args.rls {
        out.push("--rls".into());
    }
    out
}

/// The server's `realtime_cdc_changes_total` now; `None` (and an error count) when it cannot be read.
async fn changes_decoded(addr: SocketAddr, errors: &mut ErrorCounts) -> Option<u64> {
    match fetch_metrics(addr, METRICS_TIMEOUT).await {
        Ok(body) => {
            let total = counter_total(&body, CHANGES_METRIC);
            if total.is_none() {
                *errors.entry(format!("{CHANGES_METRIC} missing from /metrics")).or_default() += 1;
            }
            total.map(|v| v as u64)
        }
        Err(e) => {
            *errors.entry(e).or_default() += 1;
            None
        }
    }
}

/// Folds the workers' subscribe-phase reports into `report`; returns subscribed subscribers per user.
fn add_joined(
    report: &mut CdcReport,
    subscribe: &mut Histogram<u64>,
    slices: &[WorkerSlice],
    joined: Vec<Result<JoinedReport, String>>,
    users: usize,
) -> Vec<u64> {
    let totals = JoinTotals {
        ok: &mut report.subscribers_ok,
        failed: &mut report.subscribers_failed,
        errors: &mut report.errors,
        latency: subscribe,
    };
    fold_joined(totals, slices, joined, users)
}

/// Folds the workers' receive-phase reports into `report`, the two latency histograms and the
/// per-row receipts; `false` when a worker's report is missing (the receipts are then incomplete).
fn add_finished(
    report: &mut CdcReport,
    insert_to_client: &mut Histogram<u64>,
    commit_to_client: &mut Histogram<u64>,
    receipts: &mut HashMap<i64, u64>,
    finished: Vec<Result<FinishedReport, String>>,
) -> bool {
    let mut worker_errors = ErrorCounts::new();
    let mut complete = true;
    for outcome in finished {
        match outcome {
            Ok(worker) => {
                report.deliveries_received += worker.delivered;
                worker.delivery_us.add_to(insert_to_client);
                merge_errors(&mut report.errors, &worker.errors);
                if let Some(cdc) = worker.cdc {
                    cdc.commit_us.add_to(commit_to_client);
                    report.leaked += cdc.leaked;
                    report.out_of_order += cdc.out_of_order;
                    report.foreign += cdc.foreign;
                    for (id, n) in expand_runs(&cdc.receipts) {
                        *receipts.entry(id).or_default() += n;
                    }
                }
            }
            Err(e) => {
                complete = false;
                *worker_errors.entry(format!("worker lost: {e}")).or_default() += 1;
            }
        }
    }
    merge_errors(&mut report.errors, &worker_errors);
    complete
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::CdcFinished;
    use crate::report::HistogramData;

    fn args(extra: &[&str]) -> CdcArgs {
        crate::scenario::parse_db_args(extra)
    }

    #[test]
    fn defaults_follow_the_brief() {
        let a = args(&[]);
        assert_eq!((a.subscribers, a.rate, a.users, a.batch, a.rls), (100, 1_000.0, 10, 1, false));
        assert_eq!(a.publication, "supabase_realtime");
        assert_eq!(Plan::new(&a).unwrap(), Plan { processes: 1 });
        let a = args(&["--subscribers=12000", "--rls", "--batch=10"]);
        assert!(a.rls);
        assert_eq!(Plan::new(&a).unwrap(), Plan { processes: 3 });
    }

    #[test]
    fn refuses_impossible_plans() {
        assert!(Plan::new(&args(&["--subscribers=40000", "--processes=2"])).is_err());
        assert!(Plan::new(&args(&["--rate=0"])).is_err());
        assert!(Plan::new(&args(&["--users=0"])).is_err());
        assert!(Plan::new(&args(&["--batch=0"])).is_err());
        assert!(Plan::new(&args(&["--batch=20000"])).is_err());
        assert!(Plan::new(&args(&["--subscribers=3", "--processes=4"])).is_err());
        assert!(Plan::new(&args(&["--duration=0"])).is_err());
    }

    #[test]
    fn expected_deliveries_without_and_with_rls() {
        // 3 users own 10, 10 and 9 rows; 2, 1 and 0 subscribers subscribed.
        let inserted = [10, 10, 9];
        let subscribed = [2, 1, 0];
        assert_eq!(expected_deliveries(&inserted, &subscribed, false), 29 * 3);
        assert_eq!(expected_deliveries(&inserted, &subscribed, true), 10 * 2 + 10);
        assert_eq!(expected_deliveries(&[], &[], true), 0);
        assert_eq!(expected_deliveries(&[5], &[0], false), 0);
    }

    #[test]
    fn failed_workers_count_their_subscribers() {
        let mut report = CdcReport::default();
        let mut h = latency_histogram();
        let slices = split(10, 2);
        let ok = JoinedReport { ok: 4, failed: 1, joined_per_channel: vec![3, 1], ..JoinedReport::default() };
        let per_user =
            add_joined(&mut report, &mut h, &slices, vec![Ok(ok), Err("worker 1 exited early".into())], 2);
        assert_eq!(per_user, vec![3, 1]);
        assert_eq!((report.subscribers_ok, report.subscribers_failed), (4, 6));
        assert_eq!(report.errors["worker failed: worker 1 exited early"], 5);
    }

    #[test]
    fn finished_reports_add_up() {
        let mut report = CdcReport::default();
        let (mut a, mut b) = (latency_histogram(), latency_histogram());
        let worker = FinishedReport {
            delivered: 7,
            delivery_us: HistogramData(vec![(2_000, 7)]),
            cdc: Some(CdcFinished {
                commit_us: HistogramData(vec![(1_500, 7)]),
                leaked: 1,
                out_of_order: 2,
                foreign: 3,
                receipts: vec![(10, 2, 3)],
            }),
            ..FinishedReport::default()
        };
        let mut receipts = HashMap::from([(10, 1)]);
        let complete = add_finished(
            &mut report,
            &mut a,
            &mut b,
            &mut receipts,
            vec![Ok(worker), Err("worker 1 overran its deadline".into())],
        );
        assert!(!complete);
        assert_eq!(
            (report.deliveries_received, report.leaked, report.out_of_order, report.foreign),
            (7, 1, 2, 3)
        );
        assert_eq!((a.len(), b.len()), (7, 7));
        assert_eq!(receipts, HashMap::from([(10, 4), (11, 3)]));
        assert_eq!(report.errors["worker lost: worker 1 overran its deadline"], 1);
    }

    #[test]
    fn rows_are_checked_against_their_subscribers() {
        // Users 0 and 1 have 2 and 1 subscribers; rows 1..=4 alternate owners.
        let inserted = [(1, 0), (2, 1), (3, 0), (4, 1)];
        let subscribed = [2, 1];
        let receipts = HashMap::from([(1, 2), (2, 1), (3, 1), (9, 1)]);
        let check = check_rows(&inserted, receipts, &subscribed, true);
        assert_eq!(check.missed, vec![(4, 1)]);
        assert_eq!(check.short, vec![(3, 0)]);
        assert!(check.extra.is_empty());
        assert_eq!(check.unknown, vec![9]);
        assert_eq!(row_examples(&check, 2), vec!["4 missed (user 1)", "3 short (user 0)"]);
        // Without RLS every row is due to all 3 subscribers.
        let all = HashMap::from([(1, 3), (2, 3), (3, 4), (4, 3)]);
        let check = check_rows(&inserted, all, &subscribed, false);
        assert_eq!((check.missed.len(), check.short.len(), check.extra), (0, 0, vec![(3, 0)]));
        // A row nobody was due (its owner has no subscriber) is not missed.
        let check = check_rows(&[(5, 1)], HashMap::new(), &[1, 0], true);
        assert_eq!(check, RowCheck::default());
    }

    #[test]
    fn worker_args_parse_as_a_cdc_worker() {
        use crate::cdc_worker::CdcWorkerArgs;
        let a = args(&["--rls", "--users=4", "--processes=2", "--connect-rate=10"]);
        let plan = Plan::new(&a).unwrap();
        let cli = worker_args(&a, "tag", 77);
        let fixed = ["--index=1", "--first-conn=50", "--connections=50", "--jwt-secret=s"].map(String::from);
        let own = a.connect.for_workers(plan.processes).swap_remove(1);
        let w = crate::scenario::parse_args::<CdcWorkerArgs>(fixed.into_iter().chain(cli).chain(own));
        assert!(w.rls);
        assert_eq!((w.users, w.iat, w.run_tag.as_str()), (4, 77, "tag"));
        assert_eq!(w.slice.connect.connect_rate, Some(5.0));
        assert!(w.slice.lifetime > a.duration + a.drain + a.connect.connect_phase_timeout);
    }
}
