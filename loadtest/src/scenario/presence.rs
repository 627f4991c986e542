//! Scenario `presence`: does a cluster show every client the same presences, and how soon?
//!
//! K clients per `--target` node (all in this process: a few hundred sockets) join `--topics` topics
//! `realtime:presence-<t>` with presence on, each tracking `{"v": <version>}` under its own key. After
//! every client's first track is visible everywhere, a churn runs for `--duration` seconds: at `--rate`
//! changes per second a random idle client tracks, updates, untracks, or leaves and rejoins
//! (`--rejoin-share`), never exceeding the node's presence-call limit per client.
//!
//! Measured (see [`crate::convergence`]): **convergence time**, from the node's reply to a change to the
//! moment every client on the *other* nodes shows it, p50/p99/max, with changes that timed out or were
//! abandoned counted; at the end, after the churn settles, every client's view is compared with the
//! presences the driver made (mismatches) and with the first view of its topic, `phx_ref`s included.
//! With `--kill-node-pid` that node process is sent SIGKILL `--kill-after` seconds into the churn, and
//! the **eviction time** is how long each client on the other nodes went on showing that node's clients.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use futures_util::future::join_all;
use realtime_proto::Vsn;
use tokio::sync::{mpsc, watch};
use tokio::time::{interval, Instant, MissedTickBehavior};

use crate::client::Endpoint;
use crate::convergence::Tracker;
use crate::netstat::listening_ports;
use crate::payload::now_unix_nanos;
use crate::presence_client::{self, lock, Command, PresenceShared, Spec};
use crate::presence_driver::{Counts, Driver, Rng, Slot};
use crate::presence_model::{key_of, PresenceModel};
use crate::report::{ErrorCounts, LatencySummary};
use crate::token::anon_token;

/// Most clients in all (one process, one file descriptor each).
const MAX_CLIENTS: usize = 5_000;
/// Slack added to the node's presence window, so the driver never trips the limit on a late reply.
const WINDOW_SLACK: Duration = Duration::from_secs(1);
/// How often the churn loop checks timeouts and the kill.
const POLL: Duration = Duration::from_millis(50);

/// Arguments of `realtime-loadtest presence`.
#[derive(Args, Debug, Clone)]
pub struct PresenceArgs {
    /// The nodes' WebSocket endpoints (repeat, or separate with commas).
    #[arg(long, alias = "url", value_delimiter = ',', required = true)]
    pub target: Vec<String>,
    /// HS256 secret the nodes verify tokens with.
    #[arg(long, env = "REALTIME_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// Clients (K) on each node.
    #[arg(long, default_value_t = 20)]
    pub clients_per_node: usize,
    /// Topics; client i of each node joins topic i mod topics.
    #[arg(long, default_value_t = 2)]
    pub topics: usize,
    /// Presence changes per second over all clients.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// Share of the changes of a tracking client that are a leave and rejoin (the rest: update or untrack).
    #[arg(long, default_value_t = 0.1)]
    pub rejoin_share: f64,
    /// Seconds of churn.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Seconds a change may take to show on every other node before it counts as timed out.
    #[arg(long, default_value_t = 10)]
    pub converge_timeout: u64,
    /// A node process to SIGKILL during the churn (it must serve one of the targets).
    #[arg(long)]
    pub kill_node_pid: Option<u32>,
    /// Seconds into the churn to kill `--kill-node-pid`.
    #[arg(long, default_value_t = 5)]
    pub kill_after: u64,
    /// Seconds the other nodes' clients may go on showing the killed node's presences.
    #[arg(long, default_value_t = 30)]
    pub evict_timeout: u64,
    /// The nodes' `--presence-max-calls` (track/untrack per client per window).
    #[arg(long, default_value_t = 5)]
    pub presence_max_calls: usize,
    /// The nodes' `--presence-window-ms`.
    #[arg(long, default_value_t = 30_000)]
    pub presence_window_ms: u64,
    /// Seconds for TCP connect, WebSocket handshake and join.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
    /// Serializer: 2.0.0 or 1.0.0.
    #[arg(long, default_value = "2.0.0")]
    pub vsn: Vsn,
}

fn check(args: &PresenceArgs) -> anyhow::Result<()> {
    let clients = args.target.len() * args.clients_per_node;
    if args.target.len() < 2 || args.clients_per_node == 0 || args.topics == 0 {
        bail!("need at least 2 --target nodes, 1 client per node and 1 topic");
    }
    if clients > MAX_CLIENTS {
        bail!("at most {MAX_CLIENTS} clients in all");
    }
    if !(args.rate > 0.0 && args.rate.is_finite() && (0.0..=1.0).contains(&args.rejoin_share)) {
        bail!("--rate must be positive and --rejoin-share between 0 and 1");
    }
    if args.kill_node_pid.is_some() && args.kill_after >= args.duration {
        bail!("--kill-after must fall within --duration");
    }
    if args.presence_max_calls < 2 {
        bail!("--presence-max-calls must be at least 2 (the first track is one)");
    }
    Ok(())
}

