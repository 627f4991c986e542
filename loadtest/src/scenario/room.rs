//! Scenario `room`: one very large presence room, `realtime:<--topic>` (issue 19 item 3).
//!
//! Phases, each bounded in time, all connections in this process (10,000 members and 500 churners
//! fit in its open-files limit):
//! 1. **fill**: `--members` connections (at most `--connect-concurrency` connecting at once) join with
//!    presence on under `m-<i>` (`counts_only` too with `--counts-only`) and track `{"i": i}`; then the
//!    run waits until no member has received a presence frame for a while (the diffs of the fill
//!    drained). Each member counts the `presence_state`, `presence_diff` and presence-count `system`
//!    frames and bytes it receives ([`crate::room_tally`]).
//! 2. **quiet probes**: `--probes` fresh connections one after another join, and the time from
//!    `phx_join` to the ok reply and to `presence_state` (or the count push) and its size are measured;
//!    each leaves again. An observer (full presence, no track) joins first.
//! 3. **churn**: `--churners` connections join and leave on a fixed schedule of `--churn-rate` joins/s
//!    for `--churn-seconds` ([`crate::room_churn`]); meanwhile more probes, and per idle member the
//!    presence frames and bytes per second; the observer times each churn track from its ok reply to
//!    its key's first `presence_diff`.
//! 4. **broadcast**: one publisher sends stamped broadcasts at `--broadcast-rate` for
//!    `--broadcast-seconds`; delivery latency at the members, lost and duplicated.
//!
//! The node's default limits stop such a room early; run it with e.g. `--max-channel-members=20000
//! --max-joins-per-second=1000000000 --max-token-joins-per-second=1000000000
//! --presence-max-calls=1000000` (members + probes + churners + observer + publisher must fit in the
//! channel; a churner tracks once per join, so its presence window fills up over a churn).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use realtime_proto::Vsn;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{sleep, timeout_at, Instant};

use crate::report::{latency_histogram, merge_errors, ErrorCounts, LatencySummary};
use crate::room_churn::{self, ChurnPlan};
use crate::room_members::{self, lock, ChurnLog, Deliveries, Role, RoomShared};
use crate::room_probe;
use crate::room_report::{BroadcastFigures, CpuUse, RoomReport, Settle, TrackSeen};
use crate::room_tally::{snapshot, total_presence_frames, Tally, WindowRates};
use crate::rss::{clock_ticks_per_second, read_cpu_ticks, read_rss_kib};
use crate::token::anon_token;

/// Most sockets this process opens at once (its open-files limit is 20,000).
const MAX_SOCKETS: usize = 19_000;
/// The observer and the publisher wait this many `--join-timeout`s for their join reply.
const SETUP_TIMEOUT_FACTOR: u64 = 3;
/// How often the fill and the settle are checked.
const POLL: Duration = Duration::from_millis(250);
/// How often the fill's progress is printed.
const PROGRESS: Duration = Duration::from_secs(5);
/// Time members get to close after the run.
const STOP_BUDGET: Duration = Duration::from_secs(10);
/// How long the publisher stays connected (and members receive) after the last broadcast; what has
/// not arrived by then is counted as not received (late or lost: the run cannot tell).
const DRAIN: Duration = Duration::from_secs(2);

