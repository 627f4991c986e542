//! The bookkeeping of a link's progress and order, as pure state (no sockets; time is an argument).
//!
//! - [`InFlight`], the dialling side: what the current connection wrote and the peer has not yet
//!   acknowledged, one entry per written batch (its last sequence number, bytes, when its write
//!   began). An acknowledgement of `seq` retires every batch up to it. The link is stalled when its
//!   oldest unacknowledged batch is older than the bound: frames reached the kernel but not the peer.
//! - [`AckClock`], the accepting side: when to acknowledge. At once for a connection's first frame
//!   (its `Hello`, so a reconnected link shows progress within a round trip), then at most every
//!   [`ACK_EVERY`] while frames arrive, and never while none do: a busy link costs one small frame
//!   per interval, an idle one nothing.
//! - [`Order`], every accepted connection: per sender run (node and incarnation) and lane, the
//!   newest connection (by the sequence number of its `Hello`) and the highest sequence number
//!   delivered. A frame not above it is stale (it was sent before something already delivered) and is
//!   dropped; a connection older than the newest is superseded and closed, so one sender's frames on
//!   one lane are never read from two connections at once.
//!
//! Sequence numbers come from one counter per process ([`super::next_seq`]): every frame a node run
//! writes on any link has a number above every frame it wrote before, whichever connection carried
//! it. A restart is a new incarnation, whose numbers start again under a new key.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::wire::Lane;
use crate::NodeId;

/// How often, at most, the accepting side acknowledges what arrived.
pub const ACK_EVERY: Duration = Duration::from_millis(100);

/// One write on a connection, not yet acknowledged in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Batch {
    /// The sequence number of its last frame.
    last: u64,
    bytes: usize,
    at: Instant,
}

/// What the current connection wrote and the peer has not acknowledged (the dialling side).
#[derive(Debug, Default)]
pub struct InFlight {
    batches: VecDeque<Batch>,
    bytes: usize,
    /// The highest sequence number acknowledged on this connection.
    acked: u64,
}

impl InFlight {
    /// Frames up to sequence number `last`, `bytes` in all, were written (their write began `at`).
    pub fn written(&mut self, last: u64, bytes: usize, at: Instant) {
        self.batches.push_back(Batch { last, bytes, at });
        self.bytes += bytes;
    }

    /// The peer received every frame up to `seq`; `true` when that is progress (more than before).
    pub fn acked(&mut self, seq: u64) -> bool {
        if seq <= self.acked {
            return false;
        }
        self.acked = seq;
        while let Some(batch) = self.batches.front().filter(|batch| batch.last <= seq) {
            self.bytes -= batch.bytes;
            self.batches.pop_front();
        }
        true
    }

    /// Bytes written and not acknowledged.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// How long the oldest unacknowledged write has waited; zero when everything was acknowledged.
    pub fn oldest(&self, now: Instant) -> Duration {
        self.batches.front().map_or(Duration::ZERO, |batch| now.saturating_duration_since(batch.at))
    }

    /// Whether the oldest unacknowledged write has waited longer than `bound`.
    pub fn stalled(&self, now: Instant, bound: Duration) -> bool {
        self.oldest(now) > bound
    }

    /// A new connection: what the old one had in flight is gone with it.
    pub fn clear(&mut self) {
        *self = InFlight::default();
    }
}

/// When the accepting side of one connection acknowledges.
#[derive(Debug, Default)]
pub struct AckClock {
    /// The highest sequence number that arrived on this connection (delivered or stale).
    received: u64,
    /// The highest one acknowledged, and when.
    acked: u64,
    last: Option<Instant>,
}

impl AckClock {
    pub fn received(&mut self, seq: u64) {
        self.received = self.received.max(seq);
    }

    /// The acknowledgement to send now, if one is due: something arrived since the last one, and
    /// the last one is [`ACK_EVERY`] old (or there was none yet on this connection).
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        let waited = self.last.is_none_or(|last| now.saturating_duration_since(last) >= ACK_EVERY);
        if self.received > self.acked && waited {
            self.acked = self.received;
            self.last = Some(now);
            return Some(self.received);
        }
        None
    }
}

