//! Channels: one actor per topic per node, created on the first join and stopped when its last member
//! leaves.
//!
//! Joins and leaves go through the [`Registry`], which counts memberships per topic; because every join
//! is counted before it reaches the channel, the registry knows exactly when a channel is empty and can
//! stop it without racing a join in flight. Broadcasts go straight from a socket to the channel it joined.

pub mod actor;
pub mod fanout;
pub mod messages;
pub mod ordering;
#[cfg(test)]
mod ordering_test;
pub mod registry;

pub use actor::ChannelActor;
pub use actor::ChannelSettings;
pub use registry::Registry;
