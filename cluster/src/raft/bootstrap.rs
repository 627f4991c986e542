//! Forming and growing the raft cluster from what membership (foca) sees.
//!
//! Raft needs exactly one node to initialize a fresh cluster: two nodes initializing with
//! different member sets would form two clusters, each with its own CDC leader. So every
//! `STATUS_INTERVAL` each node tells its peers (control lane) whether its raft is initialized and
//! whom it follows, and a node initializes only when all of these hold:
//! - its own raft is pristine (no log, no vote). A node that was ever part of a cluster keeps its
//!   log in the data dir, so a restart never re-initializes: it starts from its store and rejoins;
//! - membership is ready (joined, or nobody answered within the join window) and has not changed
//!   for one status interval;
//! - it heard a recent status from every alive member and none of them is initialized;
//! - its name is the smallest among itself and the alive members.
//!
//! It then initializes with itself and the alive members, the smallest [`MAX_VOTERS`] names as
//! voters. Everything else is the leader's job: on every round (and at once when an uninitialized
//! node reports) it adds alive members that run raft but are not in the membership as learners,
//! and promotes caught-up alive learners while there are fewer than [`MAX_VOTERS`] voters.
//!
//! Members gone for good are removed. A SIGTERM does not say whether the pod is restarting or being
//! scaled away, so absence decides: a member the leader has not seen alive for
//! `ClusterConfig::raft_remove_after` (minutes; a rolling restart takes seconds) is demoted to
//! learner, then removed, so a scale-down stops counting toward the quorum. StatefulSet pods keep
//! their names, so one that comes back later is added and promoted again like any new node.
//! A network partition during the very first formation could still let each side initialize.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::{ChangeMembers, Membership};
use tokio::time::Instant;

use super::leadership::leading;
use super::node::RaftNode;
use super::{raft_id, RaftNodeId, RaftPeer};
use crate::sync::{lock, read};
use crate::NodeId;

/// How often each node sends its status and the steward looks at the cluster.
pub(crate) const STATUS_INTERVAL: Duration = Duration::from_millis(500);
/// A status older than this is not trusted.
const STATUS_FRESH: Duration = Duration::from_millis(1500);
/// Voters beyond this add replication cost without a useful gain in availability.
pub const MAX_VOTERS: usize = 5;
/// A membership change that takes longer is abandoned and retried next round.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// A learner this close to the leader's last log index counts as caught up.
const CAUGHT_UP_LAG: u64 = 5;

/// The last status a peer sent (see `PeerMessage::RaftStatus`).
#[derive(Debug, Clone)]
pub(crate) struct PeerStatus {
    pub initialized: bool,
    pub at: Instant,
    pub can_lead: bool,
    pub hears_leader: bool,
    /// Raft ids of the peers it heard within the contact window.
    pub hears: Vec<RaftNodeId>,
}

/// The voters to initialize a fresh cluster with, if this node (`me`, pristine, membership ready
/// and settled) is the one to do it. `alive` excludes `me`; `heard` maps peers with a recent
/// status to whether they are initialized.
pub(crate) fn initial_voters(
    me: &NodeId,
    alive: &BTreeSet<NodeId>,
    heard: &HashMap<NodeId, bool>,
) -> Option<Vec<NodeId>> {
    if alive.iter().any(|peer| peer < me) {
        return None;
    }
    if !alive.iter().all(|peer| heard.get(peer) == Some(&false)) {
        return None;
    }
    let mut all: Vec<NodeId> = alive.iter().cloned().collect();
    all.push(me.clone());
    all.sort();
    all.truncate(MAX_VOTERS);
    Some(all)
}

/// What the leader changes in the membership this round.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Alive nodes running raft that are not members yet: added as learners.
    pub add: Vec<NodeId>,
    /// Voters gone for longer than the removal delay: made learners (first step of removal).
    pub demote: BTreeSet<RaftNodeId>,
    /// Learners gone for longer than the removal delay: removed.
    pub remove: BTreeSet<RaftNodeId>,
    /// Caught-up alive learners made voters (only when nothing else is to change first).
    pub promote: BTreeSet<RaftNodeId>,
}

