//! The resumable streams this node has seen: per channel, the latest messages and their positions,
//! bounded by age, by count per channel and by bytes in all; and what a client that last received
//! position P is owed.
//!
//! Pure (the clock is a parameter), so its bounds and its one promise are tested exhaustively. The
//! promise: a channel's stream is *covered* from P when this node has held every message of that
//! channel after P, so handing over the retained messages after P gives the client exactly what it
//! missed. Otherwise the answer is a gap, never a guess:
//! - the node started receiving the stream after P (`start`);
//! - a message after P was evicted (`evicted_through` per channel, and `floor` for channels whose
//!   last messages were all evicted and whose entry was dropped).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::position::Position;
use crate::vocab::{BroadcastBody, TopicKey};

/// How much the log keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    pub max_age: Duration,
    pub max_per_channel: usize,
    pub max_bytes: usize,
}

/// One retained message.
#[derive(Debug, Clone)]
pub struct Entry {
    pub position: Position,
    pub body: BroadcastBody,
    at: Instant,
    bytes: usize,
}

#[derive(Debug, Default)]
struct ChannelLog {
    entries: VecDeque<Entry>,
    /// The newest message evicted from this channel.
    evicted_through: Option<Position>,
}

/// What a resuming client is owed.
#[derive(Debug)]
pub enum Since {
    /// Every message after its position, oldest first (maybe none).
    Messages(Vec<Entry>),
    /// Some message after its position is no longer (or was never) held here.
    Gap,
}

/// Every resumable channel's recent messages on this node.
#[derive(Debug)]
pub struct ResumeLog {
    limits: LogLimits,
    channels: HashMap<TopicKey, ChannelLog>,
    /// Every retained message in append order (with stale items for those evicted per channel),
    /// to evict the oldest across channels by age and bytes.
    order: VecDeque<(TopicKey, Position)>,
    retained: usize,
    bytes: usize,
    /// The first position of the stream this node received: nothing before it is known here.
    start: Option<Position>,
    /// The newest message evicted from a channel whose entry was dropped when it emptied.
    floor: Option<Position>,
}

/// Bytes counted for a message besides its payload (position, time, key, bookkeeping).
const ENTRY_OVERHEAD: usize = 96;

fn body_bytes(body: &BroadcastBody) -> usize {
    ENTRY_OVERHEAD
        + match body {
            BroadcastBody::Json(json) => json.len(),
            BroadcastBody::User { event, data, meta, .. } => {
                event.len() + data.len() + meta.as_ref().map_or(0, |m| m.len())
            }
        }
}

impl ResumeLog {
    pub fn new(limits: LogLimits) -> ResumeLog {
        ResumeLog {
            limits,
            channels: HashMap::new(),
            order: VecDeque::new(),
            retained: 0,
            bytes: 0,
            start: None,
            floor: None,
        }
    }

    /// The stream reached this node at `position` (the first transaction it dispatched): from
    /// there on it sees every message. Later calls change nothing.
    pub fn stream_from(&mut self, position: Position) {
        self.start.get_or_insert(position);
    }

    /// Keeps a message of a resumable channel. Positions arrive in increasing order (commit order).
    pub fn append(&mut self, key: &TopicKey, position: Position, body: BroadcastBody, now: Instant) {
        self.stream_from(position);
        let bytes = body_bytes(&body);
        let channel = self.channels.entry(key.clone()).or_default();
        channel.entries.push_back(Entry { position, body, at: now, bytes });
        self.retained += 1;
        self.bytes += bytes;
        self.order.push_back((key.clone(), position));
        while channel.entries.len() > self.limits.max_per_channel {
            let evicted = channel.entries.pop_front().expect("longer than the limit");
            channel.evicted_through = Some(evicted.position);
            self.retained -= 1;
            self.bytes -= evicted.bytes;
        }
        self.evict(now);
    }

