//! The presence changes of one topic gathered between two flushes, merged so that members get one
//! `presence_diff` per interval however many changes happened in it.
//!
//! Why: a diff per change costs a room of N members N frames per change, so N members joining cost
//! N² frames; in a 10,000-member room a churn of 1,000 joins/s would be 10,000,000 frames/s. Phoenix's
//! own tracker batches its deltas the same way.
//!
//! The merge is per meta (`phx_ref`, unique per track): the last change wins. A meta that joined and
//! left within one batch was never seen by a member and is dropped; one that left and joined again
//! (a node healed from a partition) is sent as a join, which realtime-js applies by `phx_ref` without
//! a duplicate. Members apply a diff's joins before its leaves, so one meta never appears in both.
//!
//! [`Pace`] decides when a batch goes out: at once when the topic was quiet for an interval (a lone
//! change is not delayed), otherwise at the end of the interval that began with the last flush.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use realtime_proto::presence::{Meta, PresenceDiff};

/// What a member must be told about one meta.
#[derive(Debug, Clone, PartialEq)]
struct Change {
    key: String,
    meta: Meta,
    /// Present after the batch (joined last) or not (left last).
    present: bool,
    /// Members held the meta before the batch (its first change in the batch was a leave).
    held_before: bool,
}

/// Changes since the last flush.
#[derive(Debug, Default)]
pub struct Batch {
    by_ref: BTreeMap<String, Change>,
}

impl Batch {
    /// Adds one diff the presence set produced (its leaves happened before its joins).
    pub fn add(&mut self, diff: PresenceDiff) {
        for (key, metas) in diff.leaves.0 {
            for meta in metas.metas {
                self.change(&key, meta, false);
            }
        }
        for (key, metas) in diff.joins.0 {
            for meta in metas.metas {
                self.change(&key, meta, true);
            }
        }
    }

    fn change(&mut self, key: &str, meta: Meta, present: bool) {
        let Some(phx_ref) = meta.get("phx_ref").and_then(|r| r.as_str()).map(str::to_owned) else {
            return;
        };
        match self.by_ref.get_mut(&phx_ref) {
            Some(change) if !present && !change.held_before => {
                // Joined and left within the batch: nobody saw it.
                self.by_ref.remove(&phx_ref);
            }
            Some(change) => {
                change.key = key.to_owned();
                change.meta = meta;
                change.present = present;
            }
            None => {
                let change = Change { key: key.to_owned(), meta, present, held_before: !present };
                self.by_ref.insert(phx_ref, change);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_ref.is_empty()
    }

    /// The merged diff; the batch is empty afterwards. `None` when nothing is left to tell.
    pub fn take(&mut self) -> Option<PresenceDiff> {
        let mut diff = PresenceDiff::default();
        for change in std::mem::take(&mut self.by_ref).into_values() {
            if change.present {
                diff.joins.push(&change.key, change.meta);
            } else {
                diff.leaves.push(&change.key, change.meta);
            }
        }
        (!diff.is_empty()).then_some(diff)
    }
}

/// When the next batch may go out: at most one flush per `interval`, the first one of a quiet period
/// at once.
#[derive(Debug, Clone)]
pub struct Pace {
    interval: Duration,
    last_flush: Option<Instant>,
    scheduled: bool,
}

/// What to do with a change that just arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Flush now.
    Now,
    /// Schedule a flush after this long.
    After(Duration),
    /// A flush is already scheduled; it will carry this change.
    Scheduled,
}

impl Pace {
    pub fn new(interval: Duration) -> Pace {
        Pace { interval, last_flush: None, scheduled: false }
    }

    /// From now on, at most one flush per `interval`.
    pub fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    /// A change arrived at `now`: when must the batch go out?
    pub fn on_change(&mut self, now: Instant) -> Due {
        if self.scheduled {
            return Due::Scheduled;
        }
        match self.last_flush.map(|last| (last + self.interval).saturating_duration_since(now)) {
            Some(wait) if !wait.is_zero() => {
                self.scheduled = true;
                Due::After(wait)
            }
            _ => Due::Now,
        }
    }

    /// The batch went out at `now`.
    pub fn flushed(&mut self, now: Instant) {
        self.last_flush = Some(now);
        self.scheduled = false;
    }
}

#[cfg(test)]
mod tests {
    use realtime_proto::presence::meta;
    use serde_json::{json, Map, Value};

    use super::*;

    fn m(phx_ref: &str, v: i64) -> Meta {
        let mut payload = Map::new();
        payload.insert("v".into(), json!(v));
        meta(&payload, phx_ref, None)
    }

    fn join(key: &str, meta: Meta) -> PresenceDiff {
        let mut d = PresenceDiff::default();
        d.joins.push(key, meta);
        d
    }

    fn leave(key: &str, meta: Meta) -> PresenceDiff {
        let mut d = PresenceDiff::default();
        d.leaves.push(key, meta);
        d
    }

    fn taken(batch: &mut Batch) -> Value {
        batch.take().map_or(Value::Null, |d| serde_json::from_str(&d.to_json()).unwrap())
    }

    #[test]
    fn many_changes_become_one_diff() {
        let mut b = Batch::default();
        for i in 0..100 {
            b.add(join(&format!("k{i}"), m(&format!("r{i}"), i)));
        }
        b.add(leave("old", m("r-old", 0)));
        let d = b.take().unwrap();
        assert_eq!(d.joins.0.len(), 100);
        assert_eq!(d.leaves.0["old"].metas.len(), 1);
        assert!(b.is_empty());
        assert!(b.take().is_none());
    }

