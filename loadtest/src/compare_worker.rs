//! Child-process mode of `compare` (`realtime-loadtest compare-worker`, hidden): holds a slice of the
//! room members of one server, in whichever [`Protocol`] it speaks, so no process needs more than its
//! open-files limit.
//!
//! Lifecycle: connect and join every member (the same bounded connect phase as `fanout`'s workers,
//! [`connect_phase`]), print a `joined` line, then keep receiving across the scenario's phases: each
//! `snapshot` line from the parent is answered with a `finished` line holding the counts since the
//! previous one (so one set of connections serves the fixed-rate and the saturation phase); `stop` (or
//! stdin EOF, or `--lifetime`) closes the sockets and prints the last `finished` line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio::time::{interval_at, timeout_at, Instant, MissedTickBehavior};

use crate::client::HEARTBEAT_INTERVAL;
use crate::ipc::{WorkerMessage, SNAPSHOT, STOP};
use crate::payload::{now_unix_nanos, SeqTracker};
use crate::peer_client::{PeerClient, PeerEvent};
use crate::peer_protocol::{room_name, Conversation, Protocol};
use crate::receiver::{JoinOutcome, ReceiverStats};
use crate::worker::{connect_phase, emit, stop_tasks, SliceArgs, TOKEN_ENV};

/// Arguments of the hidden `compare-worker` subcommand, written by the parent.
#[derive(Args, Debug, Clone)]
pub struct CompareWorkerArgs {
    #[arg(long)]
    pub index: usize,
    #[arg(long, value_enum)]
    pub protocol: Protocol,
    /// The server's address.
    #[arg(long)]
    pub addr: SocketAddr,
    #[arg(long, env = TOKEN_ENV, hide_env_values = true)]
    pub token: String,
    #[arg(long)]
    pub rooms: usize,
    /// This worker's share (room = global connection index mod rooms).
    #[command(flatten)]
    pub slice: SliceArgs,
}

/// What every member of a process shares.
struct Context {
    protocol: Protocol,
    addr: SocketAddr,
    token: String,
    connect_timeout: Duration,
    join_timeout: Duration,
    stats: ReceiverStats,
    outcome_tx: mpsc::Sender<JoinOutcome>,
}

/// Runs the worker until it has reported its last `finished` line.
pub async fn run(args: CompareWorkerArgs) -> anyhow::Result<()> {
    let lifetime_end = Instant::now() + Duration::from_secs(args.slice.lifetime);
    let (outcome_tx, outcome_rx) = mpsc::channel(1_024);
    let ctx = Arc::new(Context {
        protocol: args.protocol,
        addr: args.addr,
        token: args.token.clone(),
        connect_timeout: Duration::from_secs(args.slice.connect.connect_timeout),
        join_timeout: Duration::from_secs(args.slice.connect.join_timeout),
        stats: ReceiverStats::default(),
        outcome_tx,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let rooms = args.rooms.max(1);
    let spawn = |conn: usize, permit, stop| {
        member(Arc::clone(&ctx), conn, (args.slice.first_conn + conn) % rooms, permit, stop)
    };
    let joined = connect_phase(
        args.slice.connections,
        rooms,
        &args.slice.connect,
        &mut tasks,
        outcome_rx,
        &stop_rx,
        spawn,
    )
    .await;
    eprintln!("[compare-worker {}] joined {} / {}", args.index, joined.ok, args.slice.connections);
    if !emit(&WorkerMessage::Joined(joined)).await {
        return Ok(());
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        match timeout_at(lifetime_end, lines.next_line()).await {
            Ok(Ok(Some(line))) if line.trim() == SNAPSHOT => {
                if !emit(&WorkerMessage::Finished(ctx.stats.take())).await {
                    break;
                }
            }
            Ok(Ok(Some(line))) if line.trim() != STOP => continue,
            _ => break,
        }
    }
    stop_tasks(stop_tx, tasks).await;
    emit(&WorkerMessage::Finished(ctx.stats.take())).await;
    Ok(())
}

/// One room member: connect and join (holding `permit` until then), report the outcome, then count
/// every delivery (latency from its stamp, sequence checks per publisher) until `stop`.
async fn member(
    ctx: Arc<Context>,
    conn: usize,
    room: usize,
    permit: OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
) {
    let start = Instant::now();
    let conversation = Conversation::new(ctx.protocol, room_name(room), &ctx.token);
    let joined =
        PeerClient::connect(ctx.addr, conversation, start + ctx.connect_timeout, start + ctx.join_timeout)
            .await;
    let (result, client) = crate::receiver::timed(start, joined.map_err(|e| e.kind()));
    drop(permit);
    // The collector may be gone once the connect phase timed out; this task is then aborted.
    let _ = ctx.outcome_tx.send(JoinOutcome { conn, channel: room, result }).await;
    let Some(mut client) = client else { return };
    let stats = &ctx.stats;
    let mut sequences = SeqTracker::default();
    let mut heartbeat = interval_at(Instant::now() + HEARTBEAT_INTERVAL, HEARTBEAT_INTERVAL);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            event = client.recv() => match event {
                PeerEvent::Delivery(stamp) => {
                    let now = now_unix_nanos();
                    if stats.sequenced(sequences.observe(&stamp)) {
                        stats.delivered(stamp.latency_micros(now));
                    }
                }
                PeerEvent::Reply(frame) => {
                    if let Err(e) = client.send(frame).await {
                        stats.error(e.kind());
                        return;
                    }
                }
                PeerEvent::Ended(why) => {
                    stats.error(format!("{why} after join"));
                    return;
                }
                PeerEvent::Problem(what) => stats.error(what.into()),
                PeerEvent::Other => {}
            },
            _ = heartbeat.tick() => {
                if let Err(e) = client.heartbeat().await {
                    stats.error(e.kind());
                    return;
                }
            }
        }
    }
    client.close().await;
}