/// The leader's plan for `membership` given the alive peers that run raft (`candidates`, by name),
/// which learners are caught up and which members have been gone longer than the removal delay.
/// One kind of change per round, in this order: add, demote, remove, promote.
pub(crate) fn plan(
    membership: &Membership<RaftNodeId, RaftPeer>,
    candidates: &BTreeSet<NodeId>,
    caught_up: impl Fn(RaftNodeId) -> bool,
    gone: impl Fn(RaftNodeId) -> bool,
) -> Plan {
    let add: Vec<NodeId> =
        candidates.iter().filter(|name| membership.get_node(&raft_id(&name.0)).is_none()).cloned().collect();
    let demote: BTreeSet<RaftNodeId> = if add.is_empty() {
        membership.voter_ids().filter(|id| gone(*id)).collect()
    } else {
        BTreeSet::new()
    };
    let remove: BTreeSet<RaftNodeId> = if add.is_empty() && demote.is_empty() {
        membership.learner_ids().filter(|id| gone(*id)).collect()
    } else {
        BTreeSet::new()
    };
    let voters = membership.voter_ids().count();
    let mut promote = BTreeSet::new();
    if add.is_empty() && demote.is_empty() && remove.is_empty() && voters < MAX_VOTERS {
        let mut learners: Vec<(String, RaftNodeId)> = membership
            .learner_ids()
            .filter_map(|id| membership.get_node(&id).map(|peer| (peer.name.clone(), id)))
            .filter(|(name, id)| candidates.contains(&NodeId(name.clone())) && caught_up(*id))
            .collect();
        learners.sort();
        promote = learners.into_iter().take(MAX_VOTERS - voters).map(|(_, id)| id).collect();
    }
    Plan { add, demote, remove, promote }
}

