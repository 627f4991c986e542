//! The index of every `postgres_changes` subscription on the node, grouped so that matching and RLS
//! cost grow with the number of *distinct* subscriptions, not with the number of channels.
//!
//! Channels that subscribe with the same parameters under the same claims share a [`Group`]: a change
//! is matched against a group once, its visibility is asked once per viewer, and only then is it fanned
//! out to the group's members. Viewers (distinct role + claims) are interned and counted, so the claims
//! of departed users are dropped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use realtime_proto::postgres::matching::Filter;
use realtime_proto::postgres::SubscriptionParams;

use super::rls::Viewer;
use crate::vocab::ConnId;

/// A channel: the socket and its topic.
pub type ChannelKey = (ConnId, Arc<str>);
/// A distinct (role, claims) among the subscriptions.
pub type ViewerId = u32;
/// Identical parameters (canonical JSON of the entry) under one viewer.
pub type GroupKey = (Arc<str>, ViewerId);

/// Whether a subscription's `schema` or `table` (a name, or `*` for any) names `name`.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    pattern == "*" || pattern == name
}

/// Interned viewers, counted by the channels that use them.
#[derive(Default)]
struct Viewers {
    ids: HashMap<Arc<Viewer>, ViewerId>,
    by_id: HashMap<ViewerId, (Arc<Viewer>, usize)>,
    next: ViewerId,
}

impl Viewers {
    fn acquire(&mut self, viewer: Viewer) -> ViewerId {
        if let Some(&id) = self.ids.get(&viewer) {
            if let Some((_, count)) = self.by_id.get_mut(&id) {
                *count += 1;
            }
            return id;
        }
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        let viewer = Arc::new(viewer);
        self.ids.insert(viewer.clone(), id);
        self.by_id.insert(id, (viewer, 1));
        id
    }

    fn release(&mut self, id: ViewerId) {
        let Some((viewer, count)) = self.by_id.get_mut(&id) else { return };
        *count -= 1;
        if *count == 0 {
            let viewer = viewer.clone();
            self.ids.remove(&viewer);
            self.by_id.remove(&id);
        }
    }
}

/// Channels subscribed with the same parameters under the same viewer.
pub struct Group {
    pub params: SubscriptionParams,
    /// `params.filters`, with their patterns compiled once for the group rather than per change.
    pub filter: Filter,
    pub viewer: ViewerId,
    /// Member channels and the id of their entry.
    pub members: HashMap<ChannelKey, u32>,
}

impl Group {
    fn is_wildcard(&self) -> bool {
        self.params.schema == "*" || self.params.table == "*"
    }
}

/// One validated entry of a channel's subscription.
pub struct NewEntry {
    pub id: u32,
    /// Canonical JSON of the entry as sent: equal entries share a group.
    pub canonical: Arc<str>,
    pub params: SubscriptionParams,
}

struct ChannelEntry {
    groups: Vec<GroupKey>,
    viewer: ViewerId,
}

/// Every subscription, by table and by channel.
#[derive(Default)]
pub struct SubscriptionIndex {
    groups: HashMap<GroupKey, Group>,
    by_table: HashMap<(String, String), HashSet<GroupKey>>,
    wildcard: HashSet<GroupKey>,
    channels: HashMap<ChannelKey, ChannelEntry>,
    viewers: Viewers,
}

impl SubscriptionIndex {
    /// Adds a channel's entries (replacing what it had).
    pub fn insert(&mut self, channel: ChannelKey, entries: Vec<NewEntry>, viewer: Viewer) {
        self.remove(&channel);
        let viewer = self.viewers.acquire(viewer);
        let mut keys = Vec::with_capacity(entries.len());
        for entry in entries {
            let key: GroupKey = (entry.canonical, viewer);
            let group = self.groups.entry(key.clone()).or_insert_with(|| Group {
                filter: Filter::new(&entry.params.filters),
                params: entry.params,
                viewer,
                members: HashMap::new(),
            });
            group.members.insert(channel.clone(), entry.id);
            if group.is_wildcard() {
                self.wildcard.insert(key.clone());
            } else {
                let table = (group.params.schema.clone(), group.params.table.clone());
                self.by_table.entry(table).or_default().insert(key.clone());
            }
            keys.push(key);
        }
        self.channels.insert(channel, ChannelEntry { groups: keys, viewer });
    }

