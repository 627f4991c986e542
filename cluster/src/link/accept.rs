//! The accepting side of the links: each accepted connection is read by its own task, which hands
//! the frames to the driver (data lane) or raft (control lane) and acknowledges them on the same
//! connection.
//!
//! The accept loop runs on the raft runtime, so every accepted socket is registered with its reactor,
//! and a control connection's frames wake raft even while the data runtime is busy; the handshake and
//! `Hello` are read on the data runtime, and a control connection then moves to the raft runtime for
//! the rest of its life (see [`crate::runtimes`]).
//!
//! Why the acknowledgements travel back on the connection they acknowledge, rather than on this
//! node's own link to the sender: they share that connection's fate exactly (the same path, the same
//! TCP state, so an acknowledged frame proves this very connection makes progress), and they never
//! queue behind this node's own outbound traffic (a full data queue to the sender would delay them
//! and make a healthy link look stalled). They cost one 13-byte frame per [`ACK_EVERY`] on a busy
//! connection, nothing on an idle one.
//!
//! Every frame carries its sender's sequence number ([`super::progress`]): a frame not newer than
//! what was already delivered from that sender run and lane is dropped and counted, and a connection
//! superseded by a newer one from the same run and lane is closed, so a reconnect never lets frames
//! held up on the old connection (TCP retransmitting them after a cut heals) arrive after newer ones.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use super::progress::{AckClock, Admit, Order, ACK_EVERY};
use super::{HELLO_TIMEOUT, STALL_AFTER};
use crate::identity::PeerId;
use crate::runtimes::Runtimes;
use crate::secure::codec::PeerCodec;
use crate::secure::{handshake, PeerAuth};
use crate::sync::lock;
use crate::transport::{Listener, ReadHalf, Stream, WriteHalf};
use crate::wire::{self, Lane, PeerMessage, MAX_FRAME_BYTES};

/// Connections still in their handshake at once, in all and from one address; more are closed at
/// once (and counted), so a flood of connections that never finish cannot hold the process's file
/// descriptors (which the client sockets share) for the handshake deadline, and one flooding address
/// cannot keep a real peer (two links, a few ms each) from connecting.
const MAX_PENDING_HANDSHAKES: usize = 256;
const MAX_PENDING_HANDSHAKES_PER_ADDRESS: usize = 8;

/// What every accepted connection shares: the order of each sender's frames, and what was dropped.
#[derive(Default)]
pub(crate) struct Arrivals {
    order: Mutex<Order<CancellationToken>>,
    stale: AtomicU64,
    superseded: AtomicU64,
}

impl Arrivals {
    /// Frames dropped for not being newer than one already delivered from their sender (and lane).
    pub fn stale(&self) -> u64 {
        self.stale.load(Ordering::Relaxed)
    }

    /// Connections closed because a newer one from the same sender run and lane took over.
    pub fn superseded(&self) -> u64 {
        self.superseded.load(Ordering::Relaxed)
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
        let mut by_address = lock(&slots.by_address);
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
        let mut by_address = lock(&self.slots.by_address);
        if let Some(count) = by_address.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                by_address.remove(&self.ip);
            }
        }
    }
}

/// What every accepted connection is read with.
pub(crate) struct Accepting {
    /// Where a connection is read: the data runtime, a control connection the raft runtime.
    pub runtimes: Runtimes,
    pub auth: Arc<PeerAuth>,
    pub arrivals: Arc<Arrivals>,
}

