//! Scenario `failover`: does Postgres Changes delivery survive losing the node that streams the WAL?
//!
//! It runs its own cluster ([`crate::nodes`]: `--nodes` processes of `--realtime-bin` on
//! 127.0.0.`<ip-base + i>`, one database, one slot), sets up the `cdc` scenario's load table
//! ([`crate::database::setup`], RLS off), puts `--subscribers-per-node` INSERT subscribers on every node
//! and inserts `--rate` rows per second. Then, `--kills` times: find the raft leader (the `leader` every
//! node's `/cluster` names), SIGKILL it, and measure
//! - **resume time**: kill → the first row whose insert was sent after the kill reaching a subscriber on
//!   a surviving node (what a client notices), and
//! - **leader agreed**: kill → every survivor's `/cluster` naming the same new leader;
//!
//! then restart the node (same name, address, data directory), wait until every node lists every other
//! alive, give it new subscribers, and let the load run `--between` seconds before the next kill.
//!
//! At the end the inserter stops, the last row is awaited on every live subscriber, and each
//! subscriber's rows are checked ([`crate::failover_check`]): every row committed while it was
//! subscribed arrived exactly once, in commit order; the table prints lost, duplicated and reordered.
//! Every wait is bounded (`--kill-timeout` per step, `--duration` overall); the node processes are
//! killed on every way out, Ctrl-C included.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use clap::Args;
use realtime_proto::Vsn;
use tokio::sync::watch;
use tokio::time::{sleep, Instant};

use crate::client::Endpoint;
use crate::database;
use crate::failover_check::{check, Committed, Stretch, Verdict};
use crate::failover_load::{self, lock, Subscriber};
use crate::nodes::{poll_until, NodeSpec, Nodes};
use crate::payload::now_unix_nanos;
use crate::report::{latency_histogram, ErrorCounts, LatencySummary};
use crate::token::{now_unix_secs, user_token};

/// A node's start-up, up to its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Rows acknowledged this long before a kill are due to the killed node's subscribers.
const KILL_GRACE: Duration = Duration::from_secs(1);
/// How long the last row may take to reach every live subscriber.
const LAST_ROW_TIMEOUT: Duration = Duration::from_secs(15);
const DB_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// Arguments of `realtime-loadtest failover`.
#[derive(Args, Debug, Clone)]
pub struct FailoverArgs {
    /// The node binary.
    #[arg(long, default_value = "target/release/realtime")]
    pub realtime_bin: PathBuf,
    /// Superuser URL of a database with `wal_level=logical` (the nodes stream it; the table is set up).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Secret the nodes are started with.
    #[arg(long, env = "REALTIME_JWT_SECRET", hide_env_values = true, default_value = "loadtest-failover")]
    pub jwt_secret: String,
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Node i binds 127.0.0.<ip-base + i> (loopback only).
    #[arg(long, default_value_t = 150)]
    pub ip_base: u8,
    #[arg(long, default_value_t = 4100)]
    pub cluster_port: u16,
    /// The nodes' replication slot (dropped first when no one uses it, so a run starts from now).
    #[arg(long, default_value = "lt_failover")]
    pub slot: String,
    #[arg(long, default_value = "supabase_realtime")]
    pub publication: String,
    /// Extra flags for every node, e.g. `--node-arg=--cdc-resume-grace-ms=0` (repeat).
    #[arg(long, allow_hyphen_values = true)]
    pub node_arg: Vec<String>,
    #[arg(long, default_value_t = 2)]
    pub subscribers_per_node: usize,
    /// Rows inserted per second (one per transaction).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Leaders to kill, one after the other.
    #[arg(long, default_value_t = 3)]
    pub kills: usize,
    /// Seconds of steady load before each kill.
    #[arg(long, default_value_t = 5)]
    pub between: u64,
    /// Seconds each step may take (a leader, the resume, the restarted node's return).
    #[arg(long, default_value_t = 30)]
    pub kill_timeout: u64,
    /// Seconds the whole run may take; kills not started by then are skipped.
    #[arg(long, default_value_t = 120)]
    pub duration: u64,
    /// Keep the nodes' data directories and logs (they are kept anyway when the run fails).
    #[arg(long)]
    pub keep_dir: bool,
}

