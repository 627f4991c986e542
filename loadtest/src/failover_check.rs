//! The `failover` scenario's verdict on one subscriber, as a pure function: of the rows committed while
//! it was subscribed, did each arrive exactly once, and in commit order?
//!
//! A row is *due* to a subscriber when its insert was sent after the subscriber's `Subscribed to
//! PostgreSQL` and its commit was acknowledged before the subscriber's stretch ended: the end of the run
//! for a subscriber that lived through it, or for one whose node was killed, the kill less a grace (rows
//! committed just before a kill may still have been on their way when the node died: the protocol has
//! no resume, so they are not counted either way). One inserter commits one row at a time, so commit
//! order is id order.

use std::collections::HashMap;

/// A row the inserter committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub id: i64,
    /// When its insert was sent (Unix ns).
    pub sent_ns: u64,
    /// When its commit was acknowledged (Unix ns).
    pub acked_ns: u64,
}

/// The part of the run a subscriber is accountable for (Unix ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stretch {
    pub from_ns: u64,
    pub to_ns: u64,
}

/// What one subscriber got wrong.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Rows due.
    pub due: u64,
    /// Due rows never received.
    pub lost: u64,
    /// Receipts beyond the first of a row (due or not).
    pub duplicated: u64,
    /// First receipts of a row after a higher id had arrived.
    pub reordered: u64,
}

impl Verdict {
    pub fn add(&mut self, other: Verdict) {
        self.due += other.due;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
    }
}

/// Checks `received` (row ids in arrival order) against the rows due in `stretch`.
pub fn check(committed: &[Committed], received: &[i64], stretch: Stretch) -> Verdict {
    let mut verdict = Verdict::default();
    let mut counts: HashMap<i64, u64> = HashMap::new();
    let mut highest: Option<i64> = None;
    for &id in received {
        let n = counts.entry(id).or_default();
        *n += 1;
        if *n > 1 {
            verdict.duplicated += 1;
            continue;
        }
        if highest.is_some_and(|h| id < h) {
            verdict.reordered += 1;
        }
        highest = Some(highest.map_or(id, |h| h.max(id)));
    }
    for row in committed.iter().filter(|r| r.sent_ns >= stretch.from_ns && r.acked_ns <= stretch.to_ns) {
        verdict.due += 1;
        if !counts.contains_key(&row.id) {
            verdict.lost += 1;
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: i64) -> Vec<Committed> {
        (1..=n).map(|id| Committed { id, sent_ns: id as u64 * 10, acked_ns: id as u64 * 10 + 5 }).collect()
    }

    #[test]
    fn exactly_once_in_order_is_clean() {
        let all = Stretch { from_ns: 0, to_ns: u64::MAX };
        assert_eq!(check(&rows(5), &[1, 2, 3, 4, 5], all), Verdict { due: 5, ..Verdict::default() });
    }

    #[test]
    fn losses_repeats_and_reordering_are_counted() {
        let all = Stretch { from_ns: 0, to_ns: u64::MAX };
        let v = check(&rows(6), &[1, 3, 2, 3, 5, 5, 5], all);
        assert_eq!(v, Verdict { due: 6, lost: 2, duplicated: 3, reordered: 1 });
    }

    #[test]
    fn only_rows_of_the_stretch_are_due() {
        // Row 2 was sent before the subscription, row 5 acknowledged after the stretch ended.
        let stretch = Stretch { from_ns: 25, to_ns: 50 };
        let v = check(&rows(5), &[4], stretch);
        assert_eq!(v, Verdict { due: 2, lost: 1, ..Verdict::default() });
        // Receiving rows that were not due is no fault.
        assert_eq!(check(&rows(5), &[1, 3, 4, 5], stretch).lost, 0);
    }
}
