//! The cluster's wiring, in process: three `ClusterHandle`s on loopback addresses (127.0.0.21x, their
//! own port) find each other through seeds, replicate member counts, relay a broadcast to every peer, replicate
//! presence, and drop a stopped node's presences (gracefully at once; on a crash after the detector).
//! Every wait is bounded; measured times are printed, not asserted.

use std::time::{Duration, Instant};

use realtime_cluster::presence::{Entry, TopicChange};
use realtime_cluster::{ClusterConfig, ClusterEvent, ClusterHandle, NodeId};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(10);

fn addr(i: usize) -> std::net::SocketAddr {
    format!("127.0.0.{}:4700", 210 + i).parse().expect("address")
}

async fn start(i: usize, size: usize) -> (ClusterHandle, mpsc::Receiver<ClusterEvent>) {
    let seeds = (0..size).map(|j| addr(j).to_string()).collect();
    let config = ClusterConfig::new(NodeId(format!("w{i}")), addr(i), addr(i), seeds);
    ClusterHandle::start(config).await.expect("cluster starts")
}

async fn formed(handles: &[&ClusterHandle], size: usize) {
    let deadline = Instant::now() + T;
    loop {
        let all = handles.iter().all(|h| {
            let view = h.view();
            view.ready && view.members.iter().filter(|m| m.state == "alive").count() == size - 1
        });
        if all {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not formed: {:?}",
            handles.iter().map(|h| h.view()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next event matching `pick`, skipping others; panics after `T`.
async fn next<R>(
    events: &mut mpsc::Receiver<ClusterEvent>,
    what: &str,
    pick: impl Fn(&ClusterEvent) -> Option<R>,
) -> R {
    let deadline = Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Some(event)) => {
                if let Some(found) = pick(&event) {
                    return found;
                }
            }
            Ok(None) => panic!("{what}: events ended"),
            Err(_) => panic!("{what}: not within {T:?}"),
        }
    }
}

fn presence(event: &ClusterEvent) -> Option<Vec<TopicChange>> {
    match event {
        ClusterEvent::Presence(changes) => Some(changes.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_handles_relay_replicate_and_forget() {
    let (a, mut a_events) = start(0, 3).await;
    let (b, mut b_events) = start(1, 3).await;
    let (c, mut c_events) = start(2, 3).await;
    formed(&[&a, &b, &c], 3).await;

    // `b`'s member count reaches `a`; a relay from `a` goes to both peers, members known or not (a
    // member may have joined a moment before its count arrives).
    b.set_members("public:room", 1);
    let deadline = Instant::now() + T;
    while a.remote_members("public:room") != 1 {
        assert!(Instant::now() < deadline, "member count never reached a");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sent = a.relay("public:room", || "{\"n\":1}".as_bytes().to_vec());
    assert_eq!(sent, 2, "relayed to both peers");
    for events in [&mut b_events, &mut c_events] {
        let got = next(events, "relay", |e| match e {
            ClusterEvent::Relay { topic, body } => Some((topic.clone(), body.clone())),
            _ => None,
        })
        .await;
        assert_eq!(got, ("public:room".into(), b"{\"n\":1}".to_vec()));
    }

    // A presence tracked on `c` shows up on `a` and `b`.
    let tracked = Instant::now();
    let entry = Entry { key: "k".into(), phx_ref: "R1".into(), meta: "{}".into() };
    c.presence_put("public:room", 9, entry.clone());
    for events in [&mut a_events, &mut b_events] {
        let changes = next(events, "presence join", presence).await;
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].joins.len(), 1);
        assert_eq!(changes[0].joins[0].1, entry);
    }
    println!("presence replicated to both peers in {:?}", tracked.elapsed());
    assert_eq!(a.remote_presence("public:room").len(), 1);

    // A graceful leave removes it at once; the detector has nothing to do with it.
    let left = Instant::now();
    c.leave().await;
    c.shutdown();
    for events in [&mut a_events, &mut b_events] {
        let changes = next(events, "presence leave", presence).await;
        assert_eq!(changes[0].leaves.len(), 1);
    }
    println!("a leaving node's presence gone from both peers in {:?}", left.elapsed());
    assert!(a.remote_presence("public:room").is_empty());

    // A crash (the runtime stopped without leaving) is found by the failure detector.
    let entry = Entry { key: "k2".into(), phx_ref: "R2".into(), meta: "{}".into() };
    b.presence_put("public:lobby", 1, entry);
    next(&mut a_events, "presence join from b", presence).await;
    let crashed = Instant::now();
    b.shutdown();
    let changes = next(&mut a_events, "crashed node's presence leave", presence).await;
    assert_eq!(changes[0].leaves.len(), 1);
    println!("a crashed node's presence gone after {:?} (failure detector)", crashed.elapsed());
    a.shutdown();
}