/// One kill and what followed.
#[derive(Debug, Default)]
struct KillRecord {
    node: usize,
    leader_agreed: Option<(usize, Duration)>,
    resumed: Option<Duration>,
    back: Option<Duration>,
}

/// The subscribers of the run, live and past.
struct Subs {
    all: Vec<(Subscriber, Option<u64>)>,
    generation: usize,
}

/// What a run needs along the way.
struct Ctx<'a> {
    args: &'a FailoverArgs,
    token: String,
    tag: String,
    stop: watch::Receiver<bool>,
}

impl Ctx<'_> {
    /// Subscribes `--subscribers-per-node` clients on node `i`.
    async fn subscribe(&self, nodes: &Nodes, i: usize, subs: &mut Subs) -> anyhow::Result<()> {
        let url = nodes.ws_url(i).ok_or_else(|| anyhow!("node-{i} is not running"))?;
        let endpoint = Endpoint::resolve(&url, &self.token, Vsn::V2).await?;
        subs.generation += 1;
        for k in 0..self.args.subscribers_per_node {
            let topic = format!("realtime:lt-failover-{i}-{}-{k}", subs.generation);
            let deadline = Instant::now() + Duration::from_secs(self.args.kill_timeout);
            let (tag, stop) = (self.tag.clone(), self.stop.clone());
            let sub = failover_load::subscribe(&endpoint, i, &topic, tag, stop, deadline)
                .await
                .map_err(|e| anyhow!("subscriber on node-{i}: {e}"))?;
            subs.all.push((sub, None));
        }
        Ok(())
    }
}

fn check_args(args: &FailoverArgs) -> anyhow::Result<()> {
    if !(2..=5).contains(&args.nodes) || args.subscribers_per_node == 0 {
        bail!("--nodes must be 2 to 5 and --subscribers-per-node at least 1");
    }
    if args.ip_base < 2 || usize::from(args.ip_base) + args.nodes > 255 {
        bail!("--ip-base must leave 127.0.0.<base>..<base+nodes-1> within 2..254");
    }
    if !(args.rate > 0.0 && args.rate <= 5_000.0) {
        bail!("--rate must be between 0 and 5000 rows/s");
    }
    Ok(())
}