/// What to do with a frame that arrived on an accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Newer than anything delivered from its sender run and lane: deliver it.
    Deliver,
    /// Not newer than something already delivered: drop it (and count it).
    Stale,
    /// A newer connection of this sender run and lane took over: close this one.
    Superseded,
}

/// One sender run's lane, as the accepting side tracks it.
#[derive(Debug)]
struct Run<T> {
    /// The `Hello` sequence number of the newest connection, and what its reader holds (so the
    /// reader of a connection it supersedes can be stopped).
    connection: u64,
    reader: T,
    /// The highest sequence number delivered, whichever connection carried it.
    delivered: u64,
}

/// Who a frame is from: the sender's node, incarnation, and the lane.
pub type Sender = (NodeId, u64, Lane);

/// Newest connection and highest delivered sequence number per sender run and lane (the accepting
/// side, all connections). `T` is what stops a connection's reader.
#[derive(Debug)]
pub struct Order<T> {
    runs: HashMap<Sender, Run<T>>,
}

impl<T> Default for Order<T> {
    fn default() -> Self {
        Order { runs: HashMap::new() }
    }
}

impl<T> Order<T> {
    /// A connection from `sender` said `Hello` with sequence number `hello`. `Ok` with the readers
    /// it supersedes (an older connection of this run and lane, and every lane of the node's older
    /// runs, which are gone), to be stopped; `Err(reader)` when a newer connection already took over,
    /// so this one is to be closed.
    pub fn open(&mut self, sender: &Sender, hello: u64, reader: T) -> Result<Vec<T>, T> {
        if self.runs.get(sender).is_some_and(|run| run.connection >= hello) {
            return Err(reader);
        }
        let (node, incarnation, _) = sender;
        let older: Vec<Sender> =
            self.runs.keys().filter(|(n, i, _)| n == node && i < incarnation).cloned().collect();
        let mut superseded: Vec<T> =
            older.iter().filter_map(|key| self.runs.remove(key)).map(|run| run.reader).collect();
        let delivered = self.runs.get(sender).map_or(0, |run| run.delivered).max(hello);
        let run = Run { connection: hello, reader, delivered };
        if let Some(previous) = self.runs.insert(sender.clone(), run) {
            superseded.push(previous.reader);
        }
        Ok(superseded)
    }

