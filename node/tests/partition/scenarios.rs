//! The scenarios of issue 17's table, one test each: a fault under steady load, the heal, then the
//! checker's judgement of every subscriber (and the cluster's own view where the scenario is about it).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::lab::{Lab, Options, NODES};
use crate::traffic::{Outcome, Traffic};

/// One scenario at a time: each runs PostgreSQL and three nodes.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs a scenario alone, on a runtime of the test's thread (the thread whose network it makes).
fn scenario(body: impl std::future::Future<Output = ()>) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(body);
}

/// How long the load runs before a fault, how long after the heal it keeps running, and how long
/// what is in flight gets to arrive at the end.
const WARM: Duration = Duration::from_secs(3);
const AFTER: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_secs(3);

/// Runs the load, cuts `paths` (from `lab.faults`) for `cut`, heals, and judges.
async fn run_cut(
    lab: &mut Lab,
    cut: Duration,
    paths: impl FnOnce(&Lab) -> Vec<crate::netns::Path>,
) -> Outcome {
    let traffic = Traffic::start(lab).await;
    tokio::time::sleep(WARM).await;
    let paths = paths(lab);
    lab.faults.cut(&paths);
    tokio::time::sleep(cut).await;
    lab.faults.heal();
    tokio::time::sleep(AFTER).await;
    traffic.stop(SETTLE).await
}

/// The raft term node `i` reports.
fn term(view: &Value) -> u64 {
    view["raft"]["term"].as_u64().unwrap_or_default()
}

/// The CDC leader loses PostgreSQL (the followers still reach it) for `cut`: a follower that reaches
/// it takes over during the cut, and no subscriber loses a row.
async fn leader_loses_the_database_for(options: Options, cut: Duration, scenario: &str) {
    let mut lab = Lab::start(options).await;
    let leader = lab.leader().await;
    let followers: Vec<usize> = (0..NODES).filter(|i| *i != leader).collect();
    let traffic = Traffic::start(&lab).await;
    tokio::time::sleep(WARM).await;
    lab.faults.cut(&lab.to_database(leader));
    let cut_at = Instant::now();
    let new_leader = lab.new_leader(&followers, leader, cut).await;
    let took_over_after = cut_at.elapsed();
    tokio::time::sleep(cut.saturating_sub(cut_at.elapsed())).await;
    lab.faults.heal();
    tokio::time::sleep(AFTER).await;
    let outcome = traffic.stop(SETTLE).await;
    outcome.print(&format!("the leader (node-{leader}) loses PostgreSQL for {cut:?}{scenario}"));
    eprintln!("the followers named node-{new_leader:?} leader {took_over_after:?} after the cut");
    assert!(new_leader.is_some(), "no follower took over from the leader that lost PostgreSQL");
    outcome.assert_nothing_silently_lost_or_reordered();
}

#[test]
fn leader_loses_the_database() {
    scenario(leader_loses_the_database_for(Options::default(), Duration::from_secs(20), ""));
}

/// The same, past PostgreSQL's `wal_sender_timeout` (5 s here instead of the default 60 s, so the
/// cut is short): the server side gives up on the replication connection during the cut.
#[test]
fn leader_loses_the_database_past_the_sender_timeout() {
    let options = Options { pg_settings: vec![("wal_sender_timeout", "5s")], ..Options::default() };
    scenario(leader_loses_the_database_for(options, Duration::from_secs(15), ", wal_sender_timeout 5 s"));
}