/// Runs the scenario and prints its table on stdout.
pub async fn run(args: FailoverArgs) -> anyhow::Result<()> {
    check_args(&args)?;
    let dir =
        std::env::temp_dir().join(format!("realtime-failover-{}-{}", std::process::id(), now_unix_nanos()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let outcome = tokio::select! {
        outcome = scenario(&args, dir.clone()) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted; every node process was killed")),
    };
    if outcome.is_ok() && !args.keep_dir {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("node logs and data directories: {}", dir.display());
    }
    outcome
}

async fn scenario(args: &FailoverArgs, dir: PathBuf) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(args.duration);
    let step = Duration::from_secs(args.kill_timeout);
    let db = Arc::new(database::connect(&args.database_url, DB_TIMEOUT).await?);
    tokio::time::timeout(DB_TIMEOUT, database::setup(&db, &args.publication, false))
        .await
        .context("setting up the load table timed out")??;
    db.execute(
        "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = $1 and not active",
        &[&args.slot],
    )
    .await
    .context("dropping the unused slot")?;
    let mut common = vec![
        format!("--database-url={}", args.database_url),
        format!("--slot={}", args.slot),
        format!("--publication={}", args.publication),
        format!("--jwt-secret={}", args.jwt_secret),
    ];
    common.extend(args.node_arg.iter().cloned());
    let spec = NodeSpec {
        bin: args.realtime_bin.clone(),
        ip_base: args.ip_base,
        cluster_port: args.cluster_port,
        count: args.nodes,
        dir,
        common,
    };
    let mut nodes = Nodes::new(spec);
    for i in 0..args.nodes {
        nodes.start(i, Instant::now() + START_TIMEOUT).await?;
    }
    if !wait_formed(&nodes, (Instant::now() + step).min(end)).await {
        bail!("the cluster did not form within {} s", args.kill_timeout);
    }
    let Some(first_leader) = wait_leader(&nodes, (Instant::now() + step).min(end)).await else {
        bail!(
            "no node leads after {} s: /cluster names no leader (is raft leadership in this build?)",
            args.kill_timeout
        );
    };
    eprintln!("cluster formed; leader node-{first_leader}");

    let (stop_tx, stop_rx) = watch::channel(false);
    let errors = Arc::new(Mutex::new(ErrorCounts::new()));
    let token = user_token(&args.jwt_secret, &database::user_id(0), now_unix_secs())?;
    let tag = format!("lt-failover-{}-{}", std::process::id(), now_unix_nanos());
    let ctx = Ctx { args, token, tag: tag.clone(), stop: stop_rx };
    let mut subs = Subs { all: Vec::new(), generation: 0 };
    for i in 0..args.nodes {
        ctx.subscribe(&nodes, i, &mut subs).await?;
    }
    let rows = Arc::new(Mutex::new(Vec::<Committed>::new()));
    let (stop_insert, stop_insert_rx) = watch::channel(false);
    let inserter = tokio::spawn(failover_load::insert(
        Arc::clone(&db),
        args.rate,
        tag,
        Arc::clone(&rows),
        Arc::clone(&errors),
        stop_insert_rx,
    ));

    let mut kills = Vec::new();
    for _ in 0..args.kills {
        sleep(Duration::from_secs(args.between).min(end.saturating_duration_since(Instant::now()))).await;
        if Instant::now() + step > end {
            eprintln!("--duration leaves no time for another kill");
            break;
        }
        let Some(leader) = wait_leader(&nodes, Instant::now() + step).await else {
            eprintln!("no agreed leader before the kill; stopping the kills");
            break;
        };
        let record = kill_leader(&ctx, &mut nodes, &mut subs, leader).await?;
        eprintln!("{}", describe(&record));
        let back = record.back.is_some();
        kills.push(record);
        if !back {
            break;
        }
    }

    let _ = stop_insert.send(true);
    let _ = inserter.await;
    let committed = lock(&rows).clone();
    if let Some(last) = committed.last() {
        let deadline = Instant::now() + LAST_ROW_TIMEOUT;
        while Instant::now() < deadline && !last_row_everywhere(&subs, last.id) {
            sleep(POLL).await;
        }
    }
    let _ = stop_tx.send(true);
    for (sub, _) in &mut subs.all {
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut sub.task).await;
    }
    print_report(args, &kills, &subs, &committed, &lock(&errors));
    Ok(())
}

/// Kills node `leader`, measures the resume and the new leader, restarts it and resubscribes there.
async fn kill_leader(
    ctx: &Ctx<'_>,
    nodes: &mut Nodes,
    subs: &mut Subs,
    leader: usize,
) -> anyhow::Result<KillRecord> {
    let step = Duration::from_secs(ctx.args.kill_timeout);
    let kill_ns = now_unix_nanos();
    let killed_at = Instant::now();
    nodes.kill(leader).await?;
    for (sub, killed) in &mut subs.all {
        if lock(&sub.log).node == leader && killed.is_none() {
            *killed = Some(kill_ns);
        }
    }
    let mut record = KillRecord { node: leader, ..KillRecord::default() };
    let deadline = killed_at + step;
    while Instant::now() < deadline && (record.leader_agreed.is_none() || record.resumed.is_none()) {
        if record.leader_agreed.is_none() {
            if let Some(new) = nodes.agreed_leader().await {
                record.leader_agreed = Some((new, killed_at.elapsed()));
            }
        }
        if record.resumed.is_none() {
            record.resumed = first_arrival_after(subs, kill_ns).map(|ns| Duration::from_nanos(ns - kill_ns));
        }
        sleep(POLL).await;
    }
    let restarted = Instant::now();
    nodes.start(leader, restarted + START_TIMEOUT).await?;
    if wait_rejoined(nodes, leader, restarted + step).await {
        record.back = Some(restarted.elapsed());
        ctx.subscribe(nodes, leader, subs).await?;
    }
    Ok(record)
}

/// The earliest arrival, on a subscriber not killed, of a row whose insert was sent after `after_ns`.
fn first_arrival_after(subs: &Subs, after_ns: u64) -> Option<u64> {
    subs.all
        .iter()
        .filter(|(_, killed)| killed.is_none())
        .filter_map(|(sub, _)| lock(&sub.log).rows.iter().filter(|r| r.1 > after_ns).map(|r| r.2).min())
        .min()
}