    /// Removes a channel's entries; `true` if it had any.
    pub fn remove(&mut self, channel: &ChannelKey) -> bool {
        let Some(entry) = self.channels.remove(channel) else { return false };
        for key in entry.groups {
            let Some(group) = self.groups.get_mut(&key) else { continue };
            group.members.remove(channel);
            if group.members.is_empty() {
                let group = self.groups.remove(&key).expect("present above");
                self.wildcard.remove(&key);
                let table = (group.params.schema, group.params.table);
                if let Some(set) = self.by_table.get_mut(&table) {
                    set.remove(&key);
                    if set.is_empty() {
                        self.by_table.remove(&table);
                    }
                }
            }
        }
        self.viewers.release(entry.viewer);
        true
    }

    /// The groups that may match a change on `schema.table`.
    pub fn groups_for<'a>(
        &'a self,
        schema: &str,
        table: &str,
    ) -> impl Iterator<Item = (&'a GroupKey, &'a Group)> {
        let exact = self.by_table.get(&(schema.to_owned(), table.to_owned()));
        exact
            .into_iter()
            .flatten()
            .chain(self.wildcard.iter())
            .filter_map(|key| self.groups.get(key).map(|group| (key, group)))
    }

    pub fn group(&self, key: &GroupKey) -> Option<&Group> {
        self.groups.get(key)
    }

    pub fn viewer(&self, id: ViewerId) -> Option<&Arc<Viewer>> {
        self.viewers.by_id.get(&id).map(|(viewer, _)| viewer)
    }

    pub fn viewer_of(&self, channel: &ChannelKey) -> Option<ViewerId> {
        self.channels.get(channel).map(|c| c.viewer)
    }
}

#[cfg(test)]
mod tests {
    use realtime_proto::postgres::parse_params;
    use serde_json::json;

    use super::*;

    fn entry(id: u32, raw: serde_json::Value) -> NewEntry {
        let map = raw.as_object().unwrap().clone();
        NewEntry { id, canonical: raw.to_string().into(), params: parse_params(&map).unwrap() }
    }

    fn viewer(sub: &str) -> Viewer {
        Viewer {
            role: "authenticated".into(),
            claims_json: format!("{{\"sub\":\"{sub}\"}}"),
            sub: Some(sub.into()),
        }
    }

    #[test]
    fn equal_subscriptions_under_one_viewer_share_a_group() {
        let mut index = SubscriptionIndex::default();
        let todos = json!({"event": "*", "schema": "public", "table": "todos"});
        for conn in 0..100 {
            let who = if conn % 2 == 0 { "a" } else { "b" };
            index.insert((conn, "realtime:t".into()), vec![entry(7, todos.clone())], viewer(who));
        }
        index.insert((500, "realtime:w".into()), vec![entry(9, json!({"schema": "public"}))], viewer("a"));
        let groups: Vec<_> = index.groups_for("public", "todos").collect();
        assert_eq!(groups.len(), 3, "two viewers on todos + one wildcard");
        assert_eq!(groups.iter().map(|(_, g)| g.members.len()).sum::<usize>(), 101);
        assert_eq!(index.groups_for("public", "other").count(), 1);
        for conn in 0..100 {
            assert!(index.remove(&(conn, "realtime:t".into())));
        }
        assert!(!index.remove(&(1, "realtime:t".into())));
        assert_eq!(index.groups_for("public", "todos").count(), 1);
        assert_eq!(index.viewers.by_id.len(), 1, "viewer b released");
    }
}
