//! Scenario `fanout`: N receivers spread over worker processes join M channels `realtime:load-<i>`
//! round-robin (`self: false`, `ack: false`), each channel's receivers taking the `--target` nodes in
//! turn (several targets test a cluster: every broadcast is then delivered on every node); then publishers in this process broadcast stamped
//! payloads on a fixed-rate schedule for `--duration` seconds, followed by a `--drain`.
//!
//! Measured, so that a healthy run and an unhealthy one cannot print the same table:
//! - connect: connect+join latency per receiver (TCP connect start → ok `phx_reply`) with at most
//!   `--connect-concurrency` in flight over the whole run, failures by kind, and the SYNs the server's
//!   listen queue dropped meanwhile (`TcpExt` `ListenOverflows`/`ListenDrops`, same machine);
//! - delivery: latency from each broadcast's *scheduled* send time (no coordinated omission), how far
//!   behind schedule the publishers fell, deliveries expected (Σ over channels of sent × joined
//!   receivers) vs received, and per-publisher sequence checks: lost, duplicated, reordered;
//! - the server's RSS before connecting, once all receivers are idle, at the end, and every second of
//!   the publish phase;
//! - with `--stalled-readers K`: K more connections join and never read again (see
//!   [`crate::stalled`]); the normal receivers are then the observers whose latency the stall may hurt.
//!
//! `--duration 0` skips publishing: a connect storm (`--connections 10000 --connect-concurrency 200`).
//!
//! Phases, each with a deadline: spawn workers → wait for every `joined` line → settle, sample RSS →
//! stalled readers join → publish (sampling RSS) → drain → sample RSS → `stop` the workers and the
//! stalled readers, collect the workers' `finished` lines and the stalled readers' end reads.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use futures_util::future::join_all;
use hdrhistogram::Histogram;
use realtime_proto::Vsn;
use tokio::sync::watch;
use tokio::time::{sleep, Instant};

use crate::ipc::{FinishedReport, JoinedReport};
use crate::netstat::{counter_deltas, read_tcp_ext, LISTEN_COUNTERS};
use crate::pool::{split, Pool, WorkerSlice};
use crate::publisher::{self, PublishPlan, MAX_CHANNELS_PER_PUBLISHER};
use crate::report::{latency_histogram, merge_errors, ErrorCounts, FanoutReport, LatencySummary};
use crate::rss::read_rss_kib;
use crate::scenario::{fold_joined, JoinTotals};
use crate::stalled::{self, EndRead, Sampler};
use crate::token::anon_token;
use crate::worker::ConnectArgs;

/// Connections per worker process when `--processes` is not given.
pub const CONNECTIONS_PER_PROCESS: usize = 5_000;
/// Hard cap per worker: the open-files hard limit is 20,000 and a process needs a few spare.
pub const MAX_CONNECTIONS_PER_PROCESS: usize = 19_000;
/// Default per-publisher rate; the server's default per-socket limit is 100 events/s.
pub const PUBLISHER_RATE: f64 = 50.0;
/// Server per-socket event limit by default (`--max-events-per-second`).
const SERVER_EVENTS_PER_SOCKET: f64 = 100.0;
/// Pause between the last join and the idle RSS sample.
const SETTLE: Duration = Duration::from_secs(1);
/// Extra time the parent gives a worker beyond its own connect-phase timeout.
const JOIN_GRACE: Duration = Duration::from_secs(15);
/// Time workers get to close their sockets and report after `stop`.
const FINISH_BUDGET: Duration = Duration::from_secs(15);
/// Stalled readers live in the parent process, beside the publishers, within its open-files limit.
const MAX_STALLED_READERS: usize = 1_000;
/// Largest `--payload-bytes` (the server's default limit is 256 KiB).
const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// The topic of channel `i`.
pub fn topic(channel: usize) -> String {
    format!("realtime:load-{channel}")
}

