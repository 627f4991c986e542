//! Peer links: one outbound TCP connection per peer and [`Lane`], carrying length-delimited frames.
//!
//! Each node sends frames on the links it opened and reads frames on the ones it accepted
//! ([`accept`]), so a link is a one-way ordered pipe: frames from one publisher arrive in the order
//! they were offered. The send queue is bounded in bytes: a peer that cannot keep up (or cannot be
//! reached) has its queue dropped and its link cut, and the reconnect resynchronises it (`LinkUp` →
//! full member counts and presence snapshot), so a slow peer costs a bounded amount of memory and
//! never holds back the others.
//!
//! Progress is measured end to end, not at the kernel: the accepting side acknowledges what arrived
//! on the same connection ([`accept`] says why there), and the dialling side keeps what it wrote and
//! was not yet acknowledged ([`progress::InFlight`], shown in `/cluster` as unacked bytes and the
//! oldest unacked frame's age). A link whose oldest unacknowledged write is older than
//! [`STALL_AFTER`] is stalled even while the kernel takes every write and SWIM holds the peer alive
//! (a one-way loss: indirect probes route around it, TCP retransmits into the void): it is cut and
//! reconnected, counted (`stalls`), logged once, and its peer counts as unreachable for delivery
//! ([`Link::is_stalled`]: relays and Postgres Changes skip it, the CDC leader stops holding the slot
//! for it) until a new connection's frames are acknowledged.
//!
//! Every frame carries a sequence number from one counter per process ([`next_seq`]), so the
//! accepting side can drop what is older than something it already delivered from the same sender
//! and lane, and close a superseded connection ([`progress::Order`]): frames held up on an old
//! connection never arrive after newer ones sent on its replacement.
//!
//! With a cluster secret every connection starts with a Noise handshake ([`crate::secure`]): a peer
//! that cannot prove it holds the secret is refused (and counted) before any frame is read, and
//! every frame after it is encrypted and authenticated.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use crate::identity::PeerId;
use crate::runtimes::Runtimes;
use crate::secure::codec::PeerCodec;
use crate::secure::{handshake, PeerAuth};
use crate::sync::{lock, read};
use crate::transport::{ReadHalf, Transport, WriteHalf};
use crate::wire::{self, Lane, PeerMessage, MAX_FRAME_BYTES};

mod accept;
pub mod progress;

pub(crate) use accept::{accept, Accepting, Arrivals, Inbound, Inboxes};
use progress::InFlight;

/// How long a link may go without progress before it is stalled: a batch of frames not written to
/// the kernel, or written and not acknowledged by the peer, for this long.
pub const STALL_AFTER: Duration = Duration::from_secs(5);
/// How often a link checks its oldest unacknowledged write against [`STALL_AFTER`].
const STALL_CHECK: Duration = Duration::from_millis(250);
/// How long a new connection has to complete the handshake and say `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Frames written per flush.
const BATCH: usize = 256;

/// The last sequence number given to a frame by this process (see [`next_seq`]).
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// The next frame's sequence number: one counter for every link of this process (a node run), taken
/// when a frame is written, so a frame written later (on any connection) always has a larger one.
/// Public for tests that speak the link format themselves.
pub fn next_seq() -> u64 {
    SEQUENCE.fetch_add(1, Ordering::Relaxed) + 1
}

/// What a link tells the cluster core about itself.
#[derive(Debug)]
pub(crate) enum LinkEvent {
    /// Connected (again): the peer may have missed anything sent before, resynchronise it.
    Up { peer: PeerId, lane: Lane },
}

/// The sending side of one link; cheap to share between threads.
pub struct Link {
    pub peer: PeerId,
    pub lane: Lane,
    /// The local address connections are made from (see [`spawn`]).
    source: Option<IpAddr>,
    transport: Arc<dyn Transport>,
    queue: mpsc::UnboundedSender<Bytes>,
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    cut: AtomicBool,
    cut_signal: Notify,
    connected: AtomicBool,
    cuts: AtomicU64,
    dropped: AtomicU64,
    /// What the current connection wrote and the peer has not acknowledged.
    in_flight: Mutex<InFlight>,
    /// Stalled and not yet making progress again: the peer is unreachable for delivery.
    stalled: AtomicBool,
    /// Times the link stalled (each stall episode once).
    stalls: AtomicU64,
    stop: CancellationToken,
}