/// The steward: status exchange, first initialization, and the leader's membership upkeep.
pub(super) async fn run(node: Arc<RaftNode>) {
    let mut tick = tokio::time::interval(STATUS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let changing = Arc::new(AtomicBool::new(false));
    let mut initialized = false;
    loop {
        let round = tokio::select! {
            _ = node.stop.cancelled() => return,
            _ = tick.tick() => true,
            _ = node.nudge.notified() => false,
        };
        if !initialized {
            // Asked of the raft core, not the metrics: right after start the metrics are not yet
            // loaded from the store, and a restarted node must never look pristine.
            match node.raft.is_initialized().await {
                Ok(yes) => initialized = yes,
                Err(_) => return,
            }
            node.set_initialized(initialized);
        }
        let metrics = node.raft.metrics().borrow().clone();
        if !initialized {
            if round {
                try_initialize(&node).await;
            }
        } else if leading(&metrics)
            && !node.yielding.load(Ordering::Acquire)
            && !changing.swap(true, Ordering::AcqRel)
        {
            let (node, changing) = (Arc::clone(&node), Arc::clone(&changing));
            tokio::spawn(async move {
                upkeep(&node, &metrics).await;
                changing.store(false, Ordering::Release);
            });
        }
    }
}

async fn try_initialize(node: &RaftNode) {
    if !node.shared.ready.load(Ordering::Acquire)
        || lock(&node.membership_changed).elapsed() < STATUS_INTERVAL
    {
        return;
    }
    let alive = node.alive_members();
    let names: BTreeSet<NodeId> = alive.keys().cloned().collect();
    let Some(voters) = initial_voters(&node.name, &names, &node.fresh_statuses(STATUS_FRESH)) else {
        return;
    };
    let my_addr = read(&node.shared.me).addr.to_string();
    let nodes: BTreeMap<RaftNodeId, RaftPeer> = voters
        .iter()
        .map(|name| {
            let addr = alive.get(name).cloned().unwrap_or_else(|| my_addr.clone());
            (raft_id(&name.0), RaftPeer { name: name.0.clone(), addr })
        })
        .collect();
    if nodes.len() != voters.len() {
        tracing::error!(?voters, "two node names share a raft id: rename a node");
        return;
    }
    tracing::info!(?voters, "initializing a new raft cluster");
    if let Err(error) = node.raft.initialize(nodes).await {
        tracing::warn!(%error, "raft initialization refused");
    }
}

/// One round of the leader's membership upkeep.
async fn upkeep(node: &RaftNode, metrics: &openraft::RaftMetrics<RaftNodeId, RaftPeer>) {
    let membership = metrics.membership_config.membership();
    if membership.get_joint_config().len() > 1 {
        return;
    }
    let alive = node.alive_members();
    let heard = node.fresh_statuses(STATUS_FRESH);
    let candidates: BTreeSet<NodeId> =
        alive.keys().filter(|name| heard.contains_key(*name)).cloned().collect();
    let last = metrics.last_log_index.unwrap_or(0);
    let caught_up = |id: RaftNodeId| {
        metrics
            .replication
            .as_ref()
            .and_then(|replication| replication.get(&id).cloned().flatten())
            .is_some_and(|matched| matched.index + CAUGHT_UP_LAG >= last)
    };
    let gone = {
        // When each member was last seen alive, as far as this leader knows (a new leader starts
        // counting afresh, which only delays a removal).
        let mut absent = lock(&node.absent_since);
        let now = Instant::now();
        let members: Vec<(RaftNodeId, RaftPeer)> =
            membership.nodes().map(|(id, peer)| (*id, peer.clone())).collect();
        absent.retain(|id, _| members.iter().any(|(member, _)| member == id));
        for (id, peer) in &members {
            if *id == node.id || candidates.contains(&NodeId(peer.name.clone())) {
                absent.remove(id);
            } else {
                absent.entry(*id).or_insert(now);
            }
        }
        let remove_after = node.shared.config.raft_remove_after;
        absent
            .iter()
            .filter(|(_, since)| since.elapsed() >= remove_after)
            .map(|(id, _)| *id)
            .collect::<Vec<_>>()
    };
    let Plan { add, demote, remove, promote } =
        plan(membership, &candidates, caught_up, |id| gone.contains(&id));
    let change = if !add.is_empty() {
        let nodes = add
            .iter()
            .filter_map(|name| {
                let addr = alive.get(name)?.clone();
                Some((raft_id(&name.0), RaftPeer { name: name.0.clone(), addr }))
            })
            .collect();
        tracing::info!(?add, "raft: adding learners");
        ChangeMembers::AddNodes(nodes)
    } else if !demote.is_empty() {
        tracing::warn!(?demote, "raft: voters gone for longer than the removal delay: made learners");
        ChangeMembers::RemoveVoters(demote)
    } else if !remove.is_empty() {
        tracing::warn!(?remove, "raft: members gone for longer than the removal delay: removed");
        ChangeMembers::RemoveNodes(remove)
    } else if !promote.is_empty() {
        tracing::info!(?promote, "raft: promoting learners to voters");
        ChangeMembers::AddVoterIds(promote)
    } else {
        return;
    };
    match tokio::time::timeout(CHANGE_TIMEOUT, node.raft.change_membership(change, true)).await {
        Ok(Ok(_)) => node.nudge.notify_one(),
        Ok(Err(error)) => tracing::info!(%error, "raft membership change not made"),
        Err(_) => tracing::info!("raft membership change timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> BTreeSet<NodeId> {
        list.iter().map(|n| NodeId((*n).into())).collect()
    }

    fn heard(list: &[(&str, bool)]) -> HashMap<NodeId, bool> {
        list.iter().map(|(n, i)| (NodeId((*n).into()), *i)).collect()
    }

    #[test]
    fn only_the_smallest_pristine_node_that_heard_everyone_initializes() {
        let a = NodeId("a".into());
        let b = NodeId("b".into());
        let all_fresh = heard(&[("a", false), ("b", false), ("c", false)]);
        assert_eq!(initial_voters(&a, &names(&["b", "c"]), &all_fresh).unwrap().len(), 3);
        assert_eq!(initial_voters(&b, &names(&["a", "c"]), &all_fresh), None);
        // Not heard from c yet, or c is already in a cluster.
        assert_eq!(initial_voters(&a, &names(&["b", "c"]), &heard(&[("b", false)])), None);
        assert_eq!(initial_voters(&a, &names(&["b", "c"]), &heard(&[("b", false), ("c", true)])), None);
        // Alone.
        assert_eq!(initial_voters(&a, &BTreeSet::new(), &HashMap::new()), Some(vec![a.clone()]));
        // At most five voters, the smallest names.
        let many = names(&["b", "c", "d", "e", "f", "g"]);
        let fresh: HashMap<NodeId, bool> = many.iter().map(|n| (n.clone(), false)).collect();
        let voters = initial_voters(&a, &many, &fresh).unwrap();
        assert_eq!(voters.iter().map(|n| n.0.as_str()).collect::<Vec<_>>(), ["a", "b", "c", "d", "e"]);
    }

    fn membership(voters: &[&str], learners: &[&str]) -> Membership<RaftNodeId, RaftPeer> {
        let peer = |n: &str| (raft_id(n), RaftPeer { name: n.into(), addr: format!("{n}:1") });
        let nodes: BTreeMap<_, _> = voters.iter().chain(learners).map(|n| peer(n)).collect();
        Membership::new(vec![voters.iter().map(|n| raft_id(n)).collect()], nodes)
    }

    #[test]
    fn the_leader_adds_new_nodes_then_promotes_caught_up_learners() {
        let none = |_| false;
        let m = membership(&["a", "b"], &[]);
        let plan_ = plan(&m, &names(&["b", "c"]), |_| true, none);
        assert_eq!(plan_, Plan { add: vec![NodeId("c".into())], ..Plan::default() });

        let m = membership(&["a", "b"], &["c", "d"]);
        assert_eq!(
            plan(&m, &names(&["b", "c", "d"]), |_| true, none).promote,
            [raft_id("c"), raft_id("d")].into()
        );
        // Lagging or dead learners wait.
        assert_eq!(plan(&m, &names(&["b", "c"]), |id| id != raft_id("c"), none).promote, BTreeSet::new());
        // Five voters are enough.
        let m = membership(&["a", "b", "c", "d", "e"], &["f"]);
        assert_eq!(plan(&m, &names(&["b", "c", "d", "e", "f"]), |_| true, none), Plan::default());
    }

    #[test]
    fn members_gone_too_long_are_demoted_then_removed_before_anyone_is_promoted() {
        let gone = |id| id == raft_id("e");
        // A gone voter is demoted first, even with a learner waiting to be promoted.
        let m = membership(&["a", "b", "c", "d", "e"], &["f"]);
        let plan_ = plan(&m, &names(&["b", "c", "d", "f"]), |_| true, gone);
        assert_eq!(plan_, Plan { demote: [raft_id("e")].into(), ..Plan::default() });
        // Then, as a learner, removed.
        let m = membership(&["a", "b", "c", "d"], &["e", "f"]);
        let plan_ = plan(&m, &names(&["b", "c", "d", "f"]), |_| true, gone);
        assert_eq!(plan_, Plan { remove: [raft_id("e")].into(), ..Plan::default() });
        // Then the caught-up learner takes the free seat.
        let m = membership(&["a", "b", "c", "d"], &["f"]);
        assert_eq!(plan(&m, &names(&["b", "c", "d", "f"]), |_| true, gone).promote, [raft_id("f")].into());
        // A new node is added before anything is removed.
        let m = membership(&["a", "b", "e"], &[]);
        let plan_ = plan(&m, &names(&["b", "g"]), |_| true, gone);
        assert_eq!(plan_, Plan { add: vec![NodeId("g".into())], ..Plan::default() });
    }
}
