//! The load payload: every broadcast carries its *scheduled* send time, its publisher and a sequence
//! number as JSON (`{"t":<unix nanos>,"p":<publisher>,"s":<seq>}`, optionally padded with `"x":"…"` to a
//! chosen size).
//!
//! The time is when the broadcast was due by the publisher's fixed-rate schedule, not when it went out:
//! a receiver on the same machine computes latency as `now - t` without clock synchronisation, and a
//! publisher that fell behind (its own stall, or a server that stopped reading) shows up in the
//! latency figures instead of silently sending later (no coordinated omission). The sequence number
//! counts the publisher's broadcasts *per channel* from 0, so a receiver (joined to one channel) can
//! check every publisher's stream for losses, duplicates and reordering ([`SeqTracker`]).
//!
//! JSON rather than raw bytes keeps the payload deliverable to both serializers: a 1.0.0 subscriber
//! cannot receive raw binary broadcasts (PROTOCOL.md §3.2).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Scheduled send time, publisher and per-channel sequence number of one broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Wall-clock time the schedule said to send it, in nanoseconds since the Unix epoch.
    #[serde(rename = "t")]
    pub scheduled_unix_nanos: u64,
    /// Index of the publisher that sent it.
    #[serde(rename = "p")]
    pub publisher: u32,
    /// The publisher's broadcasts to this channel before this one.
    #[serde(rename = "s")]
    pub seq: u64,
}

/// The wrapper a JSON broadcast travels in: `{"type":"broadcast","event":E,"payload":<stamp>}`.
#[derive(Deserialize)]
struct Wrapped<'a> {
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

/// Current wall-clock time in Unix nanoseconds (0 if the clock is before 1970).
pub fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Stamp {
    /// The JSON text sent as the user payload.
    pub fn encode(&self) -> String {
        format!("{{\"t\":{},\"p\":{},\"s\":{}}}", self.scheduled_unix_nanos, self.publisher, self.seq)
    }

    /// The JSON text padded with an `"x"` string so that it is at least `bytes` long (exactly, when
    /// the stamp alone is shorter than that).
    pub fn encode_padded(&self, bytes: usize) -> String {
        let bare = self.encode();
        // `,"x":""` is 7 bytes; below that there is no room for the field.
        let Some(pad) = bytes.checked_sub(bare.len() + 7) else { return bare };
        let mut out = String::with_capacity(bytes);
        out.push_str(&bare[..bare.len() - 1]);
        out.push_str(",\"x\":\"");
        out.push_str(&"x".repeat(pad));
        out.push_str("\"}");
        out
    }

    /// Reads a stamp from user payload bytes (what a kind-4 frame carries); padding is skipped.
    pub fn decode(bytes: &[u8]) -> Option<Stamp> {
        serde_json::from_slice(bytes).ok()
    }

    /// Reads a stamp from a JSON broadcast wrapper (`payload.payload`), as 1.0.0 subscribers get it.
    pub fn decode_wrapped(wrapper_json: &str) -> Option<Stamp> {
        let wrapped: Wrapped<'_> = serde_json::from_str(wrapper_json).ok()?;
        Stamp::decode(wrapped.payload?.get().as_bytes())
    }

    /// Microseconds from the scheduled time to `now_nanos`; 0 if the clock went backwards.
    pub fn latency_micros(&self, now_nanos: u64) -> u64 {
        now_nanos.saturating_sub(self.scheduled_unix_nanos) / 1_000
    }
}

/// Highest publisher index a receiver tracks (far above any sensible `--publishers`).
const MAX_PUBLISHERS: u32 = 1 << 16;
/// How far ahead of the next expected sequence number a stamp may jump; further is garbage, not a gap.
const MAX_SEQ_JUMP: u64 = 1 << 24;

/// What one stamp was, relative to those its receiver saw before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// The next expected, or later (a gap: the skipped ones may still arrive, reordered).
    InOrder,
    /// Earlier than one already seen, and not seen before.
    Reordered,
    /// Seen before.
    Duplicate,
    /// Publisher index or sequence number out of any plausible range.
    Implausible,
}

/// One receiver's view of each publisher's stream on its channel: the next expected sequence number
/// and which ones below it arrived (a bitset, one bit per broadcast on the channel, so it is exact; a
/// 30 s run at 100 broadcasts/s per channel costs 375 bytes per receiver).
///
/// Losses are not counted here: a broadcast that never arrives is indistinguishable from a late one
/// until the run ends, so the parent counts them as expected − unique deliveries, where unique =
/// delivered − duplicates.
#[derive(Debug, Default)]
pub struct SeqTracker {
    publishers: Vec<Stream>,
}

#[derive(Debug, Default, Clone)]
struct Stream {
    next: u64,
    seen: Vec<u64>,
}

