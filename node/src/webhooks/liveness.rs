//! Pure user liveness: from "how many sockets does this user have in the whole cluster" to
//! `user.online` / `user.offline` edges, with a grace period so a quick reconnect does not flap, and
//! the rendezvous choice of the one node that reports a user.
//!
//! Every node runs the same [`Liveness`] over the same replicated socket counts, so every node makes
//! the same transitions at about the same time; only the node [`designated`] for the user (at that
//! moment) sends them. The clock is a parameter, so the tests drive it by hand.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use realtime_cluster::NodeId;
use sha2::{Digest, Sha256};

/// An edge worth a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Online,
    Offline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// At least one socket somewhere.
    Online,
    /// No socket since `since`; offline once the grace is over, unless a socket comes back.
    Grace { deadline: Instant },
}

/// Users with a socket, or in their offline grace. A user in neither is offline (and not stored).
#[derive(Debug)]
pub struct Liveness {
    grace: Duration,
    users: HashMap<String, Phase>,
    /// `(deadline, user)` of every user in grace, for [`Liveness::expire`] and the next wake-up.
    deadlines: BTreeMap<(Instant, String), ()>,
}

impl Liveness {
    pub fn new(grace: Duration) -> Liveness {
        Liveness { grace, users: HashMap::new(), deadlines: BTreeMap::new() }
    }

    /// The user now has `sockets` sockets in the cluster. Returns `Online` when they were offline and
    /// now have one; a socket that comes back within the grace, or a count that changes while online,
    /// returns nothing. Reaching zero starts the grace (the `Offline` edge comes from `expire`).
    pub fn set_count(&mut self, user: &str, sockets: usize, now: Instant) -> Option<Edge> {
        match (self.users.get(user).copied(), sockets) {
            (None, 0) | (Some(Phase::Grace { .. }), 0) => None,
            (None, _) => {
                self.users.insert(user.to_owned(), Phase::Online);
                Some(Edge::Online)
            }
            (Some(Phase::Online), 0) => {
                let deadline = now + self.grace;
                self.users.insert(user.to_owned(), Phase::Grace { deadline });
                self.deadlines.insert((deadline, user.to_owned()), ());
                None
            }
            (Some(Phase::Online), _) => None,
            (Some(Phase::Grace { deadline }), _) => {
                self.deadlines.remove(&(deadline, user.to_owned()));
                self.users.insert(user.to_owned(), Phase::Online);
                None
            }
        }
    }

    /// Users whose grace is over at `now`: they are offline (and forgotten), in deadline order.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut gone = Vec::new();
        while let Some(entry) = self.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (_, user) = entry.remove_entry().0;
            self.users.remove(&user);
            gone.push(user);
        }
        gone
    }

    /// Every user online or in grace, forgotten, in name order: the node stops and nobody else will
    /// report them (see `users::run`).
    pub fn forget_all(&mut self) -> Vec<String> {
        self.deadlines.clear();
        let mut users: Vec<String> = self.users.drain().map(|(user, _)| user).collect();
        users.sort();
        users
    }

    /// When the next grace ends, if any user is in one.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.keys().next().map(|(deadline, _)| *deadline)
    }

    /// Users online or in grace.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// The node that reports `user`: rendezvous (highest random weight) hashing over `nodes`, so every
/// node that sees the same live set picks the same one, and a node leaving moves only its own users.
/// SHA-256 rather than std's hasher: nodes of different builds must agree.
pub fn designated<'a>(user: &str, nodes: &'a [NodeId]) -> Option<&'a NodeId> {
    nodes.iter().max_by_key(|node| (weight(&node.0, user), &node.0))
}