/// Arguments of `realtime-loadtest fanout`.
#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    /// WebSocket endpoint (`apikey` and `vsn` are appended). Repeat it (or separate with commas) for the
    /// nodes of a cluster: receivers of each channel and the publishers take the nodes in turn.
    #[arg(
        long,
        alias = "url",
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:4000/socket/websocket"
    )]
    pub target: Vec<String>,
    /// HS256 secret the server verifies tokens with.
    #[arg(long, env = "REALTIME_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// Receiver connections (N).
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Channels (M); receiver i joins `realtime:load-<i mod M>`.
    #[arg(long, default_value_t = 10)]
    pub channels: usize,
    /// Publisher connections; default max(ceil(rate / 50), ceil(channels / 100)).
    #[arg(long)]
    pub publishers: Option<usize>,
    /// Broadcasts per second, over all publishers, on a fixed schedule (latency counts from it).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Bytes of each broadcast's JSON payload (the stamp, padded); 0 for the bare ~50-byte stamp.
    /// Throughput per receiver is rate × payload-bytes / channels.
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
    /// Seconds of publishing; 0 to only connect (a connect storm) and disconnect.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Seconds to keep receiving after the last broadcast.
    #[arg(long, default_value_t = 3)]
    pub drain: u64,
    /// Serializer: 2.0.0 (binary broadcasts) or 1.0.0 (JSON objects).
    #[arg(long, default_value = "2.0.0")]
    pub vsn: Vsn,
    /// Worker processes holding the receivers; default ceil(connections / 5000).
    #[arg(long)]
    pub processes: Option<usize>,
    /// Extra connections (in this process) that join channel `i mod M` and then never read their
    /// socket again (4 KiB SO_RCVBUF, heartbeats still sent); the report says when the server closed
    /// each and how (close code and reason, or reset), and prints the server's RSS every second.
    #[arg(long, default_value_t = 0)]
    pub stalled_readers: usize,
    /// Server pid, to sample its RSS from /proc/<pid>/status (once a second while publishing).
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
    publishers: usize,
}

impl Plan {
    fn new(args: &FanoutArgs) -> anyhow::Result<Plan> {
        if args.connections == 0 || args.channels == 0 {
            bail!("--connections and --channels must be at least 1");
        }
        if args.target.is_empty() {
            bail!("--target must name at least one node");
        }
        if !(args.rate > 0.0 && args.rate.is_finite()) {
            bail!("--rate must be a positive number");
        }
        if args.stalled_readers > MAX_STALLED_READERS {
            bail!("at most {MAX_STALLED_READERS} --stalled-readers");
        }
        if args.payload_bytes > MAX_PAYLOAD_BYTES {
            bail!("--payload-bytes must be at most {MAX_PAYLOAD_BYTES}");
        }
        let processes = args.processes.unwrap_or_else(|| args.connections.div_ceil(CONNECTIONS_PER_PROCESS));
        if processes == 0 || processes > args.connections {
            bail!("--processes must be between 1 and --connections");
        }
        if args.connections.div_ceil(processes) > MAX_CONNECTIONS_PER_PROCESS {
            bail!("at most {MAX_CONNECTIONS_PER_PROCESS} connections per process (open-files limit): raise --processes");
        }
        let by_rate = (args.rate / PUBLISHER_RATE).ceil() as usize;
        let by_channels = args.channels.div_ceil(MAX_CHANNELS_PER_PUBLISHER);
        let publishers = args.publishers.unwrap_or(by_rate.max(by_channels)).max(1);
        if args.channels.div_ceil(publishers) > MAX_CHANNELS_PER_PUBLISHER {
            bail!(
                "each publisher may join at most {MAX_CHANNELS_PER_PUBLISHER} channels: raise --publishers"
            );
        }
        Ok(Plan { processes, publishers })
    }
}

/// Deliveries a run should see: every broadcast reaches every receiver joined to its channel.
pub fn expected_deliveries(sent_per_channel: &[u64], joined_per_channel: &[u64]) -> u64 {
    sent_per_channel.iter().zip(joined_per_channel).map(|(s, j)| s * j).sum()
}

/// Broadcasts the server also delivered to publishers: publishers are members of the channels they
/// send to, so with `self: false` each broadcast still reaches every *other* publisher on its channel.
/// Server work (and loader work, reading them) that the delivery figures do not count.
pub fn publisher_deliveries(sent_per_channel: &[u64], publishers: usize) -> u64 {
    let mut on_channel = vec![0u64; sent_per_channel.len()];
    for p in 0..publishers {
        for c in publisher::channels_of(p, publishers, sent_per_channel.len()) {
            on_channel[c] += 1;
        }
    }
    sent_per_channel.iter().zip(on_channel).map(|(sent, n)| sent * n.saturating_sub(1)).sum()
}

