//! Property tests: random owner histories, then every merge order, loss and duplication we can think of.
//!
//! Each origin's history comes from driving a real [`LocalPresence`] with random ops and random
//! `take_delta` / `snapshot` / `renew` / `leaving` / restart points. It yields the messages the owner
//! (and membership, for `Down`) would send, and every state the owner ever published, by version.
//! Three properties follow:
//! 1. merging any multiset of those states, in any order, gives one result: the largest version per
//!    origin (commutative, associative, idempotent);
//! 2. deltas delivered in any order with drops and duplicates (fully random, and mostly ordered with
//!    jitter so that many deltas apply), each `Gap` answered with the origin's latest snapshot (or its
//!    state at the delta's version), never leave the replica holding a state the owner did not publish
//!    at that version, and a final digest heal converges to exactly the owners' final states;
//! 3. the `TopicChange`s of every step, applied to an independent model, reproduce `topic_entries`.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

const TOPICS: [&str; 3] = ["t0", "t1", "t2"];

#[derive(Debug, Clone)]
enum Action {
    Put { topic: usize, conn: ConnId, meta: u8 },
    Remove { topic: usize, conn: ConnId },
    Take,
    Snap,
    Renew,
    Leave,
    Restart,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        8 => (0..TOPICS.len(), 0..4u64, 0..3u8).prop_map(|(topic, conn, meta)| Action::Put { topic, conn, meta }),
        3 => (0..TOPICS.len(), 0..4u64).prop_map(|(topic, conn)| Action::Remove { topic, conn }),
        5 => Just(Action::Take),
        1 => Just(Action::Snap),
        1 => Just(Action::Renew),
        1 => Just(Action::Leave),
        1 => Just(Action::Restart),
    ]
}

fn histories() -> impl Strategy<Value = Vec<Vec<Action>>> {
    prop::collection::vec(prop::collection::vec(action(), 0..40), 2..=4)
}

#[derive(Debug, Clone)]
enum Message {
    Delta(Delta),
    Snapshot(Snapshot),
    /// Membership declared this run and epoch of the node down.
    Down {
        node: NodeId,
        incarnation: u64,
        epoch: u64,
    },
}

struct History {
    messages: Vec<Message>,
    /// Every state the owner published, by version (tombstones from `Down` included).
    states: BTreeMap<Version, Snapshot>,
    /// The owner's final state: what a digest heal would fetch.
    last: Snapshot,
}

impl History {
    fn record(&mut self, snapshot: &Snapshot) {
        let held = self.states.entry(snapshot.version).or_insert_with(|| snapshot.clone());
        assert_eq!(held, snapshot, "one version, one content");
    }

    fn down(&mut self, node: &NodeId, version: Version) {
        let (incarnation, epoch) = (version.incarnation, version.epoch);
        let tombstone = Version::tombstone(incarnation, epoch);
        self.record(&Snapshot { node: node.clone(), version: tombstone, gone: true, entries: vec![] });
        self.messages.push(Message::Down { node: node.clone(), incarnation, epoch });
    }

    fn publish(&mut self, snapshot: Snapshot) {
        self.record(&snapshot);
        self.messages.push(Message::Snapshot(snapshot));
    }
}

