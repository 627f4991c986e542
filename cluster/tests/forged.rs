//! Frames a process that is not a node sends to a node's cluster port, speaking for a live node (the
//! attacks of issue 16): a forged member count, a spoofed `Leaving`, snapshots of a made-up run and
//! counts from a node membership does not know.
//! Each is refused and counted, and the live node's presences and counts stay. Two `ClusterHandle`s on
//! loopback (127.0.0.23x, their own port); every wait is bounded and ends on an outcome.
//!
//! (Authenticating the link itself is the transport's job; these checks are what is left when a frame
//! gets through anyway.)

use std::time::{Duration, Instant};

use realtime_cluster::presence::{Entry, Snapshot, Version};
use realtime_cluster::wire::{self, Lane, PeerMessage};
use realtime_cluster::{ClusterConfig, ClusterEvent, ClusterHandle, NodeId, PeerId};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(10);
const TOPIC: &str = "public:room";

fn addr(i: usize) -> std::net::SocketAddr {
    format!("127.0.0.{}:4710", 230 + i).parse().expect("address")
}

async fn start(i: usize) -> (ClusterHandle, mpsc::Receiver<ClusterEvent>) {
    let seeds = (0..2).map(|j| addr(j).to_string()).collect();
    let mut config = ClusterConfig::new(NodeId(format!("f{i}")), addr(i), addr(i), seeds);
    config.max_members_per_node = 1_000;
    ClusterHandle::start(config).await.expect("cluster starts")
}

/// Waits until `done` holds, panicking with `what` after `T`.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + T;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {T:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A raw data link to `to` whose `Hello` names `claimed`, then `frames`. Its sequence numbers come
/// from this process's counter (the forger guesses them right): a connection that claims a live run
/// takes over from that run's real one, which reconnects after it.
async fn speak_as(to: std::net::SocketAddr, claimed: PeerId, frames: &[PeerMessage]) {
    let mut stream = TcpStream::connect(to).await.expect("cluster port reachable");
    let hello = PeerMessage::Hello { from: claimed, lane: Lane::Data };
    for msg in std::iter::once(&hello).chain(frames) {
        let frame = wire::sequenced(realtime_cluster::link::next_seq(), &wire::encode(msg).expect("encodes"));
        stream.write_all(&(frame.len() as u32).to_be_bytes()).await.expect("writes");
        stream.write_all(&frame).await.expect("writes");
    }
    stream.flush().await.expect("flushes");
}