/// Arguments of `realtime-loadtest room`.
#[derive(Args, Debug, Clone)]
pub struct RoomArgs {
    /// WebSocket endpoint (`apikey` and `vsn` are appended).
    #[arg(long, alias = "url", default_value = "ws://127.0.0.1:4000/socket/websocket")]
    pub target: String,
    /// HS256 secret the server verifies tokens with.
    #[arg(long, env = "REALTIME_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// The room: topic `realtime:<topic>`.
    #[arg(long, default_value = "room-big")]
    pub topic: String,
    /// Members that join with presence and track once.
    #[arg(long, default_value_t = 10_000)]
    pub members: usize,
    /// Connects (TCP + handshake + join + track) in flight at once, for members and churners.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Members, churners and probes join with `presence.counts_only: true` (the observer does not).
    #[arg(long)]
    pub counts_only: bool,
    /// Late-join probes in the quiet room, and again at most as many during the churn.
    #[arg(long, default_value_t = 50)]
    pub probes: usize,
    /// Milliseconds between probes' starts (one at a time; a late one starts at once).
    #[arg(long, default_value_t = 200)]
    pub probe_interval_ms: u64,
    /// Seconds of churn; 0 skips it.
    #[arg(long, default_value_t = 20)]
    pub churn_seconds: u64,
    /// Churn joins per second, on a fixed schedule.
    #[arg(long, default_value_t = 1_000.0)]
    pub churn_rate: f64,
    /// Churner connections (connected before the churn, joined only during their cycles). A cycle
    /// lasts the hold plus the join and leave round trips, so the rate needs more than
    /// rate × hold churners: 1,500 leave room for 0.5 s of round trips at 1,000 joins/s.
    #[arg(long, default_value_t = 1_500)]
    pub churners: usize,
    /// Milliseconds a churner stays joined after its join reply.
    #[arg(long, default_value_t = 1_000)]
    pub churn_hold_ms: u64,
    /// Broadcasts per second by one publisher; 0 skips the broadcast phase.
    #[arg(long, default_value_t = 10.0)]
    pub broadcast_rate: f64,
    /// Seconds of broadcasting.
    #[arg(long, default_value_t = 10)]
    pub broadcast_seconds: u64,
    /// Seconds the fill may take; members not tracked by then count as failed.
    #[arg(long, default_value_t = 600)]
    pub fill_timeout: u64,
    /// Seconds to wait after the fill (and after the churn) for the members' presence traffic to stop.
    #[arg(long, default_value_t = 60)]
    pub settle_timeout: u64,
    /// Milliseconds without a presence frame at any member that count as stopped (an overloaded node
    /// can pause longer than a short quiet between its diffs).
    #[arg(long, default_value_t = 5_000)]
    pub settle_quiet_ms: u64,
    /// Seconds for TCP connect plus WebSocket handshake.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
    /// Seconds from sending `phx_join` (or a track, or a leave) to its reply.
    #[arg(long, default_value_t = 10)]
    pub join_timeout: u64,
    /// Server pid, to sample its RSS from /proc/<pid>/status before and after the fill.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Serializer: 2.0.0 or 1.0.0.
    #[arg(long, default_value = "2.0.0")]
    pub vsn: Vsn,
}

fn check(args: &RoomArgs) -> anyhow::Result<()> {
    if args.members == 0 || args.connect_concurrency == 0 {
        bail!("--members and --connect-concurrency must be at least 1");
    }
    let churners = if args.churn_seconds > 0 { args.churners } else { 0 };
    if args.members + churners + 3 > MAX_SOCKETS {
        bail!("--members + --churners must stay under {MAX_SOCKETS} (this process's open files)");
    }
    if args.churn_seconds > 0
        && (args.churners == 0 || !(args.churn_rate > 0.0 && args.churn_rate.is_finite()))
    {
        bail!("a churn needs at least 1 churner and a positive --churn-rate");
    }
    if !(args.broadcast_rate >= 0.0 && args.broadcast_rate.is_finite()) {
        bail!("--broadcast-rate must be 0 or positive");
    }
    if args.settle_quiet_ms == 0 {
        bail!("--settle-quiet-ms must be positive");
    }
    if args.probes > 0 && args.probe_interval_ms == 0 {
        bail!("--probe-interval-ms must be positive");
    }
    Ok(())
}

/// Waits until no member has received a presence frame for `quiet`, at most `timeout`; the seconds
/// are counted from `from` (the end of what caused the traffic) to the last frame.
async fn settle(tallies: &[Tally], from: Instant, quiet: Duration, timeout: Duration) -> Settle {
    let start = Instant::now();
    let (mut frames, mut quiet_since) = (total_presence_frames(tallies), start);
    while start.elapsed() < timeout && quiet_since.elapsed() < quiet {
        sleep(POLL).await;
        let now = total_presence_frames(tallies);
        if now != frames {
            (frames, quiet_since) = (now, Instant::now());
        }
    }
    let settled = quiet_since.elapsed() >= quiet;
    let secs =
        if settled { quiet_since } else { Instant::now() }.saturating_duration_since(from).as_secs_f64();
    Settle { settled, secs }
}

/// CPU seconds of the server (with `--server-pid`) and of this process since `since`.
struct CpuMark {
    server: Option<u64>,
    own: Option<u64>,
    at: Instant,
}

impl CpuMark {
    fn now(server_pid: Option<u32>) -> CpuMark {
        CpuMark {
            server: read_cpu_ticks(server_pid),
            own: read_cpu_ticks(Some(std::process::id())),
            at: Instant::now(),
        }
    }

