//! The orderings of the cluster's CDC decisions: shipments in order, out of order, missing or
//! repeated; a stream's start; refused shipments from a leader raft had not named yet; liveness and
//! leader silence; the acknowledgement over live and held peers; replays at most one per interval.

use std::time::{Duration, Instant};

use super::*;

fn node(name: &str) -> NodeId {
    NodeId(name.to_owned())
}

/// A follower that has seen `leader` start a stream and say it is live.
fn following(leader: &NodeId) -> Follower {
    let mut f = Follower::default();
    f.stream(leader);
    f.leader_says(true);
    f
}

/// What becomes of each shipped transaction `(prev, end)` in turn, the hub having taken nothing.
fn ship(f: &mut Follower, leader: &NodeId, shipments: &[(u64, u64)]) -> Vec<Take> {
    shipments.iter().map(|&(prev, end)| f.transaction(leader, prev, end, 0)).collect()
}

const FORWARD: Take = Take::Forward;

fn missed(through: u64, first: bool) -> Take {
    Take::Missed { through, first }
}

#[test]
fn shipments_in_order_are_forwarded_and_the_stream_is_live() {
    let leader = node("a");
    let mut f = following(&leader);
    assert!(f.live());
    assert_eq!(ship(&mut f, &leader, &[(0, 10), (10, 20), (20, 30)]), [FORWARD; 3]);
    assert!(!f.gap());
    assert!(f.live());
}

#[test]
fn a_missing_shipment_is_a_gap_until_a_replay_starts_again() {
    let leader = node("a");
    let mut f = following(&leader);
    // 10..20 never arrives; what follows is dropped too, the gap logged once.
    let taken = ship(&mut f, &leader, &[(0, 10), (20, 30), (30, 40)]);
    assert_eq!(taken, [FORWARD, missed(10, true), missed(10, false)]);
    assert!(f.gap());
    assert!(!f.live(), "a node missing shipments does not see the stream live");
    // The replay starts a new stream: its first transaction (prev 0) closes the gap.
    f.stream(&leader);
    assert!(!f.gap());
    assert_eq!(ship(&mut f, &leader, &[(0, 20), (20, 30)]), [FORWARD; 2]);
    assert!(f.live());
}

#[test]
fn out_of_order_shipments_are_a_gap_not_a_reordering() {
    let leader = node("a");
    let mut f = following(&leader);
    // The late one still fits after what was forwarded: it is taken and clears the gap, but the one
    // dropped before is not taken back (the replay brings it), so the next is missed again.
    let taken = ship(&mut f, &leader, &[(0, 10), (20, 30), (10, 20), (30, 40)]);
    assert_eq!(taken, [FORWARD, missed(10, true), FORWARD, missed(20, true)]);
}

#[test]
fn a_repeated_shipment_is_forwarded_again_for_the_hub_to_skip() {
    let leader = node("a");
    let mut f = following(&leader);
    // The hub drops what it already took by commit position; here it creates no gap.
    let taken = ship(&mut f, &leader, &[(0, 10), (10, 20), (10, 20), (20, 30)]);
    assert_eq!(taken, [FORWARD; 4]);
    assert!(!f.gap());
}

#[test]
fn what_the_hub_took_counts_as_received() {
    let leader = node("a");
    let mut f = following(&leader);
    assert_eq!(f.transaction(&leader, 0, 10, 0), FORWARD);
    // The hub took through 50 (it led before, or a replay went through it).
    assert_eq!(f.transaction(&leader, 50, 60, 50), Take::Forward);
    assert_eq!(f.transaction(&leader, 70, 80, 60), Take::Missed { through: 60, first: true });
}

#[test]
fn a_stream_without_its_start_from_an_announcing_leader_is_a_gap() {
    let leader = node("a");
    let mut f = following(&leader);
    assert_eq!(f.transaction(&leader, 0, 10, 0), Take::Forward);
    // A second stream's first transaction, its start never received.
    assert_eq!(f.transaction(&leader, 0, 20, 0), Take::Missed { through: 10, first: true });
    // A leader never seen announcing a stream: a first transaction is taken as is.
    let other = node("b");
    let mut g = Follower::default();
    assert_eq!(g.transaction(&other, 0, 10, 0), Take::Forward);
    assert_eq!(g.transaction(&other, 0, 20, 0), Take::Forward);
}

#[test]
fn a_refused_shipment_is_a_gap_once_raft_names_its_sender() {
    let (old, new) = (node("a"), node("b"));
    let mut f = following(&old);
    assert_eq!(f.transaction(&old, 0, 10, 0), Take::Forward);
    f.refused(&new, 30);
    assert!(f.leadership(false, Some(&new), 10), "the new leader's shipment was not taken");
    assert!(f.gap());
    // Asked once: the refusal is forgotten.
    assert!(!f.leadership(false, Some(&new), 10));

    // Not a gap: raft names someone else, or the hub took that position meanwhile.
    let mut f = following(&old);
    f.refused(&new, 30);
    assert!(!f.leadership(false, Some(&old), 0));
    let mut f = following(&old);
    f.refused(&new, 30);
    assert!(!f.leadership(false, Some(&new), 30));
    assert!(!f.gap());
}