impl Link {
    /// Queues a frame; `false` when it was dropped (link being cut or over its bound, which cuts it).
    pub fn offer(&self, frame: Bytes) -> bool {
        if self.cut.load(Ordering::Acquire) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let len = frame.len();
        let queued = self.queued_bytes.fetch_add(len, Ordering::AcqRel) + len;
        if queued > self.max_bytes || self.queue.send(frame).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            if !self.cut.swap(true, Ordering::AcqRel) {
                self.cuts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = ?self.peer, lane = ?self.lane, queued, "peer link over its queue bound: cut");
                self.cut_signal.notify_one();
            }
            return false;
        }
        true
    }

    /// Encodes and queues a message.
    pub fn send(&self, msg: &PeerMessage) -> bool {
        match wire::encode(msg) {
            Ok(frame) => self.offer(frame),
            Err(error) => {
                tracing::error!(%error, "cannot encode a peer message");
                false
            }
        }
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Acquire)
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Times the link was cut for being over its bound or stalled.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::Relaxed)
    }

    /// Whether the link stalled and has not made progress since: its peer is unreachable for
    /// delivery (relays and shipments skip it) whatever membership says.
    pub fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::Acquire)
    }

    /// Times the link stalled.
    pub fn stalls(&self) -> u64 {
        self.stalls.load(Ordering::Relaxed)
    }

    /// Bytes written on the current connection and not acknowledged by the peer.
    pub fn unacked_bytes(&self) -> usize {
        lock(&self.in_flight).bytes()
    }

    /// How long the oldest write not acknowledged by the peer has waited (zero: none).
    pub fn oldest_unacked(&self) -> Duration {
        lock(&self.in_flight).oldest(Instant::now())
    }

    /// The peer acknowledged every frame up to `seq`.
    fn on_ack(&self, seq: u64) {
        let progressed = lock(&self.in_flight).acked(seq);
        if progressed && self.stalled.swap(false, Ordering::AcqRel) {
            tracing::info!(peer = ?self.peer, lane = ?self.lane, "peer link makes progress again: peer reachable");
        }
    }

    /// No progress for [`STALL_AFTER`]: counted and logged once per stall, until progress again.
    fn stall(&self, why: &'static str) {
        self.cuts.fetch_add(1, Ordering::Relaxed);
        self.cut.store(true, Ordering::Release);
        if !self.stalled.swap(true, Ordering::AcqRel) {
            self.stalls.fetch_add(1, Ordering::Relaxed);
            let (unacked_bytes, oldest_unacked) = {
                let in_flight = lock(&self.in_flight);
                (in_flight.bytes(), in_flight.oldest(Instant::now()))
            };
            tracing::warn!(
                peer = ?self.peer,
                lane = ?self.lane,
                why,
                unacked_bytes,
                ?oldest_unacked,
                "peer link stalled: cut; peer unreachable for delivery until the link makes progress"
            );
        }
    }

    /// Frames dropped (while cut or over the bound).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Stops the link task; queued frames are dropped.
    pub fn close(&self) {
        self.stop.cancel();
    }
}

/// What every link of a node dials with.
#[derive(Clone)]
pub(crate) struct Dialer {
    /// This node's identity, read at every (re)connect for the `Hello`.
    pub me: Arc<RwLock<PeerId>>,
    /// The address outgoing connections leave from: the node's cluster bind address when it names
    /// one, so a peer (and a firewall rule between two nodes) sees the same address for this node's
    /// incoming and outgoing traffic. `None` leaves the choice to the kernel (a wildcard bind).
    pub source: Option<IpAddr>,
    pub transport: Arc<dyn Transport>,
    pub auth: Arc<PeerAuth>,
    /// Where a link's connection is dialled, written and its acknowledgements read: a control link
    /// on the raft runtime, so a heartbeat never waits behind bulk work (see [`crate::runtimes`]).
    pub runtimes: Runtimes,
}

/// Starts a link to `peer` on `lane`, its queue bounded by `max_bytes`.
pub(crate) fn spawn(
    peer: PeerId,
    lane: Lane,
    dialer: Dialer,
    max_bytes: usize,
    events: mpsc::Sender<LinkEvent>,
) -> Arc<Link> {
    let Dialer { me, source, transport, auth, runtimes } = dialer;
    let (queue, rx) = mpsc::unbounded_channel();
    let link = Arc::new(Link {
        peer,
        lane,
        source,
        transport,
        queue,
        queued_bytes: AtomicUsize::new(0),
        max_bytes,
        cut: AtomicBool::new(false),
        cut_signal: Notify::new(),
        connected: AtomicBool::new(false),
        cuts: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        in_flight: Mutex::default(),
        stalled: AtomicBool::new(false),
        stalls: AtomicU64::new(0),
        stop: CancellationToken::new(),
    });
    let runtime = match lane {
        Lane::Control => &runtimes.control,
        Lane::Data => &runtimes.data,
    };
    runtime.spawn(run(link.clone(), rx, me, events, auth));
    link
}

