//! Scenario `compare`: this server and four peers kept in `loadtest/peers/` (FastAPI, Socket.IO on
//! Node, Socket.IO in Rust with socketioxide, and tokio-fanout, a minimal tokio WebSocket fan-out that
//! stands for what the hardware allows), each driven through the same scenario in one run on one
//! machine, one server at a time. How each is started, and with which settings, is in
//! [`crate::compare_launch`].
//!
//! The load generator starts each server itself, pinned to `--server-core` with `taskset`, and pins
//! itself and its worker processes to `--load-core`; it waits for the port, measures, stops the server
//! and goes on to the next. Per server, each phase bounded in time:
//! 1. **connections held**: `--connections` members join `--rooms` rooms (round-robin) from worker
//!    processes, at most `--connect-concurrency` connecting at once; then one publisher and one tracker
//!    per room join from this process. Connect (TCP + WebSocket handshake + join) p50/p99, failures.
//! 2. **RSS per connection**: the server's `VmRSS` before the first connection and once all have
//!    joined, the difference divided by the connections held.
//! 3. **latency at a fixed rate**: `--rate` messages/s over all publishers on a fixed schedule for
//!    `--duration` s (then `--drain`); latency from each message's scheduled send time to its delivery
//!    (no coordinated omission), deliveries expected vs received, duplicates.
//! 4. **deliveries/s at saturation**: publishers send as fast as the server takes it, each with at
//!    most `--window` messages not yet seen by its room's tracker (a closed loop), for `--duration` s;
//!    deliveries/s = messages received by every member and tracker ÷ time, and the server's CPU time
//!    over the same window (deliveries per CPU-second = per core), with how busy both cores were (a
//!    load core at 100 % means the load generator, not the server, was the limit).
//!
//! This server is started with the limits that would otherwise refuse the load lifted (joins per
//! second per node and per token, broadcasts per socket per second): the peers have no such limits.
//! Every server gets one core and one process (`--workers 1` here; uvicorn with one worker; Node is
//! single-threaded; the Rust peers run a current-thread tokio runtime). Prints a table with a column
//! per server and a ratio table (this server ÷ each other one), and writes `--csv` and `--svg`.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use hdrhistogram::Histogram;
use tokio::process::{Child, Command};
use tokio::time::{sleep, Instant};

use crate::compare_launch::{Launch, ServerKind};
use crate::compare_load::{self, Pace, PhaseOutcome};
use crate::compare_plot::write_svg;
use crate::compare_report::{label, render_csv, render_ratios, render_table, ServerFigures, SERVERS};
use crate::ipc::FinishedReport;
use crate::peer_protocol::Protocol;
use crate::pool::{split, Pool, WorkerSlice};
use crate::report::{latency_histogram, merge_errors, ErrorCounts};
use crate::rss::{busy_share, clock_ticks_per_second, read_core_ticks, read_cpu_ticks, read_rss_kib};
use crate::scenario::{fold_joined, JoinTotals};
use crate::token::anon_token;
use crate::worker::{ConnectArgs, TOKEN_ENV};

/// Time a server gets to listen after it was started.
const START_BUDGET: Duration = Duration::from_secs(30);
/// Pause before each RSS sample, so the server has finished what the last connections caused.
const SETTLE: Duration = Duration::from_secs(2);
/// Extra time the parent gives the workers beyond their own connect-phase timeout.
const JOIN_GRACE: Duration = Duration::from_secs(15);
/// Time workers get to answer a snapshot, and to close and report after `stop`.
const REPORT_BUDGET: Duration = Duration::from_secs(15);
/// Time a killed server gets to be reaped.
const REAP: Duration = Duration::from_secs(5);
/// Connections per worker process when `--processes` is not given.
const CONNECTIONS_PER_PROCESS: usize = 5_000;