    /// Evicts by age and bytes, oldest first across channels, and forgets emptied channels.
    pub fn evict(&mut self, now: Instant) {
        while let Some((key, position)) = self.order.front() {
            let Some(channel) = self.channels.get_mut(key) else {
                self.order.pop_front();
                continue;
            };
            let oldest = channel.entries.front();
            if oldest.map(|e| e.position) != Some(*position) {
                self.order.pop_front(); // already evicted by its channel's count
                continue;
            }
            let expired = oldest.is_some_and(|e| now.saturating_duration_since(e.at) > self.limits.max_age);
            if !expired && self.bytes <= self.limits.max_bytes {
                break;
            }
            let evicted = channel.entries.pop_front().expect("checked above");
            self.retained -= 1;
            self.bytes -= evicted.bytes;
            if channel.entries.is_empty() {
                self.channels.remove(key);
                self.floor = self.floor.max(Some(evicted.position));
            } else {
                channel.evicted_through = Some(evicted.position);
            }
            self.order.pop_front();
        }
        // Stale items of count evictions: rebuilt when they outnumber the retained messages.
        if self.order.len() > 1024 && self.order.len() > 2 * self.retained {
            let mut live: Vec<(TopicKey, Position)> = self
                .channels
                .iter()
                .flat_map(|(key, log)| log.entries.iter().map(move |e| (key.clone(), e.position)))
                .collect();
            live.sort_by_key(|(_, position)| *position);
            self.order = live.into();
        }
    }

    /// What a client whose last received message of `key` is `after` is owed.
    pub fn since(&mut self, key: &TopicKey, after: Position, now: Instant) -> Since {
        self.evict(now);
        let channel = self.channels.get(key);
        let evicted = channel.and_then(|c| c.evicted_through);
        let covered = self.start.is_some_and(|start| after >= start)
            && self.floor.is_none_or(|floor| after >= floor)
            && evicted.is_none_or(|evicted| after >= evicted);
        if !covered {
            return Since::Gap;
        }
        Since::Messages(self.after(key, Some(after)))
    }

    /// The retained messages of `key` after `after` (all with `None`), oldest first, without asking
    /// whether some were evicted: for a member that joined without a position.
    pub fn after(&self, key: &TopicKey, after: Option<Position>) -> Vec<Entry> {
        let Some(channel) = self.channels.get(key) else { return Vec::new() };
        channel.entries.iter().filter(|e| after.is_none_or(|a| e.position > a)).cloned().collect()
    }

    /// The newest position retained for `key`.
    pub fn last(&self, key: &TopicKey) -> Option<Position> {
        self.channels.get(key).and_then(|c| c.entries.back()).map(|e| e.position)
    }

