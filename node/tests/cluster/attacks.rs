//! Issue 16's attacks on the cluster port, replayed by a process that is not a node (it only reaches
//! the port, and uses the project's own wire types and a real foca): a forged `Hello` speaking for
//! `node-1` followed by a relay into a channel, an absurd member count, a spoofed `Leaving`, a forged
//! shipped change and acknowledgement, and a forged raft status and vote; a Noise handshake under the wrong secret; a SWIM announce of a fake member,
//! plain and sealed under the wrong key.
//!
//! With the cluster secret set (as every cluster suite runs) none of it has any effect and each is
//! counted as refused. The control runs the same attacks against a loopback cluster without a secret,
//! where they still work: that is the documented development mode, and it shows the attacks are real.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use bytes::Bytes;
use foca::{Foca, NoCustomBroadcast, PostcardCodec};
use futures_util::SinkExt;
use rand_foca::SeedableRng;
use realtime_cluster::secure::{handshake, packet};
use realtime_cluster::wire::{self, Lane, PeerMessage};
use realtime_cluster::{Keyring, NodeId, PeerId};
use realtime_node::peer_message::{NodeMessage, RelayPayload};
use realtime_proto::Vsn;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};

use crate::common::*;
use crate::support::cluster::CLUSTER_PORT;

const WRONG_SECRET: &str = "not-the-cluster-secret-0123456789abcdefghijklmnop";
const TOPIC: &str = "attack";

fn cluster_addr(cluster: &Cluster, i: usize) -> SocketAddr {
    format!("{}:{CLUSTER_PORT}", cluster.node(i).ip).parse().expect("cluster address")
}

/// Node `i`'s identity as `/cluster` on node `j` shows it (what an attacker can learn or guess).
async fn identity(cluster: &Cluster, of: usize, seen_by: usize) -> PeerId {
    let view = cluster.view(seen_by).await;
    let name = format!("node-{of}");
    let member = view["members"]
        .as_array()
        .and_then(|members| members.iter().find(|m| m["node"] == name.as_str()))
        .unwrap_or_else(|| panic!("{name} not in {view}"))
        .clone();
    PeerId {
        node: NodeId(name),
        incarnation: member["incarnation"].as_u64().unwrap_or(0),
        epoch: member["epoch"].as_u64().unwrap_or(0),
        addr: member["addr"].as_str().and_then(|a| a.parse().ok()).expect("member address"),
    }
}

/// Speaks for `impersonated` over a plain connection to `to`: a relay into the test channel, a
/// 4,000,000,000 member count, a `Leaving`, and (on the control lane) a raft status. Returns whether
/// the node kept the connection open afterwards (a refusing node closes it at once).
///
/// Its frames carry sequence numbers far ahead of any real node's, so without a secret its
/// connection takes over from the impersonated node's own (which is then refused as older: one
/// more thing a cluster without a secret cannot prevent).
async fn forge_frames(to: SocketAddr, impersonated: &PeerId, from_ip: &str) -> bool {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{from_ip}:0").parse().expect("attacker address")).expect("bind attacker");
    let Ok(stream) = socket.connect(to).await else { return false };
    let mut frames = FramedWrite::new(stream, LengthDelimitedCodec::new());
    let forged = [
        PeerMessage::Hello { from: impersonated.clone(), lane: Lane::Data },
        PeerMessage::Relay {
            topic: format!("public:{TOPIC}"),
            body: RelayPayload::User {
                event: "forged".into(),
                binary: false,
                data: br#"{"reset_password_at":"https://evil.example"}"#.to_vec(),
                meta: None,
            }
            .encode()
            .expect("encode"),
        },
        PeerMessage::Members { counts: vec![(format!("public:{TOPIC}"), 4_000_000_000)], full: true },
        PeerMessage::Leaving { incarnation: impersonated.incarnation, epoch: impersonated.epoch },
        // A forged shipped change and a forged acknowledgement (what forged rows and positions rode on).
        PeerMessage::Node {
            body: NodeMessage::CdcShipped { body: vec![0xff; 64] }.encode().expect("encode"),
        },
        PeerMessage::Node {
            body: NodeMessage::CdcDelivered { lsn: u64::MAX, gap: true }.encode().expect("encode"),
        },
    ];
    for msg in &forged {
        let frame = wire::sequenced(forged_seq(), &wire::encode(msg).expect("encode"));
        if frames.send(frame).await.is_err() {
            return false;
        }
    }
    let mut stream = frames.into_inner();
    let mut buf = [0u8; 64];
    // A node that took the frames keeps the connection open (and acknowledges them on it); one that
    // refused closed it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return true,
            Ok(Ok(n)) if n > 0 => continue,
            Ok(_) => return false,
        }
    }
}

