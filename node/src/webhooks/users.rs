//! Who is connected, cluster-wide, and the task that turns it into `user.online` / `user.offline`.
//!
//! Each socket with a `sub` puts one entry (key = the user id) into the internal presence topic
//! [`USERS_TOPIC`] through the cluster's presence CRDT ([`ClusterHandle::presence_put`]); the CRDT
//! replicates it to every node and removes a node's entries when it departs or is declared down. No
//! client can join or see that topic: channel topics always cross the cluster as `public:…` or
//! `private:…` ([`crate::vocab::TopicKey::cluster_topic`]), and the bridge hands this one to [`Roster`] only.
//!
//! [`Roster`] counts each user's sockets: this node's (updated by the socket itself, a map update
//! under a short lock) plus the other nodes' entries (from the bridge). It marks changed users dirty
//! and wakes [`run`], which feeds the counts to the pure [`Liveness`] and, for each edge, asks whether
//! this node is [`designated`] for the user among the live nodes; only then is the event queued.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use realtime_cluster::presence::{EntryId, TopicChange};
use realtime_cluster::{ClusterHandle, NodeId};
use tokio::sync::{watch, Notify};

use super::event::{Event, Name};
use super::liveness::{designated, Edge, Liveness};
use super::Queue;

/// The internal presence topic of connected users. Its scope (`webhooks:`) is neither `public:` nor
/// `private:`, so it can never name a channel.
pub const USERS_TOPIC: &str = "webhooks:users";

#[derive(Debug, Default)]
struct Counts {
    /// This node's sockets per user.
    local: HashMap<String, usize>,
    /// Other nodes' entries per user.
    remote: HashMap<String, HashSet<EntryId>>,
    /// Users whose count changed since the task last looked.
    dirty: BTreeSet<String>,
}

impl Counts {
    fn total(&self, user: &str) -> usize {
        self.local.get(user).copied().unwrap_or(0) + self.remote.get(user).map_or(0, HashSet::len)
    }
}

/// Socket counts per user, shared by the sockets, the bridge and [`run`].
#[derive(Debug, Default)]
pub struct Roster {
    counts: Mutex<Counts>,
    changed: Notify,
}

impl Roster {
    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One more (`up`) or one fewer socket of `user` on this node.
    pub fn local(&self, user: &str, up: bool) {
        {
            let mut counts = self.lock();
            let entry = counts.local.entry(user.to_owned()).or_default();
            if up {
                *entry += 1;
            } else {
                *entry = entry.saturating_sub(1);
                if *entry == 0 {
                    counts.local.remove(user);
                }
            }
            counts.dirty.insert(user.to_owned());
        }
        self.changed.notify_one();
    }

    /// Other nodes' entries in [`USERS_TOPIC`] appeared or left (the entry's key is the user id).
    pub fn remote(&self, change: TopicChange) {
        {
            let mut counts = self.lock();
            for (id, entry) in change.leaves {
                if let Some(ids) = counts.remote.get_mut(&entry.key) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        counts.remote.remove(&entry.key);
                    }
                }
                counts.dirty.insert(entry.key);
            }
            for (id, entry) in change.joins {
                counts.remote.entry(entry.key.clone()).or_default().insert(id);
                counts.dirty.insert(entry.key);
            }
        }
        self.changed.notify_one();
    }

    /// The users that changed, with their cluster-wide socket counts.
    fn take_dirty(&self) -> Vec<(String, usize)> {
        let mut counts = self.lock();
        let dirty = std::mem::take(&mut counts.dirty);
        dirty
            .into_iter()
            .map(|user| {
                let sockets = counts.total(&user);
                (user, sockets)
            })
            .collect()
    }
}

/// Whether this node reports `user` now: always on a single node; else the rendezvous choice among
/// the peers the failure detector holds alive (or suspect) and this node.
fn is_mine(cluster: Option<&ClusterHandle>, user: &str) -> bool {
    let Some(cluster) = cluster else { return true };
    let me = cluster.me().node;
    let mut nodes: Vec<NodeId> = cluster.live_peers();
    nodes.push(me.clone());
    nodes.sort();
    nodes.dedup();
    designated(user, &nodes) == Some(&me)
}

/// Feeds counts to [`Liveness`] and queues the edges this node reports, until `stop`. A node that
/// stops with no live peer (a single node, or the last of a cluster) reports every user it knows as
/// offline at once: nobody else will, and they have no socket left here. With live peers it does not:
/// this node's sockets leave the cluster's counts as it departs, and a survivor reports the users
/// after their grace, if they do not reconnect.
pub(crate) async fn run(
    roster: Arc<Roster>,
    grace: Duration,
    queue: Queue,
    cluster: Option<ClusterHandle>,
    mut stop: watch::Receiver<bool>,
) {
    let mut liveness = Liveness::new(grace);
    loop {
        let wake = liveness.next_deadline().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = roster.changed.notified() => {}
            _ = async { tokio::time::sleep_until(wake.expect("guarded")).await }, if wake.is_some() => {}
            _ = stop.wait_for(|stopping| *stopping) => {
                let alone = cluster.as_ref().is_none_or(|cluster| cluster.live_peers().is_empty());
                if alone {
                    let now = std::time::Instant::now();
                    for (user, sockets) in roster.take_dirty() {
                        liveness.set_count(&user, sockets, now);
                    }
                    for user in liveness.forget_all() {
                        queue.push(Event::user(Name::UserOffline, queue.node(), &user));
                    }
                }
                return;
            }
        }
        let now = std::time::Instant::now();
        for (user, sockets) in roster.take_dirty() {
            if liveness.set_count(&user, sockets, now) == Some(Edge::Online)
                && is_mine(cluster.as_ref(), &user)
            {
                queue.push(Event::user(Name::UserOnline, queue.node(), &user));
            }
        }
        for user in liveness.expire(now) {
            if is_mine(cluster.as_ref(), &user) {
                queue.push(Event::user(Name::UserOffline, queue.node(), &user));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use realtime_cluster::presence::Entry;

    use super::*;

    fn entry_id(node: &str, conn: u64) -> EntryId {
        EntryId { node: NodeId(node.into()), incarnation: 1, conn }
    }

    fn entry(user: &str) -> Entry {
        Entry { key: user.into(), phx_ref: String::new(), meta: "{}".into() }
    }

    #[test]
    fn counts_local_and_remote_sockets_per_user() {
        let roster = Roster::default();
        roster.local("u", true);
        roster.local("u", true);
        roster.remote(TopicChange {
            topic: USERS_TOPIC.into(),
            joins: vec![(entry_id("b", 1), entry("u")), (entry_id("b", 2), entry("v"))],
            leaves: vec![],
        });
        assert_eq!(roster.take_dirty(), vec![("u".into(), 3), ("v".into(), 1)]);
        assert!(roster.take_dirty().is_empty());
        roster.local("u", false);
        roster.remote(TopicChange {
            topic: USERS_TOPIC.into(),
            joins: vec![],
            leaves: vec![(entry_id("b", 1), entry("u")), (entry_id("b", 2), entry("v"))],
        });
        assert_eq!(roster.take_dirty(), vec![("u".into(), 1), ("v".into(), 0)]);
        roster.local("u", false);
        roster.local("u", false);
        assert_eq!(roster.take_dirty(), vec![("u".into(), 0)], "never below zero");
    }

    #[test]
    fn the_users_topic_is_no_channel() {
        assert_eq!(crate::vocab::TopicKey::from_cluster_topic(USERS_TOPIC), None);
    }
}
