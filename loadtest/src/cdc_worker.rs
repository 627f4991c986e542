//! Child-process mode of the `cdc` scenario (`realtime-loadtest cdc-worker`, hidden): holds a slice of
//! the Postgres Changes subscribers, with the same lifecycle and line protocol as [`crate::worker`]
//! (`joined` once every subscriber is subscribed or failed, `finished` after `stop`).
//!
//! Subscriber `g` (global index) is user `g mod users` and joins `realtime:lt-cdc-<g>`. The worker
//! signs each user's token itself from the JWT secret the parent passes in the environment, with the
//! parent's `--iat`, so every process presents identical claims for a user.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use realtime_proto::Vsn;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::Endpoint;
use crate::database::{bindings_json, user_id};
use crate::ipc::WorkerMessage;
use crate::scenario::cdc::topic;
use crate::subscriber::{self, SubscriberContext, SubscriberStats};
use crate::token::user_token;
use crate::worker::{connect_phase, emit, receive_until_stop, SliceArgs};

/// Environment variable the parent passes the JWT secret in (kept off the command line).
pub const SECRET_ENV: &str = "REALTIME_LOADTEST_JWT_SECRET";

/// Arguments of the hidden `cdc-worker` subcommand, written by the parent.
#[derive(Args, Debug, Clone)]
pub struct CdcWorkerArgs {
    #[arg(long)]
    pub index: usize,
    #[arg(long)]
    pub target: String,
    #[arg(long, env = SECRET_ENV, hide_env_values = true)]
    pub jwt_secret: String,
    #[arg(long)]
    pub vsn: Vsn,
    /// Users (U); subscriber g is user g mod U.
    #[arg(long)]
    pub users: usize,
    /// RLS is on: rows of other owners are leaks.
    #[arg(long)]
    pub rls: bool,
    /// `body` of this run's rows.
    #[arg(long)]
    pub run_tag: String,
    /// `iat` of every token.
    #[arg(long)]
    pub iat: u64,
    /// Seconds from the join reply to `Subscribed to PostgreSQL`.
    #[arg(long)]
    pub subscribe_timeout: u64,
    /// This worker's share of the subscribers.
    #[command(flatten)]
    pub slice: SliceArgs,
}

/// Runs the worker until it has reported `finished`.
pub async fn run(args: CdcWorkerArgs) -> anyhow::Result<()> {
    let lifetime_end = Instant::now() + Duration::from_secs(args.slice.lifetime);
    anyhow::ensure!(args.users > 0, "--users must be at least 1");
    let users: Vec<String> = (0..args.users).map(user_id).collect();
    let mut endpoints = Vec::with_capacity(users.len());
    for user in &users {
        let token = user_token(&args.jwt_secret, user, args.iat).context("signing a user token")?;
        endpoints.push(Endpoint::resolve(&args.target, &token, args.vsn).await.context("target")?);
    }
    let (outcome_tx, outcome_rx) = mpsc::channel(1_024);
    let ctx = Arc::new(SubscriberContext {
        endpoints,
        users,
        rls: args.rls,
        run_tag: args.run_tag.clone(),
        bindings_json: bindings_json(),
        connect_timeout: Duration::from_secs(args.slice.connect.connect_timeout),
        join_timeout: Duration::from_secs(args.slice.connect.join_timeout),
        subscribe_timeout: Duration::from_secs(args.subscribe_timeout),
        stats: SubscriberStats::default(),
        outcome_tx,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let spawn = |conn: usize, permit, stop| {
        let global = args.slice.first_conn + conn;
        subscriber::run(Arc::clone(&ctx), conn, global % args.users, topic(global), permit, stop)
    };
    let joined = connect_phase(
        args.slice.connections,
        args.users,
        &args.slice.connect,
        &mut tasks,
        outcome_rx,
        &stop_rx,
        spawn,
    )
    .await;
    eprintln!("[cdc worker {}] subscribed {} / {}", args.index, joined.ok, args.slice.connections);
    if !emit(&WorkerMessage::Joined(joined)).await {
        eprintln!("[cdc worker {}] parent gone; exiting", args.index);
        return Ok(());
    }
    receive_until_stop(lifetime_end, stop_tx, tasks).await;
    if !emit(&WorkerMessage::Finished(ctx.stats.finish())).await {
        eprintln!("[cdc worker {}] parent gone; exiting", args.index);
    }
    Ok(())
}
