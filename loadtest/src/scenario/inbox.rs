//! Scenario `inbox`: what the notifications inbox API costs (issue 10), in two parts.
//!
//! **Insert → push.** One socket joins `notifications:<A>` for a fresh user A; then `--inserts`
//! notifications are created one after another with `POST /api/notifications` (a `service_role`
//! token), each waiting for its own `notification.new` (recognised by the returned id) before the
//! next. Measured: POST round trip (the insert), and POST sent → push received (insert, WAL stream,
//! fan-out); a push not seen within [`PUSH_TIMEOUT`] counts as lost.
//!
//! **GraphQL list.** A second fresh user B gets `--seed` notifications inserted straight into
//! `realtime.notifications` (one statement, `created_at` one millisecond apart so every row has its
//! own cursor); then `--lists` GraphQL `notifications(limit: 50)` queries as B, `--list-concurrency` at
//! a time, alternating the first page and a page deep inside (`before` the createdAt of row
//! `seed / 2`). Measured: request → full answer, per kind. The node's default limit is 100 list
//! queries per user per minute: run it with a higher `REALTIME_NOTIFICATIONS_LIST_PER_MINUTE` (429s are
//! counted as errors).
//!
//! Every wait has a deadline and every loop a count: the run stops by itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use realtime_proto::Vsn;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::client::{Client, Endpoint};
use crate::frames::{BroadcastPayload, Event};
use crate::report::{latency_histogram, render_table, ErrorCounts, LatencySummary};
use crate::token::{now_unix_secs, service_token, user_token};

