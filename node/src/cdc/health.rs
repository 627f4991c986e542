//! Whether this node's Postgres Changes path can do its job, for `/readyz`.
//!
//! A node whose CDC path cannot run must not look ready: its joins would still say `SUBSCRIBED` and
//! its subscribers would get nothing. Two things take it out:
//! - the replication slot cannot be streamed ([`SlotConflict`]). Only the node that is meant to
//!   stream sees this: a single node, or the raft leader. Followers stream nothing themselves and stay
//!   ready (they serve the leader's stream); the leader's flag is cleared when it stops leading;
//! - a CDC task panicked and is being restarted (see [`super::supervisor`]); the node is ready again
//!   once the restarted task runs.

use crate::sync::lock;
use std::collections::BTreeMap;
use std::sync::Mutex;

use super::error::SlotConflict;

/// Shared by the CDC tasks and `/readyz`.
#[derive(Debug, Default)]
pub struct CdcHealth {
    slot: Mutex<Option<SlotConflict>>,
    /// Stages down after a panic, with the panic's message.
    down: Mutex<BTreeMap<&'static str, String>>,
}

impl CdcHealth {
    /// Why the node is not ready, if it is not.
    pub fn unready(&self) -> Option<String> {
        if let Some(conflict) = lock(&self.slot).as_ref() {
            return Some(format!("Postgres Changes cannot run: {conflict}"));
        }
        let down = lock(&self.down);
        let (stage, panic) = down.iter().next()?;
        Some(format!("Postgres Changes {stage} failed and is restarting: {panic}"))
    }

    /// Records a conflict (the latest details are what `/readyz` shows); `true` if it is a new kind
    /// of conflict, so it is logged once while it lasts (another holder's pid is not a new conflict).
    pub fn slot_conflict(&self, conflict: &SlotConflict) -> bool {
        let mut slot = lock(&self.slot);
        let new =
            slot.as_ref().is_none_or(|old| std::mem::discriminant(old) != std::mem::discriminant(conflict));
        *slot = Some(conflict.clone());
        new
    }

    /// The slot is usable (or this node no longer streams it); returns the conflict that was recorded.
    pub fn slot_usable(&self) -> Option<SlotConflict> {
        lock(&self.slot).take()
    }

    pub fn stage_down(&self, stage: &'static str, panic: String) {
        lock(&self.down).insert(stage, panic);
    }

    pub fn stage_up(&self, stage: &'static str) {
        lock(&self.down).remove(stage);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_while_the_slot_conflicts_or_a_stage_is_down() {
        let health = CdcHealth::default();
        assert_eq!(health.unready(), None);
        let conflict = SlotConflict::InUse { slot: "s".into(), holder: "pid 1".into() };
        assert!(health.slot_conflict(&conflict));
        assert!(!health.slot_conflict(&conflict), "the same conflict is new only once");
        let other_pid = SlotConflict::InUse { slot: "s".into(), holder: "pid 2".into() };
        assert!(!health.slot_conflict(&other_pid), "another pid of the holder is the same conflict");
        assert!(health.unready().is_some_and(|r| r.contains("pid 2")), "the latest details are shown");
        assert!(!health.slot_conflict(&conflict));
        assert!(health.unready().is_some_and(|r| r.contains("REALTIME_SLOT")));
        assert_eq!(health.slot_usable(), Some(conflict));
        assert_eq!(health.unready(), None);
        health.stage_down("hub", "boom".into());
        assert!(health.unready().is_some_and(|r| r.contains("hub") && r.contains("boom")));
        health.stage_up("hub");
        assert_eq!(health.unready(), None);
    }
}
