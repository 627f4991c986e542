//! Peer links: one outbound TCP connection per peer and [`Lane`], carrying length-delimited frames.
//!
//! Each node sends on the links it opened and only reads on the ones it accepted, so a link is a
//! one-way ordered pipe: frames from one publisher arrive in the order they were offered. The send
//! queue is bounded in bytes: a peer that cannot keep up (or cannot be reached) has its queue dropped
//! and its link cut, and the reconnect resynchronises it (`LinkUp` → full member counts and presence
//! snapshot), so a slow peer costs a bounded amount of memory and never holds back the others.
//!
//! With a cluster secret every connection starts with a Noise handshake ([`crate::secure`]): a peer
//! that cannot prove it holds the secret is refused (and counted) before any frame is read, and
//! every frame after it is encrypted and authenticated.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use crate::identity::PeerId;
use crate::secure::codec::PeerCodec;
use crate::secure::{handshake, PeerAuth};
use crate::wire::{self, Lane, PeerMessage, MAX_FRAME_BYTES};

/// How long a batch of frames may take to reach the kernel before the link counts as stalled.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new connection has to complete the handshake and say `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Frames written per flush.
const BATCH: usize = 256;
/// Connections still in their handshake at once, in all and from one address; more are closed at
/// once (and counted), so a flood of connections that never finish cannot hold the process's file
/// descriptors (which the client sockets share) for the handshake deadline, and one flooding address
/// cannot keep a real peer (two links, a few ms each) from connecting.
const MAX_PENDING_HANDSHAKES: usize = 256;
const MAX_PENDING_HANDSHAKES_PER_ADDRESS: usize = 8;

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
    queue: mpsc::UnboundedSender<Bytes>,
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    cut: AtomicBool,
    cut_signal: Notify,
    connected: AtomicBool,
    cuts: AtomicU64,
    dropped: AtomicU64,
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

    /// Times the link was cut for being over its bound.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::Relaxed)
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

/// Starts a link to `peer` on `lane`; `me` is read at every (re)connect for the `Hello`.
///
/// `source` is the address outgoing connections leave from: the node's cluster bind address when it
/// names one, so a peer (and a firewall rule between two nodes) sees the same address for this node's
/// incoming and outgoing traffic. `None` leaves the choice to the kernel (a wildcard bind).
pub(crate) fn spawn(
    peer: PeerId,
    lane: Lane,
    me: Arc<RwLock<PeerId>>,
    source: Option<IpAddr>,
    max_bytes: usize,
    events: mpsc::Sender<LinkEvent>,
    auth: Arc<PeerAuth>,
) -> Arc<Link> {
    let (queue, rx) = mpsc::unbounded_channel();
    let link = Arc::new(Link {
        peer,
        lane,
        source,
        queue,
        queued_bytes: AtomicUsize::new(0),
        max_bytes,
        cut: AtomicBool::new(false),
        cut_signal: Notify::new(),
        connected: AtomicBool::new(false),
        cuts: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        stop: CancellationToken::new(),
    });
    tokio::spawn(run(link.clone(), rx, me, events, auth));
    link
}

