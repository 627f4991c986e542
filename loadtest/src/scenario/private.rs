//! Scenario `private`: what private channels cost, in two parts (issue 9).
//!
//! **Joins.** Three kinds of join, each by `--joins` fresh sockets (user `i mod U`'s token, every
//! token with the same `iat` so a user's claims are identical everywhere), timed from `phx_join` to
//! its reply:
//! 1. *public* `load-<run>-p<i>`: no database, the baseline;
//! 2. *private uncached* `load-<run>-j<i>`: a topic nobody joined before, so the node cannot have a
//!    decision cached for (topic, role, claims) and asks PostgreSQL (the RLS read check);
//! 3. *private cached*: the same topics again, same users, from new sockets: the node's cache answers.
//!
//! The run tag in every topic keeps an earlier run's cached decisions out. Each probe closes its
//! socket after the reply, so every kind starts from channels with no member and differs only in
//! the authorisation.
//!
//! **Database broadcast.** `--subscribers` sockets on `--channels` channels `load-<run>-b<c>`
//! (private, except the last `--public-channels`), then `--inserters` database connections calling
//! `realtime.send` at `--rate` sends/s in total for `--duration` s ([`crate::private_db`]), then a
//! `--drain`. Measured: commit → client latency from the `clock_timestamp()` each send carries,
//! deliveries due (sends committed to a channel × its subscribers) vs received, lost / duplicated /
//! reordered per channel, the rows that landed in `realtime.messages`, the logical slot's
//! unconfirmed WAL at the end of the sends and after the drain, and the CPU time of the server, the
//! WAL senders, the inserters' backends and this process over the send window, so that a rate that
//! could not be kept shows where it stopped.
//!
//! Every phase has a deadline; the run stops by itself.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use realtime_proto::Vsn;
use tokio::time::{sleep, timeout, Instant};
use tokio_postgres::Client as PgClient;

use crate::client::Endpoint;
use crate::database::{self, user_id};
use crate::private_db::{self, SendPlan, SendResult, MAX_BATCH};
use crate::private_load::{channel_outcomes, join_probes, JoinPhase, Subscribers, Target};
use crate::private_report::{BroadcastReport, ChannelRow, JoinRow, PrivateReport};
use crate::report::{latency_histogram, merge_errors, CpuSample, ErrorCounts, LatencySummary};
use crate::rss::{clock_ticks_per_second, read_cpu_ticks, read_rss_kib};
use crate::token::{now_unix_secs, user_token};
use crate::worker::ConnectArgs;

/// Connecting to the database, and each query of its own.
const DB_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for the node to create `realtime.messages`.
const SCHEMA_WAIT: Duration = Duration::from_secs(60);
/// Pause between the subscribers' joins and the first send.
const SETTLE: Duration = Duration::from_secs(1);
/// Beyond `--duration`, what the inserters get to finish (a statement may take 10 s to time out).
const SEND_GRACE: Duration = Duration::from_secs(15);
/// Sockets one process may hold open here (open-files limit 20,000, less room for the rest).
const MAX_SOCKETS: usize = 15_000;

/// Arguments of `realtime-loadtest private`.
#[derive(Args, Debug, Clone)]
pub struct PrivateArgs {
    /// Superuser URL of the node's database (the policies are created there).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// WebSocket endpoint (`apikey` and `vsn` are appended).
    #[arg(long, default_value = "ws://127.0.0.1:4000/socket/websocket")]
    pub target: String,
    /// HS256 secret the server verifies tokens with.
    #[arg(long, env = "REALTIME_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// Joins of each kind (public, private uncached, private cached); 0 skips the join part.
    #[arg(long, default_value_t = 1_000)]
    pub joins: usize,
    /// Joins in flight at once (each on its own socket).
    #[arg(long, default_value_t = 20)]
    pub join_concurrency: usize,
    /// Users (U): join i and subscriber j use user i mod U's token (role `authenticated`, its `sub`).
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Database-broadcast subscribers (K); 0 skips the broadcast part.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Channels (M) the subscribers are spread over (subscriber j on channel j mod M).
    #[arg(long, default_value_t = 10)]
    pub channels: usize,
    /// Of the channels, how many (the last ones) are public; the rest are private.
    #[arg(long, default_value_t = 0)]
    pub public_channels: usize,
    /// `realtime.send` calls per second, over all inserters.
    #[arg(long, default_value_t = 1_000.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Seconds to keep receiving after the last send.
    #[arg(long, default_value_t = 3)]
    pub drain: u64,
    /// Database connections sending, each at rate / inserters.
    #[arg(long, default_value_t = 1)]
    pub inserters: usize,
    /// `realtime.send` calls per statement (one transaction).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Serializer of every socket: 2.0.0 or 1.0.0.
    #[arg(long, default_value = "2.0.0")]
    pub vsn: Vsn,
    /// Server pid, to sample its RSS (/proc/<pid>/status) and CPU time (/proc/<pid>/stat).
    #[arg(long)]
    pub server_pid: Option<u32>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// The derived numbers of a run, validated.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    /// Sends per second per inserter.
    rate_per_inserter: f64,
}