fn weight(node: &str, user: &str) -> u64 {
    let digest = Sha256::new().chain_update(node).chain_update([0]).chain_update(user).finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_millis(5_000);

    fn ms(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn first_socket_is_online_once_and_more_sockets_change_nothing() {
        let t0 = Instant::now();
        let mut l = Liveness::new(GRACE);
        assert_eq!(l.set_count("u", 0, t0), None, "an unknown user without sockets stays offline");
        assert_eq!(l.set_count("u", 1, t0), Some(Edge::Online));
        assert_eq!(l.set_count("u", 2, ms(t0, 1)), None);
        assert_eq!(l.set_count("u", 1, ms(t0, 2)), None);
        assert!(l.expire(ms(t0, 60_000)).is_empty(), "online users never expire");
    }

    #[test]
    fn a_stopping_node_forgets_everyone_online_or_in_grace() {
        let t0 = Instant::now();
        let mut l = Liveness::new(Duration::from_secs(30));
        l.set_count("b", 1, t0);
        l.set_count("a", 2, t0);
        l.set_count("a", 0, t0);
        assert_eq!(l.forget_all(), vec!["a".to_string(), "b".to_string()]);
        assert!(l.is_empty() && l.next_deadline().is_none());
        assert!(l.expire(ms(t0, 60_000)).is_empty(), "nobody is reported twice");
    }

    #[test]
    fn offline_only_after_the_whole_grace() {
        let t0 = Instant::now();
        let mut l = Liveness::new(GRACE);
        l.set_count("u", 1, t0);
        assert_eq!(l.set_count("u", 0, ms(t0, 100)), None);
        assert_eq!(l.next_deadline(), Some(ms(t0, 5_100)));
        assert!(l.expire(ms(t0, 5_099)).is_empty());
        assert_eq!(l.expire(ms(t0, 5_100)), vec!["u".to_owned()]);
        assert!(l.is_empty() && l.next_deadline().is_none());
        assert!(l.expire(ms(t0, 99_999)).is_empty(), "offline is reported once");
        assert_eq!(l.set_count("u", 1, ms(t0, 6_000)), Some(Edge::Online), "and online again after it");
    }

    #[test]
    fn a_reconnect_within_the_grace_does_not_flap() {
        let t0 = Instant::now();
        let mut l = Liveness::new(GRACE);
        l.set_count("u", 1, t0);
        l.set_count("u", 0, ms(t0, 10));
        assert_eq!(l.set_count("u", 1, ms(t0, 4_000)), None, "no second online");
        assert!(l.expire(ms(t0, 5_010)).is_empty(), "the old deadline is cancelled");
        // A second disconnect starts a fresh grace.
        l.set_count("u", 0, ms(t0, 6_000));
        assert_eq!(l.set_count("u", 0, ms(t0, 7_000)), None, "repeated zeros keep the first deadline");
        assert!(l.expire(ms(t0, 10_999)).is_empty());
        assert_eq!(l.expire(ms(t0, 11_000)), vec!["u".to_owned()]);
    }

    #[test]
    fn users_expire_in_deadline_order() {
        let t0 = Instant::now();
        let mut l = Liveness::new(GRACE);
        for (i, user) in ["c", "a", "b"].iter().enumerate() {
            l.set_count(user, 1, t0);
            l.set_count(user, 0, ms(t0, i as u64));
        }
        assert_eq!(l.len(), 3);
        assert_eq!(l.expire(ms(t0, 6_000)), vec!["c", "a", "b"]);
    }

    #[test]
    fn designation_is_stable_spread_and_moves_only_the_leavers_users() {
        let nodes: Vec<NodeId> = (0..3).map(|i| NodeId(format!("node-{i}"))).collect();
        assert_eq!(designated("u", &[]), None);
        assert_eq!(designated("u", &nodes[..1]), Some(&nodes[0]));
        let mut per_node = [0usize; 3];
        let mut reversed = nodes.clone();
        reversed.reverse();
        for i in 0..3_000 {
            let user = format!("user-{i}");
            let chosen = designated(&user, &nodes).unwrap();
            assert_eq!(designated(&user, &reversed), Some(chosen), "order of the list does not matter");
            per_node[nodes.iter().position(|n| n == chosen).unwrap()] += 1;
            // node-2 leaves: users it did not report keep their node.
            if chosen != &nodes[2] {
                assert_eq!(designated(&user, &nodes[..2]), Some(chosen));
            }
        }
        assert!(per_node.iter().all(|&n| n > 800), "roughly even: {per_node:?}");
    }
}
