//! # realtime-loadtest
//!
//! Drives a realtime node through `realtime-proto`'s codecs (so protocol drift breaks this build) and
//! prints a p50/p99/max table per scenario.
//!
//! ```text
//! realtime-loadtest fanout --jwt-secret secret --connections 10000 --channels 10 --rate 100 --duration 30 \
//!     --server-pid $(pidof realtime)
//! realtime-loadtest fanout --jwt-secret secret --connections 10000 --connect-concurrency 200 --duration 0
//! realtime-loadtest fanout --jwt-secret secret --connections 100 --channels 1 --rate 500 --payload-bytes 10000 \
//!     --stalled-readers 1 --duration 30 --server-pid $(pidof realtime)
//! realtime-loadtest cdc --jwt-secret secret --database-url postgres://postgres@127.0.0.1:5432/postgres \
//!     --subscribers 100 --rate 1000 --duration 30 --rls --server-pid $(pidof realtime)
//! realtime-loadtest fanout --jwt-secret secret --target ws://127.0.0.150:4000/socket/websocket,ws://127.0.0.151:4000/socket/websocket
//! realtime-loadtest presence --jwt-secret secret --target $URL0,$URL1,$URL2 --clients-per-node 20 --duration 20 \
//!     --kill-node-pid $PID2 --kill-after 5
//! realtime-loadtest private --jwt-secret secret --database-url postgres://postgres@127.0.0.1:5432/postgres \
//!     --joins 1000 --subscribers 100 --channels 10 --rate 1000 --duration 20 --server-pid $(pidof realtime)
//! realtime-loadtest inbox --jwt-secret secret --database-url postgres://postgres@127.0.0.1:5432/postgres \
//!     --inserts 1000 --seed 10000 --lists 1000 --list-concurrency 4
//! realtime-loadtest room --jwt-secret secret --members 10000 --churn-rate 1000 --server-pid $(pidof realtime)
//! realtime-loadtest failover --database-url postgres://postgres@127.0.0.1:5432/postgres --kills 3
//! loadtest/peers/setup.sh && realtime-loadtest compare --servers realtime,fastapi,socketio,socketioxide,tokio-fanout
//! ```
//!
//! ## Layout
//! - [`scenario`]: one module per scenario (`fanout`, `cdc`, `presence`, `failover`, `compare`,
//!   `private`, `inbox`, `room`), each a subcommand.
//! - [`worker`], [`cdc_worker`]: the hidden `worker` and `cdc-worker` subcommands; the parent
//!   re-executes itself to spread connections over processes (open-files limit), see [`pool`] and the
//!   line protocol in [`ipc`].
//! - [`client`] and [`frames`]: the WebSocket client and its pure frame encoding/parsing.
//! - [`receiver`], [`publisher`], [`subscriber`], [`stalled`]: the kinds of load connections (broadcast
//!   receivers and publishers, Postgres Changes subscribers, readers that stop reading).
//! - [`database`]: the `cdc` load table's setup and the inserter; [`pgchange`]: parsing what
//!   subscribers receive.
//! - [`presence_client`], [`presence_model`], [`presence_driver`], [`convergence`]: the `presence`
//!   scenario's clients, their views, the churn, and the clock work of convergence and eviction.
//! - [`private_db`], [`private_load`], [`private_report`]: the `private` scenario's policies and
//!   `realtime.send` inserters, its join probes and database-broadcast subscribers (in-process), its
//!   table; [`schedule`]: the fixed-rate schedule its inserters and `cdc`'s share.
//! - [`room_members`], [`room_churn`], [`room_probe`], [`room_frames`], [`room_tally`],
//!   [`room_report`]: the `room` scenario's members and observer, its churners, its late-join probes
//!   and publisher, its frame classification, its per-member counts and rates, its table.
//! - [`nodes`], [`failover_load`], [`failover_check`]: the `failover` scenario's node processes, its
//!   subscribers and inserter, and the exactly-once check.
//! - [`compare_launch`], [`peer_protocol`], [`peer_client`], [`compare_worker`], [`compare_load`],
//!   [`compare_report`], [`compare_plot`]: the `compare` scenario's five servers and how each is
//!   started, their three wire protocols (pure), its client, its worker processes (the hidden
//!   `compare-worker`), its publishers, its tables and CSV, and its plot.
//! - [`report`], [`rss`], [`netstat`], [`scrape`], [`payload`], [`token`]: histograms and the tables,
//!   server memory and CPU, the kernel's TCP counters and socket table, the server's `/metrics`, the
//!   stamped broadcast payload and its sequence checks, the JWTs.