impl Plan {
    fn new(args: &PrivateArgs) -> anyhow::Result<Plan> {
        if args.joins == 0 && args.subscribers == 0 {
            bail!("nothing to do: --joins and --subscribers are both 0");
        }
        if args.users == 0 {
            bail!("--users must be at least 1");
        }
        if args.joins > 0 && args.join_concurrency == 0 {
            bail!("--join-concurrency must be at least 1");
        }
        if args.join_concurrency > MAX_SOCKETS || args.subscribers > MAX_SOCKETS {
            bail!("at most {MAX_SOCKETS} sockets at once in this process (open-files limit)");
        }
        if args.subscribers > 0 {
            if args.channels == 0 || args.channels > args.subscribers {
                bail!("--channels must be between 1 and --subscribers");
            }
            if args.public_channels > args.channels {
                bail!("--public-channels must be at most --channels");
            }
            if !(args.rate > 0.0 && args.rate.is_finite()) {
                bail!("--rate must be a positive number");
            }
            if args.duration == 0 {
                bail!("--duration must be at least 1 second");
            }
            if args.inserters == 0 || args.inserters > 64 {
                bail!("--inserters must be between 1 and 64");
            }
            if args.batch == 0 || args.batch > MAX_BATCH {
                bail!("--batch must be between 1 and {MAX_BATCH}");
            }
        }
        Ok(Plan { rate_per_inserter: args.rate / args.inserters.max(1) as f64 })
    }
}

/// The sub-topics of a run (`realtime:` is prefixed on the socket; policies see these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    tag: String,
}

impl Topics {
    pub fn new(tag: &str) -> Topics {
        Topics { tag: tag.to_owned() }
    }
    pub fn public_join(&self, i: usize) -> String {
        format!("load-{}-p{i}", self.tag)
    }
    pub fn private_join(&self, i: usize) -> String {
        format!("load-{}-j{i}", self.tag)
    }
    pub fn channel(&self, c: usize) -> String {
        format!("load-{}-b{c}", self.tag)
    }
}

/// The join probes of one kind: `n` of them, probe i as user i mod `users` on `topic(i)`.
fn probes(n: usize, users: usize, private: bool, topic: impl Fn(usize) -> String) -> Vec<Target> {
    (0..n)
        .map(|i| Target { topic: format!("realtime:{}", topic(i)), user: i % users, private, group: 0 })
        .collect()
}

/// Subscriber j: channel j mod M, user j mod U; the last `public` channels are public.
fn subscriber_targets(args: &PrivateArgs, topics: &Topics) -> Vec<Target> {
    (0..args.subscribers)
        .map(|j| {
            let c = j % args.channels;
            Target {
                topic: format!("realtime:{}", topics.channel(c)),
                user: j % args.users,
                private: channel_is_private(c, args.channels, args.public_channels),
                group: c,
            }
        })
        .collect()
}

fn channel_is_private(c: usize, channels: usize, public: usize) -> bool {
    c < channels.saturating_sub(public)
}

