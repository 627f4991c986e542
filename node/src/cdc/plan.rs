//! Who gets what from a batch of changes, decided without I/O: the hub asks PostgreSQL and writes to
//! sockets ([`super::hub`]), this module makes every decision in between, so the rules are unit-tested
//! without a database or a socket (`plan_test.rs`).
//!
//! A batch is planned in two steps around the hub's two questions to PostgreSQL:
//! 1. [`match_changes`]: which subscription groups each change goes to (event, schema, table, filter).
//!    From the matches, [`Matches::rls_asks`] gives the RLS questions (one per table and viewer for the
//!    whole batch, only for changes that need one: [`needs_rls`]) and [`Matches::privileges_needed`]
//!    the (viewer, table) pairs whose column privileges must be known.
//! 2. [`Planner`]: with the answers ([`Checked`]), the deliveries change by change in commit order
//!    ([`Delivery`]: one message per channel and distinct `data`, carrying the ids of every
//!    subscription of that channel that sees it alike); then ([`Verdicts`]) which channels' checks
//!    failed and with what error, and which failing channels passed again. The `data` JSON is built
//!    once per (change, column set, `select`) and shared by every channel that sees the change alike.
//!    Change by change, so the sockets write one change while the next one's `data` is built: offered
//!    all at once, a batch could overflow an outbox its socket would have drained meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use realtime_proto::postgres::change::{Change, ChangeKind, Projection};
use realtime_proto::postgres::table::TableMeta;

use super::subscriptions::{name_matches, ChannelKey, GroupKey, SubscriptionIndex, ViewerId};

/// A change with its transaction's commit timestamp.
pub type Stamped<'t> = (&'t Change, &'t str);
/// The primary keys of a batch one viewer must be asked about, per table.
pub type RlsAsks = HashMap<(u32, ViewerId), (Arc<TableMeta>, Vec<Vec<String>>)>;
/// Per table and viewer: the visible primary keys, or why the check failed.
pub type RlsAnswers = HashMap<(u32, ViewerId), Result<HashSet<Vec<String>>, String>>;
/// Per (viewer, table oid): the columns its role may SELECT, or why that could not be read. Viewers of
/// one role share the same `Arc` (the hub caches privileges per role), and so share their `data`.
pub type Privileges = HashMap<(ViewerId, u32), Result<Arc<Vec<bool>>, String>>;

/// `data` JSON per (change index, column set, `select`).
type DataCache = foldhash::HashMap<(usize, usize, Option<Vec<String>>), Arc<str>>;
/// A channel's matching subscription ids, grouped by the data they receive (one message per group).
type SelectGroups = Vec<(Arc<str>, Vec<u32>)>;

/// Whether a change is checked against RLS before delivery: a table with RLS and a primary key to ask
/// about, and not a DELETE (the deleted row cannot be read; only its key is revealed, as the reference).
pub fn needs_rls(change: &Change) -> bool {
    change.table.rls && change.kind != ChangeKind::Delete && change.table.has_primary_key()
}

/// The subscription groups each change of a batch matches: (change index, group), in change order.
#[derive(Debug, Default)]
pub struct Matches {
    pairs: Vec<(usize, GroupKey)>,
}

/// Matches every change once per subscription group that may see its table.
pub fn match_changes(changes: &[Stamped], index: &SubscriptionIndex) -> Matches {
    let mut pairs = Vec::new();
    for (at, (change, _)) in changes.iter().enumerate() {
        let table = &change.table;
        for (key, group) in index.groups_for(&table.schema, &table.name) {
            let p = &group.params;
            if p.event.matches(change.kind.as_str())
                && name_matches(&p.schema, &table.schema)
                && name_matches(&p.table, &table.name)
                && group.filter.matches(|column| change.filter_value(column))
            {
                pairs.push((at, key.clone()));
            }
        }
    }
    Matches { pairs }
}

impl Matches {
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// (change index, group), in change order.
    pub fn pairs(&self) -> &[(usize, GroupKey)] {
        &self.pairs
    }

    /// One RLS question per (table, viewer) with every key of the batch it must see (as matched, with
    /// repeats: the hub sorts and dedups them when it asks).
    pub fn rls_asks(&self, changes: &[Stamped]) -> RlsAsks {
        let mut asks = RlsAsks::new();
        for (at, key) in &self.pairs {
            let change = changes[*at].0;
            if let (true, Some(pk)) = (needs_rls(change), change.primary_key()) {
                let ask = asks
                    .entry((change.table.oid, key.1))
                    .or_insert_with(|| (change.table.clone(), Vec::new()));
                ask.1.push(pk);
            }
        }
        asks
    }

    /// The (viewer, table) pairs whose column privileges the deliveries need, each once, in the order
    /// first matched.
    pub fn privileges_needed<'c>(&self, changes: &[Stamped<'c>]) -> Vec<(ViewerId, &'c Arc<TableMeta>)> {
        let mut seen = HashSet::new();
        let mut needed = Vec::new();
        for (at, key) in &self.pairs {
            let table = &changes[*at].0.table;
            if seen.insert((key.1, table.oid)) {
                needed.push((key.1, table));
            }
        }
        needed
    }
}