/// Arguments of `realtime-loadtest compare`.
#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// This server's binary.
    #[arg(long, default_value = "target/release/realtime")]
    pub realtime_bin: PathBuf,
    /// Where the peers are (`fastapi/`, `socketio/`, `socketioxide/`, `tokio-fanout/`), installed and
    /// built by `loadtest/peers/setup.sh`.
    #[arg(long, default_value = "loadtest/peers")]
    pub peers_dir: PathBuf,
    /// Servers to measure, in this order (the ratios are `realtime` ÷ each other one, or the first
    /// ÷ the others when `realtime` is not measured).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "realtime,fastapi,socketio,socketioxide,tokio-fanout"
    )]
    pub servers: Vec<String>,
    /// Room members per server, spread over worker processes (pairs come on top: 2 per room).
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Rooms; member i joins room i mod rooms, and each room has one publisher.
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Messages per second over all publishers in the fixed-rate (latency) phase; low enough that
    /// every server keeps up.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds of each publishing phase (fixed rate, then saturation).
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Seconds of receiving after the fixed-rate phase.
    #[arg(long, default_value_t = 3)]
    pub drain: u64,
    /// Saturation: messages per publisher not yet seen by its room's tracker.
    #[arg(long, default_value_t = 4)]
    pub window: u64,
    /// Core the servers are pinned to.
    #[arg(long, default_value_t = 0)]
    pub server_core: usize,
    /// Core the load generator and its workers are pinned to.
    #[arg(long, default_value_t = 1)]
    pub load_core: usize,
    /// Worker processes holding the members; default ceil(connections / 5000).
    #[arg(long)]
    pub processes: Option<usize>,
    /// The CSV written (replaced).
    #[arg(long, default_value = "docs/benchmarks-compare.csv")]
    pub csv: PathBuf,
    /// The plot written (replaced).
    #[arg(long, default_value = "docs/benchmarks-compare.svg")]
    pub svg: PathBuf,
    /// Where each server's stdout and stderr go (`<server>.log`).
    #[arg(long, default_value = "/tmp/realtime-compare")]
    pub log_dir: PathBuf,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// A running server; SIGKILLed when dropped.
struct Server {
    child: Child,
    pid: u32,
    addr: SocketAddr,
}

impl Server {
    async fn start(launch: &Launch, core: usize, log: &Path) -> anyhow::Result<Server> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let launch = launch.on_port(port);
        let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new("taskset")
            .args(launch.pinned_args(core))
            .envs(launch.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .context("starting taskset (util-linux)")?;
        let pid = child.id().context("server pid")?;
        let deadline = Instant::now() + START_BUDGET;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} exited with {status} before listening (log: {})",
                    launch.program.display(),
                    log.display()
                );
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not listen within {START_BUDGET:?} (log: {})",
                    launch.program.display(),
                    log.display()
                );
            }
            sleep(Duration::from_millis(50)).await;
        }
        Ok(Server { child, pid, addr })
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(REAP, self.child.wait()).await;
    }
}

/// Pins every thread of this process (and so the workers it starts later) to `core`.
fn pin_self(core: usize) -> anyhow::Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &core.to_string(), &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .context("running taskset (util-linux)")?;
    if !status.success() {
        bail!("taskset could not pin the load generator to core {core}: {status}");
    }
    Ok(())
}

/// Runs the scenario and prints its tables on stdout.
pub async fn run(args: CompareArgs) -> anyhow::Result<()> {
    let kinds: Vec<ServerKind> = args
        .servers
        .iter()
        .map(|s| {
            ServerKind::parse(s)
                .with_context(|| format!("--servers: unknown server {s:?} ({})", SERVERS.join(", ")))
        })
        .collect::<anyhow::Result<_>>()?;
    if kinds.is_empty() || args.connections == 0 || args.rooms == 0 {
        bail!("--servers, --connections and --rooms must not be empty or zero");
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) || args.duration == 0 {
        bail!("--rate and --duration must be positive");
    }
    let processes =
        args.processes.unwrap_or_else(|| args.connections.div_ceil(CONNECTIONS_PER_PROCESS)).max(1);
    if processes > args.connections {
        bail!("--processes must be at most --connections");
    }
    let peers = std::path::absolute(&args.peers_dir)?;
    for kind in &kinds {
        if let Some(missing) = Launch::of(*kind, &args.realtime_bin, &peers, 0, "").missing(*kind, &peers) {
            bail!("{missing}");
        }
    }
    std::fs::create_dir_all(&args.log_dir)?;
    pin_self(args.load_core)?;
    let secret = format!("compare-{}-{}", std::process::id(), crate::payload::now_unix_nanos());
    let token = anon_token(&secret).context("signing the token")?;
    let started = Instant::now();
    let mut all = Vec::with_capacity(kinds.len());
    for kind in kinds {
        eprintln!("== {} ==", label(kind.name()));
        let launch = Launch::of(kind, &args.realtime_bin, &peers, 0, &secret);
        let log = args.log_dir.join(format!("{}.log", kind.name()));
        let server = Server::start(&launch, args.server_core, &log).await?;
        let figures = measure(kind, &server, &args, processes, &token).await;
        server.stop().await;
        all.push(figures?);
        // Let the kernel finish closing the last server's sockets before the next one starts.
        sleep(SETTLE).await;
    }
    eprintln!("compare finished in {:.0} s", started.elapsed().as_secs_f64());
    println!(
        "compare: {} members in {} rooms (+2 per room publishing), fixed rate {} msgs/s, {} s per phase, window {}; servers on core {}, load on core {}\n",
        args.connections, args.rooms, args.rate, args.duration, args.window, args.server_core, args.load_core
    );
    println!("{}", render_table(&all));
    println!("{}", render_ratios(&all));
    for path in [&args.csv, &args.svg] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
    }
    std::fs::write(&args.csv, render_csv(&all)).with_context(|| format!("writing {}", args.csv.display()))?;
    let title = format!(
        "{} members in {} rooms, one core per server (taskset), load on the other",
        args.connections, args.rooms
    );
    write_svg(&args.svg, &title, &all)?;
    eprintln!("wrote {} and {}", args.csv.display(), args.svg.display());
    Ok(())
}