/// Runs the scenario and prints its table on stdout.
pub async fn run(args: PrivateArgs) -> anyhow::Result<()> {
    let plan = Plan::new(&args)?;
    let iat = now_unix_secs();
    let mut endpoints = Vec::with_capacity(args.users);
    for u in 0..args.users {
        let token = user_token(&args.jwt_secret, &user_id(u), iat).context("signing a user token")?;
        endpoints.push(Endpoint::resolve(&args.target, &token, args.vsn).await.context("--target")?);
    }
    let endpoints = Arc::new(endpoints);
    let db = database::connect(&args.database_url, DB_TIMEOUT).await?;
    private_db::setup(&db, Instant::now() + SCHEMA_WAIT).await?;
    eprintln!("policy lt_private_read on realtime.messages ready");
    let tag = format!("{:x}{:x}", std::process::id(), iat % 0x10_0000);
    let topics = Topics::new(&tag);
    let mut report = PrivateReport {
        title: format!(
            "private: {} joins per kind at {} concurrent, {} users, vsn {} (run {tag})",
            args.joins, args.join_concurrency, args.users, args.vsn
        ),
        ..PrivateReport::default()
    };

    if args.joins > 0 {
        let mut connect = args.connect.clone();
        connect.connect_concurrency = args.join_concurrency;
        let kinds: [(&'static str, Vec<Target>); 3] = [
            ("public", probes(args.joins, args.users, false, |i| topics.public_join(i))),
            ("private uncached", probes(args.joins, args.users, true, |i| topics.private_join(i))),
            ("private cached", probes(args.joins, args.users, true, |i| topics.private_join(i))),
        ];
        for (kind, targets) in kinds {
            eprintln!("{kind} joins: {}", targets.len());
            let phase = join_probes(&endpoints, targets, &connect).await;
            merge_errors(&mut report.join_errors, &prefixed(kind, &phase.joined.errors));
            report.joins.push(join_row(kind, &phase));
        }
    }

    if args.subscribers > 0 {
        report.broadcast = Some(broadcast(&args, &plan, &endpoints, &db, &topics, &tag).await?);
    }
    println!("{}", report.render());
    Ok(())
}

fn prefixed(kind: &str, errors: &ErrorCounts) -> ErrorCounts {
    errors.iter().map(|(k, n)| (format!("{kind}: {k}"), *n)).collect()
}

fn join_row(kind: &'static str, phase: &JoinPhase) -> JoinRow {
    let mut join = latency_histogram();
    phase.joined.connect_join_us.add_to(&mut join);
    JoinRow {
        kind,
        ok: phase.joined.ok,
        failed: phase.joined.failed,
        join: LatencySummary::of(&join),
        connect: LatencySummary::of(&phase.connect_us),
        secs: phase.elapsed.as_secs_f64(),
    }
}

/// Sums CPU ticks of `pids` (`None` when any cannot be read, or there are none).
fn cpu_ticks(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| read_cpu_ticks(Some(p))).sum()
}

