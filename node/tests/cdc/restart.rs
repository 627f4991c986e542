//! Stop the node in the middle of a stream and restart it on the same database, slot and data
//! directory. After a graceful stop (SIGTERM) what a client received before and after covers every
//! committed row exactly once, in commit order. After a SIGKILL nothing is lost and order holds; the
//! node may repeat what it had written to sockets but not yet recorded (a process killed between the
//! two cannot know), so there the test allows re-sent rows and prints how many.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

/// Kill/restart cycles: how long after (re)subscribing each SIGKILL comes. The first lands in a
/// steady stream; the others while the restarted node is still catching up with what was committed
/// during its downtime and grace period.
const KILL_AFTER_MS: [u64; 3] = [800, 150, 400];

/// Reads the row numbers of `postgres_changes` frames until the socket closes (the server was killed).
async fn drain_until_closed(c: &mut Client, topic: &str) -> Vec<i64> {
    let mut got = Vec::new();
    let deadline = Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.recv(left).await {
            Some(Frame::Close(_)) => return got,
            Some(Frame::Text(v, raw)) if v["event"] == "postgres_changes" => {
                got.push(parse_change(&v, raw, topic).key("n").as_i64().expect("n"));
            }
            Some(_) => {}
            None => panic!("{}: socket not closed within {T:?} after SIGKILL; got {got:?}", c.vsn),
        }
    }
}

/// How the node is stopped in each cycle.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    Term,
    Kill,
}

#[tokio::test]
async fn t70_sigterm_and_restart_deliver_every_row_exactly_once() {
    restart_cycles(Stop::Term).await;
}

#[tokio::test]
async fn t71_sigkill_and_restart_lose_nothing_and_keep_order() {
    restart_cycles(Stop::Kill).await;
}

