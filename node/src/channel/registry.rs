//! The registry: topic → channel actor, and the count of memberships that keeps each channel alive.
//!
//! Channel actors are spread round-robin over a pool of arbiters (threads) so fan-out uses every core.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use realtime_cluster::ClusterHandle;

use super::actor::{ChannelActor, ChannelSettings};
use super::messages::{
    Broadcast, ChannelCount, ChannelList, Join, Leave, ListChannels, Lookup, Released, RemoteBroadcast,
    RemotePresence, StopChannel,
};
use crate::metrics::metrics;
use crate::resume::Resume;
use crate::vocab::TopicKey;

struct Entry {
    addr: Addr<ChannelActor>,
    /// Joins forwarded to the channel and not yet released (left, refused or dead).
    memberships: usize,
}

/// Owns the topic → channel map.
pub struct Registry {
    channels: HashMap<TopicKey, Entry>,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: usize,
    settings: ChannelSettings,
    cluster: Option<ClusterHandle>,
    resume: Option<Arc<Resume>>,
}

impl Registry {
    /// A registry whose channels run on `arbiters` (at least one).
    pub fn new(
        arbiters: Vec<ArbiterHandle>,
        settings: ChannelSettings,
        cluster: Option<ClusterHandle>,
        resume: Option<Arc<Resume>>,
    ) -> Registry {
        assert!(!arbiters.is_empty(), "the registry needs at least one arbiter");
        Registry { channels: HashMap::new(), arbiters, next_arbiter: 0, settings, cluster, resume }
    }
}

impl Actor for Registry {
    type Context = Context<Self>;
}

impl Handler<Join> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) {
        let entry = self.channels.entry(msg.key.clone()).or_insert_with(|| {
            let arbiter = &self.arbiters[self.next_arbiter % self.arbiters.len()];
            self.next_arbiter = self.next_arbiter.wrapping_add(1);
            let (key, registry, settings) = (msg.key.clone(), ctx.address(), self.settings);
            let (cluster, resume) = (self.cluster.clone(), self.resume.clone());
            let addr = ChannelActor::start_in_arbiter(arbiter, move |_| {
                ChannelActor::new(key, registry, settings, cluster, resume)
            });
            Entry { addr, memberships: 0 }
        });
        entry.memberships += 1;
        entry.addr.do_send(msg);
        metrics().channels.set(self.channels.len() as f64);
    }
}

impl Handler<Leave> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) {
        if let Some(entry) = self.channels.get(&msg.key) {
            entry.addr.do_send(msg);
        }
    }
}

impl Handler<Released> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Released, _: &mut Context<Self>) {
        let Some(entry) = self.channels.get_mut(&msg.key) else { return };
        entry.memberships = entry.memberships.saturating_sub(1);
        if entry.memberships == 0 {
            if let Some(entry) = self.channels.remove(&msg.key) {
                entry.addr.do_send(StopChannel);
            }
            metrics().channels.set(self.channels.len() as f64);
        }
    }
}

impl Handler<Lookup> for Registry {
    type Result = Option<Addr<ChannelActor>>;

    fn handle(&mut self, msg: Lookup, _: &mut Context<Self>) -> Self::Result {
        self.channels.get(&msg.key).map(|e| e.addr.clone())
    }
}

impl Handler<RemoteBroadcast> for Registry {
    type Result = ();

    fn handle(&mut self, msg: RemoteBroadcast, _: &mut Context<Self>) {
        if let Some(entry) = self.channels.get(&msg.key) {
            entry.addr.do_send(Broadcast {
                from: msg.from,
                body: msg.body,
                received_at: msg.received_at,
                stored: msg.stored,
            });
        }
    }
}

impl Handler<RemotePresence> for Registry {
    type Result = ();

    fn handle(&mut self, msg: RemotePresence, _: &mut Context<Self>) {
        if let Some(entry) = self.channels.get(&msg.key) {
            entry.addr.do_send(msg);
        }
    }
}

impl Handler<ListChannels> for Registry {
    type Result = ChannelList;

    fn handle(&mut self, msg: ListChannels, _: &mut Context<Self>) -> ChannelList {
        let counts = self.channels.iter().map(|(key, entry)| (key, entry.memberships)).collect();
        let channels = busiest(counts, msg.limit)
            .into_iter()
            .map(|(key, members)| ChannelCount {
                key: key.clone(),
                members,
                elsewhere: self.cluster.as_ref().map_or(0, |c| c.remote_members(&key.cluster_topic())),
            })
            .collect();
        ChannelList { total: self.channels.len(), channels }
    }
}

/// The `limit` entries with the most members, most first (ties by key). Only those are sorted: a node
/// with 100,000 channels does not sort them all while joins wait behind the registry's message.
fn busiest<K: Ord>(mut counts: Vec<(K, usize)>, limit: usize) -> Vec<(K, usize)> {
    let order = |a: &(K, usize), b: &(K, usize)| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0));
    if limit < counts.len() {
        counts.select_nth_unstable_by(limit, order);
        counts.truncate(limit);
    }
    counts.sort_unstable_by(order);
    counts
}

#[cfg(test)]
mod tests {
    use super::busiest;

    #[test]
    fn busiest_keeps_the_most_members_first_and_cuts_at_the_limit() {
        let counts = vec![("d", 1), ("a", 5), ("c", 2), ("b", 5), ("e", 9)];
        assert_eq!(busiest(counts.clone(), 10), vec![("e", 9), ("a", 5), ("b", 5), ("c", 2), ("d", 1)]);
        assert_eq!(busiest(counts.clone(), 3), vec![("e", 9), ("a", 5), ("b", 5)]);
        assert_eq!(busiest(counts.clone(), 5).len(), 5);
        assert!(busiest(counts, 0).is_empty());
        assert!(busiest(Vec::<(&str, usize)>::new(), 3).is_empty());
    }
}
