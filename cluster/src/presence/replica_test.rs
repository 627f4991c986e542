//! Unit tests of [`Replica`]: one per rule, edges included.

use super::*;
use crate::presence::LocalPresence;

fn node(name: &str) -> NodeId {
    NodeId(name.into())
}

fn entry(key: &str, meta: u32) -> Entry {
    Entry { key: key.into(), phx_ref: format!("ref-{key}"), meta: format!(r#"{{"n":{meta}}}"#) }
}

fn v(incarnation: u64, epoch: u64, seq: u64) -> Version {
    Version { incarnation, epoch, seq }
}

fn id(name: &str, incarnation: u64, conn: ConnId) -> EntryId {
    EntryId { node: node(name), incarnation, conn }
}

fn put(topic: &str, conn: ConnId, entry: Entry) -> Op {
    Op::Put { topic: topic.into(), conn, entry }
}

fn delta(name: &str, base: Version, ops: Vec<Op>) -> Delta {
    Delta { node: node(name), base, version: Version { seq: base.seq + 1, ..base }, ops }
}

fn snapshot(name: &str, version: Version, entries: &[(&str, ConnId, Entry)]) -> Snapshot {
    let entries =
        entries.iter().map(|(topic, conn, entry)| (topic.to_string(), *conn, entry.clone())).collect();
    Snapshot { node: node(name), version, gone: false, entries }
}

fn change(topic: &str, joins: Vec<(EntryId, Entry)>, leaves: Vec<(EntryId, Entry)>) -> TopicChange {
    TopicChange { topic: topic.into(), joins, leaves }
}

/// A replica on node "me" holding origin "a" at (1, 0, 0) with `t/1 = x`.
fn replica() -> Replica {
    let mut replica = Replica::new(node("me"));
    replica.merge_snapshot(&snapshot("a", v(1, 0, 0), &[("t", 1, entry("x", 1))]));
    replica
}

#[test]
fn in_order_deltas_apply_and_report_exact_changes() {
    let mut replica = replica();
    let outcome = replica.apply_delta(&delta(
        "a",
        v(1, 0, 0),
        vec![put("u", 2, entry("y", 1)), put("t", 1, entry("x", 2)), put("t", 3, entry("z", 1))],
    ));
    let expected = vec![
        change(
            "t",
            vec![(id("a", 1, 1), entry("x", 2)), (id("a", 1, 3), entry("z", 1))],
            vec![(id("a", 1, 1), entry("x", 1))],
        ),
        change("u", vec![(id("a", 1, 2), entry("y", 1))], vec![]),
    ];
    assert_eq!(outcome, DeltaOutcome::Applied(expected));
    assert_eq!(replica.version_of(&node("a")), Some(v(1, 0, 1)));
    assert_eq!(replica.entry_count(), 3);
    let outcome = replica.apply_delta(&delta(
        "a",
        v(1, 0, 1),
        vec![Op::Remove { topic: "u".into(), conn: 2 }, put("t", 3, entry("z", 1))],
    ));
    assert_eq!(
        outcome,
        DeltaOutcome::Applied(vec![change("u", vec![], vec![(id("a", 1, 2), entry("y", 1))])])
    );
    assert_eq!(replica.topic_entries("u"), vec![]);
}

#[test]
fn several_ops_on_one_key_report_only_the_net_change() {
    let mut replica = replica();
    let ops = vec![put("t", 1, entry("x", 2)), put("t", 1, entry("x", 1)), put("t", 2, entry("y", 1))];
    let outcome = replica.apply_delta(&delta("a", v(1, 0, 0), ops));
    assert_eq!(
        outcome,
        DeltaOutcome::Applied(vec![change("t", vec![(id("a", 1, 2), entry("y", 1))], vec![])])
    );
    let ops = vec![put("t", 5, entry("w", 1)), Op::Remove { topic: "t".into(), conn: 5 }];
    assert_eq!(replica.apply_delta(&delta("a", v(1, 0, 1), ops)), DeltaOutcome::Applied(vec![]));
    assert_eq!(replica.version_of(&node("a")), Some(v(1, 0, 2)), "a no-op delta still advances the version");
}

#[test]
fn duplicate_and_older_deltas_are_stale() {
    let mut replica = replica();
    let first = delta("a", v(1, 0, 0), vec![put("t", 2, entry("y", 1))]);
    assert!(matches!(replica.apply_delta(&first), DeltaOutcome::Applied(_)));
    assert_eq!(replica.apply_delta(&first), DeltaOutcome::Stale);
    assert_eq!(replica.apply_delta(&delta("a", v(0, 9, 3), vec![])), DeltaOutcome::Stale);
    assert_eq!(replica.entry_count(), 2);
}

#[test]
fn missed_deltas_and_unknown_origins_are_gaps() {
    let mut replica = replica();
    assert_eq!(replica.apply_delta(&delta("a", v(1, 0, 1), vec![])), DeltaOutcome::Gap);
    assert_eq!(replica.apply_delta(&delta("a", v(1, 1, 0), vec![])), DeltaOutcome::Gap, "renewed epoch");
    assert_eq!(replica.apply_delta(&delta("a", v(2, 0, 0), vec![])), DeltaOutcome::Gap, "new incarnation");
    assert_eq!(replica.apply_delta(&delta("b", v(1, 0, 0), vec![])), DeltaOutcome::Gap, "unknown origin");
    assert_eq!(replica.version_of(&node("a")), Some(v(1, 0, 0)));
    assert_eq!(replica.version_of(&node("b")), None);
}

#[test]
fn malformed_deltas_are_ignored() {
    let mut replica = replica();
    let mut skip = delta("a", v(1, 0, 0), vec![put("t", 9, entry("q", 1))]);
    skip.version.seq = 2;
    assert_eq!(replica.apply_delta(&skip), DeltaOutcome::Stale);
    let mut cross_epoch = delta("a", v(1, 0, 0), vec![]);
    cross_epoch.version.epoch = 1;
    assert_eq!(replica.apply_delta(&cross_epoch), DeltaOutcome::Stale);
    assert_eq!(replica.version_of(&node("a")), Some(v(1, 0, 0)));
}

#[test]
fn own_node_is_ignored() {
    let mut replica = Replica::new(node("me"));
    assert_eq!(replica.merge_snapshot(&snapshot("me", v(1, 0, 0), &[("t", 1, entry("x", 1))])), vec![]);
    assert_eq!(replica.apply_delta(&delta("me", v(1, 0, 0), vec![])), DeltaOutcome::Stale);
    assert_eq!(replica.remove_origin(&node("me"), 1, 0), vec![]);
    assert_eq!(
        (replica.version_of(&node("me")), replica.origins(), replica.entry_count()),
        (None, vec![], 0)
    );
}

#[test]
fn remove_origin_tombstones_and_reports_every_leave() {
    let mut replica = replica();
    replica.apply_delta(&delta("a", v(1, 0, 0), vec![put("u", 2, entry("y", 1))]));
    let changes = replica.remove_origin(&node("a"), 1, 0);
    assert_eq!(
        changes,
        vec![
            change("t", vec![], vec![(id("a", 1, 1), entry("x", 1))]),
            change("u", vec![], vec![(id("a", 1, 2), entry("y", 1))]),
        ]
    );
    assert_eq!(replica.version_of(&node("a")), Some(v(1, 0, u64::MAX)));
    assert_eq!((replica.entry_count(), replica.topic_entries("t")), (0, vec![]));
    assert_eq!(replica.origins(), vec![(node("a"), v(1, 0, u64::MAX))], "tombstones are listed");
    assert_eq!(replica.remove_origin(&node("a"), 1, 0), vec![], "idempotent");
}

#[test]
fn tombstone_blocks_late_deltas_and_snapshots_of_that_run_and_epoch() {
    let mut replica = replica();
    replica.remove_origin(&node("a"), 1, 0);
    assert_eq!(
        replica.apply_delta(&delta("a", v(1, 0, 0), vec![put("t", 2, entry("y", 1))])),
        DeltaOutcome::Stale
    );
    assert_eq!(replica.apply_delta(&delta("a", v(1, 0, 40), vec![])), DeltaOutcome::Stale);
    assert_eq!(replica.merge_snapshot(&snapshot("a", v(1, 0, 50), &[("t", 1, entry("x", 1))])), vec![]);
    assert_eq!(replica.merge_snapshot(&snapshot("a", v(0, 7, 50), &[("t", 1, entry("x", 1))])), vec![]);
    assert_eq!(replica.entry_count(), 0);
}

#[test]
fn a_run_alive_again_has_its_tombstone_lifted_and_its_next_snapshot_taken() {
    let mut replica = replica();
    replica.remove_origin(&node("a"), 1, 0);
    assert!(!replica.revive(&node("a"), 1, 1), "another epoch's tombstone stays");
    assert!(!replica.revive(&node("a"), 2, 0), "another run's tombstone stays");
    assert!(!replica.revive(&node("b"), 1, 0), "an unknown node has nothing to lift");
    assert!(replica.revive(&node("a"), 1, 0));
    assert_eq!(replica.version_of(&node("a")), None);
    let joined = replica.merge_snapshot(&snapshot("a", v(1, 0, 50), &[("t", 1, entry("x", 1))]));
    assert_eq!(joined, vec![change("t", vec![(id("a", 1, 1), entry("x", 1))], vec![])]);
    assert!(!replica.revive(&node("a"), 1, 0), "a live state is kept");
    assert_eq!(replica.entry_count(), 1);
    // A delta of the revived run that does not start from nothing is a gap: a snapshot is asked for.
    let mut fresh = Replica::new(node("me"));
    fresh.remove_origin(&node("a"), 1, 0);
    fresh.revive(&node("a"), 1, 0);
    assert_eq!(fresh.apply_delta(&delta("a", v(1, 0, 40), vec![])), DeltaOutcome::Gap);
}

#[test]
fn remove_origin_keeps_anything_newer_and_blocks_unknown_nodes() {
    let mut replica = replica();
    replica.merge_snapshot(&snapshot("a", v(1, 2, 0), &[("t", 1, entry("x", 1))]));
    assert_eq!(replica.remove_origin(&node("a"), 1, 1), vec![], "an older epoch's death changes nothing");
    assert_eq!(replica.version_of(&node("a")), Some(v(1, 2, 0)));
    assert_eq!(replica.remove_origin(&node("b"), 4, 0), vec![]);
    assert_eq!(replica.version_of(&node("b")), Some(v(4, 0, u64::MAX)));
    assert_eq!(replica.merge_snapshot(&snapshot("b", v(4, 0, 3), &[("t", 1, entry("late", 1))])), vec![]);
}

#[test]
fn renewed_epoch_is_accepted_after_a_tombstone() {
    let mut replica = replica();
    replica.remove_origin(&node("a"), 1, 0);
    assert_eq!(replica.apply_delta(&delta("a", v(1, 1, 0), vec![])), DeltaOutcome::Gap);
    let changes = replica.merge_snapshot(&snapshot("a", v(1, 1, 0), &[("t", 1, entry("x", 1))]));
    assert_eq!(changes, vec![change("t", vec![(id("a", 1, 1), entry("x", 1))], vec![])]);
    let outcome = replica.apply_delta(&delta("a", v(1, 1, 0), vec![put("t", 2, entry("y", 1))]));
    assert_eq!(
        outcome,
        DeltaOutcome::Applied(vec![change("t", vec![(id("a", 1, 2), entry("y", 1))], vec![])])
    );
}

#[test]
fn new_incarnation_replaces_every_old_entry() {
    let mut replica = replica();
    let changes = replica.merge_snapshot(&snapshot(
        "a",
        v(2, 0, 0),
        &[("t", 1, entry("x", 1)), ("u", 4, entry("n", 1))],
    ));
    let expected = vec![
        change("t", vec![(id("a", 2, 1), entry("x", 1))], vec![(id("a", 1, 1), entry("x", 1))]),
        change("u", vec![(id("a", 2, 4), entry("n", 1))], vec![]),
    ];
    assert_eq!(changes, expected, "same contents under a new incarnation is a different entry");
    assert_eq!(replica.topic_entries("t"), vec![(id("a", 2, 1), entry("x", 1))]);
}

#[test]
fn snapshot_merge_within_a_run_reports_only_the_difference() {
    let mut replica = Replica::new(node("me"));
    let base = [("t", 1, entry("same", 1)), ("t", 2, entry("edited", 1)), ("t", 3, entry("dropped", 1))];
    replica.merge_snapshot(&snapshot("a", v(1, 0, 3), &base));
    let next = [("t", 1, entry("same", 1)), ("t", 2, entry("edited", 2)), ("u", 5, entry("added", 1))];
    let changes = replica.merge_snapshot(&snapshot("a", v(1, 1, 0), &next));
    let expected = vec![
        change(
            "t",
            vec![(id("a", 1, 2), entry("edited", 2))],
            vec![(id("a", 1, 2), entry("edited", 1)), (id("a", 1, 3), entry("dropped", 1))],
        ),
        change("u", vec![(id("a", 1, 5), entry("added", 1))], vec![]),
    ];
    assert_eq!(changes, expected);
}

#[test]
fn snapshots_that_are_not_newer_change_nothing() {
    let mut replica = replica();
    assert_eq!(replica.merge_snapshot(&snapshot("a", v(1, 0, 0), &[("t", 1, entry("other", 1))])), vec![]);
    assert_eq!(replica.merge_snapshot(&snapshot("a", v(0, 5, 5), &[])), vec![]);
    assert_eq!(replica.topic_entries("t"), vec![(id("a", 1, 1), entry("x", 1))]);
}

#[test]
fn gone_snapshots_are_tombstones_and_live_ones_cannot_claim_the_tombstone_seq() {
    let mut replica = replica();
    let forged = snapshot("a", v(1, 0, u64::MAX), &[("t", 9, entry("forged", 1))]);
    assert_eq!(replica.merge_snapshot(&forged), vec![]);
    let gone = Snapshot { gone: true, ..snapshot("a", v(1, 0, 4), &[("t", 1, entry("ignored", 1))]) };
    assert_eq!(
        replica.merge_snapshot(&gone),
        vec![change("t", vec![], vec![(id("a", 1, 1), entry("x", 1))])]
    );
    assert_eq!(replica.version_of(&node("a")), Some(v(1, 0, u64::MAX)), "normalised to the tombstone");
    assert_eq!(replica.apply_delta(&delta("a", v(1, 0, 5), vec![])), DeltaOutcome::Stale);
}

#[test]
fn topic_entries_are_sorted_by_entry_id_across_origins() {
    let mut replica = Replica::new(node("me"));
    replica.merge_snapshot(&snapshot("b", v(1, 0, 0), &[("t", 2, entry("b2", 1)), ("t", 1, entry("b1", 1))]));
    replica.merge_snapshot(&snapshot("a", v(9, 0, 0), &[("t", 7, entry("a7", 1)), ("u", 1, entry("a1", 1))]));
    let ids: Vec<EntryId> = replica.topic_entries("t").into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![id("a", 9, 7), id("b", 1, 1), id("b", 1, 2)]);
    assert_eq!(replica.entry_count(), 4);
    assert_eq!(replica.origins(), vec![(node("a"), v(9, 0, 0)), (node("b"), v(1, 0, 0))]);
    assert_eq!(replica.topic_entries("nobody"), vec![]);
}

#[test]
fn local_presence_deltas_reproduce_its_snapshots() {
    let mut local = LocalPresence::new(node("a"), 3);
    let mut replica = Replica::new(node("me"));
    replica.merge_snapshot(&local.snapshot());
    local.put("t", 1, entry("x", 1));
    local.put("t", 2, entry("y", 1));
    let first = local.take_delta().expect("a delta");
    local.put("t", 1, entry("x", 2));
    local.remove("t", 2);
    let second = local.take_delta().expect("a delta");
    assert_eq!(replica.apply_delta(&second), DeltaOutcome::Gap);
    assert!(matches!(replica.apply_delta(&first), DeltaOutcome::Applied(_)));
    assert!(matches!(replica.apply_delta(&second), DeltaOutcome::Applied(_)));
    assert_eq!(replica.topic_entries("t"), vec![(id("a", 3, 1), entry("x", 2))]);
    assert_eq!(replica.merge_snapshot(&local.snapshot()), vec![], "same version, same contents");
    assert_eq!(
        replica.merge_snapshot(&local.leaving()),
        vec![change("t", vec![], vec![(id("a", 3, 1), entry("x", 2))])]
    );
}