async fn restart_cycles(how: Stop) {
    // `lsn`: where the WAL was when the row was inserted, to tell which rows the recorded delivered
    // position covers.
    let db = Db::new(
        "create table seq (n int8 primary key, lsn pg_lsn not null default pg_current_wal_insert_lsn());
         alter publication supabase_realtime add table seq;",
    )
    .await;
    let token = db.token("authenticated", &new_uuid());
    let entries = json!([{"event": "INSERT", "schema": "public", "table": "seq"}]);
    let mut server = db.server(&[]);
    let mut clients = Vec::new();
    for vsn in VSNS {
        let mut c = server.client(&token, vsn).await;
        let (t, s) = topic("restart");
        c.subscribe(&t, &s, &entries, None).await;
        clients.push((c, t, s));
    }

    // One row per transaction, in bursts of 200 as fast as they go (so the server has several
    // transactions in hand at once) with 60 ms pauses (so a debug build keeps up overall).
    let committed: Arc<Mutex<Vec<i64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let inserter = {
        let (committed, stop, url) = (committed.clone(), stop.clone(), db.url.clone());
        tokio::spawn(async move {
            let (pg, _conn) = connect(&url).await;
            let mut n = 0i64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                pg.batch_execute(&format!("insert into seq (n) values ({n})")).await.expect("insert");
                committed.lock().unwrap().push(n);
                if n % 200 == 0 {
                    tokio::time::sleep(Duration::from_millis(60)).await;
                }
            }
        })
    };

    // Per client: every row number received, across all server lifetimes; and what happened at each kill.
    let mut received: Vec<Vec<i64>> = vec![Vec::new(); clients.len()];
    let mut kills: Vec<String> = Vec::new();
    for (cycle, kill_after) in KILL_AFTER_MS.into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(kill_after)).await;
        match how {
            Stop::Term => server.terminate(),
            Stop::Kill => server.kill(),
        }
        let at_kill = committed.lock().unwrap().len();
        let mut last_before = Vec::new();
        for (i, (c, t, _s)) in clients.iter_mut().enumerate() {
            let got = drain_until_closed(c, t).await;
            last_before.push((c.vsn.to_string(), got.last().copied(), c.ended_by.clone()));
            received[i].extend(got);
        }
        let recorded = db
            .recorded_position()
            .unwrap_or_else(|| panic!("no cdc-{}.lsn in {} after the kill", db.slot, db.data_dir.display()));
        let covered =
            db.json_rows(&format!("select max(n) from seq where (lsn - '0/0'::pg_lsn) < {recorded}")).await;
        kills.push(format!(
            "kill {cycle}: after {at_kill} commits; recorded position {recorded} covers rows up to about {}; \
             last row received per client before the kill: {last_before:?}",
            covered[0]
        ));
        // Rows keep being committed while the node is down.
        tokio::time::sleep(Duration::from_millis(300)).await;
        server = db.server(&["--cdc-resume-grace-ms", "3000"]);
        let mut rejoined = Vec::new();
        for (c, t, s) in clients.drain(..) {
            let vsn = c.vsn;
            drop(c);
            let mut c = server.client(&token, vsn).await;
            let (r, _ids) = c.join_pg(&t, &entries, None).await;
            rejoined.push((c, t, s, r));
        }
        for (c, t, s, r) in &mut rejoined {
            c.expect_subscribed(t, s, r).await;
        }
        clients = rejoined.into_iter().map(|(c, t, s, _r)| (c, t, s)).collect();
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::SeqCst);
    inserter.await.expect("inserter");
    let last = *committed.lock().unwrap().last().expect("rows");

    for (i, (c, t, _s)) in clients.iter_mut().enumerate() {
        let deadline = Instant::now() + T * 3;
        while received[i].last() != Some(&last) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match c.recv(left).await {
                Some(Frame::Text(v, raw)) if v["event"] == "postgres_changes" => {
                    received[i].push(parse_change(&v, raw, t).key("n").as_i64().expect("n"));
                }
                Some(Frame::Close(code)) => panic!("{}: closed ({code:?}) after the restart", c.vsn),
                Some(_) => {}
                None => break,
            }
        }
        c.expect_silence(QUIET).await;
    }
    let want: Vec<i64> = (1..=last).collect();
    let mut report = String::new();
    let mut repeated = Vec::new();
    for (i, (c, _t, _s)) in clients.iter().enumerate() {
        let all = &received[i];
        if *all == want {
            continue;
        }
        if how == Stop::Kill {
            // Re-sent rows are allowed after a SIGKILL; losses and reordering are not: the first
            // arrival of each row must be exactly 1..=last in order.
            let mut first = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for n in all {
                if seen.insert(*n) {
                    first.push(*n);
                }
            }
            if first == want {
                repeated.push(format!("{}: {} rows re-sent", c.vsn, all.len() - want.len()));
                continue;
            }
        }
        let mut seen = BTreeMap::<i64, usize>::new();
        for n in all {
            *seen.entry(*n).or_default() += 1;
        }
        let dups: Vec<i64> = seen.iter().filter(|(_, k)| **k > 1).map(|(n, _)| *n).collect();
        let gaps: Vec<i64> = want.iter().filter(|n| !seen.contains_key(n)).copied().collect();
        let out_of_order: Vec<(i64, i64)> =
            all.windows(2).filter(|w| w[0] >= w[1]).map(|w| (w[0], w[1])).collect();
        report.push_str(&format!(
            "\n{}: received {} messages for rows 1..={last}: duplicates {dups:?}; missing {gaps:?}; \
             backward steps {out_of_order:?}",
            c.vsn,
            all.len()
        ));
    }
    assert!(
        report.is_empty(),
        "lost or repeated changes across {how:?} + restart:{report}\n{}",
        kills.join("\n")
    );
    if !repeated.is_empty() {
        eprintln!("{how:?}: nothing lost, in order; {}\n{}", repeated.join("; "), kills.join("\n"));
    }
}
