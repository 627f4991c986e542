//! Presence: who is in a channel, with what state (PROTOCOL.md §4).
//!
//! [`set::PresenceSet`] is the pure state (track, update, untrack → diffs); [`batch`] merges the diffs
//! of an interval into one (pure); [`PresenceActor`] owns one set per topic per node, pushes
//! `presence_state` (or counts) to new subscribers and fans the batched diffs out to every member that
//! enabled presence or tracked, the sender included.

pub mod actor;
pub mod batch;
pub mod messages;
pub mod set;

pub use actor::PresenceActor;