    /// Retained messages and their bytes (for metrics).
    pub fn size(&self) -> (usize, usize) {
        (self.retained, self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    fn key(name: &str) -> TopicKey {
        TopicKey { sub_topic: Arc::from(name), private: false }
    }

    fn pos(lsn: u64, index: u32) -> Position {
        Position { commit_lsn: lsn, index }
    }

    fn body(text: &str) -> BroadcastBody {
        BroadcastBody::Json(Arc::from(text))
    }

    fn limits(max_per_channel: usize) -> LogLimits {
        LogLimits { max_age: Duration::from_secs(60), max_per_channel, max_bytes: 1 << 20 }
    }

    fn positions(since: Since) -> Option<Vec<Position>> {
        match since {
            Since::Messages(entries) => Some(entries.iter().map(|e| e.position).collect()),
            Since::Gap => None,
        }
    }

    #[test]
    fn a_client_gets_what_came_after_its_position_in_order() {
        let now = Instant::now();
        let mut log = ResumeLog::new(limits(10));
        log.stream_from(pos(100, 0));
        for (lsn, index) in [(110, 0), (110, 1), (120, 4)] {
            log.append(&key("a"), pos(lsn, index), body("{}"), now);
        }
        log.append(&key("b"), pos(130, 0), body("{}"), now);
        assert_eq!(positions(log.since(&key("a"), pos(110, 0), now)), Some(vec![pos(110, 1), pos(120, 4)]));
        assert_eq!(positions(log.since(&key("a"), pos(120, 4), now)), Some(vec![]));
        // A position from another channel's message still counts: nothing of `a` was evicted after it.
        assert_eq!(positions(log.since(&key("a"), pos(130, 0), now)), Some(vec![]));
        // Quiet channels are covered from the start of the stream on.
        assert_eq!(positions(log.since(&key("c"), pos(100, 0), now)), Some(vec![]));
        assert_eq!(log.last(&key("a")), Some(pos(120, 4)));
        assert_eq!(log.after(&key("a"), None).len(), 3);
    }

    #[test]
    fn before_the_stream_reached_this_node_is_a_gap() {
        let now = Instant::now();
        let mut log = ResumeLog::new(limits(10));
        assert!(positions(log.since(&key("a"), pos(5, 0), now)).is_none(), "no stream yet");
        log.append(&key("a"), pos(100, 0), body("{}"), now);
        assert!(positions(log.since(&key("a"), pos(99, 9), now)).is_none());
        assert_eq!(positions(log.since(&key("a"), pos(100, 0), now)), Some(vec![]));
    }

    #[test]
    fn a_message_evicted_by_count_makes_older_positions_a_gap() {
        let now = Instant::now();
        let mut log = ResumeLog::new(limits(2));
        log.stream_from(pos(1, 0));
        for lsn in 10..15 {
            log.append(&key("a"), pos(lsn, 0), body("{}"), now);
        }
        assert_eq!(log.size().0, 2);
        assert!(positions(log.since(&key("a"), pos(11, 0), now)).is_none(), "12 was evicted");
        assert_eq!(positions(log.since(&key("a"), pos(12, 0), now)), Some(vec![pos(13, 0), pos(14, 0)]));
        // Other channels are not affected by `a`'s evictions.
        assert_eq!(positions(log.since(&key("b"), pos(1, 0), now)), Some(vec![]));
    }

    #[test]
    fn age_and_bytes_evict_the_oldest_across_channels() {
        let t0 = Instant::now();
        let mut log = ResumeLog::new(LogLimits {
            max_age: Duration::from_secs(10),
            max_per_channel: 100,
            max_bytes: 1 << 20,
        });
        log.append(&key("a"), pos(10, 0), body("{}"), t0);
        log.append(&key("b"), pos(20, 0), body("{}"), t0 + Duration::from_secs(5));
        log.append(&key("a"), pos(30, 0), body("{}"), t0 + Duration::from_secs(6));
        let later = t0 + Duration::from_secs(12);
        assert!(
            positions(log.since(&key("a"), pos(10, 0), later)).is_some(),
            "10 itself evicted: nothing after it missed"
        );
        assert!(positions(log.since(&key("a"), pos(9, 0), later)).is_none());
        assert_eq!(log.size().0, 2);
        // `b` empties and is dropped: its last eviction becomes the floor for every channel.
        let much_later = t0 + Duration::from_secs(16);
        assert_eq!(positions(log.since(&key("b"), pos(20, 0), much_later)), Some(vec![]));
        assert!(positions(log.since(&key("b"), pos(19, 0), much_later)).is_none());
        assert!(
            positions(log.since(&key("zzz"), pos(15, 0), much_later)).is_none(),
            "the floor is conservative"
        );
        assert_eq!(log.size().0, 1);

        let mut small = ResumeLog::new(LogLimits {
            max_age: Duration::from_secs(60),
            max_per_channel: 100,
            max_bytes: 3 * (ENTRY_OVERHEAD + 10),
        });
        for lsn in 1..=5 {
            small.append(&key(if lsn % 2 == 0 { "x" } else { "y" }), pos(lsn, 0), body("0123456789"), t0);
        }
        assert_eq!(small.size(), (3, 3 * (ENTRY_OVERHEAD + 10)));
        assert_eq!(
            small.after(&key("y"), None).iter().map(|e| e.position).collect::<Vec<_>>(),
            vec![pos(3, 0), pos(5, 0)]
        );
    }

    proptest! {
        /// Against a model that keeps everything: whatever the limits, an answer is either a gap or
        /// exactly the messages of the channel after the position, in order.
        #[test]
        fn answers_are_exact_or_a_gap(
            appends in proptest::collection::vec((0usize..3, 0u64..3, 0u64..4), 1..120),
            max_per_channel in 1usize..6,
            max_bytes_entries in 1usize..12,
            ask in (0usize..3, 0usize..200),
        ) {
            let t0 = Instant::now();
            let limits = LogLimits {
                max_age: Duration::from_secs(5),
                max_per_channel,
                max_bytes: max_bytes_entries * (ENTRY_OVERHEAD + 2),
            };
            let mut log = ResumeLog::new(limits);
            let mut all: Vec<(usize, Position)> = Vec::new();
            let (mut lsn, mut secs) = (100u64, 0u64);
            for (channel, step, wait) in appends {
                lsn += step;
                let index = all.iter().filter(|(_, p)| p.commit_lsn == lsn).count() as u32;
                secs += wait;
                let position = pos(lsn, index);
                log.append(&key(&channel.to_string()), position, body("{}"), t0 + Duration::from_secs(secs));
                all.push((channel, position));
            }
            let now = t0 + Duration::from_secs(secs);
            let (channel, pick) = ask;
            let after = all[pick % all.len()].1;
            let expected: Vec<Position> =
                all.iter().filter(|(c, p)| *c == channel && *p > after).map(|(_, p)| *p).collect();
            if let Some(got) = positions(log.since(&key(&channel.to_string()), after, now)) {
                prop_assert_eq!(got, expected);
            }
        }
    }
}