/// The members' counts of one phase, summed over the workers.
struct Snapshot {
    delivered: u64,
    duplicates: u64,
    latency: Histogram<u64>,
}

async fn snapshot(pool: &mut Pool, errors: &mut ErrorCounts) -> Snapshot {
    let mut total = Snapshot { delivered: 0, duplicates: 0, latency: latency_histogram() };
    for outcome in pool.snapshot(Instant::now() + REPORT_BUDGET).await {
        match outcome {
            Ok(FinishedReport { delivered, duplicates, delivery_us, errors: e, .. }) => {
                total.delivered += delivered;
                total.duplicates += duplicates;
                delivery_us.add_to(&mut total.latency);
                merge_errors(errors, &e);
            }
            Err(e) => *errors.entry(format!("worker: {e}")).or_default() += 1,
        }
    }
    total
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1_000.0
    }
}

/// The worker processes' command line (besides what [`Pool::spawn_with`] adds).
fn worker_args(kind: ServerKind, addr: SocketAddr, args: &CompareArgs) -> Vec<String> {
    let protocol = match kind.protocol() {
        Protocol::Phoenix => "phoenix",
        Protocol::PlainJson => "plain-json",
        Protocol::SocketIo => "socket-io",
    };
    let lifetime = args.connect.connect_phase_timeout + 3 * (args.duration + args.drain) + 120;
    vec![
        format!("--protocol={protocol}"),
        format!("--addr={addr}"),
        format!("--rooms={}", args.rooms),
        format!("--lifetime={lifetime}"),
    ]
}

