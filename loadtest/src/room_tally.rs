//! Per-member counts of the `room` scenario and what they come to over a window: every fill member
//! counts the presence frames and bytes it receives ([`Tally`], lock-free, one per member); the run
//! takes a [`Snapshot`] of all of them at the start and end of a phase, and [`WindowRates`] turns two
//! snapshots into per-member rates (mean and max over the members alive throughout).
//!
//! The rates are per member rather than totals because the goal they check is per member: "one
//! member's churn costs every other member at most one batched diff per interval".

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::room_frames::Class;

/// What one member received so far.
#[derive(Debug, Default)]
pub struct Tally {
    diffs: AtomicU64,
    diff_bytes: AtomicU64,
    counts: AtomicU64,
    count_bytes: AtomicU64,
    states: AtomicU64,
    state_bytes: AtomicU64,
    /// Joined and tracked, and its socket not ended.
    alive: AtomicBool,
}

impl Tally {
    /// Counts one frame of `bytes` bytes (the WebSocket message's length) of class `class`.
    pub fn add(&self, class: Class, bytes: usize) {
        let (frames, total) = match class {
            Class::Diff => (&self.diffs, &self.diff_bytes),
            Class::Count => (&self.counts, &self.count_bytes),
            Class::State => (&self.states, &self.state_bytes),
            _ => return,
        };
        frames.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn set_alive(&self, alive: bool) {
        self.alive.store(alive, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            diffs: get(&self.diffs),
            diff_bytes: get(&self.diff_bytes),
            counts: get(&self.counts),
            count_bytes: get(&self.count_bytes),
            states: get(&self.states),
            state_bytes: get(&self.state_bytes),
            alive: self.alive.load(Ordering::Relaxed),
        }
    }
}

/// One member's counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub diffs: u64,
    pub diff_bytes: u64,
    pub counts: u64,
    pub count_bytes: u64,
    pub states: u64,
    pub state_bytes: u64,
    pub alive: bool,
}

impl Snapshot {
    /// Presence frames of any kind (diffs, states, counts).
    pub fn presence_frames(&self) -> u64 {
        self.diffs + self.counts + self.states
    }

    /// Presence bytes of any kind.
    pub fn presence_bytes(&self) -> u64 {
        self.diff_bytes + self.count_bytes + self.state_bytes
    }
}

/// Every member's snapshot.
pub fn snapshot(tallies: &[Tally]) -> Vec<Snapshot> {
    tallies.iter().map(Tally::snapshot).collect()
}

/// Σ of the presence frames every member received.
pub fn total_presence_frames(tallies: &[Tally]) -> u64 {
    tallies.iter().map(|t| t.snapshot().presence_frames()).sum()
}

/// Mean and max over members of a per-second rate.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spread {
    pub mean: f64,
    pub max: f64,
}

impl Spread {
    fn of(values: impl Iterator<Item = f64>) -> Spread {
        let (mut n, mut sum, mut max) = (0u64, 0.0, 0.0f64);
        for v in values {
            n += 1;
            sum += v;
            max = max.max(v);
        }
        Spread { mean: if n == 0 { 0.0 } else { sum / n as f64 }, max }
    }

    /// `mean / max` with the given decimals.
    pub fn cells(&self, decimals: usize) -> String {
        format!("{:.decimals$} / {:.decimals$}", self.mean, self.max)
    }
}

/// Per-member rates over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowRates {
    /// Members alive at both ends of the window (the ones the rates are over).
    pub members: usize,
    pub secs: f64,
    /// `presence_diff` frames per member per second.
    pub diffs: Spread,
    /// Presence-count `system` pushes per member per second.
    pub counts: Spread,
    /// Bytes of all presence frames (diffs, states, counts) per member per second.
    pub bytes: Spread,
}

impl WindowRates {
    /// The rates between two snapshots of the same members taken `secs` apart.
    pub fn of(before: &[Snapshot], after: &[Snapshot], secs: f64) -> WindowRates {
        let pairs: Vec<(&Snapshot, &Snapshot)> =
            before.iter().zip(after).filter(|(b, a)| b.alive && a.alive).collect();
        let rate = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let per =
            |f: fn(&Snapshot) -> u64| Spread::of(pairs.iter().map(|(b, a)| rate(f(a).saturating_sub(f(b)))));
        WindowRates {
            members: pairs.len(),
            secs,
            diffs: per(|s| s.diffs),
            counts: per(|s| s.counts),
            bytes: per(Snapshot::presence_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(diffs: u64, diff_bytes: u64, counts: u64, alive: bool) -> Snapshot {
        Snapshot { diffs, diff_bytes, counts, count_bytes: counts * 10, alive, ..Snapshot::default() }
    }

    #[test]
    fn tallies_count_presence_frames_only() {
        let t = Tally::default();
        t.add(Class::Diff, 100);
        t.add(Class::Diff, 50);
        t.add(Class::Count, 7);
        t.add(Class::State, 1_000);
        t.add(Class::Broadcast, 9_999);
        t.add(Class::Other, 9_999);
        t.set_alive(true);
        let s = t.snapshot();
        assert_eq!((s.diffs, s.diff_bytes, s.counts, s.count_bytes, s.states), (2, 150, 1, 7, 1));
        assert_eq!((s.presence_frames(), s.presence_bytes(), s.alive), (4, 1_157, true));
        assert_eq!(total_presence_frames(&[t, Tally::default()]), 4);
    }

    #[test]
    fn rates_are_per_member_over_those_alive_throughout() {
        let before =
            [snap(0, 0, 0, true), snap(10, 1_000, 0, true), snap(0, 0, 0, false), snap(5, 5, 0, true)];
        let after = [
            snap(20, 2_000, 2, true),
            snap(50, 5_000, 0, true),
            snap(90, 9_000, 0, true),
            snap(9, 9, 0, false),
        ];
        let r = WindowRates::of(&before, &after, 2.0);
        assert_eq!(r.members, 2);
        assert_eq!(r.diffs, Spread { mean: 15.0, max: 20.0 });
        assert_eq!(r.counts, Spread { mean: 0.5, max: 1.0 });
        // Bytes: (2000 + 20) / 2 = 1010 and 4000 / 2 = 2000 per second.
        assert_eq!(r.bytes, Spread { mean: 1_505.0, max: 2_000.0 });
        assert_eq!(r.diffs.cells(1), "15.0 / 20.0");
        let none = WindowRates::of(&[], &[], 0.0);
        assert_eq!((none.members, none.diffs), (0, Spread::default()));
    }
}