/// The target (index) whose port node process `pid` listens on.
fn target_of_pid(pid: u32, endpoints: &[Endpoint]) -> anyhow::Result<usize> {
    let ports = listening_ports(pid).with_context(|| format!("reading /proc/{pid}"))?;
    let serving: Vec<usize> =
        (0..endpoints.len()).filter(|&i| ports.contains(&endpoints[i].addr().port())).collect();
    match serving.as_slice() {
        [one] => Ok(*one),
        [] => bail!("process {pid} listens on none of the targets' ports ({ports:?})"),
        _ => bail!("process {pid} listens on the ports of several targets"),
    }
}

/// The topic of index `t`.
pub fn topic(t: usize) -> String {
    format!("realtime:presence-{t}")
}

/// Runs the scenario and prints its table on stdout.
pub async fn run(args: PresenceArgs) -> anyhow::Result<()> {
    check(&args)?;
    let token = anon_token(&args.jwt_secret).context("signing the token")?;
    let endpoints = super::endpoints(&args.target, &token, args.vsn).await?;
    let kill = match args.kill_node_pid {
        Some(pid) => {
            let node = target_of_pid(pid, &endpoints)?;
            eprintln!("--kill-node-pid {pid} is node {node}: {}", args.target[node]);
            Some((pid, node))
        }
        None => None,
    };
    let nodes = endpoints.len();
    let clients = nodes * args.clients_per_node;
    let shared = Arc::new(PresenceShared {
        endpoints,
        tracker: Mutex::new(Tracker::default()),
        models: (0..clients).map(|_| Mutex::new(PresenceModel::default())).collect(),
        errors: Mutex::new(ErrorCounts::new()),
        connect_timeout: Duration::from_secs(args.connect_timeout),
        killed: std::sync::atomic::AtomicUsize::new(usize::MAX),
    });
    let (status_tx, mut status) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut slots = Vec::with_capacity(clients);
    let mut tasks = Vec::with_capacity(clients);
    for node in 0..nodes {
        for j in 0..args.clients_per_node {
            let spec = Spec { id: slots.len(), node, topic: topic(j % args.topics), key: key_of(node, j) };
            let (commands, commands_rx) = mpsc::channel(4);
            let (shared, spec2, status_tx, stop_rx) =
                (Arc::clone(&shared), spec.clone(), status_tx.clone(), stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                presence_client::run(&shared, spec2, commands_rx, status_tx, stop_rx).await
            }));
            slots.push(Slot {
                spec,
                commands,
                joined: false,
                alive: true,
                tracked: None,
                calls: VecDeque::new(),
            });
        }
    }
    let mut driver = Driver {
        shared: Arc::clone(&shared),
        slots,
        next_version: 0,
        rng: Rng(now_unix_nanos() | 1),
        counts: Counts::default(),
        max_calls: args.presence_max_calls,
        window: Duration::from_millis(args.presence_window_ms) + WINDOW_SLACK,
        rejoin_share: args.rejoin_share,
    };
    let mut out = Vec::new();
    out.push(format!(
        "presence: {nodes} nodes × {} clients, {} topics, {} changes/s for {} s, rejoin share {}, vsn {}",
        args.clients_per_node, args.topics, args.rate, args.duration, args.rejoin_share, args.vsn
    ));
    let join_deadline = Instant::now() + Duration::from_secs(args.connect_timeout + 5);
    driver.wait(&mut status, join_deadline, |d| d.slots.iter().all(|s| s.joined || !s.alive)).await;
    let joined = driver.live().count();
    out.push(row("clients joined", format!("{joined} / {clients}")));
    if joined == 0 {
        bail!("no client joined: {:?}", lock(&shared.errors));
    }

    // Every client tracks once; the churn starts when all of them show everywhere.
    let started = Instant::now();
    let ids: Vec<usize> = driver.live().map(|s| s.spec.id).collect();
    for id in ids {
        let v = driver.version();
        driver.send(id, Command::Track(v), Instant::now());
    }
    let converge = Duration::from_secs(args.converge_timeout);
    driver.wait(&mut status, started + converge, |d| lock(&d.shared.tracker).open_changes() == 0).await;
    {
        let mut tracker = lock(&shared.tracker);
        tracker.expire(Instant::now(), Duration::ZERO);
        out.push(row(
            "first tracks visible",
            format!(
                "{} in {:.2} s, {}; {} timed out",
                tracker.convergence.len(),
                started.elapsed().as_secs_f64(),
                LatencySummary::of(&tracker.convergence).cells(),
                tracker.timed_out
            ),
        ));
        tracker.reset_figures();
    }

    let churn_start = Instant::now();
    let churn_end = churn_start + Duration::from_secs(args.duration);
    let kill_due = kill.map(|(pid, node)| (pid, node, churn_start + Duration::from_secs(args.kill_after)));
    let mut killed_at = None;
    let mut tick = interval(Duration::from_secs_f64(1.0 / args.rate));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut poll = interval(POLL);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(churn_end) => break,
            _ = tick.tick() => driver.churn(Instant::now()),
            Some((id, st)) = status.recv() => driver.apply_status(id, st),
            _ = poll.tick() => {
                lock(&shared.tracker).expire(Instant::now(), converge);
                if let Some((pid, node, due)) = kill_due {
                    if killed_at.is_none() && Instant::now() >= due {
                        killed_at = Some(driver.kill(pid, node)?);
                        eprintln!("killed node {node} (pid {pid})");
                    }
                }
            }
        }
    }
    let counts = &driver.counts;
    let changes = counts.tracks + counts.updates + counts.untracks + counts.rejoins;
    out.push(row(
        "changes",
        format!(
            "{changes}: {} track, {} update, {} untrack, {} leave+rejoin; {} ticks without an idle client",
            counts.tracks, counts.updates, counts.untracks, counts.rejoins, counts.skipped
        ),
    ));
    driver
        .wait(&mut status, Instant::now() + converge, |d| lock(&d.shared.tracker).open_changes() == 0)
        .await;
    if let Some(at) = killed_at {
        let deadline = at + Duration::from_secs(args.evict_timeout);
        driver.wait(&mut status, deadline, |d| lock(&d.shared.tracker).eviction_pending() == 0).await;
    }
    {
        let mut tracker = lock(&shared.tracker);
        tracker.expire(Instant::now(), Duration::ZERO);
        tracker.end_kill_watch();
        out.push(row("convergence p50 / p99 / max", LatencySummary::of(&tracker.convergence).cells()));
        out.push(row(
            "converged / timed out / abandoned",
            format!("{} / {} / {}", tracker.convergence.len(), tracker.timed_out, tracker.abandoned),
        ));
        if let (Some((pid, node, _)), Some(at)) = (kill_due, killed_at) {
            out.push(row(
                "kill",
                format!(
                    "pid {pid}, node {node} ({}), {:.1} s into the churn",
                    args.target[node],
                    (at - churn_start).as_secs_f64()
                ),
            ));
            let e = LatencySummary::of(&tracker.eviction);
            out.push(row(
                "eviction p50 / max",
                format!(
                    "{} / {} over {} observers; {} still showed it after {} s",
                    ms(e.p50),
                    ms(e.max),
                    e.count,
                    tracker.not_evicted,
                    args.evict_timeout
                ),
            ));
        }
    }
    let (compared, mismatched, differing, examples) = driver.final_check();
    out.push(row(
        "final views",
        format!("{compared} compared: {mismatched} mismatches (vs the presences made), {differing} differ from their topic's first view"),
    ));
    for example in examples {
        out.push(row("", example));
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), join_all(tasks)).await;
    let errors = lock(&shared.errors).clone();
    if errors.is_empty() {
        out.push(row("errors", "none".into()));
    }
    for (kind, n) in errors {
        out.push(row("errors", format!("{n} × {kind}")));
    }
    println!("{}", out.join("\n"));
    Ok(())
}

fn row(label: &str, value: String) -> String {
    format!("  {label:<34} {value}")
}

fn ms(micros: Option<u64>) -> String {
    micros.map_or_else(|| "-".to_owned(), |us| format!("{:.2} ms", us as f64 / 1_000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> PresenceArgs {
        crate::scenario::parse_args(["--jwt-secret=s"].iter().chain(extra))
    }

    #[test]
    fn arguments_are_checked() {
        let a = args(&["--target=ws://a/s,ws://b/s", "--url", "ws://c/s"]);
        assert_eq!(a.target.len(), 3);
        assert!(check(&a).is_ok());
        assert!(check(&args(&["--target=ws://a/s"])).is_err(), "one node is no cluster");
        assert!(check(&args(&["--target=ws://a/s,ws://b/s", "--rejoin-share=2"])).is_err());
        assert!(check(&args(&["--target=ws://a/s,ws://b/s", "--clients-per-node=3000"])).is_err());
        assert!(check(&args(&["--target=ws://a/s,ws://b/s", "--presence-max-calls=1"])).is_err());
        assert!(
            check(&args(&["--target=ws://a/s,ws://b/s", "--kill-node-pid=1", "--kill-after=20"])).is_err()
        );
    }
}