    #[test]
    fn joined_then_left_is_never_told() {
        let mut b = Batch::default();
        b.add(join("a", m("r1", 1)));
        b.add(leave("a", m("r1", 1)));
        assert!(b.is_empty());
        assert_eq!(taken(&mut b), Value::Null);
    }

    #[test]
    fn left_then_joined_again_is_a_join() {
        let mut b = Batch::default();
        b.add(leave("a", m("r1", 1)));
        b.add(join("a", m("r1", 1)));
        assert_eq!(
            taken(&mut b),
            json!({"joins": {"a": {"metas": [{"v": 1, "phx_ref": "r1"}]}}, "leaves": {}})
        );
        // … and leaving once more is a leave (members held it before the batch).
        b.add(leave("a", m("r1", 1)));
        b.add(join("a", m("r1", 1)));
        b.add(leave("a", m("r1", 1)));
        assert_eq!(
            taken(&mut b),
            json!({"joins": {}, "leaves": {"a": {"metas": [{"v": 1, "phx_ref": "r1"}]}}})
        );
    }

    #[test]
    fn an_update_keeps_its_leave_and_its_join() {
        // The set's update: one diff leaving the old meta and joining the new one (phx_ref_prev).
        let mut b = Batch::default();
        let mut update = leave("a", m("r1", 1));
        let mut payload = Map::new();
        payload.insert("v".into(), json!(2));
        update.joins.push("a", meta(&payload, "r2", Some("r1")));
        b.add(update);
        assert_eq!(
            taken(&mut b),
            json!({"joins": {"a": {"metas": [{"v": 2, "phx_ref": "r2", "phx_ref_prev": "r1"}]}},
                   "leaves": {"a": {"metas": [{"v": 1, "phx_ref": "r1"}]}}})
        );
        // Tracked, then updated within one batch: only the newest meta joins.
        b.add(join("a", m("r3", 3)));
        b.add(leave("a", m("r3", 3)));
        b.add(join("a", m("r4", 4)));
        assert_eq!(
            taken(&mut b),
            json!({"joins": {"a": {"metas": [{"v": 4, "phx_ref": "r4"}]}}, "leaves": {}})
        );
    }

    /// Applying the merged diff gives what applying each diff in turn gives, as realtime-js applies
    /// them (joins, then leaves, by `phx_ref`), over every order of a few changes to two metas.
    #[test]
    fn the_merged_diff_ends_where_the_single_diffs_end() {
        type View = BTreeMap<String, (String, Value)>;
        fn apply(view: &mut View, diff: &PresenceDiff) {
            for (key, metas) in &diff.joins.0 {
                for meta in &metas.metas {
                    let r = meta["phx_ref"].as_str().unwrap().to_owned();
                    view.insert(r, (key.clone(), Value::Object(meta.clone())));
                }
            }
            for metas in diff.leaves.0.values() {
                for meta in &metas.metas {
                    view.remove(meta["phx_ref"].as_str().unwrap());
                }
            }
        }
        // Each step: (ref, join?) on a set that only ever joins what it lacks and leaves what it has.
        let steps = [("r1", true), ("r1", false), ("r2", true), ("r1", true), ("r2", false), ("r1", false)];
        for start in 0..4u8 {
            for mask in 0u32..(1 << steps.len()) {
                let mut held: View = BTreeMap::new();
                // Start holding r1 and/or r2.
                for (bit, r) in ["r1", "r2"].iter().enumerate() {
                    if start & (1 << bit) != 0 {
                        held.insert((*r).into(), ("k".into(), Value::Object(m(r, 0))));
                    }
                }
                let (mut one_by_one, mut batch, mut truth) = (held.clone(), Batch::default(), held.clone());
                for (i, (r, joins)) in steps.iter().enumerate() {
                    if mask & (1 << i) == 0 || truth.contains_key(*r) == *joins {
                        continue;
                    }
                    let diff = if *joins { join("k", m(r, i as i64)) } else { leave("k", m(r, 0)) };
                    apply(&mut one_by_one, &diff);
                    apply(&mut truth, &diff);
                    batch.add(diff);
                }
                let mut merged = held;
                if let Some(diff) = batch.take() {
                    apply(&mut merged, &diff);
                }
                assert_eq!(merged, one_by_one, "start {start:b}, steps {mask:b}");
            }
        }
    }

    #[test]
    fn pace_sends_a_lone_change_at_once_and_a_burst_once_per_interval() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut pace = Pace::new(ms(50));
        assert_eq!(pace.on_change(t0), Due::Now);
        pace.flushed(t0);
        assert_eq!(pace.on_change(t0 + ms(10)), Due::After(ms(40)));
        assert_eq!(pace.on_change(t0 + ms(20)), Due::Scheduled);
        pace.flushed(t0 + ms(50));
        assert_eq!(pace.on_change(t0 + ms(200)), Due::Now, "quiet for an interval: at once");
        let mut off = Pace::new(Duration::ZERO);
        assert_eq!(off.on_change(t0), Due::Now);
        off.flushed(t0);
        assert_eq!(off.on_change(t0), Due::Now, "no interval: every change at once");
    }
}
