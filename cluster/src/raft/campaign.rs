//! Whether this node may campaign, and whether a leader should let go: the one place that sets
//! openraft's `elect` and `heartbeat` switches.
//!
//! ## Pre-vote, done outside openraft
//! openraft 0.9 has no pre-vote. A voter cut off from the others starts elections it cannot win, and
//! each one raises its term; when it comes back, the leader's next append is answered with that
//! higher term and the leader steps down (openraft's `HigherVote`), although nothing was wrong with
//! it. Followers that hear the leader do refuse its votes (openraft rejects a vote while the leader's
//! lease holds), but the raised term alone is enough to depose. So a node turns its election timer
//! on only while a pre-vote would pass: the voters it is in two-way contact with, and that hear no
//! live leader themselves, form a quorum with it ([`contact_quorum`]).
//!
//! Contact is what the nodes' status beats say, not the failure detector (which routes around a
//! one-way cut through indirect probes): every [`super::node::RaftNode`] sends a
//! `PeerMessage::RaftStatus` to each peer every raft heartbeat, naming the peers it heard within
//! the contact window (the minimum election timeout). A beat from B that names A shows both
//! directions work. The window is shorter than the time a follower waits before its first election
//! (lease + election timeout), so an isolated follower has turned its timer off before it fires.
//!
//! ## Who may lead
//! The node tells the cluster whether it could do the leader's job ([`crate::ClusterHandle::set_can_lead`];
//! for realtime: reach PostgreSQL) and every beat carries it. A node that cannot does not campaign
//! while a peer it is in contact with can; a leader that has not been able to for
//! `ClusterConfig::raft_handover_after` while such a peer exists *yields*: it stops claiming CDC and
//! stops sending heartbeats, so a follower that can lead times out and is elected (openraft 0.9 has
//! no leadership transfer). When it can lead again before that, it resumes its heartbeats.
//!
//! [`decide`] is pure; the task in [`run`] feeds it and applies what changed.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::leadership::leading;
use super::node::RaftNode;
use super::RaftNodeId;

/// What one peer's latest beat said, if it arrived within the contact window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerBeat {
    /// The peer heard this node within the contact window (so both directions work).
    pub hears_me: bool,
    /// The peer follows (or is) a leader it heard from within the lease.
    pub hears_leader: bool,
    /// The peer could do the leader's job.
    pub can_lead: bool,
}

/// Everything [`decide`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inputs {
    /// This node is leaving for good ([`RaftNode::step_down`]).
    pub resigned: bool,
    /// This node could do the leader's job.
    pub can_lead: bool,
    /// How long this node has not been able to (`None`: it can).
    pub unable_for: Option<Duration>,
    /// A voter in two-way contact with this node can do the leader's job.
    pub other_can_lead: bool,
    /// A pre-vote would pass (see [`contact_quorum`]).
    pub contact_quorum: bool,
    /// openraft says this node leads.
    pub leading: bool,
    /// `ClusterConfig::raft_handover_after`.
    pub handover_after: Duration,
}

/// The switches [`decide`] sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    /// openraft's election timer runs (`runtime_config().elect`).
    pub elect: bool,
    /// openraft's leader heartbeats run (`runtime_config().heartbeat`).
    pub heartbeat: bool,
    /// This leader is letting another node take over: it does not claim CDC.
    pub yielding: bool,
}

/// The switches for `inputs`.
pub(crate) fn decide(inputs: &Inputs) -> Decision {
    let yielding = inputs.leading
        && !inputs.resigned
        && inputs.other_can_lead
        && inputs.unable_for.is_some_and(|unable| unable >= inputs.handover_after);
    // Unable to lead, this node still campaigns when nobody in reach could: a cluster without a
    // raft leader cannot change its membership either, and the leader hands over once a node can.
    let worth_leading = inputs.can_lead || !inputs.other_can_lead;
    Decision {
        elect: !inputs.resigned && inputs.contact_quorum && worth_leading,
        heartbeat: !inputs.resigned && !yielding,
        yielding,
    }
}

/// Would a pre-vote pass? Every configuration of the (possibly joint) membership `voters` needs a
/// majority of nodes that hear no live leader and, except `me`, are in two-way contact with `me`.
pub(crate) fn contact_quorum(
    voters: &[BTreeSet<RaftNodeId>],
    me: RaftNodeId,
    i_hear_leader: bool,
    beats: &HashMap<RaftNodeId, PeerBeat>,
) -> bool {
    let grants = |id: &RaftNodeId| {
        if *id == me {
            return !i_hear_leader;
        }
        beats.get(id).is_some_and(|beat| beat.hears_me && !beat.hears_leader)
    };
    !voters.is_empty()
        && voters.iter().all(|config| config.iter().filter(|id| grants(id)).count() * 2 > config.len())
}