mod cdc_worker;
mod client;
mod compare_launch;
mod compare_load;
mod compare_plot;
mod compare_report;
mod compare_worker;
mod convergence;
mod database;
mod failover_check;
mod failover_load;
mod frames;
mod ipc;
mod netstat;
mod nodes;
mod payload;
mod peer_client;
mod peer_protocol;
mod pgchange;
mod pool;
mod presence_client;
mod presence_driver;
mod presence_model;
mod private_db;
mod private_load;
mod private_report;
mod publisher;
mod receiver;
mod report;
mod room_churn;
mod room_frames;
mod room_members;
mod room_probe;
mod room_report;
mod room_tally;
mod rss;
mod scenario;
mod schedule;
mod scrape;
mod session;
mod stalled;
mod subscriber;
mod token;
mod worker;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "realtime-loadtest", version, about = "Load generator for the realtime node")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// N receivers on M channels, publishers on a fixed-rate schedule: connect storm figures, latency
    /// from the schedule, lost/duplicated/reordered deliveries, memory; optionally stalled readers.
    Fanout(scenario::fanout::FanoutArgs),
    /// K Postgres Changes subscribers, rows inserted at a fixed rate: commit → client latency, changes
    /// decoded, authorised deliveries, RLS leaks.
    Cdc(scenario::cdc::CdcArgs),
    /// K presence clients per node of a cluster churning track/update/untrack/rejoin: time until each
    /// change shows on every other node, identical views at the end; optionally a node killed and the
    /// time until its clients' presences vanish elsewhere.
    Presence(scenario::presence::PresenceArgs),
    /// Private channels: join latency (public baseline, RLS check uncached, cached) and database
    /// broadcast (`realtime.send` at a fixed rate) commit → client latency, losses, and where the CPU went.
    Private(scenario::private::PrivateArgs),
    /// The notifications inbox API: `POST /api/notifications` → `notification.new` latency (one at a
    /// time) and GraphQL list latency for a user with many notifications (first page, a deep page).
    Inbox(scenario::inbox::InboxArgs),
    /// One presence room of many members (10,000 by default): a late join's reply and presence_state
    /// time and bytes, quiet and under a churn of joins; presence frames and bytes per idle member per
    /// second during the churn; track → seen; broadcast latency in the room.
    Room(scenario::room::RoomArgs),
    /// Runs its own cluster of node processes, inserts rows at a steady rate and SIGKILLs the raft
    /// leader N times (restarting it each time): time to resume delivery, time to a new leader, and
    /// every subscriber's rows checked exactly once, in order.
    Failover(scenario::failover::FailoverArgs),
    /// This server, a FastAPI and a Socket.IO server (loadtest/peers/) through one scenario, each
    /// pinned to one core in turn: connections held, connect p99, RSS per connection, latency at a
    /// fixed rate, deliveries/s at saturation and per CPU-second; a ratio table, a CSV and an SVG plot.
    Compare(scenario::compare::CompareArgs),
    /// Internal: one worker process of `fanout` (spawned by the parent).
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
    /// Internal: one worker process of `cdc` (spawned by the parent).
    #[command(hide = true)]
    CdcWorker(cdc_worker::CdcWorkerArgs),
    /// Internal: one worker process of `compare` (spawned by the parent).
    #[command(hide = true)]
    CompareWorker(compare_worker::CompareWorkerArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Every connection is a file descriptor: use the whole hard limit (children inherit it).
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: cannot raise the open-files limit: {e}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.scenario {
            Scenario::Fanout(args) => scenario::fanout::run(args).await,
            Scenario::Cdc(args) => scenario::cdc::run(args).await,
            Scenario::Presence(args) => scenario::presence::run(args).await,
            Scenario::Failover(args) => scenario::failover::run(args).await,
            Scenario::Private(args) => scenario::private::run(args).await,
            Scenario::Inbox(args) => scenario::inbox::run(args).await,
            Scenario::Room(args) => scenario::room::run(args).await,
            Scenario::Worker(args) => worker::run(args).await,
            Scenario::CdcWorker(args) => cdc_worker::run(args).await,
            Scenario::Compare(args) => scenario::compare::run(args).await,
            Scenario::CompareWorker(args) => compare_worker::run(args).await,
        }
    })
}