    fn since(&self, server_pid: Option<u32>, ticks_per_sec: u64) -> CpuUse {
        let end = CpuMark::now(server_pid);
        let secs =
            |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?) as f64 / ticks_per_sec.max(1) as f64);
        CpuUse {
            server: secs(self.server, end.server),
            loader: secs(self.own, end.own),
            window: (end.at - self.at).as_secs_f64(),
        }
    }
}

fn title(args: &RoomArgs) -> String {
    let churn = if args.churn_seconds == 0 {
        "no churn".to_owned()
    } else {
        format!(
            "churn {} joins/s for {} s by {} churners holding {} ms",
            args.churn_rate, args.churn_seconds, args.churners, args.churn_hold_ms
        )
    };
    format!(
        "room: realtime:{}, {} members ({} connects in flight), counts-only {}, {} probes every {} ms, {churn}, {} broadcasts/s for {} s, vsn {}",
        args.topic,
        args.members,
        args.connect_concurrency,
        if args.counts_only { "on" } else { "off" },
        args.probes,
        args.probe_interval_ms,
        args.broadcast_rate,
        args.broadcast_seconds,
        args.vsn
    )
}

/// Runs the scenario and prints its table on stdout.
pub async fn run(args: RoomArgs) -> anyhow::Result<()> {
    check(&args)?;
    let needed = args.churn_rate * args.churn_hold_ms as f64 / 1_000.0;
    if args.churn_seconds > 0 && (args.churners as f64) < needed * 1.1 {
        eprintln!(
            "warning: {} churners holding {} ms cannot keep {} joins/s (each cycle also waits for its \
             join and leave replies): joins will be counted as not issued on time",
            args.churners, args.churn_hold_ms, args.churn_rate
        );
    }
    let token = anon_token(&args.jwt_secret).context("signing the token")?;
    let endpoint = super::endpoints(std::slice::from_ref(&args.target), &token, args.vsn).await?.remove(0);
    let shared = Arc::new(RoomShared {
        endpoint,
        vsn: args.vsn,
        topic: format!("realtime:{}", args.topic),
        counts_only: args.counts_only,
        connect_timeout: Duration::from_secs(args.connect_timeout),
        join_timeout: Duration::from_secs(args.join_timeout),
        setup_timeout: Duration::from_secs(args.join_timeout * SETUP_TIMEOUT_FACTOR),
        tallies: (0..args.members).map(|_| Tally::default()).collect(),
        observer_tally: Tally::default(),
        errors: Mutex::new(ErrorCounts::new()),
        deliveries: Mutex::new(Deliveries::default()),
        churn: Mutex::new(ChurnLog::default()),
        observing: AtomicBool::new(false),
        members_ended: AtomicU64::new(0),
    });
    let mut report =
        RoomReport { title: title(&args), members: args.members as u64, ..RoomReport::default() };
    report.rss_before = read_rss_kib(args.server_pid);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::with_capacity(args.members + 1);

    // 1. Fill.
    eprintln!("fill: {} members into {}", args.members, shared.topic);
    let ticks = clock_ticks_per_second();
    let (settle_quiet, settle_timeout) =
        (Duration::from_millis(args.settle_quiet_ms), Duration::from_secs(args.settle_timeout));
    let permits = Arc::new(Semaphore::new(args.connect_concurrency));
    let fill_cpu = CpuMark::now(args.server_pid);
    let fill_start = Instant::now();
    for i in 0..args.members {
        let (shared, permits, stop_rx, done_tx) =
            (Arc::clone(&shared), Arc::clone(&permits), stop_rx.clone(), done_tx.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(permit) = permits.acquire_owned().await else { return };
            room_members::run(shared, Role::Member(i), permit, stop_rx, done_tx).await;
        }));
    }
    let fill_deadline = fill_start + Duration::from_secs(args.fill_timeout);
    let mut fill_join = latency_histogram();
    let mut reported = vec![false; args.members];
    let mut last_report = fill_start;
    let mut next_progress = fill_start + PROGRESS;
    while report.fill_ok + report.fill_failed < args.members as u64 {
        match timeout_at(fill_deadline.min(Instant::now() + POLL), done_rx.recv()).await {
            Ok(Some((Role::Member(i), outcome))) => {
                reported[i] = true;
                last_report = Instant::now();
                match outcome {
                    Ok(us) => {
                        report.fill_ok += 1;
                        fill_join.saturating_record(us);
                    }
                    Err(kind) => {
                        report.fill_failed += 1;
                        *report.fill_errors.entry(kind).or_default() += 1;
                    }
                }
            }
            Ok(_) => {}
            Err(_) if Instant::now() >= fill_deadline => break,
            Err(_) => {}
        }
        if Instant::now() >= next_progress {
            next_progress += PROGRESS;
            eprintln!(
                "fill: {} tracked, {} failed after {:.0} s",
                report.fill_ok,
                report.fill_failed,
                fill_start.elapsed().as_secs_f64()
            );
        }
    }
    for (i, seen) in reported.iter().enumerate() {
        if !seen {
            tasks[i].abort();
            report.fill_failed += 1;
            *report.fill_errors.entry("not tracked within --fill-timeout".into()).or_default() += 1;
        }
    }
    report.fill_secs = (last_report - fill_start).as_secs_f64();
    report.fill_cpu = Some(fill_cpu.since(args.server_pid, ticks));
    report.fill_join = LatencySummary::of(&fill_join);
    eprintln!("fill: {} tracked, {} failed in {:.1} s", report.fill_ok, report.fill_failed, report.fill_secs);
    if report.fill_ok == 0 {
        let _ = stop_tx.send(true);
        println!("{}", report.render());
        bail!("no member joined");
    }

    // Settle: the fill's diffs drain.
    report.settle = settle(&shared.tallies, last_report, settle_quiet, settle_timeout).await;
    eprintln!("settle: {}", report.settle.text());
    report.rss_after_fill = read_rss_kib(args.server_pid);
    // The observer, then 2. the quiet probes.
    let observer_permit = Arc::new(Semaphore::new(1)).acquire_owned().await.context("observer permit")?;
    let observer = {
        let (shared, stop_rx, done_tx) = (Arc::clone(&shared), stop_rx.clone(), done_tx.clone());
        tokio::spawn(room_members::run(shared, Role::Observer, observer_permit, stop_rx, done_tx))
    };
    tasks.push(observer);
    let observer_deadline =
        Instant::now() + shared.connect_timeout + shared.setup_timeout + Duration::from_secs(1);
    while let Ok(Some((role, outcome))) = timeout_at(observer_deadline, done_rx.recv()).await {
        if role == Role::Observer {
            report.observer_joined = outcome.is_ok();
            if let Err(kind) = outcome {
                shared.error(format!("observer {kind}"));
            }
            break;
        }
    }
    let interval = Duration::from_millis(args.probe_interval_ms.max(1));
    if args.probes > 0 {
        let before = (snapshot(&shared.tallies), Instant::now());
        let window = interval.saturating_mul(u32::try_from(args.probes).unwrap_or(u32::MAX));
        let quiet = room_probe::probes(&shared, 'q', args.probes, interval, window).await;
        report.quiet_rates =
            WindowRates::of(&before.0, &snapshot(&shared.tallies), before.1.elapsed().as_secs_f64());
        eprintln!("quiet probes: {} ok, {} failed", quiet.reply_us.len(), quiet.failed);
        report.quiet = Some(quiet);
    }

    // 3. Churn, with probes beside it.
    let mut churn_start = None;
    if args.churn_seconds > 0 {
        let (clients, connect_errors) =
            room_churn::connect(&shared, args.churners, args.connect_concurrency).await;
        merge_errors(&mut report.errors, &connect_errors);
        eprintln!(
            "churn: {} churners connected; {} joins/s for {} s",
            clients.len(),
            args.churn_rate,
            args.churn_seconds
        );
        let plan = ChurnPlan {
            rate: args.churn_rate,
            duration: Duration::from_secs(args.churn_seconds),
            hold: Duration::from_millis(args.churn_hold_ms),
        };
        shared.observing.store(true, Ordering::Relaxed);
        let before = snapshot(&shared.tallies);
        let observer_before = shared.observer_tally.snapshot();
        let churn_cpu = CpuMark::now(args.server_pid);
        let churn_end = Instant::now() + plan.duration;
        let window_end = async {
            sleep(plan.duration).await;
            (snapshot(&shared.tallies), churn_cpu.since(args.server_pid, ticks))
        };
        let probes = async {
            if args.probes == 0 {
                return None;
            }
            Some(room_probe::probes(&shared, 'c', args.probes, interval, plan.duration).await)
        };
        let (churned, (after, cpu), churn_probes) =
            tokio::join!(room_churn::run(Arc::clone(&shared), clients, plan), window_end, probes);
        report.churn_rates = WindowRates::of(&before, &after, plan.duration.as_secs_f64());
        report.churn_cpu = Some(cpu);
        eprintln!("churn: {} joins ok, {:.1} joins/s", churned.joins_ok, churned.joins_per_sec);
        report.churn = Some(churned);
        report.churn_probes = churn_probes;
        // The broadcasts go into a room whose churn diffs have drained.
        let settled = settle(&shared.tallies, churn_end, settle_quiet, settle_timeout).await;
        eprintln!("settle after the churn: {}", settled.text());
        report.churn_settle = Some(settled);
        // The observer notes churn keys until the churn's diffs have drained (or the settle gave up).
        shared.observing.store(false, Ordering::Relaxed);
        report.track_seen = Some(TrackSeen::of(&lock(&shared.churn)));
        churn_start = Some((before, observer_before));
    }

    // 4. Broadcast.
    if args.broadcast_rate > 0.0 && args.broadcast_seconds > 0 {
        let members = shared.tallies.iter().filter(|t| t.snapshot().alive).count() as u64;
        eprintln!(
            "broadcast: {}/s for {} s to {members} members",
            args.broadcast_rate, args.broadcast_seconds
        );
        let duration = Duration::from_secs(args.broadcast_seconds);
        let published = room_probe::publish(&shared, args.broadcast_rate, duration, DRAIN).await;
        let d = lock(&shared.deliveries);
        report.broadcast = BroadcastFigures {
            members,
            expected: published.sent * members,
            delivered: d.delivered,
            duplicates: d.duplicates,
            reordered: d.reordered,
            latency: LatencySummary::of(&d.latency_us),
        };
        drop(d);
        report.published = Some(published);
    }

    // Every diff the churn caused, however late (nothing else changes presence after it): against
    // the changes it made.
    if let Some((before, observer_before)) = churn_start {
        report.churn_diffs = WindowRates::of(&before, &snapshot(&shared.tallies), 1.0).diffs;
        report.observer_diffs = shared.observer_tally.snapshot().diffs.saturating_sub(observer_before.diffs);
    }
    let _ = stop_tx.send(true);
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    if tokio::time::timeout(STOP_BUDGET, futures_util::future::join_all(tasks)).await.is_err() {
        aborts.iter().for_each(|a| a.abort());
    }
    report.members_ended = shared.members_ended.load(Ordering::Relaxed);
    merge_errors(&mut report.errors, &lock(&shared.errors));
    for part in [report.quiet.as_ref(), report.churn_probes.as_ref()].into_iter().flatten() {
        let errors: &ErrorCounts = &part.errors;
        merge_errors(&mut report.errors, errors);
    }
    if let Some(c) = &report.churn {
        merge_errors(&mut report.errors, &c.errors.clone());
    }
    if let Some(p) = &report.published {
        merge_errors(&mut report.errors, &p.errors.clone());
    }
    println!("{}", report.render());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> RoomArgs {
        crate::scenario::parse_args(["--jwt-secret=s"].iter().chain(extra))
    }

    #[test]
    fn defaults_follow_the_brief() {
        let a = args(&[]);
        assert_eq!((a.members, a.connect_concurrency, a.probes, a.probe_interval_ms), (10_000, 200, 50, 200));
        assert_eq!((a.churn_seconds, a.churn_rate, a.churners, a.churn_hold_ms), (20, 1_000.0, 1_500, 1_000));
        assert_eq!((a.broadcast_rate, a.broadcast_seconds, a.topic.as_str()), (10.0, 10, "room-big"));
        assert!(!a.counts_only && a.vsn == Vsn::V2);
        assert!(check(&a).is_ok());
        assert!(title(&a).contains("realtime:room-big, 10000 members"));
    }

    #[test]
    fn refuses_impossible_runs() {
        assert!(check(&args(&["--members=0"])).is_err());
        assert!(check(&args(&["--members=17600"])).is_err());
        assert!(check(&args(&["--members=18900", "--churn-seconds=0"])).is_ok());
        assert!(check(&args(&["--churners=0"])).is_err());
        assert!(check(&args(&["--churn-rate=0"])).is_err());
        assert!(check(&args(&["--churn-rate=0", "--churn-seconds=0"])).is_ok());
        assert!(check(&args(&["--broadcast-rate=-1"])).is_err());
        assert!(check(&args(&["--probe-interval-ms=0"])).is_err());
        assert!(check(&args(&["--settle-quiet-ms=0"])).is_err());
        let a = args(&["--counts-only", "--vsn=1.0.0", "--topic=t"]);
        assert!(a.counts_only && a.vsn == Vsn::V1 && title(&a).contains("counts-only on"));
    }
}