/// All phases against one running server.
async fn measure(
    kind: ServerKind,
    server: &Server,
    args: &CompareArgs,
    processes: usize,
    token: &str,
) -> anyhow::Result<ServerFigures> {
    let mut f = ServerFigures {
        server: kind.name().into(),
        attempted: (args.connections + 2 * args.rooms) as u64,
        rate: args.rate,
        ..ServerFigures::default()
    };
    let pid = Some(server.pid);
    sleep(SETTLE).await;
    f.rss_idle_kib = read_rss_kib(pid);

    // 1. Connections held.
    let slices: Vec<WorkerSlice> = split(args.connections, processes);
    let own = args.connect.for_workers(processes);
    let mut pool = Pool::spawn_with(
        "compare-worker",
        &slices,
        &worker_args(kind, server.addr, args),
        &own,
        &[(TOKEN_ENV, token)],
    )
    .context("spawning workers")?;
    let connect_started = Instant::now();
    let phase = Duration::from_secs(args.connect.connect_phase_timeout);
    let joined = pool.joined(Instant::now() + phase + JOIN_GRACE).await;
    let (mut ok, mut failed, mut connect) = (0, 0, latency_histogram());
    let mut errors = ErrorCounts::new();
    let totals = JoinTotals { ok: &mut ok, failed: &mut failed, errors: &mut errors, latency: &mut connect };
    let per_room = fold_joined(totals, &slices, joined, args.rooms);
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let (mut pairs, pair_errors) = compare_load::connect_pairs(
        server.addr,
        kind.protocol(),
        token,
        args.rooms,
        Duration::from_secs(args.connect.connect_timeout),
        Duration::from_secs(args.connect.join_timeout),
    )
    .await;
    merge_errors(&mut errors, &pair_errors);
    f.held = ok + 2 * pairs.len() as u64;
    f.connect_p50_ms = ms(&connect, 0.5);
    f.connect_p99_ms = ms(&connect, 0.99);
    eprintln!("connect: {ok} members ok, {failed} failed in {connect_secs:.1} s; {} pairs", pairs.len());

    // 2. RSS per connection.
    sleep(SETTLE).await;
    f.rss_joined_kib = read_rss_kib(pid);

    // 3. Latency at a fixed rate.
    let duration = Duration::from_secs(args.duration);
    snapshot(&mut pool, &mut errors).await;
    let fixed =
        compare_load::run_phase(&mut pairs, args.rooms, Pace::Fixed { rate: args.rate }, 0, duration).await;
    let (_, drain_errors) =
        compare_load::drain(&mut pairs, Instant::now() + Duration::from_secs(args.drain)).await;
    let members = snapshot(&mut pool, &mut errors).await;
    fold_phase(&mut errors, &fixed, &drain_errors);
    f.fixed_sent = fixed.sent();
    f.fixed_expected = fixed.sent_per_room.iter().zip(&per_room).map(|(s, n)| s * n).sum();
    f.fixed_unique = members.delivered.saturating_sub(members.duplicates);
    f.fixed_duplicates = members.duplicates;
    f.latency_p50_ms = ms(&members.latency, 0.5);
    f.latency_p99_ms = ms(&members.latency, 0.99);
    f.latency_max_ms = if members.latency.is_empty() { 0.0 } else { members.latency.max() as f64 / 1_000.0 };
    eprintln!(
        "fixed rate: sent {} (due {}), {} of {} deliveries, p99 {:.1} ms",
        f.fixed_sent, fixed.due, f.fixed_unique, f.fixed_expected, f.latency_p99_ms
    );

    // 4. Deliveries/s at saturation.
    let ticks = clock_ticks_per_second() as f64;
    snapshot(&mut pool, &mut errors).await;
    let (cpu0, server_core0, load_core0) =
        (read_cpu_ticks(pid), read_core_ticks(args.server_core), read_core_ticks(args.load_core));
    let t0 = Instant::now();
    let base = u32::try_from(args.rooms).unwrap_or(u32::MAX / 2);
    let sat =
        compare_load::run_phase(&mut pairs, args.rooms, Pace::Closed { window: args.window }, base, duration)
            .await;
    let t1 = Instant::now();
    let (cpu1, server_core1, load_core1) =
        (read_cpu_ticks(pid), read_core_ticks(args.server_core), read_core_ticks(args.load_core));
    let members = snapshot(&mut pool, &mut errors).await;
    fold_phase(&mut errors, &sat, &ErrorCounts::new());
    f.sat_secs = (t1 - t0).as_secs_f64();
    f.sat_sent = sat.sent();
    f.sat_deliveries = members.delivered + sat.tracker_deliveries;
    f.sat_stalls = sat.stalls;
    f.sat_server_cpu_secs = match (cpu0, cpu1) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / ticks,
        _ => 0.0,
    };
    f.server_core_busy = busy_share(server_core0, server_core1);
    f.load_core_busy = busy_share(load_core0, load_core1);
    eprintln!(
        "saturation: {} published, {} deliveries in {:.1} s, server CPU {:.1} s",
        f.sat_sent, f.sat_deliveries, f.sat_secs, f.sat_server_cpu_secs
    );

    let (_, drain_errors) = compare_load::drain(&mut pairs, Instant::now() + Duration::from_secs(1)).await;
    merge_errors(&mut errors, &drain_errors);
    compare_load::close(pairs).await;
    for outcome in pool.finish(Instant::now() + REPORT_BUDGET).await {
        match outcome {
            Ok(report) => merge_errors(&mut errors, &report.errors),
            Err(e) => *errors.entry(format!("worker: {e}")).or_default() += 1,
        }
    }
    f.errors = errors;
    Ok(f)
}

fn fold_phase(errors: &mut ErrorCounts, phase: &PhaseOutcome, drain: &ErrorCounts) {
    merge_errors(errors, &phase.errors);
    merge_errors(errors, drain);
}
