//! The leadership watch: who leads raft, in which term, and whether this node may run CDC.
//!
//! Raft metrics say who *believes* it leads. That is not enough to start a Postgres consumer: a
//! leader cut off from the others keeps believing it until it hears a higher term. So `is_me` is
//! true only while all of these hold:
//! - openraft reports this node as the leader of the current term;
//! - the [`Command::CdcLeader`] naming this node in this term was committed and applied (a quorum
//!   accepted this node as leader of the term); the leader proposes it as soon as it is elected;
//! - a quorum acknowledged the leader within the lease (the election timeout maximum). openraft 0.9
//!   does not make a leader without a quorum step down, so this check is ours. Followers only
//!   start an election after the lease plus an election timeout without heartbeats, so the old
//!   leader lets go of CDC before a new one can be elected;
//! - the node has not resigned ([`super::RaftNode::step_down`]) and is not yielding to a node that
//!   can lead when it cannot (`campaign`).
//!
//! `leader` never names this node while it has no quorum acknowledgement within the lease: an
//! isolated leader stays `Leader` in openraft (0.9 never steps a leader down for want of a quorum)
//! but stops claiming the leadership everywhere it is shown within the lease.
//!
//! The task re-evaluates on every metrics report, every CDC owner change and every few tens of
//! milliseconds (the quorum-ack age grows without any report).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use openraft::{RaftMetrics, ServerState};
use serde::Serialize;
use tokio::time::Instant;

use super::node::RaftNode;
use super::{CdcOwner, Command, RaftNodeId, RaftPeer};
use crate::NodeId;

/// How often the watch is re-evaluated without any other wake-up.
const POLL: Duration = Duration::from_millis(50);
/// How long a leader waits before proposing its CDC claim again after an attempt that did not apply.
const CLAIM_RETRY: Duration = Duration::from_secs(2);

/// Who leads the cluster, as this node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Leadership {
    /// The raft leader's node name, if one is known (this node only with a quorum behind it).
    pub leader: Option<NodeId>,
    /// The raft term this view belongs to.
    pub term: u64,
    /// This node leads with a quorum behind it and owns CDC: it may run the consumer.
    pub is_me: bool,
}

/// This node leads the current term according to openraft.
pub(crate) fn leading(metrics: &RaftMetrics<RaftNodeId, RaftPeer>) -> bool {
    metrics.state == ServerState::Leader && metrics.current_leader == Some(metrics.id)
}

/// The node name of raft id `id` in the membership of `metrics`.
pub(crate) fn name_of(metrics: &RaftMetrics<RaftNodeId, RaftPeer>, id: RaftNodeId) -> Option<NodeId> {
    metrics.membership_config.membership().get_node(&id).map(|peer| NodeId(peer.name.clone()))
}

/// The leadership view from the raft metrics and the applied CDC owner.
///
/// `ack_age` is how long ago a quorum last acknowledged this node as leader (`None`: never, or not
/// leader); `lease` is the longest age that still counts as leading.
pub(crate) fn derive(
    metrics: &RaftMetrics<RaftNodeId, RaftPeer>,
    owner: Option<CdcOwner>,
    ack_age: Option<Duration>,
    lease: Duration,
    resigned: bool,
) -> Leadership {
    let claimed = owner == Some(CdcOwner { node: metrics.id, term: metrics.current_term });
    let quorum = ack_age.is_some_and(|age| age <= lease);
    let unbacked = leading(metrics) && !quorum;
    Leadership {
        leader: metrics.current_leader.filter(|_| !unbacked).and_then(|id| name_of(metrics, id)),
        term: metrics.current_term,
        is_me: leading(metrics) && claimed && quorum && !resigned,
    }
}