fn last_row_everywhere(subs: &Subs, last: i64) -> bool {
    subs.all
        .iter()
        .filter(|(sub, killed)| killed.is_none() && lock(&sub.log).ended_ns.is_none())
        .all(|(sub, _)| lock(&sub.log).rows.iter().any(|r| r.0 >= last))
}

async fn wait_formed(nodes: &Nodes, deadline: Instant) -> bool {
    poll_until(deadline, || async { nodes.formed().await.then_some(()) }).await.is_some()
}

async fn wait_rejoined(nodes: &Nodes, i: usize, deadline: Instant) -> bool {
    poll_until(deadline, || async { nodes.rejoined(i).await.then_some(()) }).await.is_some()
}

/// Waits for a leader every running node agrees on.
async fn wait_leader(nodes: &Nodes, deadline: Instant) -> Option<usize> {
    poll_until(deadline, || nodes.agreed_leader()).await
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "never".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn describe(k: &KillRecord) -> String {
    let agreed = match k.leader_agreed {
        Some((new, after)) => format!("node-{new} agreed leader after {}", secs(Some(after))),
        None => "no leader agreed".to_owned(),
    };
    format!(
        "node-{} (leader) killed: {agreed}; first row after the kill delivered after {}; back after {}",
        k.node,
        secs(k.resumed),
        secs(k.back)
    )
}

fn print_report(
    args: &FailoverArgs,
    kills: &[KillRecord],
    subs: &Subs,
    committed: &[Committed],
    errors: &ErrorCounts,
) {
    let row = |label: &str, value: String| format!("  {label:<40} {value}");
    let mut out = vec![format!(
        "failover: {} nodes on 127.0.0.{}+, {} subscribers per node, {} rows/s, {} kills ({} s apart), node args {:?}",
        args.nodes, args.ip_base, args.subscribers_per_node, args.rate, args.kills, args.between, args.node_arg
    )];
    let (mut resume, mut agreed) = (latency_histogram(), latency_histogram());
    for (n, k) in kills.iter().enumerate() {
        out.push(row(&format!("kill {}", n + 1), describe(k)));
        if let Some(d) = k.resumed {
            resume.saturating_record(d.as_micros() as u64);
        }
        if let Some((_, d)) = k.leader_agreed {
            agreed.saturating_record(d.as_micros() as u64);
        }
    }
    let mut total = Verdict::default();
    let mut cut_short = 0;
    let mut errors = errors.clone();
    for (sub, killed) in &subs.all {
        let log = lock(&sub.log);
        for (kind, n) in &log.errors {
            let kind =
                if killed.is_some() { format!("{kind} (subscriber of a killed node)") } else { kind.clone() };
            *errors.entry(kind).or_default() += n;
        }
        let grace = KILL_GRACE.as_nanos() as u64;
        let to_ns = match (killed, log.ended_ns) {
            (Some(k), _) => k.saturating_sub(grace),
            (None, Some(ended)) => ended.saturating_sub(grace),
            (None, None) => u64::MAX,
        };
        cut_short += u64::from(to_ns != u64::MAX);
        let received: Vec<i64> = log.rows.iter().map(|r| r.0).collect();
        total.add(check(committed, &received, Stretch { from_ns: log.subscribed_ns, to_ns }));
    }
    out.push(row("rows committed", committed.len().to_string()));
    out.push(row(
        "subscribers checked",
        format!(
            "{} ({cut_short} cut short by a kill or a close, checked to {} s before)",
            subs.all.len(),
            KILL_GRACE.as_secs()
        ),
    ));
    out.push(row(
        "rows due / lost / duplicated / reordered",
        format!("{} / {} / {} / {}", total.due, total.lost, total.duplicated, total.reordered),
    ));
    out.push(row("resume p50 / p99 / max", LatencySummary::of(&resume).cells()));
    out.push(row("leader agreed p50 / p99 / max", LatencySummary::of(&agreed).cells()));
    if errors.is_empty() {
        out.push(row("errors", "none".into()));
    }
    for (kind, n) in &errors {
        out.push(row("errors", format!("{n} × {kind}")));
    }
    println!("{}", out.join("\n"));
}