enum Ended {
    /// The cluster secret changed: the connection was closed cleanly once the peer acknowledged
    /// everything written on it, reconnect at once under the new sending key; the queue is kept.
    Rekey,
    /// Over the bound: drop the queue, reconnect.
    Cut,
    /// No progress for [`STALL_AFTER`] (the reason): drop the queue, reconnect.
    Stalled(&'static str),
    /// The connection failed.
    Broken,
    /// The link was closed.
    Stopped,
}

async fn run(
    link: Arc<Link>,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    me: Arc<RwLock<PeerId>>,
    events: mpsc::Sender<LinkEvent>,
    auth: Arc<PeerAuth>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let opened = tokio::select! {
            _ = link.stop.cancelled() => return,
            opened = open(&link, &me, &auth) => opened,
        };
        if let Some(mut connection) = opened {
            let mut rotations = auth.rotations();
            rotations.mark_unchanged();
            backoff = BACKOFF_MIN;
            link.connected.store(true, Ordering::Release);
            tracing::debug!(peer = ?link.peer, lane = ?link.lane, "peer link up");
            let _ = events.send(LinkEvent::Up { peer: link.peer.clone(), lane: link.lane }).await;
            let ended = pump(&link, &mut rx, &mut connection, &mut rotations).await;
            link.connected.store(false, Ordering::Release);
            lock(&link.in_flight).clear();
            match ended {
                Ended::Stopped => return,
                Ended::Rekey => {
                    tracing::info!(peer = ?link.peer, lane = ?link.lane, "cluster secret changed: peer link reopened");
                    continue;
                }
                Ended::Cut => discard(&link, &mut rx),
                Ended::Stalled(why) => {
                    link.stall(why);
                    discard(&link, &mut rx);
                }
                Ended::Broken => tracing::debug!(peer = ?link.peer, lane = ?link.lane, "peer link broken"),
            }
        }
        if link.cut.load(Ordering::Acquire) {
            discard(&link, &mut rx);
        }
        tokio::select! {
            _ = link.stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection of a link: frames go out, acknowledgements come back.
struct Connection {
    frames: FramedWrite<WriteHalf, PeerCodec>,
    acks: FramedRead<ReadHalf, PeerCodec>,
}

/// Connects, proves to the peer (and has it prove) that both hold the cluster secret, and says
/// `Hello`; `None` when any step fails.
async fn open(link: &Link, me: &RwLock<PeerId>, auth: &PeerAuth) -> Option<Connection> {
    let dialled = link.transport.dial(link.peer.addr, link.source);
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, dialled).await.ok()?.ok()?;
    let keys = auth.keys();
    let codec = match tokio::time::timeout(
        HELLO_TIMEOUT,
        handshake::initiate(&mut stream, keys.as_deref(), MAX_FRAME_BYTES),
    )
    .await
    {
        Ok(Ok(codec)) => codec,
        Ok(Err(error @ handshake::HandshakeError::Refused)) => {
            auth.refused.links.fetch_add(1, Ordering::Relaxed);
            auth.log_refusal("a peer link we dialled", link.peer.addr, &error);
            return None;
        }
        Ok(Err(error)) => {
            tracing::debug!(peer = ?link.peer, %error, "peer handshake failed");
            return None;
        }
        Err(_) => return None,
    };
    let (reading, writing) = stream.into_halves();
    let acks = FramedRead::new(reading, codec.twin());
    let mut frames = FramedWrite::new(writing, codec);
    let hello = PeerMessage::Hello { from: read(me).clone(), lane: link.lane };
    let seq = next_seq();
    let frame = wire::sequenced(seq, &wire::encode(&hello).ok()?);
    let (len, at) = (frame.len(), Instant::now());
    match tokio::time::timeout(STALL_AFTER, SinkExt::<Bytes>::send(&mut frames, frame)).await {
        Ok(Ok(())) => {
            // Its acknowledgement is the first sign this connection makes progress.
            lock(&link.in_flight).written(seq, len, at);
            Some(Connection { frames, acks })
        }
        _ => None,
    }
}

/// Drops everything queued and lets new frames in again.
fn discard(link: &Link, rx: &mut mpsc::UnboundedReceiver<Bytes>) {
    while let Ok(frame) = rx.try_recv() {
        link.queued_bytes.fetch_sub(frame.len(), Ordering::AcqRel);
        link.dropped.fetch_add(1, Ordering::Relaxed);
    }
    link.cut.store(false, Ordering::Release);
}

async fn pump(
    link: &Link,
    rx: &mut mpsc::UnboundedReceiver<Bytes>,
    connection: &mut Connection,
    rotations: &mut tokio::sync::watch::Receiver<u64>,
) -> Ended {
    let mut check = tokio::time::interval(STALL_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let Connection { frames: framed, acks } = connection;
    loop {
        let first = tokio::select! {
            biased;
            _ = link.stop.cancelled() => return Ended::Stopped,
            _ = link.cut_signal.notified() => return Ended::Cut,
            Ok(()) = rotations.changed() => {
                // Between batches, so nothing is half-written. The new connection will supersede
                // this one at the peer (its reader is stopped), so first wait until the peer has
                // acknowledged everything written here (within the stall bound), then close and redial.
                let drained = async {
                    while lock(&link.in_flight).bytes() > 0 {
                        match acks.next().await.map(|ack| ack.ok().and_then(|frame| wire::read_ack(&frame).ok())) {
                            Some(Some(seq)) => link.on_ack(seq),
                            _ => break,
                        }
                    }
                };
                let _ = tokio::time::timeout(STALL_AFTER, drained).await;
                let _ = tokio::time::timeout(STALL_AFTER, SinkExt::<Bytes>::close(framed)).await;
                return Ended::Rekey;
            }
            ack = acks.next() => {
                let seq = match ack {
                    Some(Ok(frame)) => wire::read_ack(&frame).map_err(|error| error.to_string()),
                    Some(Err(error)) => Err(error.to_string()),
                    // The peer closed the connection.
                    None => return Ended::Broken,
                };
                match seq {
                    Ok(seq) => link.on_ack(seq),
                    Err(error) => {
                        tracing::warn!(peer = ?link.peer, lane = ?link.lane, %error, "unreadable peer acknowledgement: link closed");
                        return Ended::Broken;
                    }
                }
                continue;
            }
            _ = check.tick() => {
                if lock(&link.in_flight).stalled(Instant::now(), STALL_AFTER) {
                    return Ended::Stalled("frames written but not acknowledged");
                }
                continue;
            }
            frame = rx.recv() => match frame {
                Some(frame) => frame,
                None => return Ended::Stopped,
            },
        };
        let started = Instant::now();
        let write = async {
            let mut next = Some(first);
            let (mut written, mut bytes, mut last) = (0, 0, 0);
            while let Some(frame) = next.take() {
                link.queued_bytes.fetch_sub(frame.len(), Ordering::AcqRel);
                last = next_seq();
                let frame = wire::sequenced(last, &frame);
                bytes += frame.len();
                SinkExt::<Bytes>::feed(framed, frame).await?;
                written += 1;
                if written < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            SinkExt::<Bytes>::flush(framed).await.map(|()| (last, bytes))
        };
        let written = tokio::select! {
            written = tokio::time::timeout(STALL_AFTER, write) => written,
            // Over its bound while a write is stuck: cut now, not after the write timeout.
            _ = link.cut_signal.notified() => return Ended::Cut,
            _ = link.stop.cancelled() => return Ended::Stopped,
        };
        match written {
            Ok(Ok((last, bytes))) => lock(&link.in_flight).written(last, bytes, started),
            Ok(Err(_)) => return Ended::Broken,
            Err(_) => return Ended::Stalled("frames not taken by the kernel"),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use crate::transport::Network;

    use super::*;
    use crate::NodeId;

    fn dialer(me: Arc<RwLock<PeerId>>, auth: Arc<PeerAuth>) -> Dialer {
        Dialer { me, source: None, transport: Arc::new(Network), auth, runtimes: Runtimes::current() }
    }

    fn peer(addr: std::net::SocketAddr) -> PeerId {
        PeerId { node: NodeId("slow".into()), incarnation: 1, epoch: 0, addr }
    }

    /// A peer that accepts and then never reads: the link's queue fills to its bound, the link is cut
    /// (its queue dropped, memory back to nothing), and it reconnects so the peer can be resynced.
    #[tokio::test]
    async fn a_peer_that_does_not_read_is_cut_and_reconnected() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut streams = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                streams.push(stream); // held open, never read
            }
        });
        let me = Arc::new(RwLock::new(PeerId { node: NodeId("me".into()), ..peer(addr) }));
        let (events_tx, mut events) = mpsc::channel(16);
        let max = 1 << 20;
        let link = spawn(peer(addr), Lane::Data, dialer(me, Arc::new(PeerAuth::insecure())), max, events_tx);
        let first = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap();
        assert!(matches!(first, Some(LinkEvent::Up { lane: Lane::Data, .. })));

        let frame = Bytes::from(vec![7u8; 64 << 10]);
        let mut offered = 0usize;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while link.cuts() == 0 {
            assert!(std::time::Instant::now() < deadline, "never cut; {} bytes queued", link.queued_bytes());
            if link.offer(frame.clone()) {
                offered += 1;
            }
            assert!(link.queued_bytes() <= max, "the queue stays within its bound");
            tokio::task::yield_now().await;
        }
        assert!(offered > 0 && link.dropped() > 0);
        // The cut drops the queue and reconnects: the driver hears `Up` again and resynchronises.
        let again = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap();
        assert!(matches!(again, Some(LinkEvent::Up { .. })));
        assert!(link.queued_bytes() <= max);
        link.close();
        held.abort();
    }

    /// A peer that reads everything (the kernel takes every write) but never acknowledges, as when
    /// its packets back are dropped: the link stalls within the bound, once, is cut and reconnects;
    /// a peer that acknowledges (the real accepting side) clears it.
    #[tokio::test]
    async fn a_link_without_acknowledgements_stalls_and_progress_clears_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let silent = tokio::spawn(async move {
            let mut readers = Vec::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                readers.push(tokio::spawn(async move {
                    let mut sink = [0u8; 4096];
                    while tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await.is_ok_and(|n| n > 0) {}
                }));
            }
        });
        let me = Arc::new(RwLock::new(PeerId { node: NodeId("me".into()), ..peer(addr) }));
        let (events_tx, mut events) = mpsc::channel(16);
        let auth = Arc::new(PeerAuth::insecure());
        let link = spawn(peer(addr), Lane::Data, dialer(me.clone(), auth.clone()), 1 << 20, events_tx);
        let up = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap();
        assert!(matches!(up, Some(LinkEvent::Up { .. })));
        let started = std::time::Instant::now();
        while link.stalls() == 0 {
            assert!(started.elapsed() < STALL_AFTER * 2, "never stalled");
            link.send(&PeerMessage::SnapshotRequest);
            if link.unacked_bytes() > 0 {
                assert!(link.oldest_unacked() <= STALL_AFTER + STALL_CHECK * 2);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(started.elapsed() >= STALL_AFTER, "stalled before the bound");
        assert!(link.is_stalled() && link.cuts() >= 1);
        // It reconnects (to the same silent peer): still stalled, counted once.
        let again = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap();
        assert!(matches!(again, Some(LinkEvent::Up { .. })));
        assert!(link.is_stalled());
        link.close();
        silent.abort();

        // The real accepting side acknowledges: no stall, nothing left unacknowledged.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (data, mut inbox) = mpsc::channel(1024);
        let inboxes = Inboxes { data, control: mpsc::channel(1).0 };
        let stop = CancellationToken::new();
        let accepting =
            Accepting { runtimes: Runtimes::current(), auth: auth.clone(), arrivals: Arc::default() };
        tokio::spawn(accept(Box::new(listener), inboxes, accepting, stop.clone()));
        let (events_tx, mut events) = mpsc::channel(16);
        let link = spawn(peer(addr), Lane::Data, dialer(me, auth), 1 << 20, events_tx);
        tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap();
        for _ in 0..20 {
            link.send(&PeerMessage::SnapshotRequest);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for _ in 0..20 {
            let inbound = tokio::time::timeout(Duration::from_secs(5), inbox.recv()).await.unwrap().unwrap();
            assert_eq!(inbound.msg, PeerMessage::SnapshotRequest);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while link.unacked_bytes() > 0 {
            assert!(std::time::Instant::now() < deadline, "never acknowledged");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!((link.stalls(), link.is_stalled(), link.oldest_unacked()), (0, false, Duration::ZERO));
        link.close();
        stop.cancel();
    }
}
