//! Presence: who is in a channel, with what state (PROTOCOL.md §4).
//!
//! [`set::PresenceSet`] is the pure state (track, update, untrack → diffs); [`PresenceActor`] owns one
//! per topic per node, pushes `presence_state` to new subscribers and fans diffs out to every member
//! that enabled presence or tracked, the sender included.

pub mod actor;
pub mod messages;
pub mod set;

pub use actor::PresenceActor;
