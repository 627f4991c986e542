//! # realtime-loadtest
//!
//! Drives a realtime node through `realtime-proto`'s codecs (so protocol drift breaks this build) and
//! prints a p50/p99/max table per scenario.
//!
//! ```text
//! realtime-loadtest fanout --jwt-secret secret --connections 10000 --channels 10 --rate 100 --duration 30 \
//!     --server-pid $(pidof realtime)
//! ```
//!
//! ## Layout
//! - [`scenario`]: one module per scenario (`fanout`), each a subcommand.
//! - [`worker`]: the hidden `worker` subcommand; the parent re-executes itself to spread receivers
//!   over processes (open-files limit), see [`pool`] and the line protocol in [`ipc`].
//! - [`client`] and [`frames`]: the WebSocket client and its pure frame encoding/parsing.
//! - [`receiver`], [`publisher`]: the two kinds of load connections.
//! - [`report`], [`rss`], [`payload`], [`token`]: histograms and the table, server memory, the stamped
//!   broadcast payload, the JWT.

mod client;
mod frames;
mod ipc;
mod payload;
mod pool;
mod publisher;
mod receiver;
mod report;
mod rss;
mod scenario;
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
    /// N receivers on M channels, publishers at a fixed total rate: latency, completeness, memory.
    Fanout(scenario::fanout::FanoutArgs),
    /// Internal: one worker process of a scenario (spawned by the parent).
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
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
            Scenario::Worker(args) => worker::run(args).await,
        }
    })
}