/// Runs the scenario and prints its table on stdout.
pub async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    let plan = Plan::new(&args)?;
    let per_publisher = args.rate / plan.publishers as f64;
    if per_publisher > SERVER_EVENTS_PER_SOCKET {
        eprintln!("warning: {per_publisher:.0} broadcasts/s per publisher exceeds the server's default per-socket limit");
    }
    let token = anon_token(&args.jwt_secret).context("signing the token")?;
    let endpoints = super::endpoints(&args.target, &token, args.vsn).await?;
    // Stalled readers and the server-side samples stay on the first node.
    let endpoint = endpoints[0].clone();
    let title = title(&args, &plan);
    eprintln!("spawning {} worker processes for {} connections", plan.processes, args.connections);
    let publish_plan = PublishPlan {
        publishers: plan.publishers,
        channels: args.channels,
        rate: args.rate,
        duration: Duration::from_secs(args.duration),
        payload_bytes: args.payload_bytes,
        max_per_second: ((SERVER_EVENTS_PER_SOCKET * 0.9) as usize).max(per_publisher.ceil() as usize),
        linger: Duration::from_secs(args.drain),
        connect_timeout: Duration::from_secs(args.connect.connect_timeout),
        join_timeout: Duration::from_secs(args.connect.join_timeout),
    };
    let mut report = FanoutReport { title, ..FanoutReport::default() };
    report.rss.before = read_rss_kib(args.server_pid);

    let slices = split(args.connections, plan.processes);
    let tcp_before = read_tcp_ext();
    let own_args = args.connect.for_workers(plan.processes);
    let mut pool =
        Pool::spawn(&slices, &worker_args(&args, &plan), &own_args, &token).context("spawning workers")?;
    let connect_started = Instant::now();
    let phase = Duration::from_secs(args.connect.connect_phase_timeout);
    let joined = pool.joined(Instant::now() + phase + JOIN_GRACE).await;
    let tcp_after = read_tcp_ext();
    let mut connect_join = latency_histogram();
    let joined_per_channel = add_joined(&mut report, &mut connect_join, &slices, joined, args.channels);
    report.connect_join = LatencySummary::of(&connect_join);
    report.listen_drops = (!tcp_before.is_empty() && !tcp_after.is_empty())
        .then(|| counter_deltas(&tcp_before, &tcp_after, &LISTEN_COUNTERS));
    eprintln!(
        "connect phase: {} ok, {} failed in {:.1} s",
        report.connections_ok,
        report.connections_failed,
        connect_started.elapsed().as_secs_f64()
    );
    sleep(SETTLE).await;
    report.rss.idle = read_rss_kib(args.server_pid);

    let (readers, stalled_errors) = stalled::connect(
        &endpoint,
        args.stalled_readers,
        args.channels,
        publish_plan.connect_timeout,
        publish_plan.join_timeout,
    )
    .await;
    merge_errors(&mut report.connect_errors, &stalled_errors);
    if args.stalled_readers > 0 {
        eprintln!("{} of {} stalled readers joined; they read no more", readers.len(), args.stalled_readers);
        report.stalled_joined = Some((readers.len() as u64, args.stalled_readers as u64));
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let sampler = Sampler {
        server_pid: args.server_pid,
        server_port: endpoint.addr().port(),
        ports: readers.iter().map(|r| r.port()).collect(),
        metrics_addr: (!readers.is_empty()).then(|| endpoint.addr()),
        deadline: Instant::now()
            + Duration::from_secs(publish_budget(&args, &plan) + args.duration + args.drain),
    };
    let sampling = tokio::spawn(sampler.run(stop_rx.clone()));
    let holding: Vec<_> =
        readers.into_iter().map(|r| tokio::spawn(stalled::hold(r, stop_rx.clone()))).collect();

    if args.duration > 0 {
        let published = publisher::run(&endpoints, &publish_plan).await;
        report.publishers_ok = published.connected;
        report.broadcasts_sent = published.sent_per_channel.iter().sum();
        report.broadcasts_due = published.due;
        report.publisher_lag = LatencySummary::of(&published.lag_us);
        report.publish_secs = published.elapsed.as_secs_f64();
        report.deliveries_expected = expected_deliveries(&published.sent_per_channel, &joined_per_channel);
        report.publisher_deliveries = publisher_deliveries(&published.sent_per_channel, plan.publishers);
        merge_errors(&mut report.errors, &published.errors);
        eprintln!("published {} broadcasts and drained {} s", report.broadcasts_sent, args.drain);
    }
    report.rss.end = read_rss_kib(args.server_pid);
    let _ = stop_tx.send(true);

    let mut delivery = latency_histogram();
    let (finished, ends, samples) =
        tokio::join!(pool.finish(Instant::now() + FINISH_BUDGET), join_all(holding), sampling);
    add_finished(&mut report, &mut delivery, finished);
    report.delivery = LatencySummary::of(&delivery);
    let samples = samples.unwrap_or_default();
    let ends: Vec<(usize, EndRead)> = ends
        .into_iter()
        .map(|end| {
            end.unwrap_or_else(|e| {
                (0, EndRead { ending: format!("reader task failed: {e}"), drained_bytes: 0, secs: 0.0 })
            })
        })
        .collect();
    report.stalled = stalled::summaries(&samples, &ends);
    report.rss_series = samples.rss;
    report.slow_consumers = samples.slow_consumers;

    println!("{}", report.render());
    if let Some(path) = &args.csv {
        report.append_csv(path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The report's first line: what was run.
fn title(args: &FanoutArgs, plan: &Plan) -> String {
    let nodes = match args.target.len() {
        1 => String::new(),
        n => format!(" over {n} nodes"),
    };
    let connect = format!(
        "{} connections{nodes} ({} connects in flight) in {} processes, {} channels",
        args.connections, args.connect.connect_concurrency, plan.processes, args.channels
    );
    if args.duration == 0 {
        return format!(
            "fanout, connect only: {connect}, {} stalled readers, vsn {}",
            args.stalled_readers, args.vsn
        );
    }
    let payload = if args.payload_bytes == 0 {
        "a bare stamp".to_owned()
    } else {
        format!("{} bytes", args.payload_bytes)
    };
    format!(
        "fanout: {connect}, {} publishers, {} broadcasts/s of {payload} for {} s (+{} s drain), {} stalled readers, vsn {}",
        plan.publishers, args.rate, args.duration, args.drain, args.stalled_readers, args.vsn
    )
}

/// Seconds the publishers (and the stalled readers before them) may take to connect and join.
fn publish_budget(args: &FanoutArgs, plan: &Plan) -> u64 {
    2 * args.connect.connect_timeout
        + args.connect.join_timeout * (1 + args.channels.div_ceil(plan.publishers) as u64)
}

/// Arguments every worker gets (the pool adds its index and slice).
fn worker_args(args: &FanoutArgs, plan: &Plan) -> Vec<String> {
    let lifetime = args.connect.connect_phase_timeout
        + JOIN_GRACE.as_secs()
        + SETTLE.as_secs()
        + publish_budget(args, plan)
        + args.duration
        + args.drain
        + FINISH_BUDGET.as_secs()
        + 30;
    vec![
        format!("--target={}", args.target.join(",")),
        format!("--vsn={}", args.vsn),
        format!("--channels={}", args.channels),
        format!("--lifetime={lifetime}"),
    ]
}

/// Folds the workers' connect-phase reports into `report`; returns joined receivers per channel.
fn add_joined(
    report: &mut FanoutReport,
    connect_join: &mut Histogram<u64>,
    slices: &[WorkerSlice],
    joined: Vec<Result<JoinedReport, String>>,
    channels: usize,
) -> Vec<u64> {
    let totals = JoinTotals {
        ok: &mut report.connections_ok,
        failed: &mut report.connections_failed,
        errors: &mut report.connect_errors,
        latency: connect_join,
    };
    fold_joined(totals, slices, joined, channels)
}

/// Folds the workers' receive-phase reports into `report`.
fn add_finished(
    report: &mut FanoutReport,
    delivery: &mut Histogram<u64>,
    finished: Vec<Result<FinishedReport, String>>,
) {
    let mut worker_errors = ErrorCounts::new();
    for outcome in finished {
        match outcome {
            Ok(worker) => {
                report.deliveries_received += worker.delivered;
                report.duplicates += worker.duplicates;
                report.reordered += worker.reordered;
                report.seq_next_total += worker.seq_next_total;
                worker.delivery_us.add_to(delivery);
                merge_errors(&mut report.errors, &worker.errors);
            }
            Err(e) => *worker_errors.entry(format!("worker lost: {e}")).or_default() += 1,
        }
    }
    merge_errors(&mut report.errors, &worker_errors);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> FanoutArgs {
        crate::scenario::parse_args(["--jwt-secret=s"].iter().chain(extra))
    }

    #[test]
    fn defaults_follow_the_brief() {
        let a = args(&[]);
        assert_eq!((a.connections, a.channels, a.vsn), (10_000, 10, Vsn::V2));
        assert_eq!(Plan::new(&a).unwrap(), Plan { processes: 2, publishers: 2 });
        let a = args(&["--connections=10001", "--rate=10", "--channels=250", "--vsn=1.0.0"]);
        assert_eq!(a.vsn, Vsn::V1);
        assert_eq!(Plan::new(&a).unwrap(), Plan { processes: 3, publishers: 3 });
    }

    #[test]
    fn refuses_impossible_plans() {
        assert!(Plan::new(&args(&["--connections=40000", "--processes=2"])).is_err());
        assert!(Plan::new(&args(&["--channels=300", "--publishers=2"])).is_err());
        assert!(Plan::new(&args(&["--rate=0"])).is_err());
        assert!(Plan::new(&args(&["--connections=0"])).is_err());
        assert!(Plan::new(&args(&["--connections=3", "--processes=4"])).is_err());
        assert!(Plan::new(&args(&["--stalled-readers=1001"])).is_err());
        assert!(Plan::new(&args(&["--payload-bytes=2000000"])).is_err());
        assert!(Plan::new(&args(&["--duration=0", "--stalled-readers=3", "--payload-bytes=10000"])).is_ok());
    }

    #[test]
    fn publishers_sharing_a_channel_receive_each_other() {
        assert_eq!(publisher_deliveries(&[10, 20], 1), 0);
        assert_eq!(publisher_deliveries(&[10, 20], 2), 0);
        assert_eq!(publisher_deliveries(&[100], 5), 400);
        assert_eq!(publisher_deliveries(&[10, 20], 4), 10 + 20);
    }

    #[test]
    fn expected_deliveries_weight_by_channel() {
        assert_eq!(expected_deliveries(&[10, 20, 0], &[3, 2, 100]), 70);
        assert_eq!(expected_deliveries(&[], &[]), 0);
    }

    #[test]
    fn failed_workers_count_their_connections() {
        let mut report = FanoutReport::default();
        let mut h = latency_histogram();
        let slices = split(10, 2);
        let ok = JoinedReport {
            ok: 4,
            failed: 1,
            joined_per_channel: vec![2, 2],
            errors: ErrorCounts::from([("connect timeout".to_owned(), 1)]),
            ..JoinedReport::default()
        };
        let per_channel =
            add_joined(&mut report, &mut h, &slices, vec![Ok(ok), Err("worker 1 exited early".into())], 2);
        assert_eq!(per_channel, vec![2, 2]);
        assert_eq!((report.connections_ok, report.connections_failed), (4, 6));
        assert_eq!(report.connect_errors["worker failed: worker 1 exited early"], 5);
        assert_eq!(report.connect_errors["connect timeout"], 1);
        assert!(report.errors.is_empty());
    }

    #[test]
    fn worker_args_parse_as_a_worker() {
        use crate::worker::WorkerArgs;
        let a = args(&["--connect-rate=100", "--processes=4", "--connect-concurrency=200"]);
        let plan = Plan::new(&a).unwrap();
        let cli = worker_args(&a, &plan);
        let own = a.connect.for_workers(plan.processes).swap_remove(1);
        let fixed = ["--index=1", "--first-conn=5", "--connections=5", "--token=t"].map(String::from);
        let w = crate::scenario::parse_args::<WorkerArgs>(fixed.clone().into_iter().chain(cli).chain(own));
        assert_eq!(w.slice.connect.connect_rate, Some(25.0));
        assert_eq!(w.slice.connect.connect_concurrency, 50);
        assert_eq!(w.channels, 10);
        assert_eq!(w.target, vec!["ws://127.0.0.1:4000/socket/websocket"]);
        assert!(w.slice.lifetime > a.duration + a.connect.connect_phase_timeout);

        let a = args(&["--target=ws://a/s", "--url", "ws://b/s,ws://c/s"]);
        assert_eq!(a.target, vec!["ws://a/s", "ws://b/s", "ws://c/s"]);
        let cli = worker_args(&a, &Plan::new(&a).unwrap());
        let w = crate::scenario::parse_args::<WorkerArgs>(fixed.into_iter().chain(cli));
        assert_eq!(w.target, a.target);
    }
}