/// Accepts peer connections; each is read by its own task that hands decoded frames to `deliver`.
/// Run it on the raft runtime (see the module's docs).
pub(crate) async fn accept(
    mut listener: Box<dyn Listener>,
    deliver: Inboxes,
    accepting: Accepting,
    stop: CancellationToken,
) {
    let Accepting { runtimes, auth, arrivals } = accepting;
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
                let reader = Reader {
                    addr: from,
                    deliver: deliver.clone(),
                    auth: auth.clone(),
                    arrivals: arrivals.clone(),
                    control: runtimes.control.clone(),
                    stop: stop.clone(),
                };
                runtimes.data.spawn(reader.read(stream, permit));
            }
            Err(error) => {
                tracing::warn!(%error, "cannot accept a peer connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One accepted connection's reader.
struct Reader {
    addr: SocketAddr,
    deliver: Inboxes,
    auth: Arc<PeerAuth>,
    arrivals: Arc<Arrivals>,
    /// The raft runtime, where a control connection is read once its `Hello` says so.
    control: Handle,
    stop: CancellationToken,
}

impl Reader {
    async fn read(self, mut stream: Box<dyn Stream>, handshaking: HandshakeSlot) {
        let Reader { addr, deliver, auth, arrivals, control, stop } = self;
        let deadline = Instant::now() + HELLO_TIMEOUT;
        let rotations = auth.rotations();
        let keys = auth.keys();
        let opened = tokio::time::timeout_at(
            deadline,
            handshake::respond(&mut stream, keys.as_deref(), MAX_FRAME_BYTES),
        )
        .await;
        let handshake::Accepted { codec, psk } = match opened {
            Ok(Ok(accepted)) => accepted,
            failed => {
                // Only a secured node refuses (a plain one has no handshake): a stranger, a node
                // without the secret, or a connection that never finishes its handshake.
                auth.refused.links.fetch_add(1, Ordering::Relaxed);
                let reason = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => "no handshake within the deadline".to_owned(),
                };
                auth.log_refusal("a peer connection", addr, &reason);
                return;
            }
        };
        let (reading, writing) = stream.into_halves();
        let acks = FramedWrite::new(writing, codec.twin());
        let mut frames = FramedRead::new(reading, codec);
        let hello = match tokio::time::timeout_at(deadline, frames.next()).await {
            Ok(Some(Ok(frame))) => frame,
            _ => return,
        };
        let hello = wire::unsequence(&hello).and_then(|(seq, body)| Ok((seq, wire::decode(body)?)));
        let (hello_seq, from, lane) = match hello {
            Ok((seq, PeerMessage::Hello { from, lane })) => (seq, from, lane),
            Ok(_) => {
                tracing::warn!(%addr, "peer connection did not start with Hello: closed");
                return;
            }
            Err(error) => {
                tracing::warn!(%addr, %error, "unreadable peer Hello: closed");
                return;
            }
        };
        let deliver = match lane {
            Lane::Data => deliver.data,
            Lane::Control => deliver.control,
        };
        let sender = (from.node.clone(), from.incarnation, lane);
        let mine = stop.child_token();
        match lock(&arrivals.order).open(&sender, hello_seq, mine.clone()) {
            Ok(superseded) => superseded.iter().for_each(CancellationToken::cancel),
            Err(_) => {
                arrivals.superseded.fetch_add(1, Ordering::Relaxed);
                tracing::info!(peer = ?from, ?lane, "peer connection older than one already read: closed");
                return;
            }
        }
        drop(handshaking);
        let open =
            Open { from, lane, hello_seq, deliver, frames, acks, rotations, psk, auth, arrivals, mine, stop };
        match lane {
            Lane::Data => open.serve().await,
            Lane::Control => drop(control.spawn(open.serve())),
        }
    }
}

/// An accepted connection past its `Hello`.
struct Open {
    from: PeerId,
    lane: Lane,
    hello_seq: u64,
    deliver: mpsc::Sender<Inbound>,
    frames: FramedRead<ReadHalf, PeerCodec>,
    acks: FramedWrite<WriteHalf, PeerCodec>,
    rotations: watch::Receiver<u64>,
    /// The link key it was accepted under (none when insecure).
    psk: Option<[u8; 32]>,
    auth: Arc<PeerAuth>,
    arrivals: Arc<Arrivals>,
    /// Cancelled when a newer connection from the same sender run and lane supersedes this one.
    mine: CancellationToken,
    stop: CancellationToken,
}

impl Open {
    /// Reads frames and acknowledges them until the connection ends.
    async fn serve(self) {
        let Open {
            from,
            lane,
            hello_seq,
            deliver,
            mut frames,
            mut acks,
            mut rotations,
            psk,
            auth,
            arrivals,
            mine,
            stop,
        } = self;
        let sender = (from.node.clone(), from.incarnation, lane);
        let mut clock = AckClock::default();
        clock.received(hello_seq);
        let mut tick = tokio::time::interval(ACK_EVERY);
        loop {
            if let Some(seq) = clock.due(Instant::now()) {
                // An acknowledgement that cannot be written within the stall bound: the dialler
                // does not read (or cannot be reached) and will find the link stalled.
                if !matches!(tokio::time::timeout(STALL_AFTER, acks.send(wire::ack(seq))).await, Ok(Ok(()))) {
                    tracing::debug!(peer = ?from, ?lane, "cannot acknowledge on a peer link: closed");
                    return;
                }
            }
            let frame = tokio::select! {
                _ = mine.cancelled() => {
                    if !stop.is_cancelled() {
                        arrivals.superseded.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(peer = ?from, ?lane, "peer connection superseded by a newer one: closed");
                    }
                    return;
                }
                Ok(()) = rotations.changed() => {
                    if psk.is_some_and(|psk| !auth.accepts_link_key(&psk)) {
                        tracing::info!(peer = ?from, "peer link accepted under a cluster secret no longer accepted: closed");
                        return;
                    }
                    continue;
                }
                _ = tick.tick() => continue,
                frame = frames.next() => frame,
            };
            let frame = match frame {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => {
                    tracing::warn!(peer = ?from, %error, "peer link read error: closed");
                    return;
                }
                None => return,
            };
            let (seq, body) = match wire::unsequence(&frame) {
                Ok(split) => split,
                Err(error) => {
                    tracing::warn!(peer = ?from, %error, "unreadable peer link frame: closed");
                    return;
                }
            };
            clock.received(seq);
            let admitted = lock(&arrivals.order).admit(&sender, hello_seq, seq);
            match admitted {
                Admit::Deliver => {}
                Admit::Stale => {
                    arrivals.stale.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Admit::Superseded => {
                    arrivals.stale.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            match wire::decode(body) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