/// A forged raft status on the control lane, as `impersonated`.
async fn forge_control(to: SocketAddr, impersonated: &PeerId) {
    let Ok(stream) = TcpStream::connect(to).await else { return };
    let mut frames = FramedWrite::new(stream, LengthDelimitedCodec::new());
    for msg in [
        PeerMessage::Hello { from: impersonated.clone(), lane: Lane::Control },
        PeerMessage::RaftStatus {
            initialized: false,
            leader: None,
            can_lead: true,
            hears_leader: false,
            hears: Vec::new(),
        },
        PeerMessage::RaftRequest { id: 1, body: br#"{"Vote":{"vote":{"leader_id":{"term":99}}}}"#.to_vec() },
    ] {
        let _ = frames.send(wire::sequenced(forged_seq(), &wire::encode(&msg).expect("encode"))).await;
    }
}

/// A sequence number ahead of any a real node has given out.
fn forged_seq() -> u64 {
    (1 << 62) + realtime_cluster::link::next_seq()
}

/// A Noise handshake under the wrong secret: `true` if the node completed it.
async fn wrong_key_handshake(to: SocketAddr) -> bool {
    let wrong = Keyring::parse(WRONG_SECRET).expect("keyring");
    let Ok(mut stream) = TcpStream::connect(to).await else { return false };
    matches!(
        tokio::time::timeout(
            Duration::from_secs(5),
            handshake::initiate(&mut stream, Some(&wrong), wire::MAX_FRAME_BYTES)
        )
        .await,
        Ok(Ok(_))
    )
}

type Swim = Foca<PeerId, PostcardCodec, rand_foca::rngs::SmallRng, NoCustomBroadcast>;

/// A fake member `intruder` at `from_ip` announces itself to `to` with a real foca and answers what
/// comes back for `run_for`; with `seal_with`, every packet is sealed under that (wrong) key.
async fn announce_intruder(to: SocketAddr, from_ip: &str, seal_with: Option<&Keyring>, run_for: Duration) {
    let addr: SocketAddr = format!("{from_ip}:{CLUSTER_PORT}").parse().expect("intruder address");
    let socket = UdpSocket::bind(addr).await.expect("bind intruder");
    let me = PeerId { node: NodeId("intruder".into()), incarnation: 1, epoch: 0, addr };
    let config = foca::Config::new_lan(NonZeroU32::new(16).expect("nonzero"));
    let mut swim: Swim = Foca::new(me, config, rand_foca::rngs::SmallRng::seed_from_u64(7), PostcardCodec);
    let mut runtime = foca::AccumulatingRuntime::new();
    let seed = PeerId { node: NodeId(format!("seed {to}")), incarnation: 0, epoch: 0, addr: to };
    swim.announce(seed, &mut runtime).expect("announce");
    let deadline = Instant::now() + run_for;
    let mut buf = vec![0u8; 1500];
    loop {
        while let Some((dst, data)) = runtime.to_send() {
            let data = match seal_with {
                Some(keys) => Bytes::from(packet::seal(keys, &data)),
                None => data,
            };
            let _ = socket.send_to(&data, dst.addr).await;
        }
        while runtime.to_schedule().is_some() {}
        while runtime.to_notify().is_some() {}
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        if let Ok(Ok((len, _))) = tokio::time::timeout(left, socket.recv_from(&mut buf)).await {
            // What a secured node sends back (nothing, or sealed packets) cannot be read: ignored.
            let _ = swim.handle_data(&buf[..len], &mut runtime);
        }
    }
}

/// Every member node `i` lists, by name.
async fn member_names(cluster: &Cluster, i: usize) -> Vec<String> {
    let view = cluster.view(i).await;
    let mut names: Vec<String> = view["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["node"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// The raft leader node `i` reports, once there is one.
async fn raft_leader(cluster: &Cluster, i: usize) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let leader = cluster.view(i).await["raft"]["leader"].clone();
        if leader.is_string() {
            return leader;
        }
        assert!(Instant::now() < deadline, "no raft leader within {T:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metrics(cluster: &Cluster, i: usize) -> String {
    let node = cluster.node(i);
    let url = format!("http://{}:{}/metrics", node.ip, node.port);
    reqwest::get(url).await.expect("metrics").text().await.expect("metrics body")
}

/// Whether a broadcast `forged` reaches `c` within `wait`.
async fn got_forged(c: &mut Client, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while let Some(frame) = c.recv(deadline.saturating_duration_since(Instant::now())).await {
        if let Frame::Text(v, _) = frame {
            if v["event"] == "broadcast" && v["payload"]["event"] == "forged" {
                return true;
            }
        }
    }
    false
}

/// Two clients in the test channel, on nodes 0 and 1, each tracked, each seeing both keys.
async fn two_members(cluster: &Cluster) -> (Vec<Client>, Vec<PresenceModel>) {
    let mut clients = Vec::new();
    for i in 0..2 {
        let mut c = cluster.client(i, Vsn::V1).await;
        let jr = join(&mut c, TOPIC, &format!("key-{i}")).await;
        track(&mut c, &jr, TOPIC, json!({"node": i})).await;
        clients.push(c);
    }
    let mut models = vec![PresenceModel::default(); 2];
    for (c, m) in clients.iter_mut().zip(models.iter_mut()) {
        presence_until(c, m, T, "both keys", |m| m.keys() == keys(&[0, 1])).await;
    }
    (clients, models)
}

#[tokio::test]
async fn t10_without_the_secret_nothing_reaches_or_changes_the_cluster() {
    let cluster = Cluster::start(181, 3, &["--max-channel-members", "3"]).await;
    let (mut clients, mut models) = two_members(&cluster).await;
    let leader = raft_leader(&cluster, 0).await;
    let term = cluster.view(0).await["raft"]["term"].clone();
    let node1 = identity(&cluster, 1, 0).await;

    let mut kept_open = Vec::new();
    for i in 0..3 {
        kept_open.push(forge_frames(cluster_addr(&cluster, i), &node1, "127.0.0.186").await);
        forge_control(cluster_addr(&cluster, i), &node1).await;
        assert!(!wrong_key_handshake(cluster_addr(&cluster, i)).await, "node {i} accepted a wrong key");
    }
    assert_eq!(kept_open, [false; 3], "every node closes a connection that does not prove the secret");
    let wrong = Keyring::parse(WRONG_SECRET).expect("keyring");
    announce_intruder(cluster_addr(&cluster, 0), "127.0.0.187", None, Duration::from_secs(2)).await;
    announce_intruder(cluster_addr(&cluster, 1), "127.0.0.188", Some(&wrong), Duration::from_secs(2)).await;

    // No delivery: the relay never reached the member on node 0 (nor node 2's, had it one).
    assert!(!got_forged(&mut clients[0], Duration::from_secs(1)).await, "a forged relay was delivered");
    // No state change: node 1's presence is still seen on node 0 (the spoofed Leaving did nothing), a
    // third member may still join (the absurd count was not taken), no intruder, same raft leader.
    let mut late = cluster.client(2, Vsn::V1).await;
    let jr = join(&mut late, TOPIC, "key-2").await;
    track(&mut late, &jr, TOPIC, json!({"node": 2})).await;
    presence_until(&mut clients[0], &mut models[0], T, "all three keys", |m| m.keys() == keys(&[0, 1, 2]))
        .await;
    for i in 0..3 {
        let names = member_names(&cluster, i).await;
        assert!(!names.iter().any(|n| n == "intruder"), "node {i} lists the intruder: {names:?}");
    }
    for i in 0..3 {
        let raft = cluster.view(i).await["raft"].clone();
        assert_eq!((&raft["leader"], &raft["term"]), (&leader, &term), "node {i}'s raft changed: {raft}");
    }
    // Each attempt is counted as refused where it arrived.
    let value = |body: &str, kind: &str| {
        crate::support::raw::metric_sum(
            body,
            &format!("realtime_cluster_peer_refused_total{{kind=\"{kind}\"}}"),
        )
        .unwrap_or(0.0)
    };
    for i in 0..3 {
        let body = metrics(&cluster, i).await;
        // The forged frames, the forged control link and the wrong-key handshake.
        assert!(value(&body, "link") >= 3.0, "node {i}: {body}");
    }
    for i in 0..2 {
        let body = metrics(&cluster, i).await;
        assert!(value(&body, "packet") >= 1.0, "node {i} counted no refused packet: {body}");
    }
}

#[tokio::test]
async fn t20_control_a_loopback_cluster_without_a_secret_trusts_every_packet() {
    let cluster = Cluster::start_insecure(191, 2, &[]).await;
    let (mut clients, _) = two_members(&cluster).await;
    let node1 = identity(&cluster, 1, 0).await;
    assert!(forge_frames(cluster_addr(&cluster, 0), &node1, "127.0.0.196").await);
    assert!(got_forged(&mut clients[0], T).await, "without a secret the forged relay is delivered");
    announce_intruder(cluster_addr(&cluster, 0), "127.0.0.197", None, Duration::from_secs(3)).await;
    let names = member_names(&cluster, 0).await;
    assert!(names.iter().any(|n| n == "intruder"), "without a secret a fake member joins: {names:?}");
    assert_eq!(cluster.view(0).await["secured"], false);
}