impl SeqTracker {
    /// Σ over publishers of the next expected sequence number: how many broadcasts this receiver knows
    /// were sent to it (received or skipped). Whatever the publishers sent beyond that was lost at the
    /// end of a stream rather than in a gap.
    pub fn next_total(&self) -> u64 {
        self.publishers.iter().map(|s| s.next).sum()
    }

    pub fn observe(&mut self, stamp: &Stamp) -> SeqVerdict {
        if stamp.publisher >= MAX_PUBLISHERS {
            return SeqVerdict::Implausible;
        }
        let p = stamp.publisher as usize;
        if p >= self.publishers.len() {
            self.publishers.resize_with(p + 1, Stream::default);
        }
        let stream = &mut self.publishers[p];
        let seq = stamp.seq;
        if seq >= stream.next.saturating_add(MAX_SEQ_JUMP) {
            return SeqVerdict::Implausible;
        }
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if word >= stream.seen.len() {
            stream.seen.resize(word + 1, 0);
        }
        if stream.seen[word] & bit != 0 {
            return SeqVerdict::Duplicate;
        }
        stream.seen[word] |= bit;
        if seq < stream.next {
            SeqVerdict::Reordered
        } else {
            stream.next = seq + 1;
            SeqVerdict::InOrder
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(publisher: u32, seq: u64) -> Stamp {
        Stamp { scheduled_unix_nanos: 1, publisher, seq }
    }

    #[test]
    fn round_trips() {
        let stamp = Stamp { scheduled_unix_nanos: 1_763_000_000_123_456_789, publisher: 3, seq: 42 };
        let text = stamp.encode();
        assert_eq!(text, r#"{"t":1763000000123456789,"p":3,"s":42}"#);
        assert_eq!(Stamp::decode(text.as_bytes()), Some(stamp));
    }

    #[test]
    fn padding_reaches_the_size_and_decodes() {
        let s = Stamp { scheduled_unix_nanos: 1_763_000_000_123_456_789, publisher: 0, seq: 7 };
        for bytes in [0, 10, s.encode().len() + 7, 100, 10_000] {
            let text = s.encode_padded(bytes);
            assert!(text.len() >= bytes && (bytes < s.encode().len() + 7 || text.len() == bytes), "{bytes}");
            assert_eq!(Stamp::decode(text.as_bytes()), Some(s), "{text}");
        }
        assert_eq!(s.encode_padded(0), s.encode());
    }

    #[test]
    fn u64_max_survives_json() {
        let stamp = Stamp { scheduled_unix_nanos: u64::MAX, publisher: u32::MAX, seq: u64::MAX };
        assert_eq!(Stamp::decode(stamp.encode().as_bytes()), Some(stamp));
    }

    #[test]
    fn wrapped_form() {
        let wrapper = r#"{"event":"load","payload":{"t":5,"p":1,"s":6,"x":"xx"},"type":"broadcast"}"#;
        assert_eq!(
            Stamp::decode_wrapped(wrapper),
            Some(Stamp { scheduled_unix_nanos: 5, publisher: 1, seq: 6 })
        );
        assert_eq!(Stamp::decode_wrapped(r#"{"event":"load"}"#), None);
        assert_eq!(Stamp::decode_wrapped(r#"{"payload":{"x":1}}"#), None);
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(Stamp::decode(b"not json"), None);
        assert_eq!(Stamp::decode(br#"{"t":-1,"p":0,"s":0}"#), None);
        assert_eq!(Stamp::decode(br#"{"t":1,"s":0}"#), None);
    }

    #[test]
    fn latency() {
        let stamp = Stamp { scheduled_unix_nanos: 1_000_000, publisher: 0, seq: 0 };
        assert_eq!(stamp.latency_micros(3_500_000), 2_500);
        assert_eq!(stamp.latency_micros(0), 0);
        assert!(now_unix_nanos() > 1_600_000_000_000_000_000);
    }

    #[test]
    fn sequences_are_checked_per_publisher() {
        use SeqVerdict::*;
        let mut t = SeqTracker::default();
        let verdicts: Vec<SeqVerdict> =
            [(0, 0), (1, 0), (0, 1), (0, 3), (0, 2), (0, 2), (1, 1), (1, 1), (0, 0), (0, 200)]
                .into_iter()
                .map(|(p, s)| t.observe(&stamp(p, s)))
                .collect();
        assert_eq!(
            verdicts,
            [
                InOrder, InOrder, InOrder, InOrder, Reordered, Duplicate, InOrder, Duplicate, Duplicate,
                InOrder
            ]
        );
        assert_eq!(t.observe(&stamp(0, 150)), Reordered);
        assert_eq!(t.next_total(), 201 + 2);
        assert_eq!(t.observe(&stamp(MAX_PUBLISHERS, 0)), Implausible);
        assert_eq!(t.observe(&stamp(2, MAX_SEQ_JUMP)), Implausible);
        assert_eq!(t.observe(&stamp(2, MAX_SEQ_JUMP - 1)), InOrder);
    }
}