    /// A frame with sequence number `seq` arrived on `sender`'s connection opened with `hello`.
    pub fn admit(&mut self, sender: &Sender, hello: u64, seq: u64) -> Admit {
        match self.runs.get_mut(sender) {
            Some(run) if run.connection == hello => {
                if seq <= run.delivered {
                    Admit::Stale
                } else {
                    run.delivered = seq;
                    Admit::Deliver
                }
            }
            _ => Admit::Superseded,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sender(incarnation: u64, lane: Lane) -> Sender {
        (NodeId("a".into()), incarnation, lane)
    }

    #[test]
    fn acknowledgements_retire_whole_batches_and_measure_the_oldest() {
        let t0 = Instant::now();
        let mut in_flight = InFlight::default();
        assert_eq!((in_flight.bytes(), in_flight.oldest(t0)), (0, Duration::ZERO));
        in_flight.written(5, 100, t0);
        in_flight.written(9, 50, t0 + Duration::from_secs(1));
        let now = t0 + Duration::from_secs(6);
        assert_eq!(in_flight.bytes(), 150);
        assert_eq!(in_flight.oldest(now), Duration::from_secs(6));
        assert!(in_flight.stalled(now, Duration::from_secs(5)));
        assert!(in_flight.acked(7), "part of the second batch: progress");
        assert_eq!((in_flight.bytes(), in_flight.oldest(now)), (50, Duration::from_secs(5)));
        assert!(!in_flight.stalled(now, Duration::from_secs(5)));
        assert!(!in_flight.acked(7), "the same acknowledgement again is no progress");
        assert!(!in_flight.acked(3));
        assert!(in_flight.acked(9));
        assert_eq!((in_flight.bytes(), in_flight.oldest(now)), (0, Duration::ZERO));
        in_flight.written(12, 10, now);
        in_flight.clear();
        assert_eq!(in_flight.bytes(), 0);
    }

    #[test]
    fn acknowledgements_come_at_once_then_at_most_every_interval_and_only_for_news() {
        let t0 = Instant::now();
        let mut clock = AckClock::default();
        assert_eq!(clock.due(t0), None, "nothing arrived");
        clock.received(10);
        assert_eq!(clock.due(t0), Some(10), "the first frame is acknowledged at once");
        clock.received(11);
        clock.received(12);
        assert_eq!(clock.due(t0 + ACK_EVERY / 2), None, "within the interval");
        assert_eq!(clock.due(t0 + ACK_EVERY), Some(12));
        assert_eq!(clock.due(t0 + ACK_EVERY * 5), None, "nothing new: no acknowledgement");
        clock.received(4); // a stale frame on this connection moves nothing
        assert_eq!(clock.due(t0 + ACK_EVERY * 6), None);
    }

    #[test]
    fn a_newer_connection_supersedes_an_older_one_and_an_older_one_is_refused() {
        let mut order = Order::<u32>::default();
        let data = sender(1, Lane::Data);
        assert_eq!(order.open(&data, 10, 1), Ok(vec![]));
        assert_eq!(order.admit(&data, 10, 11), Admit::Deliver);
        assert_eq!(order.admit(&data, 10, 15), Admit::Deliver);
        // A reconnect: the new connection's Hello is newer than anything the old one carried.
        assert_eq!(order.open(&data, 20, 2), Ok(vec![1]));
        assert_eq!(order.admit(&data, 10, 16), Admit::Superseded, "the old reader stops");
        assert_eq!(order.admit(&data, 20, 21), Admit::Deliver);
        // A connection older than the newest (opened before it, accepted after it).
        assert_eq!(order.open(&data, 18, 3), Err(3));
        // Lanes are apart; a restart (new incarnation) supersedes every lane of the old run.
        let control = sender(1, Lane::Control);
        assert_eq!(order.open(&control, 12, 4), Ok(vec![]));
        let mut gone = order.open(&sender(2, Lane::Data), 1, 5).unwrap();
        gone.sort();
        assert_eq!(gone, vec![2, 4]);
        assert_eq!(order.admit(&data, 20, 30), Admit::Superseded);
        assert_eq!(order.admit(&sender(2, Lane::Data), 1, 2), Admit::Deliver);
    }

    /// What one sending node does over time, as the accepting side sees it.
    #[derive(Debug, Clone)]
    enum Step {
        /// The link opens a new connection (its Hello takes the next number).
        Connect,
        /// The link writes a frame on its current connection.
        Write,
        /// The network hands the accepting side the next frame of connection `i` (modulo those
        /// opened), if it has one left: connections are delivered in any interleaving, each in order.
        Arrive(usize),
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        proptest::collection::vec(
            prop_oneof![
                1 => Just(Step::Connect),
                4 => Just(Step::Write),
                4 => (0usize..4).prop_map(Step::Arrive),
            ],
            0..80,
        )
    }

    proptest! {
        /// Whatever the interleaving of a sender's connections, what is delivered is in the order
        /// it was sent (strictly increasing), every frame arrives at most once, and everything the
        /// newest connection carries after its Hello is delivered (none of it is lost to an older one).
        #[test]
        fn delivery_never_goes_back_and_the_newest_connection_loses_nothing(steps in steps()) {
            let data = sender(1, Lane::Data);
            let mut order = Order::<usize>::default();
            let mut next = 0u64;
            // Per connection: its Hello's number, frames not yet arrived, whether it said Hello.
            let mut connections: Vec<(u64, VecDeque<u64>, bool, bool)> = Vec::new();
            let mut delivered: Vec<u64> = Vec::new();
            for step in steps {
                match step {
                    Step::Connect => {
                        next += 1;
                        connections.push((next, VecDeque::from([next]), false, false));
                    }
                    Step::Write => {
                        if let Some(current) = connections.last_mut() {
                            next += 1;
                            current.1.push_back(next);
                        }
                    }
                    Step::Arrive(i) if !connections.is_empty() => {
                        let i = i % connections.len();
                        let (hello, frames, opened, closed) = &mut connections[i];
                        if *closed {
                            continue;
                        }
                        let Some(seq) = frames.pop_front() else { continue };
                        if !*opened {
                            *opened = true;
                            if order.open(&data, *hello, i).is_err() {
                                *closed = true;
                            }
                            continue;
                        }
                        match order.admit(&data, *hello, seq) {
                            Admit::Deliver => delivered.push(seq),
                            Admit::Stale => {}
                            Admit::Superseded => *closed = true,
                        }
                    }
                    Step::Arrive(_) => {}
                }
            }
            prop_assert!(delivered.windows(2).all(|w| w[0] < w[1]), "{:?}", delivered);
            // Drain the newest connection: nothing it carries is refused.
            if let Some((hello, frames, opened, _)) = connections.last_mut() {
                let hello = *hello;
                if !*opened {
                    frames.pop_front();
                    prop_assert!(order.open(&data, hello, 99).is_ok());
                }
                while let Some(seq) = frames.pop_front() {
                    prop_assert_eq!(order.admit(&data, hello, seq), Admit::Deliver);
                }
            }
        }

        /// Whatever is written and acknowledged, unacknowledged bytes are exactly those of the
        /// batches whose last frame is above the highest acknowledgement, and the oldest age is that
        /// of the first of them.
        #[test]
        fn in_flight_counts_exactly_what_is_not_acknowledged(
            ops in proptest::collection::vec((any::<bool>(), 1usize..1000, 0u64..6), 0..60)
        ) {
            let t0 = Instant::now();
            let mut in_flight = InFlight::default();
            let (mut next, mut acked) = (0u64, 0u64);
            let mut model: Vec<(u64, usize, Instant)> = Vec::new();
            for (i, (write, bytes, step)) in ops.into_iter().enumerate() {
                let at = t0 + Duration::from_millis(i as u64 * 10);
                if write {
                    next += step + 1;
                    in_flight.written(next, bytes, at);
                    model.push((next, bytes, at));
                } else {
                    let seq = next.saturating_sub(step);
                    prop_assert_eq!(in_flight.acked(seq), seq > acked);
                    acked = acked.max(seq);
                }
                let open: Vec<_> = model.iter().filter(|(last, _, _)| *last > acked).collect();
                prop_assert_eq!(in_flight.bytes(), open.iter().map(|(_, b, _)| b).sum::<usize>());
                let now = t0 + Duration::from_secs(10);
                prop_assert_eq!(in_flight.oldest(now), open.first().map_or(Duration::ZERO, |(_, _, at)| now - *at));
            }
        }

        /// Acknowledgements never exceed what arrived, and what arrived is acknowledged within one
        /// interval of the last arrival.
        #[test]
        fn everything_received_is_acknowledged_within_an_interval(
            arrivals in proptest::collection::vec((0u64..1000, 0u64..300), 1..50)
        ) {
            let t0 = Instant::now();
            let mut clock = AckClock::default();
            let mut at = t0;
            let mut highest = 0;
            let mut last_ack = 0;
            for (seq, gap_ms) in arrivals {
                at += Duration::from_millis(gap_ms);
                clock.received(seq);
                highest = highest.max(seq);
                if let Some(ack) = clock.due(at) {
                    prop_assert!(ack <= highest && ack > last_ack);
                    last_ack = ack;
                }
            }
            if highest > last_ack {
                prop_assert_eq!(clock.due(at + ACK_EVERY), Some(highest));
            }
        }
    }
}
