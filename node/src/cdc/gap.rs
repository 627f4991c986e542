//! Gaps: committed changes a cluster node missed and can no longer be given, found and told.
//!
//! The CDC leader holds the slot's acknowledgement at the position of a node that dropped out only
//! for `REALTIME_CDC_HOLD_MS`; after that the slot moves on and PostgreSQL may recycle the WAL. A
//! node back after longer asks for a replay, but the replay starts where the slot is, past what it
//! needs. Such a node must never leave its subscribers `SUBSCRIBED` while rows were dropped: its hub
//! tells each one (`system` error, extension `postgres_changes`) and the socket closes the channel
//! (`phx_close`), so the client rejoins and reloads; counted (`realtime_cdc_gaps_total`) and logged
//! once with the LSN range.
//!
//! How a gap is seen: every stream the leader starts (a failover, a replay) is announced, before its
//! first transaction, by a [`StreamStart`]: it ships every transaction ending after `from`, and
//! `anchor` is the last transaction with changes at or before `from`. A hub that has not taken
//! `anchor` missed that transaction for good. The leader finds `anchor` in its own hub's history
//! ([`Taken`]), which is exact when that hub is complete. When it is not (the leader itself missed
//! shipments) or its history does not reach back to `from`, `anchor` is `from`: a node behind it is
//! then told of a gap even if nothing it missed had changes (told, never silent).
//!
//! Positions alone would not do: the leader also acknowledges transactions without changes (or the
//! slot would never move on a quiet publication), so a complete node is often behind the slot.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// How many taken positions a hub remembers (8 bytes each): at 500 transactions per second, more
/// than the default hold.
const HISTORY: usize = 32_768;

/// The start of a leader's stream, shipped before its first transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStart {
    /// Every transaction ending after this is in the stream (the slot's confirmed position, or what
    /// the leader already acknowledged if that is further).
    pub from: u64,
    /// The last transaction with changes ending at or before `from`, as far as the leader knows.
    pub anchor: u64,
}

/// What a node missed for good: transactions ending after `after`, up to `until` (at least the one
/// ending there); the stream goes on after `resumes_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub after: u64,
    pub until: u64,
    pub resumes_after: u64,
}

impl Gap {
    /// A hub that took transactions through `through` sees a stream start: the gap, if any.
    pub fn between(through: u64, start: StreamStart) -> Option<Gap> {
        (through < start.anchor).then_some(Gap {
            after: through,
            until: start.anchor,
            resumes_after: start.from,
        })
    }

    /// What each subscriber is told.
    pub fn message(&self) -> String {
        format!(
            "PostgresChangesGap: changes committed between {} and {} could not be delivered to this \
             subscription (this server was cut off from the cluster for longer than the database keeps \
             them for it); the channel is closed: rejoin it and reload what you show",
            Lsn(self.after),
            Lsn(self.until)
        )
    }
}

/// A WAL position as PostgreSQL writes it (`16/B374D848`).
#[derive(Debug, Clone, Copy)]
pub struct Lsn(pub u64);

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// How far this node's hub took transactions, the recent positions it took, and whether it knows
/// it missed some (shared by the hub, the cluster router and the consumer).
#[derive(Debug)]
pub struct Taken {
    through: AtomicU64,
    /// The router saw shipments it never received and is waiting for a replay.
    missing: AtomicBool,
    /// End positions taken, oldest first, at most [`HISTORY`]; the first one may be a position
    /// recorded before a restart or a stream start after a gap.
    history: Mutex<VecDeque<u64>>,
    /// The current leader stream's start, and how far this hub had taken transactions then.
    stream: Mutex<Option<(u64, u64)>>,
}

impl Taken {
    pub fn new(start: u64) -> Taken {
        Taken {
            through: AtomicU64::new(start),
            missing: AtomicBool::new(false),
            history: Mutex::new(VecDeque::from([start])),
            stream: Mutex::new(None),
        }
    }

    pub fn through(&self) -> u64 {
        self.through.load(Ordering::Acquire)
    }

    /// The hub took these transactions (end positions, increasing, past [`Taken::through`]).
    pub fn take(&self, ends: impl Iterator<Item = u64>) {
        let mut history = self.history.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for end in ends {
            if history.len() >= HISTORY {
                history.pop_front();
            }
            history.push_back(end);
            self.through.fetch_max(end, Ordering::AcqRel);
        }
    }