enum Ended {
    /// The cluster secret changed: the connection was closed cleanly (everything written reaches the
    /// peer), reconnect at once under the new sending key; the queue is kept.
    Rekey,
    /// Over the bound or stalled: drop the queue, reconnect.
    Cut,
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
        if let Some(mut framed) = opened {
            let mut rotations = auth.rotations();
            rotations.mark_unchanged();
            backoff = BACKOFF_MIN;
            link.connected.store(true, Ordering::Release);
            tracing::debug!(peer = ?link.peer, lane = ?link.lane, "peer link up");
            let _ = events.send(LinkEvent::Up { peer: link.peer.clone(), lane: link.lane }).await;
            let ended = pump(&link, &mut rx, &mut framed, &mut rotations).await;
            link.connected.store(false, Ordering::Release);
            match ended {
                Ended::Stopped => return,
                Ended::Rekey => {
                    tracing::info!(peer = ?link.peer, lane = ?link.lane, "cluster secret changed: peer link reopened");
                    continue;
                }
                Ended::Cut => discard(&link, &mut rx),
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

/// A TCP connection to `addr`, leaving from `source` when given.
async fn dial(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(source) = source else { return TcpStream::connect(addr).await };
    let socket = if source.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// Connects, proves to the peer (and has it prove) that both hold the cluster secret, and says
/// `Hello`; `None` when any step fails.
async fn open(
    link: &Link,
    me: &RwLock<PeerId>,
    auth: &PeerAuth,
) -> Option<FramedWrite<TcpStream, PeerCodec>> {
    let mut stream =
        tokio::time::timeout(CONNECT_TIMEOUT, dial(link.peer.addr, link.source)).await.ok()?.ok()?;
    let _ = stream.set_nodelay(true);
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
    let mut framed = FramedWrite::new(stream, codec);
    let hello =
        PeerMessage::Hello { from: me.read().unwrap_or_else(|e| e.into_inner()).clone(), lane: link.lane };
    let frame = wire::encode(&hello).ok()?;
    match tokio::time::timeout(WRITE_TIMEOUT, SinkExt::<Bytes>::send(&mut framed, frame)).await {
        Ok(Ok(())) => Some(framed),
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
    framed: &mut FramedWrite<TcpStream, PeerCodec>,
    rotations: &mut tokio::sync::watch::Receiver<u64>,
) -> Ended {
    loop {
        let first = tokio::select! {
            biased;
            _ = link.stop.cancelled() => return Ended::Stopped,
            _ = link.cut_signal.notified() => return Ended::Cut,
            Ok(()) = rotations.changed() => {
                // Between batches, so nothing is half-written: close cleanly and redial.
                let _ = tokio::time::timeout(WRITE_TIMEOUT, SinkExt::<Bytes>::close(framed)).await;
                return Ended::Rekey;
            }
            frame = rx.recv() => match frame {
                Some(frame) => frame,
                None => return Ended::Stopped,
            },
        };
        let write = async {
            let mut next = Some(first);
            let mut written = 0;
            while let Some(frame) = next.take() {
                link.queued_bytes.fetch_sub(frame.len(), Ordering::AcqRel);
                SinkExt::<Bytes>::feed(framed, frame).await?;
                written += 1;
                if written < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            SinkExt::<Bytes>::flush(framed).await
        };
        let written = tokio::select! {
            written = tokio::time::timeout(WRITE_TIMEOUT, write) => written,
            // Over its bound while a write is stuck: cut now, not after the write timeout.
            _ = link.cut_signal.notified() => return Ended::Cut,
            _ = link.stop.cancelled() => return Ended::Stopped,
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Ended::Broken,
            Err(_) => {
                tracing::warn!(peer = ?link.peer, lane = ?link.lane, "peer link stalled: cut");
                link.cuts.fetch_add(1, Ordering::Relaxed);
                link.cut.store(true, Ordering::Release);
                return Ended::Cut;
            }
        }
    }
}

/// A frame that arrived on an accepted link, with the sender named in its `Hello`.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub from: PeerId,
    pub msg: PeerMessage,
}

/// Where accepted links deliver: data-lane frames to the driver, control-lane (raft) frames to raft,
/// so a backlog of data never delays a heartbeat or a vote.
#[derive(Clone)]
pub(crate) struct Inboxes {
    pub data: mpsc::Sender<Inbound>,
    pub control: mpsc::Sender<Inbound>,
}

/// Connections in their handshake, by source address (see [`MAX_PENDING_HANDSHAKES`]).
#[derive(Default)]
struct HandshakeSlots {
    by_address: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One connection's place among those in their handshake; given back on drop.
struct HandshakeSlot {
    slots: Arc<HandshakeSlots>,
    ip: std::net::IpAddr,
}

impl HandshakeSlots {
    fn take(slots: &Arc<HandshakeSlots>, ip: std::net::IpAddr) -> Option<HandshakeSlot> {
        let mut by_address = slots.by_address.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = by_address.values().sum();
        let mine = by_address.entry(ip).or_default();
        if total >= MAX_PENDING_HANDSHAKES || *mine >= MAX_PENDING_HANDSHAKES_PER_ADDRESS {
            if *mine == 0 {
                by_address.remove(&ip);
            }
            return None;
        }
        *mine += 1;
        Some(HandshakeSlot { slots: slots.clone(), ip })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut by_address = self.slots.by_address.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = by_address.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                by_address.remove(&self.ip);
            }
        }
    }
}

/// Accepts peer connections; each is read by its own task that hands decoded frames to `deliver`.
pub(crate) async fn accept(
    listener: TcpListener,
    deliver: Inboxes,
    auth: Arc<PeerAuth>,
    stop: CancellationToken,
) {
    let pending = Arc::new(HandshakeSlots::default());
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, from)) => {
                let Some(permit) = HandshakeSlots::take(&pending, from.ip()) else {
                    auth.refused.links.fetch_add(1, Ordering::Relaxed);
                    auth.log_refusal("a peer connection", from, &"too many connections in their handshake");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(read(stream, from, deliver.clone(), auth.clone(), permit, stop.clone()));
            }
            Err(error) => {
                tracing::warn!(%error, "cannot accept a peer connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn read(
    mut stream: TcpStream,
    addr: SocketAddr,
    deliver: Inboxes,
    auth: Arc<PeerAuth>,
    handshaking: HandshakeSlot,
    stop: CancellationToken,
) {
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    let mut rotations = auth.rotations();
    let keys = auth.keys();
    let opened =
        tokio::time::timeout_at(deadline, handshake::respond(&mut stream, keys.as_deref(), MAX_FRAME_BYTES))
            .await;
    let handshake::Accepted { codec, psk } = match opened {
        Ok(Ok(accepted)) => accepted,
        failed => {
            // Only a secured node refuses (a plain one has no handshake): a stranger, a node without
            // the secret, or a connection that never finishes its handshake.
            auth.refused.links.fetch_add(1, Ordering::Relaxed);
            let reason = match failed {
                Ok(Err(error)) => error.to_string(),
                _ => "no handshake within the deadline".to_owned(),
            };
            auth.log_refusal("a peer connection", addr, &reason);
            return;
        }
    };
    let mut frames = FramedRead::new(stream, codec);
    let hello = match tokio::time::timeout_at(deadline, frames.next()).await {
        Ok(Some(Ok(frame))) => wire::decode(&frame),
        _ => return,
    };
    let (from, deliver) = match hello {
        Ok(PeerMessage::Hello { from, lane: Lane::Data }) => (from, deliver.data),
        Ok(PeerMessage::Hello { from, lane: Lane::Control }) => (from, deliver.control),
        Ok(_) => {
            tracing::warn!(%addr, "peer connection did not start with Hello: closed");
            return;
        }
        Err(error) => {
            tracing::warn!(%addr, %error, "unreadable peer Hello: closed");
            return;
        }
    };
    drop(handshaking);
    loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => return,
            Ok(()) = rotations.changed() => {
                if psk.is_some_and(|psk| !auth.accepts_link_key(&psk)) {
                    tracing::info!(peer = ?from, "peer link accepted under a cluster secret no longer accepted: closed");
                    return;
                }
                continue;
            }
            frame = frames.next() => frame,
        };
        let msg = match frame {
            Some(Ok(frame)) => wire::decode(&frame),
            Some(Err(error)) => {
                tracing::warn!(peer = ?from, %error, "peer link read error: closed");
                return;
            }
            None => return,
        };
        match msg {
            Ok(msg) => {
                if deliver.send(Inbound { from: from.clone(), msg }).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(peer = ?from, %error, "undecodable peer frame: link closed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeId;

    fn peer(addr: SocketAddr) -> PeerId {
        PeerId { node: NodeId("slow".into()), incarnation: 1, epoch: 0, addr }
    }

    #[test]
    fn handshake_slots_are_bounded_per_address_and_in_all_and_given_back() {
        let slots = Arc::new(HandshakeSlots::default());
        let ip = |i: u8| std::net::IpAddr::from([10, 0, i / 100, i % 100]);
        let first: Vec<_> = (0..MAX_PENDING_HANDSHAKES_PER_ADDRESS)
            .map(|_| HandshakeSlots::take(&slots, ip(1)).unwrap())
            .collect();
        assert!(HandshakeSlots::take(&slots, ip(1)).is_none(), "one address holds at most its share");
        let mut others = Vec::new();
        for i in 2..=255u8 {
            while let Some(slot) = HandshakeSlots::take(&slots, ip(i)) {
                others.push(slot);
                if others.len() + first.len() == MAX_PENDING_HANDSHAKES {
                    break;
                }
            }
        }
        assert_eq!(others.len() + first.len(), MAX_PENDING_HANDSHAKES);
        assert!(HandshakeSlots::take(&slots, ip(250)).is_none(), "the total is bounded");
        drop(first);
        drop(others);
        assert!(slots.by_address.lock().unwrap().is_empty(), "every slot was given back");
        assert!(HandshakeSlots::take(&slots, ip(1)).is_some());
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
        let link = spawn(peer(addr), Lane::Data, me, None, max, events_tx, Arc::new(PeerAuth::insecure()));
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
}
