//! The load payload: every broadcast carries its send time and a sequence number as JSON
//! (`{"t":<unix nanos>,"s":<seq>}`), so a receiver on the same machine can compute delivery latency
//! as `now - t` without any clock synchronisation.
//!
//! JSON rather than raw bytes keeps the payload deliverable to both serializers: a 1.0.0 subscriber
//! cannot receive raw binary broadcasts (PROTOCOL.md §3.2).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Send time and sequence number of one broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Wall-clock send time in nanoseconds since the Unix epoch.
    #[serde(rename = "t")]
    pub sent_unix_nanos: u64,
    /// Unique per run: publisher `p` of `P` numbers its `k`-th broadcast `k * P + p`.
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
    /// A stamp taken now.
    pub fn now(seq: u64) -> Stamp {
        Stamp { sent_unix_nanos: now_unix_nanos(), seq }
    }

    /// The JSON text sent as the user payload.
    pub fn encode(&self) -> String {
        format!("{{\"t\":{},\"s\":{}}}", self.sent_unix_nanos, self.seq)
    }

    /// Reads a stamp from user payload bytes (what a kind-4 frame carries).
    pub fn decode(bytes: &[u8]) -> Option<Stamp> {
        serde_json::from_slice(bytes).ok()
    }

    /// Reads a stamp from a JSON broadcast wrapper (`payload.payload`), as 1.0.0 subscribers get it.
    pub fn decode_wrapped(wrapper_json: &str) -> Option<Stamp> {
        let wrapped: Wrapped<'_> = serde_json::from_str(wrapper_json).ok()?;
        Stamp::decode(wrapped.payload?.get().as_bytes())
    }

    /// Microseconds from the send time to `now_nanos`; 0 if the clock went backwards.
    pub fn latency_micros(&self, now_nanos: u64) -> u64 {
        now_nanos.saturating_sub(self.sent_unix_nanos) / 1_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let stamp = Stamp { sent_unix_nanos: 1_763_000_000_123_456_789, seq: 42 };
        let text = stamp.encode();
        assert_eq!(text, r#"{"t":1763000000123456789,"s":42}"#);
        assert_eq!(Stamp::decode(text.as_bytes()), Some(stamp));
    }

    #[test]
    fn u64_max_survives_json() {
        let stamp = Stamp { sent_unix_nanos: u64::MAX, seq: u64::MAX };
        assert_eq!(Stamp::decode(stamp.encode().as_bytes()), Some(stamp));
    }

    #[test]
    fn wrapped_form() {
        let wrapper = r#"{"event":"load","payload":{"t":5,"s":6},"type":"broadcast"}"#;
        assert_eq!(Stamp::decode_wrapped(wrapper), Some(Stamp { sent_unix_nanos: 5, seq: 6 }));
        assert_eq!(Stamp::decode_wrapped(r#"{"event":"load"}"#), None);
        assert_eq!(Stamp::decode_wrapped(r#"{"payload":{"x":1}}"#), None);
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(Stamp::decode(b"not json"), None);
        assert_eq!(Stamp::decode(br#"{"t":-1,"s":0}"#), None);
    }

    #[test]
    fn latency() {
        let stamp = Stamp { sent_unix_nanos: 1_000_000, seq: 0 };
        assert_eq!(stamp.latency_micros(3_500_000), 2_500);
        assert_eq!(stamp.latency_micros(0), 0);
        let now = Stamp::now(1);
        assert!(now.sent_unix_nanos > 1_600_000_000_000_000_000);
    }
}