async fn broadcast(
    args: &PrivateArgs,
    plan: &Plan,
    endpoints: &Arc<Vec<Endpoint>>,
    db: &PgClient,
    topics: &Topics,
    tag: &str,
) -> anyhow::Result<BroadcastReport> {
    let mut b = BroadcastReport {
        inserters: args.inserters,
        batch: args.batch,
        drain_secs: args.drain,
        rss_before: read_rss_kib(args.server_pid),
        ..BroadcastReport::default()
    };
    // The inserters connect before the subscribers join, so a database that refuses connections
    // fails the run before any load.
    let mut inserters = Vec::with_capacity(args.inserters);
    for _ in 0..args.inserters {
        inserters.push(database::connect(&args.database_url, DB_TIMEOUT).await?);
    }
    let mut backend_pids = Vec::new();
    for client in &inserters {
        backend_pids.extend(private_db::backend_pid(client).await);
    }

    eprintln!("subscribers: {} on {} channels", args.subscribers, args.channels);
    let subscribers =
        Subscribers::start(endpoints, subscriber_targets(args, topics), args.channels, tag, &args.connect)
            .await;
    b.subscribers_ok = subscribers.joined.ok;
    b.subscribers_failed = subscribers.joined.failed;
    let mut subscribe = latency_histogram();
    subscribers.joined.connect_join_us.add_to(&mut subscribe);
    b.subscribe = LatencySummary::of(&subscribe);
    let subscribed = subscribers.joined.joined_per_channel.clone();
    merge_errors(&mut b.errors, &prefixed("subscribe", &subscribers.joined.errors));
    eprintln!("subscribed {} / {}", b.subscribers_ok, args.subscribers);
    sleep(SETTLE).await;

    let walsenders = private_db::walsender_pids(db).await;
    let own = [std::process::id()];
    let server: Vec<u32> = args.server_pid.into_iter().collect();
    let groups: [(String, &[u32]); 4] = [
        ("server".into(), &server),
        (format!("WAL senders ({})", walsenders.len()), &walsenders),
        (format!("inserter backends ({})", backend_pids.len()), &backend_pids),
        ("load generator (this process)".into(), &own),
    ];
    let before: Vec<Option<u64>> = groups.iter().map(|(_, pids)| cpu_ticks(pids)).collect();
    let window = Instant::now();

    let channel_topics: Vec<String> = (0..args.channels).map(|c| topics.channel(c)).collect();
    let private: Vec<bool> =
        (0..args.channels).map(|c| channel_is_private(c, args.channels, args.public_channels)).collect();
    let handles: Vec<_> = inserters
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let send_plan = SendPlan {
                inserter: i as u32,
                rate: plan.rate_per_inserter,
                batch: args.batch,
                duration: Duration::from_secs(args.duration),
                topics: channel_topics.clone(),
                private: private.clone(),
                run_tag: tag.to_owned(),
            };
            // The connection comes back with the result: its backend must live until its CPU time
            // has been read.
            tokio::spawn(async move {
                let result = private_db::send(&client, &send_plan).await;
                (client, result)
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(args.duration) + SEND_GRACE;
    let mut results: Vec<SendResult> = Vec::new();
    let mut finished_inserters = Vec::new();
    for handle in handles {
        let abort = handle.abort_handle();
        match tokio::time::timeout_at(deadline, handle).await {
            Ok(Ok((client, result))) => {
                finished_inserters.push(client);
                results.push(result);
            }
            Ok(Err(e)) => *b.errors.entry(format!("inserter task failed: {e}")).or_default() += 1,
            Err(_) => {
                abort.abort();
                *b.errors.entry("inserter overran its deadline".into()).or_default() += 1;
            }
        }
    }
    b.slot_lag_at_end = timeout(DB_TIMEOUT, private_db::slot_lag_bytes(db)).await.unwrap_or_default();
    let window_secs = window.elapsed().as_secs_f64();
    let ticks = clock_ticks_per_second() as f64;
    b.cpu = groups
        .iter()
        .zip(&before)
        .map(|((what, pids), before)| {
            let sample = before
                .zip(cpu_ticks(pids))
                .map(|(b, a)| CpuSample { secs: a.saturating_sub(b) as f64 / ticks, window_secs });
            (what.clone(), sample)
        })
        .collect();
    drop(finished_inserters);
    eprintln!("sends done; draining {} s", args.drain);
    sleep(Duration::from_secs(args.drain)).await;
    b.slot_lag_after_drain = timeout(DB_TIMEOUT, private_db::slot_lag_bytes(db)).await.unwrap_or_default();
    let stats = subscribers.stop().await;
    b.rss_end = read_rss_kib(args.server_pid);

    let mut sent = vec![0u64; args.channels];
    let (mut round_trip, mut lag) = (latency_histogram(), latency_histogram());
    for r in &results {
        for (total, n) in sent.iter_mut().zip(&r.sent_per_channel) {
            *total += n;
        }
        b.transactions += r.transactions;
        b.transactions_due += r.due;
        b.send_secs = b.send_secs.max(r.elapsed.as_secs_f64());
        // Same bounds on both sides: adding cannot fail.
        let _ = round_trip.add(&r.round_trip_us);
        let _ = lag.add(&r.lag_us);
        merge_errors(&mut b.errors, &r.errors);
    }
    b.round_trip = LatencySummary::of(&round_trip);
    b.lag = LatencySummary::of(&lag);
    let rows = match timeout(DB_TIMEOUT, private_db::rows_per_topic(db, tag)).await {
        Ok(Ok(rows)) => Some(rows),
        Ok(Err(e)) => {
            *b.errors.entry(format!("{e:#}")).or_default() += 1;
            None
        }
        Err(_) => {
            *b.errors.entry("counting rows in realtime.messages timed out".into()).or_default() += 1;
            None
        }
    };
    let outcomes = channel_outcomes(&sent, &subscribed, &stats.channels);
    b.channels = outcomes
        .into_iter()
        .enumerate()
        .map(|(c, outcome)| ChannelRow {
            topic: channel_topics[c].clone(),
            private: private[c],
            subscribers: subscribed.get(c).copied().unwrap_or(0),
            sent: sent[c],
            rows: rows
                .as_ref()
                .map(|rows| rows.iter().find(|(t, _)| *t == channel_topics[c]).map_or(0, |&(_, n)| n)),
            outcome,
        })
        .collect();
    b.private_latency = LatencySummary::of(&stats.private_us.lock().unwrap_or_else(|e| e.into_inner()));
    b.public_latency = LatencySummary::of(&stats.public_us.lock().unwrap_or_else(|e| e.into_inner()));
    b.foreign = stats.foreign.load(std::sync::atomic::Ordering::Relaxed);
    merge_errors(&mut b.errors, &stats.errors.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> PrivateArgs {
        crate::scenario::parse_db_args(extra)
    }

    #[test]
    fn defaults_follow_the_brief() {
        let a = args(&[]);
        assert_eq!((a.joins, a.subscribers, a.channels, a.public_channels), (1_000, 100, 10, 0));
        assert_eq!((a.rate, a.inserters, a.batch, a.users), (1_000.0, 1, 1, 100));
        assert_eq!(Plan::new(&a).unwrap(), Plan { rate_per_inserter: 1_000.0 });
        let a = args(&["--rate=10000", "--inserters=4"]);
        assert_eq!(Plan::new(&a).unwrap(), Plan { rate_per_inserter: 2_500.0 });
    }

    #[test]
    fn refuses_impossible_plans() {
        for bad in [
            &["--joins=0", "--subscribers=0"][..],
            &["--users=0"],
            &["--join-concurrency=0"],
            &["--channels=0"],
            &["--subscribers=5", "--channels=6"],
            &["--public-channels=11"],
            &["--rate=0"],
            &["--rate=inf"],
            &["--duration=0"],
            &["--inserters=0"],
            &["--batch=0"],
            &["--batch=1001"],
            &["--subscribers=20000"],
        ] {
            assert!(Plan::new(&args(bad)).is_err(), "{bad:?}");
        }
        // Without subscribers the broadcast flags do not matter.
        assert!(Plan::new(&args(&["--subscribers=0", "--channels=0", "--rate=0"])).is_ok());
    }

    #[test]
    fn topics_carry_the_run_and_match_the_policy_pattern() {
        let t = Topics::new("ab12");
        assert_eq!(
            (t.public_join(3), t.private_join(3), t.channel(0)),
            ("load-ab12-p3".into(), "load-ab12-j3".into(), "load-ab12-b0".into())
        );
        let p = probes(5, 2, true, |i| t.private_join(i));
        assert_eq!(p[3], Target { topic: "realtime:load-ab12-j3".into(), user: 1, private: true, group: 0 });
        assert!(p.iter().all(|t| t.topic.starts_with("realtime:load-")));
    }

    #[test]
    fn subscribers_spread_over_channels_and_the_last_ones_are_public() {
        let a = args(&["--subscribers=7", "--channels=3", "--public-channels=1", "--users=2"]);
        let targets = subscriber_targets(&a, &Topics::new("t"));
        let got: Vec<(usize, usize, bool)> = targets.iter().map(|t| (t.group, t.user, t.private)).collect();
        assert_eq!(
            got,
            vec![
                (0, 0, true),
                (1, 1, true),
                (2, 0, false),
                (0, 1, true),
                (1, 0, true),
                (2, 1, false),
                (0, 0, true)
            ]
        );
        assert_eq!(targets[2].topic, "realtime:load-t-b2");
        assert!(channel_is_private(0, 1, 0) && !channel_is_private(0, 1, 1));
    }
}