/// A follower cut off from both peers for longer than the hold (5 s here): its subscribers are told
/// the rows it cannot give them, and resubscribe.
#[test]
fn follower_cut_off_past_the_hold() {
    scenario(async {
        let options = Options { flags: vec!["--cdc-hold-ms".into(), "5000".into()], ..Options::default() };
        let mut lab = Lab::start(options).await;
        let leader = lab.leader().await;
        let follower = (leader + 1) % NODES;
        let outcome = run_cut(&mut lab, Duration::from_secs(12), |_| Lab::from_peers(follower)).await;
        outcome.print(&format!("a follower (node-{follower}) cut off from its peers for 12 s, hold 5 s"));
        outcome.assert_nothing_silently_lost_or_reordered();
        let told = &outcome.report(follower).told;
        assert!(
            told.iter().any(|(_, what)| what.starts_with("PostgresChangesGap")),
            "node-{follower}'s subscriber was not told of the gap: {told:?}"
        );
    });
}

/// A follower's packets to the leader are dropped (one way) for 20 s; the other way still works.
#[test]
fn follower_to_leader_dropped_one_way() {
    scenario(async {
        let mut lab = Lab::start(Options::default()).await;
        let leader = lab.leader().await;
        let follower = (leader + 1) % NODES;
        let outcome =
            run_cut(&mut lab, Duration::from_secs(20), |_| Lab::one_way(follower, leader).to_vec()).await;
        outcome.print(&format!("node-{follower}'s packets to the leader node-{leader} dropped for 20 s"));
        outcome.assert_nothing_silently_lost_or_reordered();
    });
}