    /// Starts again at `start` (a new run, or a stream start after a gap): what came before is
    /// either delivered or told as lost, and is no longer known transaction by transaction.
    pub fn restart_at(&self, start: u64) {
        let mut history = self.history.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        history.clear();
        history.push_back(start);
        self.through.store(start, Ordering::Release);
    }

    pub fn set_missing(&self, missing: bool) {
        self.missing.store(missing, Ordering::Release);
    }

    pub fn missing(&self) -> bool {
        self.missing.load(Ordering::Acquire)
    }

    /// A leader stream started at `from` when this hub had taken transactions through `base`.
    pub fn set_stream(&self, from: u64, base: u64) {
        *self.stream.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((from, base));
    }

    /// The current stream's `(from, base)`, see [`Taken::set_stream`].
    pub fn stream(&self) -> Option<(u64, u64)> {
        *self.stream.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a transaction ending at `lsn`, which another node took, is one this hub missed for
    /// good: past what it had when the current stream started, and not after that stream's start.
    pub fn lost_before_stream(&self, lsn: u64) -> bool {
        self.stream().is_some_and(|(from, base)| base < lsn && lsn <= from)
    }

    /// The last position taken at or before `from`; `from` itself when this hub may have missed
    /// something (or its history does not reach back that far).
    pub fn anchor(&self, from: u64) -> u64 {
        if self.missing.load(Ordering::Acquire) {
            return from;
        }
        let history = self.history.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match history.partition_point(|end| *end <= from) {
            0 => from,
            i => history.get(i - 1).copied().unwrap_or(from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hub_behind_the_anchor_has_a_gap() {
        let start = StreamStart { from: 500, anchor: 400 };
        assert_eq!(Gap::between(399, start), Some(Gap { after: 399, until: 400, resumes_after: 500 }));
        assert_eq!(Gap::between(400, start), None, "has the anchor: everything after `from` follows");
        assert_eq!(Gap::between(450, start), None, "nothing with changes between 400 and 500");
        assert_eq!(Gap::between(900, start), None);
    }

    #[test]
    fn the_anchor_is_the_last_position_taken_at_or_before_the_start() {
        let taken = Taken::new(100);
        taken.take([200, 300, 400].into_iter());
        assert_eq!(taken.through(), 400);
        assert_eq!(taken.anchor(350), 300);
        assert_eq!(taken.anchor(300), 300);
        assert_eq!(taken.anchor(1000), 400);
        assert_eq!(taken.anchor(100), 100);
        assert_eq!(taken.anchor(50), 50, "before what this hub knows: the start itself");
        taken.set_missing(true);
        assert_eq!(taken.anchor(350), 350, "a hub that missed shipments knows no anchor");
        taken.set_missing(false);
        taken.restart_at(1000);
        assert_eq!((taken.through(), taken.anchor(2000), taken.anchor(999)), (1000, 1000, 999));
    }

    #[test]
    fn a_peer_position_between_the_hub_and_the_stream_start_was_lost() {
        let taken = Taken::new(100);
        assert!(!taken.lost_before_stream(150), "no stream yet");
        taken.set_stream(300, 100);
        assert!(taken.lost_before_stream(150));
        assert!(taken.lost_before_stream(300));
        assert!(!taken.lost_before_stream(100), "this hub has it");
        assert!(!taken.lost_before_stream(301), "the stream brings it");
        taken.set_stream(300, 400);
        assert!(!taken.lost_before_stream(350), "a hub ahead of the stream's start lost nothing");
    }

    #[test]
    fn history_is_bounded() {
        let taken = Taken::new(0);
        taken.take((1..=(HISTORY as u64 + 10)).map(|n| n * 10));
        assert_eq!(taken.history.lock().map(|h| h.len()).unwrap_or(0), HISTORY);
        assert_eq!(taken.anchor(55), 55, "forgotten: the start itself");
        assert_eq!(taken.anchor(1_000), 1_000);
        assert_eq!(taken.anchor(200_005), 200_000);
    }

    #[test]
    fn positions_read_as_postgresql_writes_them() {
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
        let gap = Gap { after: 0x1_0000_0010, until: 0x1_0000_0A00, resumes_after: 0x1_0000_0B00 };
        assert!(gap.message().contains("1/10 and 1/A00"), "{}", gap.message());
        assert!(gap.message().starts_with("PostgresChangesGap: "));
    }
}
