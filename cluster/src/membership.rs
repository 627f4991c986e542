//! Membership and failure detection: foca (SWIM) driven over UDP on the cluster port.
//!
//! foca is sans-IO: this module owns its socket, its timers (a min-heap, so timers fire in order, as
//! foca requires) and the seed list, and turns foca's notifications into [`MembershipEvent`]s for the
//! cluster core. Seeds are `host:port` entries or DNS names (a Kubernetes headless Service resolves to
//! every pod); they are announced to until this node is known, and re-resolved periodically so new
//! pods and healed partitions are found. With a cluster secret every datagram is sealed and checked
//! ([`crate::secure::packet`]) before foca sees it.
//!
//! Healing without evicting healthy nodes:
//! - membership runs on a thread of its own ([`start`]), so the cluster runtime's bulk work never
//!   delays a probe's answer;
//! - when timers are due, what waits in the socket is read first, so a node that was itself starved
//!   does not suspect the peers whose acks and refutations it had not read yet;
//! - a node that declared every peer down (it was cut off) starts over with a clean view and a
//!   renewed epoch ([`Membership::isolated`]): its stale "down" updates and its "you are down"
//!   answers would otherwise make healthy peers declare each other, or themselves, down on the heal.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use foca::{Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use rand_foca::rngs::SmallRng;
use rand_foca::SeedableRng;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::ClusterConfig;
use crate::identity::PeerId;
use crate::secure::{packet, PeerAuth};
use crate::sync::{read, write};
use crate::transport::Datagrams;

/// What the core learns from the failure detector.
#[derive(Debug, Clone)]
pub(crate) enum MembershipEvent {
    Up(PeerId),
    Down(PeerId),
    /// The same node under a newer identity (a restart or a rejoin).
    Renamed(PeerId, PeerId),
    /// This node was declared down while alive and rejoined under `PeerId` (a new epoch).
    Rejoined(PeerId),
}

pub(crate) enum MembershipCommand {
    /// Tell the cluster this node leaves; answered once the announcement is sent.
    Leave(oneshot::Sender<()>),
}

/// A member as `/cluster` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub node: String,
    pub incarnation: u64,
    pub epoch: u64,
    pub addr: SocketAddr,
    pub state: &'static str,
}

type Swim = Foca<PeerId, PostcardCodec, SmallRng, NoCustomBroadcast>;

/// How often a node that found itself alone announces to where its peers were.
const REANNOUNCE: Duration = Duration::from_secs(1);

fn swim_config(config: &ClusterConfig) -> foca::Config {
    let mut swim = foca::Config::new_lan(NonZeroU32::new(16).unwrap_or(NonZeroU32::MIN));
    swim.probe_period = config.probe_period;
    swim.probe_rtt = config.probe_rtt;
    swim.suspect_to_down_after = config.suspect_to_down;
    // Room for the seal, so a sealed packet stays within 1,400 bytes (no IP fragmentation).
    swim.max_packet_size = NonZeroUsize::new(1400 - packet::OVERHEAD).unwrap_or(NonZeroUsize::MIN);
    swim.periodic_announce_to_down_members =
        Some(foca::PeriodicParams { frequency: Duration::from_secs(2), num_members: NonZeroUsize::MIN });
    swim.periodic_gossip = Some(foca::PeriodicParams {
        frequency: config.probe_period / 2,
        num_members: NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
    });
    swim
}

/// Runs membership on a thread and runtime of its own: probes, acks and suspicion timers are what
/// tells the cluster a node is alive, and they must not wait behind the cluster runtime's bulk work
/// (a CDC catch-up sealing and writing thousands of frames, a presence resync), which on a busy
/// machine delayed them by more than the failure detector's timeouts (a healthy node was declared
/// down and renamed, its links reset). Foca's work is small, so the thread mostly sleeps and the OS
/// scheduler wakes it promptly. The thread ends when the cluster stops.
pub(crate) fn start(membership: Membership) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new()
        .name("cluster-swim".into())
        .spawn(move || runtime.block_on(membership.run()))?;
    Ok(())
}

/// Resolves seed entries to addresses; a name without a port gets `default_port`.
pub(crate) async fn resolve_seeds(seeds: &[String], default_port: u16) -> Vec<SocketAddr> {
    let mut addrs = Vec::new();
    for seed in seeds {
        let seed = seed.trim();
        if seed.is_empty() {
            continue;
        }
        let target = if seed.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) {
            seed.to_owned()
        } else {
            format!("{seed}:{default_port}")
        };
        let found =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::lookup_host(target.clone())).await;
        match found {
            Ok(Ok(found)) => addrs.extend(found),
            Ok(Err(error)) => tracing::debug!(seed = %target, %error, "seed does not resolve (yet)"),
            Err(_) => tracing::debug!(seed = %target, "seed resolution timed out"),
        }
    }
    addrs.sort();
    addrs.dedup();
    addrs
}