/// The leader is cut from both followers for 20 s: the majority elects another and goes on; the old
/// leader lets go of CDC (within the lease) and of its claim.
#[test]
fn leader_cut_from_both_followers() {
    scenario(async {
        let mut lab = Lab::start(Options::default()).await;
        let leader = lab.leader().await;
        let traffic = Traffic::start(&lab).await;
        tokio::time::sleep(WARM).await;
        lab.faults.cut(&Lab::from_peers(leader));
        let cut_at = Instant::now();
        // Watch the isolated leader's own view during the cut.
        let mut claim_dropped_after = None;
        while cut_at.elapsed() < Duration::from_secs(20) {
            let view = lab.view(leader).await;
            if claim_dropped_after.is_none() && view["raft"]["is_me"] == false {
                claim_dropped_after = Some(cut_at.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let majority: Vec<usize> = (0..NODES).filter(|i| *i != leader).collect();
        let new_leader = lab.leader_among(&majority, Duration::from_secs(1)).await;
        lab.faults.heal();
        tokio::time::sleep(AFTER).await;
        let outcome = traffic.stop(SETTLE).await;
        outcome.print(&format!("the leader (node-{leader}) cut from both followers for 20 s"));
        eprintln!(
            "the majority elected node-{new_leader}; the old leader dropped its CDC claim after {claim_dropped_after:?}"
        );
        assert_ne!(new_leader, leader, "the majority kept the cut-off leader");
        assert!(claim_dropped_after.is_some(), "the isolated leader kept its CDC claim for the whole cut");
        outcome.assert_nothing_silently_lost_or_reordered();
    });
}

/// A follower isolated for 10 s and healed: it must not depose the healthy leader on its return.
#[test]
fn isolated_node_rejoins_without_deposing_the_leader() {
    scenario(async {
        let mut lab = Lab::start(Options::default()).await;
        let leader = lab.leader().await;
        let follower = (leader + 1) % NODES;
        let before = term(&lab.view(leader).await);
        let outcome = run_cut(&mut lab, Duration::from_secs(10), |_| Lab::from_peers(follower)).await;
        let after_view = lab.view(leader).await;
        let isolated_term = term(&lab.view(follower).await);
        outcome.print(&format!("a follower (node-{follower}) isolated for 10 s and healed"));
        eprintln!("term before {before}, after {}, the isolated node's {isolated_term}", term(&after_view));
        assert_eq!(lab.leader().await, leader, "the healthy leader was deposed");
        assert_eq!(term(&after_view), before, "the leader's term changed: the isolated node disrupted it");
        outcome.assert_nothing_silently_lost_or_reordered();
    });
}

/// Every link between the nodes dropped for 10 s (each node alone), then healed: broadcasts from one
/// publisher never arrive after newer ones, and nothing is duplicated.
#[test]
fn full_cut_healed_keeps_publisher_order() {
    scenario(async {
        let mut lab = Lab::start(Options::default()).await;
        let outcome = run_cut(&mut lab, Duration::from_secs(10), |_| Lab::every_link()).await;
        outcome.print("every link between the nodes cut for 10 s");
        outcome.assert_nothing_silently_lost_or_reordered();
    });
}

/// One node cut off and healed: the two that stayed connected never see each other down.
#[test]
fn healing_does_not_evict_healthy_nodes() {
    scenario(async {
        let mut lab = Lab::start(Options::default()).await;
        let leader = lab.leader().await;
        let cut_off = (leader + 1) % NODES;
        let healthy: Vec<usize> = (0..NODES).filter(|i| *i != cut_off).collect();
        let traffic = Traffic::start(&lab).await;
        tokio::time::sleep(WARM).await;
        lab.faults.cut(&Lab::from_peers(cut_off));
        tokio::time::sleep(Duration::from_secs(10)).await;
        lab.faults.heal();
        // Through the heal: the healthy pair must keep seeing each other alive.
        let mut downs = Vec::new();
        let watch_until = Instant::now() + AFTER;
        while Instant::now() < watch_until {
            for &i in &healthy {
                let view = lab.view(i).await;
                for m in view["members"].as_array().into_iter().flatten() {
                    let other = format!("node-{}", healthy.iter().find(|j| **j != i).expect("two"));
                    if m["node"] == other.as_str() && m["state"] != "alive" {
                        downs.push(format!("node-{i} saw {other} {}", m["state"]));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let outcome = traffic.stop(SETTLE).await;
        outcome.print(&format!("node-{cut_off} cut off for 10 s and healed"));
        assert!(downs.is_empty(), "a healthy node was declared down during the heal: {downs:?}");
        outcome.assert_nothing_silently_lost_or_reordered();
    });
}

/// Lossy links: 20 % of the packets between every pair of nodes dropped for 10 s.
#[test]
fn lossy_links() {
    scenario(async {
        let mut lab = Lab::start(Options::default()).await;
        let traffic = Traffic::start(&lab).await;
        tokio::time::sleep(WARM).await;
        lab.faults.lose(&Lab::every_link(), 20);
        tokio::time::sleep(Duration::from_secs(10)).await;
        lab.faults.heal();
        tokio::time::sleep(AFTER).await;
        let outcome = traffic.stop(SETTLE).await;
        outcome.print("20 % packet loss between every pair of nodes for 10 s");
        outcome.assert_nothing_silently_lost_or_reordered();
    });
}

/// A voter cut off (not stopped) for 10 s: the leader says so once per peer, not on every retry.
#[test]
fn a_cut_voter_is_logged_once() {
    scenario(async {
        let mut lab = Lab::start(Options::default()).await;
        let leader = lab.leader().await;
        let follower = (leader + 1) % NODES;
        let outcome = run_cut(&mut lab, Duration::from_secs(10), |_| Lab::from_peers(follower)).await;
        outcome.print(&format!("a voter (node-{follower}) cut off for 10 s: the leader's log"));
        let leader_now = lab.leader().await;
        let retries: Vec<String> = lab
            .log_lines(leader_now, "openraft")
            .into_iter()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        let unreachable = lab.log_lines(leader_now, "raft peer unreachable");
        eprintln!("the leader logged {} openraft warnings or errors, and {unreachable:#?}", retries.len());
        assert!(retries.len() <= 5, "openraft's lines at warn or error on the leader: {retries:#?}");
        assert!(
            unreachable.iter().filter(|l| l.contains(&format!("peer=node-{follower}"))).count() <= 2,
            "the cut voter is news once (and once more if it was declared down and rejoined): {unreachable:#?}"
        );
    });
}
