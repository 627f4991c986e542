//! Child-process mode (`realtime-loadtest worker`, hidden): holds a slice of the receivers so no
//! process needs more than its 20,000 open files.
//!
//! Lifecycle: connect and join every receiver (at most `--connect-concurrency` in flight, optionally
//! paced by `--connect-rate`, bounded by `--connect-phase-timeout`), print a `joined` line, keep
//! receiving until the parent writes `stop` (or closes stdin, or `--lifetime` runs out), close the
//! sockets and print a `finished` line. Progress goes to stderr; stdout carries only the JSON lines.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use realtime_proto::Vsn;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{interval, sleep_until, timeout, timeout_at, Instant, MissedTickBehavior};

use crate::client::Endpoint;
use crate::ipc::{JoinedReport, WorkerMessage, STOP};
use crate::pool::split;
use crate::receiver::{self, JoinOutcome, ReceiverContext, ReceiverStats};
use crate::report::{latency_histogram, HistogramData};
use crate::scenario::fanout::topic;

/// Environment variable the parent passes the JWT in (kept off the command line).
pub const TOKEN_ENV: &str = "REALTIME_LOADTEST_TOKEN";

/// Time receivers get to send their close frames after `stop`.
const STOP_BUDGET: Duration = Duration::from_secs(3);

/// How connections are opened; shared by the parent's flags and the worker's (a worker gets its share
/// of the totals, see [`ConnectArgs::for_workers`]).
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Connects (TCP + WebSocket handshake + join) in flight at once over the whole run, split between
    /// the worker processes (at least one each): "10,000 connects at 200 concurrent".
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Connection attempts per second (total over all workers); unlimited when absent.
    #[arg(long)]
    pub connect_rate: Option<f64>,
    /// Seconds for TCP connect plus WebSocket handshake.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
    /// Seconds from sending `phx_join` to its reply.
    #[arg(long, default_value_t = 10)]
    pub join_timeout: u64,
    /// Seconds for a worker's whole connect phase; connections still pending then count as failed.
    #[arg(long, default_value_t = 120)]
    pub connect_phase_timeout: u64,
}

impl ConnectArgs {
    /// Each of `processes` workers' settings as command-line arguments: the total concurrency split
    /// exactly between them (at least 1 each) and the rate divided evenly.
    pub fn for_workers(&self, processes: usize) -> Vec<Vec<String>> {
        let rate = self.connect_rate.map(|r| r / processes as f64);
        split(self.connect_concurrency, processes)
            .iter()
            .map(|share| self.to_cli(share.connections.max(1), rate))
            .collect()
    }

    /// These settings as command-line arguments, with `concurrency` and `rate` in place of the totals.
    pub fn to_cli(&self, concurrency: usize, rate: Option<f64>) -> Vec<String> {
        let mut out = vec![
            format!("--connect-concurrency={concurrency}"),
            format!("--connect-timeout={}", self.connect_timeout),
            format!("--join-timeout={}", self.join_timeout),
            format!("--connect-phase-timeout={}", self.connect_phase_timeout),
        ];
        if let Some(rate) = rate {
            out.push(format!("--connect-rate={rate}"));
        }
        out
    }
}

/// What every kind of worker process is told about its share of the connections.
#[derive(Args, Debug, Clone)]
pub struct SliceArgs {
    /// Global index of this worker's first connection.
    #[arg(long)]
    pub first_conn: usize,
    #[arg(long)]
    pub connections: usize,
    /// Seconds after which the worker exits even without `stop`.
    #[arg(long)]
    pub lifetime: u64,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Arguments of the hidden `worker` subcommand, written by the parent.
#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    #[arg(long)]
    pub index: usize,
    /// The nodes' endpoints, comma-separated; see [`node_of`].
    #[arg(long, value_delimiter = ',', required = true)]
    pub target: Vec<String>,
    #[arg(long, env = TOKEN_ENV, hide_env_values = true)]
    pub token: String,
    #[arg(long)]
    pub vsn: Vsn,
    #[arg(long)]
    pub channels: usize,
    /// This worker's share (channel = global connection index mod channels).
    #[command(flatten)]
    pub slice: SliceArgs,
}