fn entry(conn: ConnId, meta: u8) -> Entry {
    Entry { key: format!("k{conn}"), phx_ref: format!("r{meta}"), meta: format!(r#"{{"m":{meta}}}"#) }
}

fn run(node: &NodeId, actions: &[Action]) -> History {
    let mut local = LocalPresence::new(node.clone(), 1);
    let mut history = History { messages: vec![], states: BTreeMap::new(), last: local.snapshot() };
    history.publish(local.snapshot());
    for action in actions {
        match action {
            Action::Put { topic, conn, meta } => local.put(TOPICS[*topic], *conn, entry(*conn, *meta)),
            Action::Remove { topic, conn } => local.remove(TOPICS[*topic], *conn),
            Action::Take => {
                if let Some(delta) = local.take_delta() {
                    history.record(&local.snapshot());
                    history.messages.push(Message::Delta(delta));
                }
            }
            Action::Snap => history.publish(local.snapshot()),
            Action::Renew => {
                let version = local.version();
                history.down(node, version);
                local.renew(version.epoch + 1);
                history.publish(local.snapshot());
            }
            Action::Leave => history.publish(local.leaving()),
            Action::Restart => {
                let version = local.version();
                history.down(node, version);
                local = LocalPresence::new(node.clone(), version.incarnation + 1);
                history.publish(local.snapshot());
            }
        }
    }
    history.last = local.snapshot();
    assert_eq!(history.states.get(&history.last.version), Some(&history.last));
    history
}

fn run_all(scripts: &[Vec<Action>]) -> Vec<(NodeId, History)> {
    scripts
        .iter()
        .enumerate()
        .map(|(i, script)| {
            let node = NodeId(format!("n{i}"));
            let history = run(&node, script);
            (node, history)
        })
        .collect()
}

/// A replica's whole observable state: its digest and every live entry by topic.
type State = (Vec<(NodeId, Version)>, Vec<(String, EntryId, Entry)>);

fn state_of(replica: &Replica) -> State {
    let entries = TOPICS
        .iter()
        .flat_map(|topic| {
            replica.topic_entries(topic).into_iter().map(|(id, entry)| (topic.to_string(), id, entry))
        })
        .collect();
    (replica.origins(), entries)
}

/// The state a replica must reach after merging exactly these snapshots (one per origin).
fn expected<'a>(snapshots: impl IntoIterator<Item = &'a Snapshot>) -> State {
    let mut origins = Vec::new();
    let mut entries = Vec::new();
    for snapshot in snapshots {
        origins.push((snapshot.node.clone(), snapshot.version));
        for (topic, conn, entry) in &snapshot.entries {
            let id = EntryId {
                node: snapshot.node.clone(),
                incarnation: snapshot.version.incarnation,
                conn: *conn,
            };
            entries.push((topic.clone(), id, entry.clone()));
        }
    }
    origins.sort();
    entries.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    (origins, entries)
}

/// A replica plus the view a client would build from the changes it was sent (property 3).
struct Observed {
    replica: Replica,
    model: BTreeMap<String, BTreeMap<EntryId, Entry>>,
}

impl Observed {
    fn new() -> Observed {
        Observed { replica: Replica::new(NodeId("me".into())), model: BTreeMap::new() }
    }

    fn apply(&mut self, changes: Vec<TopicChange>) {
        for pair in changes.windows(2) {
            assert!(pair[0].topic < pair[1].topic, "one change per topic, in topic order");
        }
        for change in changes {
            assert!(
                !change.joins.is_empty() || !change.leaves.is_empty(),
                "empty change for {}",
                change.topic
            );
            let view = self.model.entry(change.topic.clone()).or_default();
            for (id, entry) in change.leaves {
                assert_eq!(view.remove(&id), Some(entry), "a leave must name what the client saw");
            }
            for (id, entry) in change.joins {
                assert_eq!(view.insert(id, entry), None, "a join must be new after the leaves");
            }
        }
        for topic in TOPICS {
            let view: Vec<_> =
                self.model.get(topic).into_iter().flatten().map(|(i, e)| (i.clone(), e.clone())).collect();
            assert_eq!(view, self.replica.topic_entries(topic), "client view of {topic} diverged");
        }
        assert_eq!(self.model.values().map(BTreeMap::len).sum::<usize>(), self.replica.entry_count());
    }

    fn merge(&mut self, snapshot: &Snapshot) {
        let changes = self.replica.merge_snapshot(snapshot);
        self.apply(changes);
    }
}

/// What the replica holds for `node`, as a snapshot, to compare with the owner's published states.
fn held(replica: &Replica, node: &NodeId, version: Version) -> Snapshot {
    let mut entries = Vec::new();
    for topic in TOPICS {
        for (id, entry) in replica.topic_entries(topic) {
            if id.node == *node {
                assert_eq!(id.incarnation, version.incarnation, "entry of another run");
                entries.push((topic.to_owned(), id.conn, entry));
            }
        }
    }
    Snapshot { node: node.clone(), version, gone: version.seq == u64::MAX, entries }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Property 1 (and 3): snapshot merge is order-insensitive and idempotent.
    #[test]
    fn snapshot_merge_is_commutative_associative_idempotent(
        scripts in histories(),
        picks in prop::collection::vec(any::<Index>(), 1..40),
    ) {
        let histories = run_all(&scripts);
        let pool: Vec<&Snapshot> = histories.iter().flat_map(|(_, h)| h.states.values()).collect();
        let chosen: Vec<&Snapshot> = picks.iter().map(|pick| *pick.get(&pool)).collect();

        let mut forward = Observed::new();
        for snapshot in &chosen {
            forward.merge(snapshot);
        }
        let mut backward_twice = Observed::new();
        for snapshot in chosen.iter().rev().chain(chosen.iter()) {
            backward_twice.merge(snapshot);
        }
        let mut largest: BTreeMap<&NodeId, &Snapshot> = BTreeMap::new();
        for snapshot in &chosen {
            let slot = largest.entry(&snapshot.node).or_insert(snapshot);
            if snapshot.version > slot.version {
                *slot = snapshot;
            }
        }
        let want = expected(largest.values().copied());
        prop_assert_eq!(&state_of(&forward.replica), &want);
        prop_assert_eq!(&state_of(&backward_twice.replica), &want);
    }

    /// Property 2 (and 3): lossy, reordered, duplicated delivery is safe at every step and heals.
    /// Any message may come at any time; a `Gap` is answered with the origin's latest snapshot.
    #[test]
    fn lossy_delivery_is_safe_and_heals_to_the_owners_states(
        scripts in histories(),
        deliveries in prop::collection::vec(any::<Index>(), 0..120),
    ) {
        let histories = run_all(&scripts);
        let pool = pool(&histories);
        let order: Vec<usize> = deliveries.iter().map(|pick| pick.index(pool.len())).collect();
        deliver_and_heal(&histories, &pool, &order, GapAnswer::Latest);
    }

    /// Property 2 again with mostly ordered delivery (jitter, drops, duplicates, late strays), so far
    /// more deltas apply; a `Gap` is answered with the origin's latest state or its state at the
    /// delta's version (the origin may be asked long before it finishes).
    #[test]
    fn jittered_delivery_applies_deltas_safely_and_heals(
        scripts in histories(),
        jitter in prop::collection::vec((delay(), copies()), 1..64),
        strays in prop::collection::vec(any::<(Index, Index)>(), 0..10),
        latest in any::<bool>(),
    ) {
        let histories = run_all(&scripts);
        let pool = pool(&histories);
        let mut order: Vec<(usize, usize)> = Vec::new();
        for i in 0..pool.len() {
            let (delay, copies) = jitter[i % jitter.len()];
            order.extend((0..copies).map(|copy| (i + delay + 3 * copy, i)));
        }
        order.sort();
        let mut order: Vec<usize> = order.into_iter().map(|(_, i)| i).collect();
        for (message, position) in &strays {
            order.insert(position.index(order.len() + 1), message.index(pool.len()));
        }
        let answer = if latest { GapAnswer::Latest } else { GapAnswer::AtDelta };
        deliver_and_heal(&histories, &pool, &order, answer);
    }
}

fn delay() -> impl Strategy<Value = usize> {
    prop_oneof![4 => Just(0usize), 1 => 1..6usize]
}

fn copies() -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(0usize), 6 => Just(1usize), 1 => Just(2usize)]
}