#[test]
fn a_follower_waits_for_a_new_leader_to_say_it_is_live() {
    let (old, new) = (node("a"), node("b"));
    let mut f = following(&old);
    assert!(f.live());
    f.leadership(false, Some(&new), 0);
    assert!(!f.live());
    f.leader_says(true);
    assert!(f.live());
    // Becoming the leader keeps the follower view as it was (the leader's hub runs its own stream).
    f.leadership(true, Some(&new), 0);
    assert!(f.live());
}

#[test]
fn liveness_needs_the_leader_the_database_and_every_shipment() {
    let leader = node("a");
    let mut f = following(&leader);
    f.database(Some(false));
    assert!(!f.live(), "database unreachable");
    f.database(None);
    assert!(f.live(), "not known yet does not block");
    f.database(Some(true));
    f.leader_says(false);
    assert!(!f.live(), "the leader's stream is not live");
    f.leader_says(true);
    f.unverifiable();
    assert!(f.gap() && !f.live(), "a shipment that could not be checked is missed");
    assert!(f.verified(), "the next checked one lifts it");
    assert!(!f.verified());
    assert!(!f.live(), "the gap remains until a transaction is taken");
    assert_eq!(f.transaction(&leader, 0, 10, 0), Take::Forward);
    assert!(f.live());
}

#[test]
fn a_silent_leader_is_taken_as_not_live_once() {
    let leader = node("a");
    let t0 = Instant::now();
    let mut f = following(&leader);
    assert!(!f.tick(t0 + LEADER_SILENCE * 10), "never heard: no silence to measure");
    f.heard(t0);
    assert!(!f.tick(t0 + LEADER_SILENCE), "at the limit, not past it");
    assert!(f.tick(t0 + LEADER_SILENCE + Duration::from_millis(1)));
    assert!(!f.live());
    assert!(!f.tick(t0 + LEADER_SILENCE * 2), "told once");
    // Heard again and live again.
    f.heard(t0 + LEADER_SILENCE * 3);
    f.leader_says(true);
    assert!(f.live());
    assert!(!f.tick(t0 + LEADER_SILENCE * 3 + REPEAT));
}

const HOLD: Duration = Duration::from_secs(30);

/// The leader's view once each peer reported its position (no gap) at `at`.
fn reported(positions: &[(&NodeId, u64)], at: Instant) -> Acks {
    let mut acks = Acks::default();
    for &(peer, lsn) in positions {
        acks.delivered(peer.clone(), lsn, false, true, at);
    }
    acks
}

#[test]
fn the_ack_is_what_this_node_and_every_live_peer_delivered() {
    let (b, c) = (node("b"), node("c"));
    let t0 = Instant::now();
    let hold = HOLD;
    let mut fresh = Acks::default();
    assert_eq!(fresh.ack(100, [], hold, t0), 100, "alone: its own position");
    assert_eq!(fresh.ack(100, [b.clone()], hold, t0), 0, "a peer not heard from holds at 0");
    let mut acks = reported(&[(&b, 80), (&c, 90)], t0);
    assert_eq!(acks.ack(100, [b.clone(), c.clone()], hold, t0), 80);
    assert_eq!(acks.ack(70, [b.clone(), c.clone()], hold, t0), 70, "nor past this node");
    // A position never moves back.
    acks.delivered(b.clone(), 50, false, true, t0);
    assert_eq!(acks.ack(100, [b.clone(), c.clone()], hold, t0), 80);
}

#[test]
fn a_gone_peer_holds_the_ack_for_the_hold_then_not() {
    let (b, c) = (node("b"), node("c"));
    let t0 = Instant::now();
    let hold = HOLD;
    let mut acks = reported(&[(&b, 40), (&c, 90)], t0);
    assert_eq!(acks.ack(100, [b.clone(), c.clone()], hold, t0), 40);
    // b is no longer reachable: held for the hold, then left behind.
    assert_eq!(acks.ack(100, [c.clone()], hold, t0 + hold), 40);
    assert_eq!(acks.ack(100, [c.clone()], hold, t0 + hold + Duration::from_millis(1)), 90);
    // Back: it holds the ack again at its (old) position.
    assert_eq!(acks.ack(100, [b.clone(), c.clone()], hold, t0 + hold * 2), 40);
}

#[test]
fn the_acknowledgement_only_moves_forward() {
    let mut acked = 50;
    assert!(!advance(&mut acked, 40));
    assert!(!advance(&mut acked, 50));
    assert_eq!(acked, 50);
    assert!(advance(&mut acked, 60));
    assert_eq!(acked, 60);
}

#[test]
fn a_peers_gap_replays_the_stream_at_most_once_per_interval_and_only_on_the_leader() {
    let b = node("b");
    let t0 = Instant::now();
    let mut acks = Acks::default();
    assert_eq!(acks.delivered(b.clone(), 30, false, true, t0), None, "no gap");
    assert_eq!(acks.delivered(b.clone(), 20, true, false, t0), None, "not the leader");
    assert_eq!(acks.delivered(b.clone(), 20, true, true, t0), Some(30), "the held position");
    assert_eq!(acks.delivered(b.clone(), 30, true, true, t0 + REPLAY_EVERY - Duration::from_millis(1)), None);
    assert_eq!(acks.delivered(b.clone(), 30, true, true, t0 + REPLAY_EVERY), Some(30));
}