/// Speaks as `claimed` (see [`speak_as`]) until `done` holds: each attempt is a new connection, so a
/// forged connection that lost the race with the real run's reconnect (which supersedes it) or whose
/// frames the real run's newer ones made stale is tried again, as a forger would. At most 20 attempts,
/// each watched for 500 ms.
async fn forge(
    to: std::net::SocketAddr,
    claimed: &PeerId,
    frames: &[PeerMessage],
    what: &str,
    done: impl Fn() -> bool,
) {
    for _ in 0..20 {
        speak_as(to, claimed.clone(), frames).await;
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    panic!("{what}: not after 20 attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_counts_leaves_and_snapshots_are_refused_and_counted() {
    let (a, _a_events) = start(0).await;
    let (b, _b_events) = start(1).await;
    until("formed", || {
        [&a, &b].iter().all(|h| {
            let view = h.view();
            view.ready && view.members.iter().any(|m| m.state == "alive")
        })
    })
    .await;

    // `b` has a member with a presence in the room; `a` holds both.
    b.set_members(TOPIC, 1);
    b.presence_put(TOPIC, 1, Entry { key: "alice".into(), phx_ref: "R1".into(), meta: "{}".into() });
    until("b's count and presence reach a", || {
        a.remote_members(TOPIC) == 1 && a.remote_presence(TOPIC).len() == 1
    })
    .await;
    let real = b.me();

    // 1. b's exact identity (it is no secret) with a count no node can hold: refused whole.
    forge(
        addr(0),
        &real,
        &[PeerMessage::Members { counts: vec![(TOPIC.into(), 4_000_000_000)], full: true }],
        "absurd count refused",
        || a.view().rejected.member_counts >= 1,
    )
    .await;
    assert_eq!(a.remote_members(TOPIC), 1);

    // 2. A Leaving naming a run far ahead of the sender's: refused, b's presence stays.
    let leaves = a.view().rejected.leaves;
    forge(
        addr(0),
        &real,
        &[PeerMessage::Leaving { incarnation: u64::MAX, epoch: u64::MAX }],
        "leave of another run refused",
        || a.view().rejected.leaves > leaves,
    )
    .await;

    // 3. A made-up newer run of b: its Leaving (its own run, but not the live one), its counts and
    //    an empty snapshot that would replace b's entries are all refused.
    let forged = PeerId { incarnation: real.incarnation + 1, epoch: 0, ..real.clone() };
    let gone = Snapshot {
        node: real.node.clone(),
        version: Version { incarnation: forged.incarnation, epoch: 0, seq: 1 },
        gone: true,
        entries: Vec::new(),
    };
    let (leaves, presence) = (a.view().rejected.leaves, a.view().rejected.presence);
    forge(
        addr(0),
        &forged,
        &[
            PeerMessage::Members { counts: vec![(TOPIC.into(), 0)], full: true },
            PeerMessage::PresenceSnapshot(gone),
            PeerMessage::Leaving { incarnation: forged.incarnation, epoch: 0 },
        ],
        "the made-up run's leave and snapshot refused",
        || a.view().rejected.leaves > leaves && a.view().rejected.presence > presence,
    )
    .await;

    // 4. b's exact identity (it is on /cluster when that is open) carrying a snapshot of a newer run.
    let newer = Snapshot {
        node: real.node.clone(),
        version: Version { incarnation: real.incarnation + 1, epoch: 0, seq: 1 },
        gone: false,
        entries: Vec::new(),
    };
    let (leaves, presence) = (a.view().rejected.leaves, a.view().rejected.presence);
    forge(
        addr(0),
        &real,
        &[PeerMessage::PresenceSnapshot(newer), PeerMessage::Leaving { incarnation: 0, epoch: 0 }],
        "the newer run's snapshot and the leave after it refused",
        || a.view().rejected.leaves > leaves && a.view().rejected.presence > presence,
    )
    .await;
    assert_eq!(a.remote_presence(TOPIC).len(), 1, "b's presence stays");

    // 5. A node membership has never heard of, claiming a full room.
    let stranger = PeerId { node: NodeId("f9".into()), incarnation: 1, epoch: 0, addr: addr(9) };
    let (counts, leaves) = (a.view().rejected.member_counts, a.view().rejected.leaves);
    forge(
        addr(0),
        &stranger,
        &[
            PeerMessage::Members { counts: vec![(TOPIC.into(), 1_000)], full: true },
            PeerMessage::Leaving { incarnation: 1, epoch: 0 },
        ],
        "the stranger's leave refused",
        || a.view().rejected.leaves > leaves,
    )
    .await;
    // Membership does not hold the stranger: its count is dropped as an unknown node's first frames
    // are, which is not counted as a refusal.
    assert_eq!(a.view().rejected.member_counts, counts);
    assert_eq!(a.remote_members(TOPIC), 1, "b's count stays");
    let entries = a.remote_presence(TOPIC);
    assert_eq!(entries.len(), 1, "b's presence stays");
    assert_eq!((entries[0].0.node.clone(), entries[0].1.key.as_str()), (real.node.clone(), "alice"));

    // b's own graceful leave still works at once.
    let leaves = a.view().rejected.leaves;
    b.depart().await;
    until("b's own leave applied", || a.remote_presence(TOPIC).is_empty()).await;
    assert_eq!(a.view().rejected.leaves, leaves, "b's own leave is not refused");
    b.shutdown();
    a.shutdown();
}