/// Every message of every origin, interleaved in send order: `(origin index, message)`.
fn pool(histories: &[(NodeId, History)]) -> Vec<(usize, &Message)> {
    let mut pool: Vec<(usize, usize, &Message)> = histories
        .iter()
        .enumerate()
        .flat_map(|(o, (_, h))| h.messages.iter().enumerate().map(move |(i, m)| (i, o, m)))
        .collect();
    pool.sort_by_key(|(i, o, _)| (*i, *o));
    pool.into_iter().map(|(_, o, m)| (o, m)).collect()
}

#[derive(Clone, Copy)]
enum GapAnswer {
    /// The origin's final state.
    Latest,
    /// The origin's state at the version of the delta that hit the gap.
    AtDelta,
}

/// Delivers `pool[order[..]]`, checking at every step that each origin the replica holds is a state
/// its owner published at that version; then merges every owner's final snapshot (the digest heal)
/// and checks that the replica holds exactly the owners' final states.
fn deliver_and_heal(
    histories: &[(NodeId, History)],
    pool: &[(usize, &Message)],
    order: &[usize],
    answer: GapAnswer,
) {
    let mut observed = Observed::new();
    for &i in order {
        let (origin, message) = pool[i];
        let history = &histories[origin].1;
        match message {
            Message::Delta(delta) => match observed.replica.apply_delta(delta) {
                DeltaOutcome::Applied(changes) => observed.apply(changes),
                DeltaOutcome::Gap => match answer {
                    GapAnswer::Latest => observed.merge(&history.last),
                    GapAnswer::AtDelta => observed.merge(&history.states[&delta.version]),
                },
                DeltaOutcome::Stale => {}
            },
            Message::Snapshot(snapshot) => observed.merge(snapshot),
            Message::Down { node, incarnation, epoch } => {
                let changes = observed.replica.remove_origin(node, *incarnation, *epoch);
                observed.apply(changes);
            }
        }
        for (node, version) in observed.replica.origins() {
            let (_, history) = histories.iter().find(|(n, _)| *n == node).expect("a known origin");
            assert_eq!(Some(&held(&observed.replica, &node, version)), history.states.get(&version));
        }
    }
    for (_, history) in histories {
        observed.merge(&history.last);
    }
    assert_eq!(state_of(&observed.replica), expected(histories.iter().map(|(_, h)| &h.last)));
}