/// Keeps `node.leadership` current and proposes the CDC claim when this node becomes leader.
pub(super) async fn run(node: Arc<RaftNode>) {
    let mut metrics = node.raft.metrics();
    let mut owner = node.owner.watch();
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut received = Instant::now();
    let mut claim: Option<(u64, Instant)> = None;
    loop {
        tokio::select! {
            _ = node.stop.cancelled() => break,
            changed = metrics.changed() => {
                if changed.is_err() {
                    break;
                }
                received = Instant::now();
            }
            _ = owner.changed() => {}
            _ = node.refresh.notified() => {}
            _ = poll.tick() => {}
        }
        let current = metrics.borrow_and_update().clone();
        let cdc_owner = *owner.borrow_and_update();
        let resigned = node.resigned.load(Ordering::Acquire) || node.yielding.load(Ordering::Acquire);
        let ack_age =
            current.millis_since_quorum_ack.map(|ms| Duration::from_millis(ms) + received.elapsed());
        let quorum = leading(&current) && ack_age.is_some_and(|age| age <= node.lease);
        node.has_quorum.store(quorum, Ordering::Release);
        let view = derive(&current, cdc_owner, ack_age, node.lease, resigned);
        let wants_claim = leading(&current)
            && !resigned
            && cdc_owner != Some(CdcOwner { node: node.id, term: current.current_term });
        if wants_claim {
            let due =
                claim.is_none_or(|(term, at)| term != current.current_term || at.elapsed() >= CLAIM_RETRY);
            if due {
                claim = Some((current.current_term, Instant::now()));
                propose_claim(&node, current.current_term);
            }
        }
        publish(&node, view);
    }
    // The term is read in a statement of its own: a `borrow()` inside `publish`'s arguments would
    // hold the watch's read lock through `send_if_modified`, which takes its write lock on this same
    // thread and never gets it (std's RwLock is not reentrant). That blocks the worker it runs on for
    // good; on a runtime of one worker openraft's core with it, so `Raft::shutdown` never returns and
    // the stopped node keeps its store.
    let term = node.leadership.borrow().term;
    publish(&node, Leadership { leader: None, term, is_me: false });
}

fn publish(node: &RaftNode, view: Leadership) {
    node.leadership.send_if_modified(|current| {
        if *current == view {
            return false;
        }
        tracing::info!(leader = ?view.leader, term = view.term, is_me = view.is_me, "raft leadership");
        *current = view;
        true
    });
}

/// Appends `CdcLeader { me, term }` in a task of its own; the watch sees it once applied.
fn propose_claim(node: &RaftNode, term: u64) {
    let raft = node.raft.clone();
    let command = Command::CdcLeader { node: node.id, term };
    tokio::spawn(async move {
        match tokio::time::timeout(CLAIM_RETRY, raft.client_write(command)).await {
            Ok(Ok(_)) => tracing::info!(term, "CDC claim committed"),
            Ok(Err(error)) => tracing::info!(term, %error, "CDC claim not committed"),
            Err(_) => tracing::info!(term, "CDC claim not committed in time"),
        }
    });
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use openraft::{Membership, StoredMembership};

    use super::*;

    fn metrics(state: ServerState, leader: Option<u64>) -> RaftMetrics<RaftNodeId, RaftPeer> {
        let nodes = BTreeMap::from([
            (1, RaftPeer { name: "a".into(), addr: "x:1".into() }),
            (2, RaftPeer { name: "b".into(), addr: "x:2".into() }),
        ]);
        let membership = Membership::new(vec![BTreeSet::from([1, 2])], nodes);
        let mut m = RaftMetrics::new_initial(1);
        m.state = state;
        m.current_leader = leader;
        m.current_term = 4;
        m.membership_config = Arc::new(StoredMembership::new(None, membership));
        m
    }

    const LEASE: Duration = Duration::from_millis(600);

    #[test]
    fn is_me_needs_leadership_the_claim_and_a_fresh_quorum() {
        let leader = metrics(ServerState::Leader, Some(1));
        let mine = Some(CdcOwner { node: 1, term: 4 });
        let fresh = Some(Duration::from_millis(100));
        let view = derive(&leader, mine, fresh, LEASE, false);
        assert_eq!(view, Leadership { leader: Some(NodeId("a".into())), term: 4, is_me: true });
        // The claim of an older term does not count.
        assert!(!derive(&leader, Some(CdcOwner { node: 1, term: 3 }), fresh, LEASE, false).is_me);
        // No quorum ack, or a stale one: neither CDC nor the name of leader is claimed.
        assert_eq!(
            derive(&leader, mine, None, LEASE, false),
            Leadership { leader: None, term: 4, is_me: false }
        );
        let stale = derive(&leader, mine, Some(Duration::from_millis(700)), LEASE, false);
        assert_eq!(stale, Leadership { leader: None, term: 4, is_me: false });
        // Resigned.
        assert!(!derive(&leader, mine, fresh, LEASE, true).is_me);
    }

    #[test]
    fn followers_name_the_leader_and_are_not_it() {
        let follower = metrics(ServerState::Follower, Some(2));
        let view = derive(&follower, Some(CdcOwner { node: 2, term: 4 }), None, LEASE, false);
        assert_eq!(view, Leadership { leader: Some(NodeId("b".into())), term: 4, is_me: false });
        let unknown = metrics(ServerState::Candidate, None);
        assert_eq!(derive(&unknown, None, None, LEASE, false).leader, None);
    }
}