pub(crate) struct Membership {
    pub config: ClusterConfig,
    /// The cluster port's datagrams (UDP, or the in-memory twin's).
    pub socket: Box<dyn Datagrams>,
    /// Seals what is sent and opens what is received (or passes it through, when insecure).
    pub auth: Arc<PeerAuth>,
    pub me: Arc<RwLock<PeerId>>,
    pub events: mpsc::Sender<MembershipEvent>,
    pub commands: mpsc::Receiver<MembershipCommand>,
    pub view: Arc<RwLock<Vec<MemberView>>>,
    pub ready: Arc<AtomicBool>,
    pub stop: CancellationToken,
}

impl Membership {
    pub(crate) async fn run(mut self) {
        let identity = read(&self.me).clone();
        let mut swim: Swim =
            Foca::new(identity, swim_config(&self.config), SmallRng::seed_from_u64(seed()), PostcardCodec);
        let mut runtime = foca::AccumulatingRuntime::new();
        let mut timers: BinaryHeap<Reverse<(Instant, Timer<PeerId>)>> = BinaryHeap::new();
        let mut buf = vec![0u8; 1500];
        let started = Instant::now();
        let mut joined = false;
        if self.config.seeds.is_empty() {
            self.ready.store(true, Ordering::Release);
        }
        let mut window = tokio::time::interval(Duration::from_millis(500));
        window.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let joined_flag = Arc::new(AtomicBool::new(false));
        let mut seeds = spawn_seed_resolver(&self.config, joined_flag.clone(), self.stop.clone());
        // Where the peers were before this node found itself alone (see [`Membership::isolated`]).
        let mut last_peers: Vec<SocketAddr> = Vec::new();
        let mut last_announce = Instant::now();
        loop {
            let next_timer = timers.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                _ = self.stop.cancelled() => return,
                received = self.socket.recv_from(&mut buf) => {
                    if let Ok((len, from)) = received {
                        self.receive(&mut swim, &buf[..len], from, &mut runtime);
                    }
                }
                _ = sleep_until(next_timer), if next_timer.is_some() => {
                    // What arrived while this loop was away is read before the timers it may answer: an
                    // ack or a refutation waiting in the socket must not become a suspicion (a node that
                    // was starved itself does not accuse the peers that answered it in time).
                    while let Ok((len, from)) = self.socket.try_recv_from(&mut buf) {
                        self.receive(&mut swim, &buf[..len], from, &mut runtime);
                    }
                    let now = Instant::now();
                    let mut latest = Duration::ZERO;
                    while let Some(Reverse((at, _))) = timers.peek() {
                        if *at > now {
                            break;
                        }
                        let Some(Reverse((due, timer))) = timers.pop() else { break };
                        latest = latest.max(now.saturating_duration_since(due));
                        if let Err(error) = swim.handle_timer(timer, &mut runtime) {
                            tracing::debug!(%error, "membership timer error");
                        }
                    }
                    if latest >= self.config.probe_rtt {
                        tracing::warn!(
                            late_ms = latest.as_millis() as u64,
                            "membership timers ran late: this node's cluster runtime was starved"
                        );
                    }
                }
                resolved = seeds.recv(), if !seeds.is_closed() => {
                    // Resolved on their own task: a slow DNS server never delays a probe.
                    let own = self.config.advertise;
                    for addr in resolved.unwrap_or_default() {
                        let known = swim.iter_members().any(|m| m.id().addr == addr);
                        if addr != own && !known {
                            let _ = swim.announce(PeerId::seed(addr), &mut runtime);
                        }
                    }
                }
                _ = window.tick() => {
                    joined_flag.store(joined, Ordering::Release);
                    if !joined && !last_peers.is_empty() && last_announce.elapsed() >= REANNOUNCE {
                        last_announce = Instant::now();
                        for addr in &last_peers {
                            let _ = swim.announce(PeerId::seed(*addr), &mut runtime);
                        }
                    }
                    if !self.ready.load(Ordering::Acquire) && started.elapsed() >= self.config.join_window {
                        tracing::info!("no peer answered within the join window: starting as the first node");
                        self.ready.store(true, Ordering::Release);
                    }
                }
                command = self.commands.recv() => match command {
                    Some(MembershipCommand::Leave(done)) => {
                        let _ = swim.leave_cluster(&mut runtime);
                        self.flush(&mut runtime, &mut timers, &mut joined, &swim).await;
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
            }
            if self.flush(&mut runtime, &mut timers, &mut joined, &swim).await {
                last_peers = self.isolated(&mut swim, &mut runtime, &mut timers).await;
                last_announce = Instant::now();
                self.flush(&mut runtime, &mut timers, &mut joined, &swim).await;
            }
        }
    }

    /// Opens a datagram and hands it to foca.
    fn receive(
        &self,
        swim: &mut Swim,
        packet: &[u8],
        from: SocketAddr,
        runtime: &mut foca::AccumulatingRuntime<PeerId>,
    ) {
        if let Some(data) = self.auth.open_packet(packet, from) {
            if let Err(error) = swim.handle_data(&data, runtime) {
                tracing::debug!(%error, "membership packet ignored");
            }
        }
    }

    /// Every peer was declared down by this node: it was cut off (or starved), or it is the last one.
    /// Its peers have most likely declared it down too, and what it would tell them once the network
    /// heals is stale: its backlog still carries "down" updates about each of them, which foca would
    /// gossip as soon as one peer takes this node back, and would make that peer declare a healthy
    /// third node down; and it would answer each peer's announcement with "you are down", making a
    /// healthy node renew its identity. So this node starts over as a new run (a renewed epoch, as a
    /// rejoin does) with a membership view and backlog of its own only, and announces to where its
    /// peers were (and to the seeds) until one answers. Returns those addresses.
    async fn isolated(
        &self,
        swim: &mut Swim,
        runtime: &mut foca::AccumulatingRuntime<PeerId>,
        timers: &mut BinaryHeap<Reverse<(Instant, Timer<PeerId>)>>,
    ) -> Vec<SocketAddr> {
        let own = self.config.advertise;
        let mut peers: Vec<SocketAddr> =
            swim.iter_membership_state().map(|m| m.id().addr).filter(|addr| *addr != own).collect();
        peers.sort();
        peers.dedup();
        let renewed = foca::Identity::renew(swim.identity()).unwrap_or_else(|| swim.identity().clone());
        tracing::warn!(
            identity = ?renewed,
            "every peer is down: this node was cut off or starved; it rejoins as a new run with a clean view"
        );
        *swim = Foca::new(
            renewed.clone(),
            swim_config(&self.config),
            SmallRng::seed_from_u64(seed()),
            PostcardCodec,
        );
        *runtime = foca::AccumulatingRuntime::new();
        // The old instance's timers would be taken by the new one (their tokens start over).
        timers.clear();
        *write(&self.me) = renewed.clone();
        let _ = self.events.send(MembershipEvent::Rejoined(renewed)).await;
        for addr in &peers {
            let _ = swim.announce(PeerId::seed(*addr), &mut *runtime);
        }
        peers
    }

    /// Sends what foca produced, schedules its timers and reports its notifications; `true` when this
    /// node just lost its last live peer (see [`Membership::isolated`]).
    async fn flush(
        &self,
        runtime: &mut foca::AccumulatingRuntime<PeerId>,
        timers: &mut BinaryHeap<Reverse<(Instant, Timer<PeerId>)>>,
        joined: &mut bool,
        swim: &Swim,
    ) -> bool {
        let mut alone = false;
        while let Some((to, data)) = runtime.to_send() {
            let _ = self.socket.send_to(&self.auth.seal_packet(&data), to.addr).await;
        }
        let now = Instant::now();
        while let Some((after, timer)) = runtime.to_schedule() {
            timers.push(Reverse((now + after, timer)));
        }
        while let Some(notification) = runtime.to_notify() {
            let event = match notification {
                OwnedNotification::MemberUp(id) => Some(MembershipEvent::Up(id)),
                OwnedNotification::MemberDown(id) => Some(MembershipEvent::Down(id)),
                OwnedNotification::Rename(old, new) => Some(MembershipEvent::Renamed(old, new)),
                OwnedNotification::Rejoin(id) => {
                    tracing::warn!(identity = ?id, "this node was declared down by the cluster: rejoined");
                    *write(&self.me) = id.clone();
                    Some(MembershipEvent::Rejoined(id))
                }
                OwnedNotification::Active => {
                    *joined = true;
                    self.ready.store(true, Ordering::Release);
                    None
                }
                OwnedNotification::Idle => {
                    *joined = false;
                    alone = true;
                    None
                }
                OwnedNotification::Defunct => None,
            };
            if let Some(event) = event {
                tracing::info!(?event, "membership");
                let _ = self.events.send(event).await;
            }
        }
        {
            let view = swim
                .iter_membership_state()
                .map(|member| MemberView {
                    node: member.id().node.0.clone(),
                    incarnation: member.id().incarnation,
                    epoch: member.id().epoch,
                    addr: member.id().addr,
                    state: match member.state() {
                        foca::State::Alive => "alive",
                        foca::State::Suspect => "suspect",
                        foca::State::Down => "down",
                    },
                })
                .collect();
            *write(&self.view) = view;
        }
        alone
    }
}

/// Resolves the seeds every second until this node has joined, then every `reseed_interval`, on a
/// task of its own; each round's addresses are sent to the membership loop.
fn spawn_seed_resolver(
    config: &ClusterConfig,
    joined: Arc<AtomicBool>,
    stop: CancellationToken,
) -> mpsc::Receiver<Vec<SocketAddr>> {
    let (tx, rx) = mpsc::channel(2);
    let (seeds, port, reseed) = (config.seeds.clone(), config.advertise.port(), config.reseed_interval);
    tokio::spawn(async move {
        loop {
            let resolved = resolve_seeds(&seeds, port).await;
            if tx.send(resolved).await.is_err() {
                return;
            }
            let wait = if joined.load(Ordering::Acquire) { reseed } else { Duration::from_secs(1) };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
    rx
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