/// Connecting to the database, seeding, each HTTP request.
const DB_TIMEOUT: Duration = Duration::from_secs(60);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a notification's push may take before it counts as lost.
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the first push may take (the node's WAL stream may still be starting).
const FIRST_PUSH_WAIT: Duration = Duration::from_secs(30);
/// The page size of the list queries.
const PAGE: usize = 50;

/// Arguments of `realtime-loadtest inbox`.
#[derive(Args, Debug, Clone)]
pub struct InboxArgs {
    /// Superuser URL of the node's database (B's notifications are seeded there).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// WebSocket endpoint (`apikey` and `vsn` are appended).
    #[arg(long, default_value = "ws://127.0.0.1:4000/socket/websocket")]
    pub target: String,
    /// HTTP base of the same node (for `/api/notifications` and `/graphql`).
    #[arg(long, default_value = "http://127.0.0.1:4000")]
    pub http: String,
    /// HS256 secret the server verifies tokens with.
    #[arg(long, env = "REALTIME_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// Notifications created one after another through REST, each waiting for its push; 0 skips.
    #[arg(long, default_value_t = 1_000)]
    pub inserts: usize,
    /// Notifications seeded for the listing user; 0 skips the list part.
    #[arg(long, default_value_t = 10_000)]
    pub seed: usize,
    /// GraphQL list queries.
    #[arg(long, default_value_t = 1_000)]
    pub lists: usize,
    /// GraphQL list queries in flight at once.
    #[arg(long, default_value_t = 4)]
    pub list_concurrency: usize,
    /// Serializer of the socket: 2.0.0 or 1.0.0.
    #[arg(long, default_value = "2.0.0")]
    pub vsn: Vsn,
}

fn check(args: &InboxArgs) -> anyhow::Result<()> {
    if args.inserts == 0 && (args.seed == 0 || args.lists == 0) {
        bail!("nothing to do: --inserts is 0 and there is no list part (--seed or --lists is 0)");
    }
    if args.seed > 1_000_000 {
        bail!("--seed is at most 1,000,000");
    }
    if args.lists > 0 && !(1..=256).contains(&args.list_concurrency) {
        bail!("--list-concurrency must be between 1 and 256");
    }
    Ok(())
}

/// A fresh user id for this run (a v4-shaped UUID from the clock and the pid).
fn fresh_user(salt: u64) -> String {
    let n = (u128::from(now_unix_secs()) << 64) | (u128::from(std::process::id()) << 32) | u128::from(salt);
    let hex = format!("{:032x}", n);
    format!("{}-{}-4{}-8{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}

/// The figures of a run.
#[derive(Debug, Default)]
struct InboxReport {
    insert: Option<LatencySummary>,
    push: Option<LatencySummary>,
    lost: u64,
    lists: BTreeMap<&'static str, LatencySummary>,
    list_secs: f64,
    errors: ErrorCounts,
}

impl InboxReport {
    fn render(&self, title: &str) -> String {
        let mut rows = Vec::new();
        if let (Some(insert), Some(push)) = (&self.insert, &self.push) {
            rows.push(("POST /api/notifications (p50/p99/max)".to_owned(), insert.cells()));
            rows.push(("POST sent → notification.new (p50/p99/max)".to_owned(), push.cells()));
            rows.push(("pushes received / lost".to_owned(), format!("{} / {}", push.count, self.lost)));
        }
        for (kind, summary) in &self.lists {
            rows.push((format!("GraphQL list, {kind} (p50/p99/max)"), summary.cells()));
            rows.push((format!("  answered ({kind})"), summary.count.to_string()));
        }
        if !self.lists.is_empty() {
            let answered: u64 = self.lists.values().map(|s| s.count).sum();
            rows.push((
                "lists per second".to_owned(),
                format!("{:.0}", answered as f64 / self.list_secs.max(1e-9)),
            ));
        }
        render_table(title, &rows, &[("errors", &self.errors)])
    }
}

/// Runs the scenario and prints its table on stdout.
pub async fn run(args: InboxArgs) -> anyhow::Result<()> {
    check(&args)?;
    let http = reqwest::Client::builder().timeout(HTTP_TIMEOUT).build().context("HTTP client")?;
    let base = args.http.trim_end_matches('/').to_owned();
    let mut report = InboxReport::default();
    if args.inserts > 0 {
        insert_and_push(&args, &http, &base, &mut report).await?;
    }
    if args.seed > 0 && args.lists > 0 {
        list(&args, &http, &base, &mut report).await?;
    }
    let title = format!(
        "inbox: {} REST inserts one by one; {} GraphQL lists ({} at once, limit {PAGE}) over {} notifications",
        args.inserts, args.lists, args.list_concurrency, args.seed
    );
    println!("{}", report.render(&title));
    Ok(())
}

async fn create(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    user: &str,
    n: usize,
) -> Result<String, String> {
    let body = json!({"user_id": user, "type": "load", "content": {"n": n}});
    let response =
        http.post(format!("{base}/api/notifications")).bearer_auth(token).json(&body).send().await.map_err(
            |e| format!("POST failed: {}", if e.is_timeout() { "timeout".into() } else { e.to_string() }),
        )?;
    let status = response.status().as_u16();
    let row: Value = response.json().await.map_err(|_| format!("POST {status}: not JSON"))?;
    match (status, row["id"].as_str()) {
        (201, Some(id)) => Ok(id.to_owned()),
        _ => Err(format!("POST {status}: {}", row["error"].as_str().unwrap_or("no id"))),
    }
}

/// Waits until `id`'s `notification.new` arrives on `socket`, or `deadline`.
async fn wait_push(socket: &mut Client, id: &str, deadline: Instant) -> Result<(), String> {
    loop {
        let event =
            tokio::time::timeout_at(deadline, socket.recv()).await.map_err(|_| "push not seen".to_owned())?;
        match event {
            Event::Broadcast { payload, .. } => {
                let text = match &payload {
                    BroadcastPayload::User(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                    BroadcastPayload::Json(text) => text.clone(),
                };
                if text.contains(id) {
                    return Ok(());
                }
            }
            Event::Closed { code } => return Err(format!("socket closed ({code:?})")),
            _ => {}
        }
    }
}

async fn insert_and_push(
    args: &InboxArgs,
    http: &reqwest::Client,
    base: &str,
    report: &mut InboxReport,
) -> anyhow::Result<()> {
    let user = fresh_user(1);
    let token = user_token(&args.jwt_secret, &user, now_unix_secs()).context("signing the user token")?;
    let service = service_token(&args.jwt_secret).context("signing the service token")?;
    let endpoint = Endpoint::resolve(&args.target, &token, args.vsn).await.context("--target")?;
    let mut socket = Client::connect(&endpoint, Instant::now() + DB_TIMEOUT).await.context("connecting")?;
    socket
        .join(&format!("realtime:notifications:{user}"), Instant::now() + DB_TIMEOUT)
        .await
        .context("joining the inbox channel")?;
    // The node's WAL stream may still be starting: the first notification may take longer.
    let id = create(http, base, &service, &user, 0).await.map_err(anyhow::Error::msg)?;
    wait_push(&mut socket, &id, Instant::now() + FIRST_PUSH_WAIT)
        .await
        .map_err(|e| anyhow::anyhow!("the first notification's push: {e}"))?;
    eprintln!("inbox: first push seen; {} inserts", args.inserts);
    let (mut insert, mut push) = (latency_histogram(), latency_histogram());
    for n in 1..=args.inserts {
        let sent = Instant::now();
        let id = match create(http, base, &service, &user, n).await {
            Ok(id) => id,
            Err(e) => {
                *report.errors.entry(e).or_default() += 1;
                continue;
            }
        };
        let _ = insert.record(sent.elapsed().as_micros() as u64);
        match wait_push(&mut socket, &id, Instant::now() + PUSH_TIMEOUT).await {
            Ok(()) => drop(push.record(sent.elapsed().as_micros() as u64)),
            Err(e) => {
                report.lost += 1;
                *report.errors.entry(e).or_default() += 1;
            }
        }
    }
    socket.close().await;
    report.insert = Some(LatencySummary::of(&insert));
    report.push = Some(LatencySummary::of(&push));
    Ok(())
}

async fn list(
    args: &InboxArgs,
    http: &reqwest::Client,
    base: &str,
    report: &mut InboxReport,
) -> anyhow::Result<()> {
    let user = fresh_user(2);
    let db = crate::database::connect(&args.database_url, DB_TIMEOUT).await?;
    let seed = format!(
        "insert into realtime.notifications (user_id, type, content, created_at) \
         select '{user}'::uuid, 'load', jsonb_build_object('n', i), now() - i * interval '1 millisecond' \
         from generate_series(1, {}) i",
        args.seed
    );
    let started = Instant::now();
    tokio::time::timeout(DB_TIMEOUT, db.batch_execute(&seed))
        .await
        .context("seeding timed out")?
        .context("seeding realtime.notifications")?;
    let middle: String = tokio::time::timeout(
        DB_TIMEOUT,
        db.query_one(
            "select to_char(created_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
             from realtime.notifications where user_id = $1::text::uuid order by created_at desc offset $2 limit 1",
            &[&user, &((args.seed / 2) as i64)],
        ),
    )
    .await
    .context("reading the middle cursor timed out")??
    .get(0);
    eprintln!(
        "inbox: seeded {} notifications in {:.1} s; {} lists",
        args.seed,
        started.elapsed().as_secs_f64(),
        args.lists
    );
    let token = Arc::new(user_token(&args.jwt_secret, &user, now_unix_secs()).context("signing")?);
    let query = "query($before: String) { notifications(limit: 50, before: $before) { id type content readAt createdAt } }";
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.list_concurrency.min(args.lists))
        .map(|_| {
            let (http, base, token, next, middle) =
                (http.clone(), base.to_owned(), token.clone(), next.clone(), middle.clone());
            let lists = args.lists;
            tokio::spawn(async move {
                let (mut first, mut deep, mut errors) =
                    (latency_histogram(), latency_histogram(), ErrorCounts::new());
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= lists {
                        break;
                    }
                    let before = if i % 2 == 0 { Value::Null } else { json!(middle) };
                    let sent = Instant::now();
                    let result = http
                        .post(format!("{base}/graphql"))
                        .bearer_auth(token.as_str())
                        .json(&json!({"query": query, "variables": {"before": before}}))
                        .send()
                        .await;
                    let outcome = match result {
                        Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                            Ok(v)
                                if v["data"]["notifications"].as_array().is_some_and(|a| a.len() == PAGE) =>
                            {
                                Ok(())
                            }
                            Ok(v) => Err(format!("unexpected answer: {}", v["errors"][0]["message"])),
                            Err(_) => Err("answer is not JSON".to_owned()),
                        },
                        Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
                        Err(e) => Err(if e.is_timeout() { "timeout".into() } else { e.to_string() }),
                    };
                    match outcome {
                        Ok(()) => {
                            let h = if i % 2 == 0 { &mut first } else { &mut deep };
                            let _ = h.record(sent.elapsed().as_micros() as u64);
                        }
                        Err(e) => *errors.entry(e).or_default() += 1,
                    }
                }
                (first, deep, errors)
            })
        })
        .collect();
    let (mut first, mut deep) = (latency_histogram(), latency_histogram());
    for task in tasks {
        let (f, d, errors) = task.await.context("a list task failed")?;
        let _ = first.add(&f);
        let _ = deep.add(&d);
        crate::report::merge_errors(&mut report.errors, &errors);
    }
    report.list_secs = started.elapsed().as_secs_f64();
    report.lists.insert("first page", LatencySummary::of(&first));
    report.lists.insert("page at seed/2 (before)", LatencySummary::of(&deep));
    let _ = db.batch_execute(&format!("delete from realtime.notifications where user_id = '{user}'")).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> InboxArgs {
        crate::scenario::parse_db_args(extra)
    }

    #[test]
    fn defaults_and_refusals() {
        let a = args(&[]);
        assert_eq!((a.inserts, a.seed, a.lists, a.list_concurrency), (1_000, 10_000, 1_000, 4));
        assert!(check(&a).is_ok());
        for bad in [
            &["--inserts=0", "--seed=0"][..],
            &["--inserts=0", "--lists=0"],
            &["--list-concurrency=0"],
            &["--seed=2000000"],
        ] {
            assert!(check(&args(bad)).is_err(), "{bad:?}");
        }
        assert!(check(&args(&["--seed=0"])).is_ok(), "the insert part alone");
    }

    #[test]
    fn fresh_users_are_uuids_and_differ() {
        let (a, b) = (fresh_user(1), fresh_user(2));
        assert_ne!(a, b);
        for u in [a, b] {
            let parts: Vec<usize> = u.split('-').map(str::len).collect();
            assert_eq!(parts, vec![8, 4, 4, 4, 12], "{u}");
            assert!(u.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        }
    }
}