/// What the hub found out for a batch, and what it knows already.
pub struct Checked<'a> {
    pub visible: &'a RlsAnswers,
    pub selectable: &'a Privileges,
    /// Channels told their checks fail: [`Verdicts::passed`] names those whose check succeeds again.
    pub failing: &'a HashSet<ChannelKey>,
    pub max_record_bytes: usize,
}

/// One `postgres_changes` message: to `channel`, for its subscriptions `ids` (sorted, distinct).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub channel: ChannelKey,
    pub ids: Vec<u32>,
    pub data: Arc<str>,
}

/// What a batch's checks said about channels, known once every change is planned.
#[derive(Debug, Default)]
pub struct Verdicts {
    /// Channels whose RLS check or privileges could not be read, with the error (once per matched
    /// group and change: the hub tells each channel once).
    pub failed: Vec<(ChannelKey, String)>,
    /// Channels of [`Checked::failing`] whose RLS check succeeded in this batch.
    pub passed: HashSet<ChannelKey>,
}

/// Plans a batch change by change: each item is one matched change's deliveries, in commit order, so
/// the hub hands a change to the sockets before the next one's `data` is built (they write meanwhile).
/// Per change: one delivery per channel and distinct `data`, channels in the order first matched.
/// [`Planner::verdicts`] then gives what the checks said.
pub struct Planner<'a> {
    changes: &'a [Stamped<'a>],
    pairs: &'a [(usize, GroupKey)],
    index: &'a SubscriptionIndex,
    checked: &'a Checked<'a>,
    data: DataCache,
    verdicts: Verdicts,
}

impl<'a> Planner<'a> {
    pub fn new(
        changes: &'a [Stamped<'a>],
        matches: &'a Matches,
        index: &'a SubscriptionIndex,
        checked: &'a Checked<'a>,
    ) -> Planner<'a> {
        let (data, verdicts) = (DataCache::default(), Verdicts::default());
        Planner { changes, pairs: &matches.pairs, index, checked, data, verdicts }
    }

    /// What the checks said, once every change is planned.
    pub fn verdicts(self) -> Verdicts {
        self.verdicts
    }

    /// The deliveries of the change matched by `run` (its pairs).
    fn plan_change(&mut self, run: &'a [(usize, GroupKey)]) -> Vec<Delivery> {
        let (checked, verdicts) = (self.checked, &mut self.verdicts);
        let at = run[0].0;
        let (change, commit_timestamp) = self.changes[at];
        // Per channel (in the order first seen): the distinct `data` it gets and the ids of each.
        let mut channels: Vec<(&ChannelKey, SelectGroups)> = Vec::new();
        let mut position: foldhash::HashMap<&ChannelKey, usize> = foldhash::HashMap::default();
        for (_, key) in run {
            let Some(group) = self.index.group(key) else { continue };
            let viewer = key.1;
            if needs_rls(change) {
                match (checked.visible.get(&(change.table.oid, viewer)), change.primary_key()) {
                    (Some(Ok(rows)), Some(pk)) if rows.contains(&pk) => {
                        if !checked.failing.is_empty() {
                            let again = group.members.keys().filter(|k| checked.failing.contains(*k));
                            verdicts.passed.extend(again.cloned());
                        }
                    }
                    (Some(Err(error)), _) => {
                        verdicts.failed.extend(group.members.keys().map(|k| (k.clone(), error.clone())));
                        continue;
                    }
                    _ => continue,
                }
            }
            let flags = match checked.selectable.get(&(viewer, change.table.oid)) {
                Some(Ok(flags)) => flags,
                Some(Err(error)) => {
                    verdicts.failed.extend(group.members.keys().map(|k| (k.clone(), error.clone())));
                    continue;
                }
                None => continue,
            };
            let cache_key = (at, Arc::as_ptr(flags) as usize, group.params.select.clone());
            let data_json = self
                .data
                .entry(cache_key)
                .or_insert_with_key(|(_, _, select)| {
                    let projection = Projection { selectable: flags.to_vec(), select: select.clone() };
                    change.data_json(commit_timestamp, &projection, checked.max_record_bytes).into()
                })
                .clone();
            for (channel, id) in &group.members {
                let slot = *position.entry(channel).or_insert_with(|| {
                    channels.push((channel, Vec::new()));
                    channels.len() - 1
                });
                let groups = &mut channels[slot].1;
                match groups.iter_mut().find(|(json, _)| Arc::ptr_eq(json, &data_json)) {
                    Some((_, ids)) => ids.push(*id),
                    None => groups.push((data_json.clone(), vec![*id])),
                }
            }
        }
        let mut deliveries = Vec::new();
        for (channel, groups) in channels {
            for (data, mut ids) in groups {
                ids.sort_unstable();
                ids.dedup();
                deliveries.push(Delivery { channel: channel.clone(), ids, data });
            }
        }
        deliveries
    }
}

impl Iterator for Planner<'_> {
    type Item = Vec<Delivery>;

    fn next(&mut self) -> Option<Vec<Delivery>> {
        let first = self.pairs.first()?.0;
        let end = self.pairs.iter().take_while(|(at, _)| *at == first).count();
        let (run, rest) = self.pairs.split_at(end);
        self.pairs = rest;
        Some(self.plan_change(run))
    }
}

#[cfg(test)]
#[path = "plan_test.rs"]
mod tests;
