//! Raft leadership across in-process clusters: each `ClusterHandle` runs on its own runtime and
//! binds its own loopback address (127.0.0.201-216, ports 4600-4612, clear of the node tests), with a
//! temporary data dir. Waits are bounded and generous (a loaded 2-core machine); measured times are
//! printed (`cargo test -p realtime-cluster --test raft -- --nocapture`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use realtime_cluster::{ClusterConfig, ClusterError, ClusterEvent, ClusterHandle, Leadership, NodeId};
use tokio::sync::mpsc;

const LIMIT: Duration = Duration::from_secs(10);

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("realtime-raftnet-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn addr(host: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, host], port))
}

fn config(name: &str, me: SocketAddr, seeds: &[SocketAddr], dir: &TempDir) -> ClusterConfig {
    let seeds = seeds.iter().filter(|&&s| s != me).map(|s| s.to_string()).collect();
    let mut config = ClusterConfig::new(NodeId(name.into()), me, me, seeds);
    config.data_dir = Some(dir.0.join(name));
    config
}

/// Starts a handle, retrying while the previous run of the same node still holds its port.
async fn start(config: ClusterConfig) -> ClusterHandle {
    let deadline = Instant::now() + LIMIT;
    loop {
        match ClusterHandle::start(config.clone()).await {
            Ok((handle, events)) => return drained(handle, events),
            Err(ClusterError::Bind { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("cannot start {}: {error}", config.node_id),
        }
    }
}

/// Nobody reads cluster events here; keeps the receiver so the core never blocks on a closed
/// channel, and drains it in the background.
fn drained(handle: ClusterHandle, mut events: mpsc::Receiver<ClusterEvent>) -> ClusterHandle {
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    handle
}

fn views(nodes: &[&ClusterHandle]) -> Vec<Leadership> {
    nodes.iter().map(|node| node.leadership().borrow().clone()).collect()
}

/// The one leader all `nodes` agree on, if exactly one of them `is_me` and all name it.
fn agreed(nodes: &[&ClusterHandle]) -> Option<(NodeId, u64)> {
    let views = views(nodes);
    let mine: Vec<usize> = (0..views.len()).filter(|&i| views[i].is_me).collect();
    let [leader] = mine[..] else { return None };
    let name = nodes[leader].me().node;
    views.iter().all(|v| v.leader.as_ref() == Some(&name)).then(|| (name, views[leader].term))
}

/// Polls `check` every 20 ms until it answers, at most [`LIMIT`]; returns the answer and the time.
/// At every poll, at most one of `nodes` may claim CDC.
async fn wait_for<T>(
    what: &str,
    nodes: &[&ClusterHandle],
    mut check: impl FnMut() -> Option<T>,
) -> (T, Duration) {
    let started = Instant::now();
    loop {
        let claims = views(nodes).iter().filter(|v| v.is_me).count();
        assert!(claims <= 1, "{what}: two nodes claim CDC at once: {:?}", views(nodes));
        if let Some(found) = check() {
            let took = started.elapsed();
            println!("{what}: {took:?}");
            return (found, took);
        }
        if started.elapsed() > LIMIT {
            let dump: Vec<_> = nodes.iter().map(|n| serde_json::to_string(&n.view().raft).unwrap()).collect();
            panic!("{what}: not within {LIMIT:?}; leadership {:?}; raft {dump:#?}", views(nodes));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_one_cdc_leader_fail_over_rejoin_and_hand_over() {
    let dir = TempDir::new("three");
    let names = ["raftnet-a", "raftnet-b", "raftnet-c"];
    let addrs = [addr(201, 4600), addr(202, 4601), addr(203, 4602)];
    let configs: Vec<ClusterConfig> =
        names.iter().zip(addrs).map(|(name, me)| config(name, me, &addrs, &dir)).collect();
    let mut handles = Vec::new();
    for config in &configs {
        handles.push(start(config.clone()).await);
    }

    // 1. A fresh cluster forms and elects exactly one CDC leader.
    let all: Vec<&ClusterHandle> = handles.iter().collect();
    let ((first, first_term), _) = wait_for("first leader", &all, || agreed(&all)).await;
    let raft = handles[0].view().raft.unwrap();
    println!("formed: {}", serde_json::to_string(&raft).unwrap());
    let (_, _) = wait_for("three voters", &all, || {
        all.iter().all(|h| h.view().raft.is_some_and(|r| r.voters.len() == 3)).then_some(())
    })
    .await;

    // 2. The leader dies: another node leads, in a higher term.
    let dead = names.iter().position(|n| NodeId((*n).into()) == first).unwrap();
    handles[dead].shutdown();
    let survivors: Vec<&ClusterHandle> = (0..3).filter(|&i| i != dead).map(|i| &handles[i]).collect();
    let ((second, second_term), _) = wait_for("fail-over", &survivors, || {
        agreed(&survivors).filter(|(leader, term)| *leader != first && *term > first_term)
    })
    .await;

    // 3. The dead node restarts from its data dir and rejoins as the same member.
    handles[dead] = start(configs[dead].clone()).await;
    let all: Vec<&ClusterHandle> = handles.iter().collect();
    wait_for("rejoin", &all, || agreed(&all).filter(|(leader, _)| *leader == second)).await;
    let rejoined = handles[dead].view().raft.unwrap();
    assert!(rejoined.voters.contains(&first.0), "still a voter: {rejoined:?}");
    assert_eq!(rejoined.voters.len(), 3, "{rejoined:?}");
    assert!(rejoined.term >= second_term);
    assert!(!rejoined.is_me);

    // 4. The leader leaves gracefully: it stops claiming CDC at once and another node takes over.
    let leaving = names.iter().position(|n| NodeId((*n).into()) == second).unwrap();
    let started = Instant::now();
    handles[leaving].step_down().await;
    assert!(!handles[leaving].leadership().borrow().is_me, "resigned leader still claims CDC");
    println!("step_down returned after {:?}", started.elapsed());
    handles[leaving].leave().await;
    handles[leaving].shutdown();
    let rest: Vec<&ClusterHandle> = (0..3).filter(|&i| i != leaving).map(|i| &handles[i]).collect();
    wait_for("hand-over", &rest, || agreed(&rest).filter(|(leader, _)| *leader != second)).await;
    for handle in &handles {
        handle.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_quorum_stops_claiming_cdc() {
    let dir = TempDir::new("quorum");
    let names = ["raftnet-d", "raftnet-e", "raftnet-f"];
    let addrs = [addr(204, 4603), addr(205, 4604), addr(206, 4605)];
    let mut handles = Vec::new();
    for (name, me) in names.iter().zip(addrs).take(2) {
        handles.push(start(config(name, me, &addrs, &dir)).await);
    }
    let two: Vec<&ClusterHandle> = handles.iter().collect();
    wait_for("two-node leader", &two, || agreed(&two)).await;
    // A late node is added by the leader (learner, then voter); it never initializes on its own.
    handles.push(start(config(names[2], addrs[2], &addrs, &dir)).await);
    let all: Vec<&ClusterHandle> = handles.iter().collect();
    let ((leader, _), _) = wait_for("late join", &all, || {
        agreed(&all).filter(|_| all.iter().all(|h| h.view().raft.is_some_and(|r| r.voters.len() == 3)))
    })
    .await;
    let leader = handles.iter().find(|h| h.me().node == leader).unwrap();
    for follower in handles.iter().filter(|h| h.me().node != leader.me().node) {
        follower.shutdown();
    }
    let alone = [leader];
    // openraft keeps it leader (0.9 has no step-down without a quorum); the lease check does not.
    let (_, took) =
        wait_for("quorum lost", &alone, || (!leader.leadership().borrow().is_me).then_some(())).await;
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let view = leader.view().raft.unwrap();
    println!(
        "without quorum: state {} is_me {} quorum_ack_ms {:?}",
        view.state, view.is_me, view.quorum_ack_ms
    );
    leader.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_leads_itself_and_raft_is_off_without_a_data_dir() {
    let dir = TempDir::new("lone");
    let me = addr(209, 4608);
    let lone = start(config("raftnet-lone", me, &[], &dir)).await;
    let nodes = [&lone];
    wait_for("lone leader", &nodes, || agreed(&nodes)).await;
    let view = lone.view().raft.unwrap();
    assert_eq!((view.voters.len(), view.cdc_owner.as_deref()), (1, Some("raftnet-lone")));
    lone.shutdown();

    let off = addr(208, 4607);
    let (plain, _events) =
        ClusterHandle::start(ClusterConfig::new(NodeId("raftnet-off".into()), off, off, vec![]))
            .await
            .unwrap();
    assert!(plain.view().raft.is_none());
    assert_eq!(*plain.leadership().borrow(), Leadership::default());
    plain.step_down().await;
    plain.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_gone_longer_than_the_removal_delay_is_removed_and_added_back_when_it_returns() {
    let dir = TempDir::new("remove");
    let names = ["raftnet-g", "raftnet-h", "raftnet-i"];
    let addrs = [addr(213, 4609), addr(214, 4610), addr(215, 4611)];
    let configs: Vec<ClusterConfig> = names
        .iter()
        .zip(addrs)
        .map(|(name, me)| {
            let mut config = config(name, me, &addrs, &dir);
            config.raft_remove_after = Duration::from_secs(2);
            config
        })
        .collect();
    let mut handles = Vec::new();
    for config in &configs {
        handles.push(start(config.clone()).await);
    }
    let all: Vec<&ClusterHandle> = handles.iter().collect();
    let ((leader, _), _) = wait_for("a leader", &all, || agreed(&all)).await;
    wait_for("three voters", &all, || {
        all.iter().all(|h| h.view().raft.is_some_and(|r| r.voters.len() == 3)).then_some(())
    })
    .await;

    // A follower goes away (a scale-down looks like this): after the delay the leader demotes and
    // removes it, and the two others go on as a two-voter cluster with the same leader.
    let gone = names.iter().position(|n| NodeId((*n).into()) != leader).unwrap();
    handles[gone].leave().await;
    handles[gone].shutdown();
    let rest: Vec<&ClusterHandle> = (0..3).filter(|&i| i != gone).map(|i| &handles[i]).collect();
    let (_, took) = wait_for("the gone member removed", &rest, || {
        rest.iter()
            .all(|h| {
                h.view().raft.is_some_and(|r| {
                    r.voters.len() == 2
                        && !r.voters.contains(&names[gone].to_string())
                        && r.learners.is_empty()
                })
            })
            .then_some(())
    })
    .await;
    assert!(took >= Duration::from_secs(2), "removed before the delay: {took:?}");
    assert_eq!(agreed(&rest).map(|(name, _)| name), Some(leader.clone()));

    // It comes back (same name, same data): added as a learner, caught up, promoted.
    handles[gone] = start(configs[gone].clone()).await;
    let all: Vec<&ClusterHandle> = handles.iter().collect();
    wait_for("back as a voter", &all, || {
        all.iter()
            .all(|h| h.view().raft.is_some_and(|r| r.voters.len() == 3 && r.learners.is_empty()))
            .then_some(())
    })
    .await;
    wait_for("one leader", &all, || agreed(&all)).await;
    for handle in &handles {
        handle.shutdown();
    }
}

/// A stopped node closes its raft store promptly, every time: the same node started again in this
/// process opens it within a second (while the old one still holds it, the start fails with
/// `RaftStore`). Each stop races raft's core against the node's raft tasks on the raft runtime's
/// one worker, so the cycle repeats: a task that blocks that worker when the cluster stops (as the
/// leadership watch once did) loses most of the races.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_releases_its_raft_store_at_once_each_time() {
    const CYCLES: usize = 6;
    let dir = TempDir::new("release");
    let config = config("raftnet-release", addr(216, 4612), &[], &dir);
    let mut node = start(config.clone()).await;
    for cycle in 0..CYCLES {
        let nodes = [&node];
        wait_for("lone leader", &nodes, || agreed(&nodes)).await;
        node.shutdown();
        let stopped = Instant::now();
        node = loop {
            match ClusterHandle::start(config.clone()).await {
                Ok((handle, events)) => break drained(handle, events),
                Err(ClusterError::Bind { .. } | ClusterError::RaftStore(_))
                    if stopped.elapsed() < Duration::from_secs(1) =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => {
                    panic!("cycle {cycle}: not restarted {:?} after the stop: {error}", stopped.elapsed())
                }
            }
        };
        println!("cycle {cycle}: restarted after {:?}", stopped.elapsed());
    }
    node.shutdown();
}