/// The node receiver `global` connects to: receivers of one channel (every `channels`-th) take the
/// nodes in turn, so each channel has members on every node once it has at least as many receivers as
/// there are nodes (`global mod nodes` would put a whole channel on one node whenever the counts share a
/// factor).
pub fn node_of(global: usize, channels: usize, nodes: usize) -> usize {
    (global / channels.max(1)) % nodes.max(1)
}

/// Writes one line to the parent; `false` when the parent is gone (stdout closed).
pub async fn emit(message: &WorkerMessage) -> bool {
    let mut stdout = tokio::io::stdout();
    let line = format!("{}\n", message.to_line());
    stdout.write_all(line.as_bytes()).await.is_ok() && stdout.flush().await.is_ok()
}

/// Runs the worker until it has reported `finished`.
pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let lifetime_end = Instant::now() + Duration::from_secs(args.slice.lifetime);
    let mut endpoints = Vec::with_capacity(args.target.len());
    for target in &args.target {
        endpoints.push(Endpoint::resolve(target, &args.token, args.vsn).await.context("target")?);
    }
    let nodes = endpoints.len();
    let (outcome_tx, outcome_rx) = mpsc::channel(1_024);
    let ctx = Arc::new(ReceiverContext {
        endpoints,
        connect_timeout: Duration::from_secs(args.slice.connect.connect_timeout),
        join_timeout: Duration::from_secs(args.slice.connect.join_timeout),
        stats: ReceiverStats::default(),
        outcome_tx,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let spawn = |conn: usize, permit, stop| {
        let global = args.slice.first_conn + conn;
        let channel = global % args.channels;
        receiver::run(
            Arc::clone(&ctx),
            conn,
            node_of(global, args.channels, nodes),
            channel,
            topic(channel),
            permit,
            stop,
        )
    };
    let joined = connect_phase(
        args.slice.connections,
        args.channels,
        &args.slice.connect,
        &mut tasks,
        outcome_rx,
        &stop_rx,
        spawn,
    )
    .await;
    eprintln!("[worker {}] joined {} / {}", args.index, joined.ok, args.slice.connections);
    if !emit(&WorkerMessage::Joined(joined)).await {
        eprintln!("[worker {}] parent gone; exiting", args.index);
        return Ok(());
    }
    receive_until_stop(lifetime_end, stop_tx, tasks).await;
    if !emit(&WorkerMessage::Finished(ctx.stats.finish())).await {
        eprintln!("[worker {}] parent gone; exiting", args.index);
    }
    Ok(())
}

/// After the `joined` line: lets the connection tasks receive until `stop` (or stdin EOF, or
/// `lifetime_end`), then tells them to stop and gives them [`STOP_BUDGET`] to close.
pub async fn receive_until_stop(lifetime_end: Instant, stop_tx: watch::Sender<bool>, tasks: JoinSet<()>) {
    wait_for_stop(lifetime_end).await;
    stop_tasks(stop_tx, tasks).await;
}

/// Tells the connection tasks to stop and gives them [`STOP_BUDGET`] to close; aborts the rest.
pub async fn stop_tasks(stop_tx: watch::Sender<bool>, mut tasks: JoinSet<()>) {
    let _ = stop_tx.send(true);
    if timeout(STOP_BUDGET, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
        tasks.abort_all();
    }
}

/// Opens `connections` connections, `spawn(conn, permit, stop)` being the task of connection `conn`
/// (it must report one [`JoinOutcome`] on the channel `outcome_rx` reads, with a group index below
/// `groups`); returns the phase report once each has joined or failed, or the phase timed out.
pub async fn connect_phase<F, Fut>(
    connections: usize,
    groups: usize,
    connect: &ConnectArgs,
    tasks: &mut JoinSet<()>,
    mut outcome_rx: mpsc::Receiver<JoinOutcome>,
    stop_rx: &watch::Receiver<bool>,
    mut spawn: F,
) -> JoinedReport
where
    F: FnMut(usize, OwnedSemaphorePermit, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let n = connections;
    let deadline = Instant::now() + Duration::from_secs(connect.connect_phase_timeout);
    let gate = Arc::new(Semaphore::new(connect.connect_concurrency.max(1)));
    let mut pace = connect.connect_rate.filter(|r| *r > 0.0).map(|rate| {
        let mut pace = interval(Duration::from_secs_f64(1.0 / rate));
        pace.set_missed_tick_behavior(MissedTickBehavior::Delay);
        pace
    });
    let mut handles: Vec<Option<AbortHandle>> = Vec::with_capacity(n);
    let mut report = JoinedReport { joined_per_channel: vec![0; groups], ..JoinedReport::default() };
    let mut connect_join = latency_histogram();
    let mut reported = 0;
    let timed_out = sleep_until(deadline);
    tokio::pin!(timed_out);
    while reported < n {
        tokio::select! {
            _ = &mut timed_out => break,
            Some(outcome) = outcome_rx.recv() => {
                reported += 1;
                handles[outcome.conn] = None;
                match outcome.result {
                    Ok(us) => {
                        report.ok += 1;
                        report.joined_per_channel[outcome.channel] += 1;
                        connect_join.saturating_record(us);
                    }
                    Err(kind) => {
                        report.failed += 1;
                        *report.errors.entry(kind).or_default() += 1;
                    }
                }
            }
            permit = Arc::clone(&gate).acquire_owned(), if handles.len() < n => {
                if let Some(pace) = pace.as_mut() {
                    pace.tick().await;
                }
                let conn = handles.len();
                let permit = permit.expect("the connect gate is never closed");
                handles.push(Some(tasks.spawn(spawn(conn, permit, stop_rx.clone()))));
            }
        }
    }
    let pending = n - reported;
    if pending > 0 {
        for handle in handles.iter().flatten() {
            handle.abort();
        }
        report.failed += pending as u64;
        *report.errors.entry("connect phase timeout".into()).or_default() += pending as u64;
    }
    report.connect_join_us = HistogramData::from_histogram(&connect_join);
    report
}

/// Returns on a `stop` line, on stdin EOF or error, or at `lifetime_end`.
async fn wait_for_stop(lifetime_end: Instant) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        match timeout_at(lifetime_end, lines.next_line()).await {
            Ok(Ok(Some(line))) if line.trim() != STOP => continue,
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::parse_args;

    #[test]
    fn connect_args_round_trip_through_the_cli() {
        let parsed: ConnectArgs = parse_args(["--connect-concurrency=7", "--connect-timeout=3"]);
        let cli = parsed.to_cli(7, Some(12.5));
        let again: ConnectArgs = parse_args(cli);
        assert_eq!(again.connect_concurrency, 7);
        assert_eq!(again.connect_timeout, 3);
        assert_eq!(again.join_timeout, 10);
        assert_eq!(again.connect_rate, Some(12.5));
    }

    #[test]
    fn every_channel_has_members_on_every_node() {
        let (channels, nodes) = (3, 3);
        let mut seen = std::collections::BTreeSet::new();
        for global in 0..9 {
            seen.insert((global % channels, node_of(global, channels, nodes)));
        }
        assert_eq!(seen.len(), 9);
        assert!((0..100).all(|g| node_of(g, 10, 1) == 0));
    }

    #[test]
    fn totals_are_split_between_workers() {
        let parsed: ConnectArgs = parse_args(["--connect-concurrency=201", "--connect-rate=300"]);
        let workers = parsed.for_workers(2);
        let parse = |cli: &Vec<String>| parse_args::<ConnectArgs>(cli.clone());
        let (a, b) = (parse(&workers[0]), parse(&workers[1]));
        assert_eq!((a.connect_concurrency, b.connect_concurrency), (101, 100));
        assert_eq!((a.connect_rate, b.connect_rate), (Some(150.0), Some(150.0)));
        let tiny = parse_args::<ConnectArgs>(["--connect-concurrency=1"]).for_workers(3);
        assert!(tiny.iter().all(|cli| parse(cli).connect_concurrency == 1));
    }
}