/// Beats every raft heartbeat, decides and applies, until the cluster stops.
pub(super) async fn run(node: Arc<RaftNode>) {
    let settings = &node.shared.config;
    let mut tick = tokio::time::interval(settings.raft_heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut applied: Option<Decision> = None;
    loop {
        tokio::select! {
            _ = node.stop.cancelled() => return,
            _ = tick.tick() => {}
            _ = node.reconsider.notified() => {}
        }
        let metrics = node.raft.metrics().borrow().clone();
        let me = node.id;
        let leads = leading(&metrics);
        let window = settings.raft_election_min;
        let beats = node.beats(window);
        let membership = metrics.membership_config.membership();
        let voters: Vec<BTreeSet<RaftNodeId>> = membership.get_joint_config().clone();
        let i_hear_leader = node.hears_leader(&metrics);
        node.send_beat(&metrics, i_hear_leader, window);
        let other_can_lead = beats.iter().any(|(id, beat)| {
            *id != me && beat.hears_me && beat.can_lead && voters.iter().any(|config| config.contains(id))
        });
        let inputs = Inputs {
            resigned: node.resigned.load(Ordering::Acquire),
            can_lead: node.can_lead.load(Ordering::Acquire),
            unable_for: node.unable_for(),
            other_can_lead,
            contact_quorum: contact_quorum(&voters, me, i_hear_leader, &beats),
            leading: leads,
            handover_after: settings.raft_handover_after,
        };
        let decision = decide(&inputs);
        if applied != Some(decision) {
            let was = applied.replace(decision);
            node.raft.runtime_config().elect(decision.elect);
            node.raft.runtime_config().heartbeat(decision.heartbeat);
            node.campaigning.store(decision.elect, Ordering::Release);
            if node.yielding.swap(decision.yielding, Ordering::AcqRel) != decision.yielding {
                node.refresh.notify_one();
            }
            log_change(was, decision, &inputs, metrics.current_term);
        }
    }
}

fn log_change(was: Option<Decision>, now: Decision, inputs: &Inputs, term: u64) {
    let Some(was) = was else {
        tracing::debug!(elect = now.elect, "raft campaign gate set");
        return;
    };
    if now.yielding && !was.yielding {
        tracing::warn!(
            term,
            unable_for = ?inputs.unable_for,
            "raft leader cannot lead and a peer can: stopping heartbeats so it takes over"
        );
    } else if was.yielding && !now.yielding {
        tracing::info!(term, leading = inputs.leading, "raft leader no longer yielding");
    }
    if now.elect != was.elect {
        tracing::info!(
            elect = now.elect,
            contact_quorum = inputs.contact_quorum,
            can_lead = inputs.can_lead,
            other_can_lead = inputs.other_can_lead,
            "raft campaign gate changed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HANDOVER: Duration = Duration::from_secs(1);

    fn inputs() -> Inputs {
        Inputs {
            resigned: false,
            can_lead: true,
            unable_for: None,
            other_can_lead: true,
            contact_quorum: true,
            leading: false,
            handover_after: HANDOVER,
        }
    }

    /// Every combination of the boolean inputs, with `unable_for` consistent with `can_lead`.
    fn all() -> Vec<Inputs> {
        let mut out = Vec::new();
        for bits in 0u8..64 {
            let bit = |n: u8| bits & (1 << n) != 0;
            let can_lead = bit(1);
            let unable_for = match (can_lead, bit(5)) {
                (true, _) => None,
                (false, false) => Some(HANDOVER / 2),
                (false, true) => Some(HANDOVER),
            };
            out.push(Inputs {
                resigned: bit(0),
                can_lead,
                unable_for,
                other_can_lead: bit(2),
                contact_quorum: bit(3),
                leading: bit(4),
                handover_after: HANDOVER,
            });
        }
        out
    }

    #[test]
    fn the_decision_over_every_input() {
        for i in all() {
            let d = decide(&i);
            // Campaign: not leaving, a pre-vote would pass, and worth it (able, or nobody else is).
            assert_eq!(
                d.elect,
                !i.resigned && i.contact_quorum && (i.can_lead || !i.other_can_lead),
                "{i:?}"
            );
            // Yield: a leader unable for the whole bound, with an able peer in contact.
            let long = i.unable_for.is_some_and(|u| u >= HANDOVER);
            assert_eq!(d.yielding, i.leading && !i.resigned && i.other_can_lead && long, "{i:?}");
            // Heartbeats stop only to hand over (yielding or leaving).
            assert_eq!(d.heartbeat, !i.resigned && !d.yielding, "{i:?}");
            // Never both: a yielding node does not campaign (it cannot lead and a peer can).
            assert!(!(d.yielding && d.elect), "{i:?}");
            // Without contact with a quorum, never campaign: that is what keeps an isolated node from
            // raising its term.
            if !i.contact_quorum {
                assert!(!d.elect, "{i:?}");
            }
        }
    }

    #[test]
    fn the_scenarios() {
        // A healthy follower campaigns when its leader goes quiet.
        assert_eq!(decide(&inputs()), Decision { elect: true, heartbeat: true, yielding: false });
        // Isolated: no campaign, so no term raise to depose the leader with when it comes back.
        let isolated = Inputs { contact_quorum: false, ..inputs() };
        assert!(!decide(&isolated).elect);
        // A follower without the database leaves the election to a peer that has it...
        let no_db = Inputs { can_lead: false, unable_for: Some(Duration::ZERO), ..inputs() };
        assert!(!decide(&no_db).elect);
        // ...but campaigns when nobody in reach has it (a cluster needs a raft leader anyway).
        assert!(decide(&Inputs { other_can_lead: false, ..no_db }).elect);
        // A leader without the database keeps leading through short outages...
        let leader = Inputs { leading: true, can_lead: false, ..inputs() };
        let short = Inputs { unable_for: Some(HANDOVER / 2), ..leader };
        assert_eq!(decide(&short), Decision { elect: false, heartbeat: true, yielding: false });
        // ...yields after the bound when a peer can lead...
        let long = Inputs { unable_for: Some(HANDOVER), ..leader };
        assert_eq!(decide(&long), Decision { elect: false, heartbeat: false, yielding: true });
        // ...and keeps leading (and retrying) when no peer can.
        let alone = Inputs { other_can_lead: false, ..long };
        assert_eq!(decide(&alone), Decision { elect: true, heartbeat: true, yielding: false });
        // Leaving: nothing.
        let leaving = Inputs { resigned: true, leading: true, ..inputs() };
        assert_eq!(decide(&leaving), Decision { elect: false, heartbeat: false, yielding: false });
    }

    fn set(ids: &[RaftNodeId]) -> BTreeSet<RaftNodeId> {
        ids.iter().copied().collect()
    }

    fn beat(hears_me: bool, hears_leader: bool) -> PeerBeat {
        PeerBeat { hears_me, hears_leader, can_lead: true }
    }

    #[test]
    fn a_pre_vote_needs_a_majority_in_two_way_contact_that_hears_no_leader() {
        let voters = [set(&[1, 2, 3])];
        let quiet = HashMap::from([(2, beat(true, false)), (3, beat(true, false))]);
        assert!(contact_quorum(&voters, 1, false, &quiet));
        // One peer is enough in three.
        assert!(contact_quorum(&voters, 1, false, &HashMap::from([(2, beat(true, false))])));
        // Isolated: no beats at all.
        assert!(!contact_quorum(&voters, 1, false, &HashMap::new()));
        // One-way: 2's beats arrive but 2 does not hear this node.
        assert!(!contact_quorum(&voters, 1, false, &HashMap::from([(2, beat(false, false))])));
        // Back from isolation while the others still hear their leader: no.
        let led = HashMap::from([(2, beat(true, true)), (3, beat(true, true))]);
        assert!(!contact_quorum(&voters, 1, false, &led));
        // This node still hears a leader itself: it does not count its own vote (its election timer
        // would not fire yet anyway), so it needs both peers.
        assert!(!contact_quorum(&voters, 1, true, &HashMap::from([(2, beat(true, false))])));
        assert!(contact_quorum(&voters, 1, true, &quiet));
        // Beats from non-voters do not count.
        let learner = HashMap::from([(9, beat(true, false))]);
        assert!(!contact_quorum(&voters, 1, false, &learner));
        // A single voter needs nobody.
        assert!(contact_quorum(&[set(&[1])], 1, false, &HashMap::new()));
        // A learner (not among the voters) never passes; nor does an empty membership.
        assert!(!contact_quorum(&[set(&[2, 3])], 1, false, &HashMap::from([(2, beat(true, false))])));
        assert!(!contact_quorum(&[], 1, false, &quiet));
        // Joint membership: both configurations need their majority.
        let joint = [set(&[1, 2, 3]), set(&[1, 4, 5])];
        assert!(!contact_quorum(&joint, 1, false, &HashMap::from([(2, beat(true, false))])));
        let both = HashMap::from([(2, beat(true, false)), (4, beat(true, false))]);
        assert!(contact_quorum(&joint, 1, false, &both));
    }
}
